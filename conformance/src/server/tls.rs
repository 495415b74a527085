//! The self-signed certificate and the rustls server configurations: the main one, mutual TLS
//! with a client CA, and TLS 1.2 only.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A freshly generated self-signed certificate (its own root) and the TLS
/// server configuration that presents it.
pub(super) struct Tls {
    /// The certificate, PEM-encoded.
    pub(super) cert_pem: String,
    /// The certificate, DER-encoded.
    pub(super) cert_der: Vec<u8>,
    /// Server configuration: ring provider, TLS 1.2 + 1.3, ALPN `h2` and `http/1.1`.
    pub(super) config: Arc<rustls::ServerConfig>,
    /// The mTLS and TLS 1.2-only listeners' configurations, and the client's certificates.
    pub(super) extra: Extra,
}

/// Generates a certificate for `localhost` and `127.0.0.1` and builds the
/// server configuration around it.
pub(super) fn generate() -> io::Result<Tls> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let cert_der = cert.der().to_vec();
    let cert_pem = cert.pem();
    let key_der = signing_key.serialize_der();
    let extra = generate_extra(&cert_der, &key_der)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert_der.clone())], key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(Tls {
        cert_pem,
        cert_der,
        config: Arc::new(config),
        extra,
    })
}

/// The password of [`ClientPki::pkcs12`].
pub(super) const PKCS12_PASSWORD: &str = "keel-conformance";

/// The common name of the client certificate the client CA issues.
pub(super) const CLIENT_CN: &str = "keel-conformance-client";

/// The client side of mutual TLS: a certificate issued by the client CA the mTLS listener
/// trusts, and one that CA never issued.
pub(super) struct ClientPki {
    /// The issued certificate, PEM (the CA is the server's trust anchor: the chain is the
    /// certificate alone).
    pub(super) cert_pem: String,
    /// Its DER form, which the mTLS listener recognises.
    pub(super) cert_der: Vec<u8>,
    /// Its private key, PKCS#8 PEM.
    pub(super) key_pem: String,
    /// The certificate and key in a PKCS#12 archive (AES-256, HMAC-SHA256), password
    /// [`PKCS12_PASSWORD`].
    pub(super) pkcs12: Vec<u8>,
    /// A self-signed certificate with the same name, and its key: not from the client CA.
    pub(super) stranger_cert_pem: String,
    pub(super) stranger_key_pem: String,
    /// The client CA's certificate, DER.
    ca_der: Vec<u8>,
}

/// Server configurations besides the main one: the mTLS listener's (requires a client
/// certificate from the client CA) and the TLS 1.2-only listener's. Both present the same
/// server certificate as the main listener.
pub(super) struct Extra {
    pub(super) client: ClientPki,
    pub(super) mtls: Arc<rustls::ServerConfig>,
    pub(super) tls12: Arc<rustls::ServerConfig>,
}

/// Generates the client CA, its client certificate (PEM and PKCS#12) and a stranger's, and
/// builds the mTLS and TLS 1.2-only server configurations around `server_der`/`server_key`.
pub(super) fn generate_extra(server_der: &[u8], server_key_der: &[u8]) -> io::Result<Extra> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "keel conformance client CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(io::Error::other)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(io::Error::other)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let client_params = || {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, CLIENT_CN);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok::<_, io::Error>(params)
    };
    let client_key = KeyPair::generate().map_err(io::Error::other)?;
    let client_cert = client_params()?
        .signed_by(&client_key, &issuer)
        .map_err(io::Error::other)?;
    let stranger_key = KeyPair::generate().map_err(io::Error::other)?;
    let stranger_cert = client_params()?
        .self_signed(&stranger_key)
        .map_err(io::Error::other)?;

    let pkcs12 = {
        use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
        let cert = Certificate::from_der(client_cert.der()).map_err(io::Error::other)?;
        let key = PrivateKey::from_der(&client_key.serialize_der()).map_err(io::Error::other)?;
        let chain = PrivateKeyChain::new(b"keel-client".as_slice(), key, [cert]);
        let mut store = KeyStore::new();
        store.add_entry("client", KeyStoreEntry::PrivateKeyChain(chain));
        store
            .writer(PKCS12_PASSWORD)
            .write()
            .map_err(io::Error::other)?
    };

    let client = ClientPki {
        cert_pem: client_cert.pem(),
        cert_der: client_cert.der().to_vec(),
        key_pem: client_key.serialize_pem(),
        pkcs12,
        stranger_cert_pem: stranger_cert.pem(),
        stranger_key_pem: stranger_key.serialize_pem(),
        ca_der: ca_cert.der().to_vec(),
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_chain = || vec![CertificateDer::from(server_der.to_vec())];
    let server_key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key_der.to_vec()));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(client.ca_der.clone()))
        .map_err(io::Error::other)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(io::Error::other)?;
    let mut mtls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_chain(), server_key())
        .map_err(io::Error::other)?;
    mtls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let mut tls12 = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(server_chain(), server_key())
        .map_err(io::Error::other)?;
    tls12.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(Extra {
        client,
        mtls: Arc::new(mtls),
        tls12: Arc::new(tls12),
    })
}
