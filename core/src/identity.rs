//! The client's own TLS settings: a client certificate ([`Identity`], for mutual TLS) and the
//! oldest protocol version it accepts ([`TlsVersion`]).

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{BoxError, Error, ErrorKind};

/// A client certificate chain and its private key, presented to servers that ask for one
/// (mutual TLS). Set it with [`ClientBuilder::identity`](crate::ClientBuilder::identity).
///
/// The certificates and the key are parsed when the `Identity` is made, so a bad one fails
/// right there with [`ErrorKind::Config`] naming `identity`. The key is kept in memory only,
/// is never written to a file, and never appears in `Debug` output.
///
/// Backends that can't present a client certificate fail
/// [`build`](crate::ClientBuilder::build) naming `identity` (keel-isahc: libcurl's rustls
/// backend reads client keys from files only).
///
/// ```
/// # fn demo(chain_pem: &[u8], key_pem: &[u8]) -> Result<(), keel_core::Error> {
/// use keel_core::Identity;
///
/// let identity = Identity::from_pem(chain_pem, key_pem)?;
/// assert!(!format!("{identity:?}").contains("PRIVATE"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Identity {
    /// The chain in DER, the client's own certificate first.
    chain: Arc<[Vec<u8>]>,
    key: Arc<Key>,
}

/// A private key in DER.
struct Key {
    format: KeyFormat,
    der: Vec<u8>,
}

#[derive(Clone, Copy)]
enum KeyFormat {
    Pkcs8,
    Pkcs1,
    Sec1,
}

impl KeyFormat {
    fn name(self) -> &'static str {
        match self {
            KeyFormat::Pkcs8 => "PKCS#8",
            KeyFormat::Pkcs1 => "PKCS#1 RSA",
            KeyFormat::Sec1 => "SEC1 EC",
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Best effort: the key's bytes don't outlive it in this allocation.
        self.der.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.der);
    }
}

impl Identity {
    /// A chain of one or more `CERTIFICATE` blocks (the client's own certificate first, then
    /// any intermediates) and a private key in PEM: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY`
    /// (PKCS#1) or `EC PRIVATE KEY` (SEC1). Encrypted PEM keys are not supported: decrypt
    /// them first, or use `from_pkcs12` (feature `pkcs12`).
    ///
    /// Text with no certificate or no key, or a block that doesn't decode, is
    /// [`ErrorKind::Config`] naming `identity`.
    pub fn from_pem(
        cert_chain_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_ref())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.into()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_ref())
            .map_err(|e| invalid(format!("no usable private key in the PEM text: {e}").into()))?;
        let key = match key {
            PrivateKeyDer::Pkcs8(k) => (KeyFormat::Pkcs8, k.secret_pkcs8_der().to_vec()),
            PrivateKeyDer::Pkcs1(k) => (KeyFormat::Pkcs1, k.secret_pkcs1_der().to_vec()),
            PrivateKeyDer::Sec1(k) => (KeyFormat::Sec1, k.secret_sec1_der().to_vec()),
            _ => return Err(invalid("an unsupported private key format".into())),
        };
        Self::new(chain, key.0, key.1)
    }

    /// A chain of DER certificates (the client's own first) and a PKCS#8 private key in DER.
    ///
    /// An empty chain or key is [`ErrorKind::Config`] naming `identity`.
    ///
    /// ```
    /// let err = keel_core::Identity::from_pkcs8_der(Vec::new(), vec![1, 2, 3]).unwrap_err();
    /// assert_eq!(err.setting(), Some("identity"));
    /// ```
    pub fn from_pkcs8_der(cert_chain_der: Vec<Vec<u8>>, key_der: Vec<u8>) -> Result<Self, Error> {
        Self::new(cert_chain_der, KeyFormat::Pkcs8, key_der)
    }

    /// A PKCS#12 (`.p12`, `.pfx`) archive in DER and its password: the first private key in
    /// it and the certificate chain that goes with it. Encryption with PBES2 (AES, the
    /// default of current tools) and the legacy 3DES/RC2 schemes are supported. Needs the
    /// `pkcs12` feature (a pure-Rust parser, p12-keystore).
    ///
    /// A wrong password, an archive that doesn't parse, or one without a key and its
    /// certificate is [`ErrorKind::Config`] naming `identity`.
    ///
    /// ```
    /// let err = keel_core::Identity::from_pkcs12(b"not a p12", "secret").unwrap_err();
    /// assert_eq!(err.setting(), Some("identity"));
    /// ```
    #[cfg(feature = "pkcs12")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pkcs12")))]
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, Error> {
        use p12_keystore::{KeyStore, Pkcs12ImportPolicy};

        let store = KeyStore::from_pkcs12(der, password, Pkcs12ImportPolicy::Strict)
            .map_err(|e| invalid(format!("the PKCS#12 archive can't be read: {e}").into()))?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| invalid("no private key with its certificate in the archive".into()))?;
        let certs = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
        Self::new(certs, KeyFormat::Pkcs8, chain.key().as_der().to_vec())
    }

    fn new(chain: Vec<Vec<u8>>, format: KeyFormat, der: Vec<u8>) -> Result<Self, Error> {
        let key = Key { format, der };
        if chain.is_empty() || chain.iter().any(Vec::is_empty) {
            return Err(invalid("no client certificate".into()));
        }
        if key.der.is_empty() {
            return Err(invalid("an empty private key".into()));
        }
        Ok(Self {
            chain: chain.into(),
            key: Arc::new(key),
        })
    }

    /// The certificate chain in DER, the client's own certificate first.
    pub fn cert_chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The chain and the key as rustls takes them.
    #[cfg(feature = "rustls")]
    pub(crate) fn to_rustls(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use rustls_pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

        let chain = self
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let der = self.key.der.clone();
        let key = match self.key.format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
        };
        (chain, key)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field(
                "key",
                &format_args!("<{} key, redacted>", self.key.format.name()),
            )
            .finish()
    }
}

