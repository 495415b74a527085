//! The rustls client configuration every rustls-based backend needs (feature `rustls`).
//!
//! keel-hyper and keel-smol both speak TLS through rustls; building the configuration from a
//! [`TransportConfig`] is the same for both, so it lives here.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{find_io_in_chain, find_source, Error, ErrorKind};
use crate::identity::TlsVersion;
use crate::transport::TransportConfig;

/// A rustls client configuration for `config`: the `ring` provider, TLS 1.2 and 1.3 (1.3 alone
/// with [`TransportConfig::min_tls_version`] 1.3), webpki's roots unless
/// [`TransportConfig::built_in_roots`] is off, the extra
/// [`TransportConfig::root_certificates`], the client certificate
/// ([`TransportConfig::identity`]), and ALPN.
///
/// With [`TransportConfig::danger_accept_invalid_certs`], any server certificate is accepted
/// (the roots are not used), but the handshake's signatures are still verified with the
/// certificate's key.
///
/// ALPN offers `h2` only where the backend can speak it (`http2_supported`) and the settings
/// allow it: `h2` alone with prior knowledge, `h2` then `http/1.1` by default, `http/1.1`
/// alone when HTTP/2 is off.
///
/// A root that doesn't parse is [`ErrorKind::Config`] naming `root_certificates`; a client key
/// rustls can't use, naming `identity`.
///
/// ```
/// let config = keel_core::TransportConfig::default();
/// let tls = keel_core::tls::rustls_client_config(&config, true).unwrap();
/// assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
/// ```
pub fn rustls_client_config(
    config: &TransportConfig,
    http2_supported: bool,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_tls_version {
        Some(TlsVersion::Tls1_3) => &[&rustls::version::TLS13],
        // TLS 1.2 is rustls' floor: nothing older to refuse.
        Some(TlsVersion::Tls1_2) | None => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            Error::new(ErrorKind::Config)
                .with_setting("min_tls_version")
                .with_source(e)
        })?;
    let builder = if config.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
    } else {
        builder.with_root_certificates(roots(config)?)
    };
    let mut tls = match &config.identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let (chain, key) = identity.to_rustls();
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::new(ErrorKind::Config)
                    .with_setting("identity")
                    .with_source(e)
            })?
        }
    };
    tls.alpn_protocols = if http2_supported && config.http2_prior_knowledge {
        vec![b"h2".to_vec()]
    } else if http2_supported && config.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(tls)
}

/// Whether `err` (or its source chain) is a TLS alert about the handshake that the server sent
/// after the client had finished its side of it.
///
/// In TLS 1.3 the client's handshake is over before the server has checked the client's
/// certificate: a server that refuses it (or asked for one and got none) says so with an alert
/// the client reads with the response. Backends map such an error to [`ErrorKind::Tls`] in
/// [`Stage::Tls`](crate::Stage::Tls), as if the handshake had failed, which it has: the server
/// never read the request.
///
/// ```
/// use rustls::AlertDescription;
///
/// let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
/// let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
/// assert!(keel_core::tls::is_handshake_alert(&io));
/// // As HTTP/2 passes it on: the kind and the message.
/// let h2 = std::io::Error::new(std::io::ErrorKind::InvalidData, io.to_string());
/// assert!(keel_core::tls::is_handshake_alert(&h2));
/// assert!(!keel_core::tls::is_handshake_alert(&std::io::Error::other("reset")));
/// ```
pub fn is_handshake_alert(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(rustls::Error::AlertReceived(alert)) = find_source::<rustls::Error>(err) {
        return HANDSHAKE_ALERTS.contains(alert);
    }
    // HTTP/2 (h2) hands a connection's I/O error to each of its streams as a kind and a
    // message, without the error itself: recognise rustls' own words for those alerts.
    find_io_in_chain(err).is_some_and(|io| {
        io.kind() == std::io::ErrorKind::InvalidData
            && io.get_ref().is_some_and(|inner| {
                let said = inner.to_string();
                HANDSHAKE_ALERTS
                    .iter()
                    .any(|a| said == rustls::Error::AlertReceived(*a).to_string())
            })
    })
}

/// The error a caller sees when the server refused the TLS handshake after the client's side of
/// it (see [`is_handshake_alert`]): [`ErrorKind::Tls`] in [`Stage::Tls`](crate::Stage::Tls), with
/// `source` as its source. The server never read the request.
///
/// ```
/// use keel_core::{ErrorKind, Stage};
///
/// let err = keel_core::tls::handshake_refused("certificate required");
/// assert_eq!((err.kind(), err.stage()), (ErrorKind::Tls, Some(Stage::Tls)));
/// ```
pub fn handshake_refused(source: impl Into<crate::error::BoxError>) -> Error {
    Error::new(ErrorKind::Tls)
        .with_stage(crate::Stage::Tls)
        .with_source(source)
}

