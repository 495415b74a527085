//! The TLS settings handed to libcurl: built-in roots and extra roots in one PEM bundle, the
//! minimum TLS version, and certificate verification turned off when the user asked loudly.

use std::sync::LazyLock;

use isahc::tls::{ProtocolVersion, TlsConfig, TrustStore};
use keel_core::{Error, ErrorKind, TlsVersion, TransportConfig};
use rustls_pki_types::CertificateDer;

/// Mozilla's roots (webpki-root-certs), the built-in roots.
static BUILT_IN_ROOTS: LazyLock<TrustStore> = LazyLock::new(|| {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .fold(TrustStore::builder(), |store, cert| {
            store.certificate_from_der(cert)
        })
        .build()
});

/// The TLS settings for `config`: its roots, checked here so a bad one fails the build rather
/// than every handshake.
///
/// The bundle lives in memory (`CURLOPT_CAINFO_BLOB`); no file is written.
pub(crate) fn config(config: &TransportConfig) -> Result<TlsConfig, Error> {
    let store = if config.root_certificates.is_empty() && config.built_in_roots {
        BUILT_IN_ROOTS.clone()
    } else {
        let mut store = TrustStore::builder();
        if config.built_in_roots {
            for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
                store = store.certificate_from_der(cert);
            }
        }
        for cert in &config.root_certificates {
            for der in cert.to_der()? {
                check_root(&der)?;
                store = store.certificate_from_der(der);
            }
        }
        store.build()
    };
    let mut tls = TlsConfig::builder().trust_store(store);
    if let Some(version) = config.min_tls_version {
        tls = tls.min_version(match version {
            TlsVersion::Tls1_3 => ProtocolVersion::Tlsv13,
            // libcurl's rustls backend speaks nothing older: 1.2 is its floor.
            _ => ProtocolVersion::Tlsv12,
        });
    }
    if config.danger_accept_invalid_certs {
        // libcurl's rustls backend has one switch, `CURLOPT_SSL_VERIFYPEER`: off, it takes any
        // certificate for any host; `VERIFYHOST` is turned off too, for consistency.
        tls = tls
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hosts(true);
    }
    Ok(tls.build())
}

/// Refuses a certificate rustls could not use as a trust anchor.
fn check_root(der: &[u8]) -> Result<(), Error> {
    let cert = CertificateDer::from(der);
    webpki::anchor_from_trusted_cert(&cert)
        .map(drop)
        .map_err(|e| {
            Error::new(ErrorKind::Config)
                .with_setting("root_certificates")
                .with_source(format!("not a usable root certificate: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use keel_core::Certificate;

    use super::*;

    #[test]
    fn a_root_that_does_not_parse_fails_the_build() {
        let mut config = TransportConfig::default();
        config.root_certificates = vec![Certificate::from_der(vec![0x30, 0x03, 1, 2, 3])];
        let err = super::config(&config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.setting(), Some("root_certificates"));
    }

    #[test]
    fn built_in_roots_are_real_certificates() {
        for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().take(5) {
            check_root(der).unwrap();
        }
        let mut config = TransportConfig::default();
        config.root_certificates = vec![Certificate::from_der(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].to_vec(),
        )];
        config.built_in_roots = false;
        assert!(super::config(&config).is_ok());
    }
}