/// A TLS protocol version, for [`ClientBuilder::min_tls_version`](crate::ClientBuilder::min_tls_version).
///
/// Only TLS 1.2 and 1.3: every keel backend speaks TLS through rustls, which has no older
/// version, so TLS 1.2 is always the floor and setting it changes nothing.
///
/// ```
/// use keel_core::TlsVersion;
///
/// assert!(TlsVersion::Tls1_2 < TlsVersion::Tls1_3);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls1_2,
    /// TLS 1.3 (RFC 8446).
    Tls1_3,
}

fn invalid(why: BoxError) -> Error {
    Error::new(ErrorKind::Config)
        .with_setting("identity")
        .with_source(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nBAUG\n-----END PRIVATE KEY-----\n";

    #[test]
    fn pem_chain_and_key_are_read_and_the_key_is_not_printed() {
        let id = Identity::from_pem(CERT, KEY).unwrap();
        assert_eq!(id.cert_chain_der(), [vec![1, 2, 3]]);
        let shown = format!("{id:?}");
        assert!(shown.contains("<PKCS#8 key, redacted>"), "{shown}");
        assert!(
            !shown.contains("4, 5, 6") && !shown.contains("BAUG"),
            "{shown}"
        );
    }

    #[test]
    fn bad_identities_name_the_setting() {
        for err in [
            Identity::from_pem("", KEY).unwrap_err(),
            Identity::from_pem(CERT, "").unwrap_err(),
            Identity::from_pem(CERT, CERT).unwrap_err(),
            Identity::from_pem(
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                KEY,
            )
            .unwrap_err(),
            Identity::from_pkcs8_der(vec![vec![1]], Vec::new()).unwrap_err(),
            Identity::from_pkcs8_der(vec![Vec::new()], vec![1]).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Config);
            assert_eq!(err.setting(), Some("identity"), "{err:?}");
        }
    }

    #[test]
    fn rsa_and_ec_keys_keep_their_format() {
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nBAUG\n-----END RSA PRIVATE KEY-----\n";
        let ec = "-----BEGIN EC PRIVATE KEY-----\nBAUG\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            Identity::from_pem(CERT, rsa).unwrap().key.format,
            KeyFormat::Pkcs1
        ));
        assert!(matches!(
            Identity::from_pem(CERT, ec).unwrap().key.format,
            KeyFormat::Sec1
        ));
    }
}