/// How long a recorded refusal explains a failed request ([`RefusalWatch::explain`]).
const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Watches a connection's reads for the server's refusal of the TLS handshake, and explains the
/// request failures it causes.
///
/// In TLS 1.3 the client's side of the handshake is over before the server has checked the
/// client's certificate, so the server's refusal arrives as the first thing read. An HTTP
/// library that reads in a task of its own (hyper's connection task) sees the alert there and
/// fails the requests waiting on the connection only as "connection closed" or "not ready":
/// the reason is lost on the way. A watch shared by the connection's I/O, which passes every
/// failed read to [`record`](Self::record), and by the request, which passes its error through
/// [`explain`](Self::explain), reports those failures as the TLS errors they are.
///
/// Clones share one watch: a backend that can tell which connection a request used keeps one
/// per connection; one that can't (hyper-util's pool) keeps one per origin, and a refusal then
/// explains that origin's failures for a few seconds.
///
/// ```
/// use keel_core::tls::RefusalWatch;
/// use keel_core::{Error, ErrorKind, Stage};
///
/// let watch = RefusalWatch::new();
/// let closed = || Error::new(ErrorKind::Body).with_stage(Stage::SendRequest);
/// assert_eq!(watch.explain(closed()).kind(), ErrorKind::Body);
///
/// // The connection's reader meets the server's alert…
/// let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
/// assert!(watch.record(&std::io::Error::new(std::io::ErrorKind::InvalidData, alert)));
/// // …and the request that only saw its connection close learns why.
/// let err = watch.explain(closed());
/// assert_eq!((err.kind(), err.stage()), (ErrorKind::Tls, Some(Stage::Tls)));
/// ```
#[derive(Clone, Debug, Default)]
pub struct RefusalWatch(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl RefusalWatch {
    /// A watch that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the refusal down when `err`, a failed read, is the server's alert refusing the
    /// handshake; returns whether it was.
    pub fn record(&self, err: &std::io::Error) -> bool {
        let refused = is_handshake_alert(err);
        if refused {
            *self.lock() = Some(std::time::Instant::now());
        }
        refused
    }

    /// Whether a refusal was recorded within the last few seconds.
    pub fn refused(&self) -> bool {
        self.lock().is_some_and(|at| at.elapsed() < REFUSAL_WINDOW)
    }

    /// `err`, or [`handshake_refused`] when `err` is a request that failed on its connection
    /// ([`ErrorKind::Body`]) after this watch recorded a refusal.
    pub fn explain(&self, err: Error) -> Error {
        if err.kind() == ErrorKind::Body && self.refused() {
            handshake_refused(format!(
                "the server refused the TLS handshake after the client's side of it; the \
                 request then failed: {err}"
            ))
        } else {
            err
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Alerts a server sends only about a handshake it refuses.
const HANDSHAKE_ALERTS: [rustls::AlertDescription; 11] = [
    rustls::AlertDescription::CertificateRequired,
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::UnsupportedCertificate,
    rustls::AlertDescription::CertificateRevoked,
    rustls::AlertDescription::CertificateExpired,
    rustls::AlertDescription::CertificateUnknown,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::AccessDenied,
    rustls::AlertDescription::HandshakeFailure,
    rustls::AlertDescription::ProtocolVersion,
    rustls::AlertDescription::InsufficientSecurity,
];

/// The trust anchors: webpki's roots unless turned off, and the extra roots.
fn roots(config: &TransportConfig) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    if config.built_in_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for cert in &config.root_certificates {
        for der in cert.to_der()? {
            roots.add(CertificateDer::from(der)).map_err(|e| {
                Error::new(ErrorKind::Config)
                    .with_setting("root_certificates")
                    .with_source(e)
            })?;
        }
    }
    Ok(roots)
}

/// [`TransportConfig::danger_accept_invalid_certs`]: takes any certificate as the server's,
/// but still checks the handshake's signatures against it, so the server must hold its key.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Certificate, Identity};

    #[test]
    fn alpn_follows_the_settings_and_the_backend() {
        let mut config = TransportConfig::default();
        let alpn = |c: &TransportConfig, h2| rustls_client_config(c, h2).unwrap().alpn_protocols;
        assert_eq!(alpn(&config, false), [b"http/1.1".to_vec()]);
        config.http2 = false;
        assert_eq!(alpn(&config, true), [b"http/1.1".to_vec()]);
        config.http2_prior_knowledge = true;
        assert_eq!(alpn(&config, true), [b"h2".to_vec()]);
    }

    /// Runs a handshake in memory between `client` and a server presenting a fresh certificate
    /// for `localhost` (returned as PEM first) with only `server_versions`.
    fn handshake(
        client: impl FnOnce(&str) -> TransportConfig,
        server_versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<(), rustls::Error> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(server_versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        let client = rustls_client_config(&client(&cert.pem()), false).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut s = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            s.read_tls(&mut wire.as_slice()).unwrap();
            s.process_new_packets()?;
            wire.clear();
            s.write_tls(&mut wire).unwrap();
            c.read_tls(&mut wire.as_slice()).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    fn trusting(pem: &str) -> TransportConfig {
        TransportConfig {
            root_certificates: vec![Certificate::from_pem(pem.to_owned())],
            ..TransportConfig::default()
        }
    }

    #[test]
    fn min_tls_version_13_refuses_a_tls_12_server() {
        let tls12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        handshake(trusting, tls12).unwrap();
        let min = |v| {
            move |pem: &str| TransportConfig {
                min_tls_version: Some(v),
                ..trusting(pem)
            }
        };
        handshake(min(TlsVersion::Tls1_2), tls12).unwrap();
        handshake(min(TlsVersion::Tls1_3), tls12).unwrap_err();
        handshake(min(TlsVersion::Tls1_3), rustls::DEFAULT_VERSIONS).unwrap();
    }

    #[test]
    fn only_the_danger_option_accepts_an_untrusted_server() {
        for versions in [
            &[&rustls::version::TLS12][..],
            &[&rustls::version::TLS13][..],
        ] {
            handshake(|_| TransportConfig::default(), versions).unwrap_err();
            let reckless = |_: &str| TransportConfig {
                danger_accept_invalid_certs: true,
                built_in_roots: false,
                ..TransportConfig::default()
            };
            handshake(reckless, versions).unwrap();
        }
    }

    #[test]
    fn a_client_certificate_is_offered_and_a_bad_key_names_the_setting() {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["client".to_owned()]).unwrap();
        let identity = Identity::from_pem(cert.pem(), signing_key.serialize_pem()).unwrap();
        let config = TransportConfig {
            identity: Some(identity),
            ..TransportConfig::default()
        };
        let tls = rustls_client_config(&config, true).unwrap();
        assert!(tls.client_auth_cert_resolver.has_certs());
        assert!(!rustls_client_config(&TransportConfig::default(), true)
            .unwrap()
            .client_auth_cert_resolver
            .has_certs());

        let not_a_key = "-----BEGIN PRIVATE KEY-----\nBAUG\n-----END PRIVATE KEY-----\n";
        let config = TransportConfig {
            identity: Some(Identity::from_pem(cert.pem(), not_a_key).unwrap()),
            ..TransportConfig::default()
        };
        let err = rustls_client_config(&config, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.setting(), Some("identity"));
    }

    #[test]
    fn verification_off_still_builds_with_alpn() {
        let config = TransportConfig {
            danger_accept_invalid_certs: true,
            built_in_roots: false,
            ..TransportConfig::default()
        };
        let tls = rustls_client_config(&config, true).unwrap();
        assert_eq!(tls.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn handshake_alerts_are_told_apart_from_other_failures() {
        use rustls::AlertDescription as A;
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert!(is_handshake_alert(&io(rustls::Error::AlertReceived(
            A::CertificateRequired
        ))));
        assert!(is_handshake_alert(&io(rustls::Error::AlertReceived(
            A::UnknownCA
        ))));
        assert!(!is_handshake_alert(&io(rustls::Error::AlertReceived(
            A::CloseNotify
        ))));
        assert!(!is_handshake_alert(&io(rustls::Error::DecryptError)));
        let flattened = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(A::BadCertificate).to_string(),
        );
        assert!(is_handshake_alert(&flattened));
        let other_kind =
            std::io::Error::other(rustls::Error::AlertReceived(A::BadCertificate).to_string());
        assert!(!is_handshake_alert(&other_kind));
    }

    #[test]
    fn a_bad_root_names_the_setting() {
        let config = TransportConfig {
            root_certificates: vec![Certificate::from_der(vec![0x30, 0x03, 1, 2, 3])],
            ..TransportConfig::default()
        };
        let err = rustls_client_config(&config, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.setting(), Some("root_certificates"));
    }
}
