//! The rustls client configuration every rustls-based backend needs (feature `rustls`).
//!
//! keel-hyper and keel-smol both speak TLS through rustls; building the configuration from a
//! [`TransportConfig`] is the same for both, so it lives here.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::error::{Error, ErrorKind};
use crate::transport::TransportConfig;

/// A rustls client configuration for `config`: the `ring` provider, rustls' safe default
/// protocol versions, webpki's roots unless [`TransportConfig::built_in_roots`] is off, the
/// extra [`TransportConfig::root_certificates`], and ALPN.
///
/// ALPN offers `h2` only where the backend can speak it (`http2_supported`) and the settings
/// allow it: `h2` alone with prior knowledge, `h2` then `http/1.1` by default, `http/1.1`
/// alone when HTTP/2 is off.
///
/// A root that doesn't parse is [`ErrorKind::Config`] naming `root_certificates`.
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
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::new(ErrorKind::Config)
                .with_setting("tls")
                .with_source(e)
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = if http2_supported && config.http2_prior_knowledge {
        vec![b"h2".to_vec()]
    } else if http2_supported && config.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Certificate;

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
