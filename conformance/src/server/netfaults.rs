//! Network and TLS faults: a port whose connects are never answered, and TLS listeners that
//! present a chosen certificate (another host's name, an expired one) issued by a test CA the
//! client can trust, so the fault is the only thing wrong.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;

use super::{accept_http, bind_std, wait_shutdown, Serve, TestServer};

/// A test certificate authority, made fresh for a case, and the server certificates it issues
/// (see [`FaultCert`]). Trust [`FaultPki::ca_pem`] in the client: then a listener from
/// [`TestServer::tls_fault_url`] with [`FaultCert::Valid`] is reachable, and any other
/// [`FaultCert`] fails for that fault alone.
pub struct FaultPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// Which server certificate a [`TestServer::tls_fault_url`] listener presents. All are issued
/// by the [`FaultPki`]'s CA.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCert {
    /// For `localhost` and `127.0.0.1`, valid now.
    Valid,
    /// Valid now, for `other-host.invalid` only: a name mismatch for `localhost`.
    OtherName,
    /// For `localhost` and `127.0.0.1`, valid from 2020-01-01 to 2021-01-01 only: expired.
    Expired,
}

impl FaultPki {
    /// A new CA (ECDSA P-256, self-signed).
    ///
    /// ```
    /// use keel_conformance::server::FaultPki;
    ///
    /// let pki = FaultPki::generate()?;
    /// assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// If the key or the certificate can't be made.
    pub fn generate() -> io::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "keel conformance fault CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let cert = params.self_signed(&key).map_err(io::Error::other)?;
        Ok(Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's certificate, PEM: the root to trust.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// A rustls server configuration presenting `cert`, with ALPN `alpn`.
    pub(super) fn server_config(
        &self,
        cert: FaultCert,
        alpn: &[&[u8]],
    ) -> io::Result<Arc<rustls::ServerConfig>> {
        let names = match cert {
            FaultCert::Valid | FaultCert::Expired => {
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
            }
            FaultCert::OtherName => vec!["other-host.invalid".to_owned()],
        };
        let mut params = CertificateParams::new(names).map_err(io::Error::other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "keel conformance fault server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if cert == FaultCert::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(io::Error::other)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(io::Error::other)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl std::fmt::Debug for FaultPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPki").finish_non_exhaustive()
    }
}

impl TestServer {
    /// `https://localhost:{port}{path}` on a new TLS listener that presents `cert` from `pki`
    /// (ALPN `h2` and `http/1.1`) and serves the routes of [`url`](Self::url) once a
    /// handshake succeeds. Its connections count in
    /// [`connections_accepted`](Self::connections_accepted) like those of the main listeners.
    ///
    /// # Errors
    ///
    /// If the certificate can't be made or no port can be bound.
    pub fn tls_fault_url(&self, pki: &FaultPki, cert: FaultCert, path: &str) -> io::Result<String> {
        let config = pki.server_config(cert, &[b"h2", b"http/1.1"])?;
        let listener = bind_std(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = listener.local_addr()?.port();
        let serve = Serve {
            state: Arc::clone(&self.state),
            builder: Arc::new(auto::Builder::new(TokioExecutor::new())),
            shutdown: self.shutdown.subscribe(),
        };
        self.runtime.spawn(async move {
            if let Ok(listener) = TcpListener::from_std(listener) {
                accept_http(listener, Some(TlsAcceptor::from(config)), serve).await;
            }
        });
        Ok(format!("https://localhost:{port}{path}"))
    }

    /// `http://127.0.0.1:{port}{path}` for a port whose connects are never answered: a
    /// listener with a backlog of 0 whose one queue slot is taken by a connection of the
    /// server's own that is never accepted. Linux then drops every further SYN (it does not
    /// refuse them), so a client's connect waits until its connect timeout, as it would for a
    /// host that is down behind a firewall, while nothing leaves 127.0.0.1. Held until
    /// shutdown.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keel_conformance::server::TestServer;
    ///
    /// let server = TestServer::start()?;
    /// let url = server.unanswered_url("/")?;
    /// let addr = url.trim_start_matches("http://").trim_end_matches('/').parse()?;
    /// let err = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// If the socket can't be bound, or the queue slot can't be taken within 5 s.
    pub fn unanswered_url(&self, path: &str) -> io::Result<String> {
        let _context = self.runtime.enter();
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = socket.local_addr()?;
        let listener = socket.listen(0)?;
        let filler = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        let mut shutdown = self.shutdown.subscribe();
        self.runtime.spawn(async move {
            let _held = (listener, filler);
            wait_shutdown(&mut shutdown).await;
        });
        Ok(format!("http://127.0.0.1:{}{path}", addr.port()))
    }
}
