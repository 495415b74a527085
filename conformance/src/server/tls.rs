//! The self-signed certificate and the rustls server configuration.

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
}

/// Generates a certificate for `localhost` and `127.0.0.1` and builds the
/// server configuration around it.
pub(super) fn generate() -> io::Result<Tls> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let cert_der = cert.der().to_vec();
    let cert_pem = cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));

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
    })
}
