//! TLS settings: client certificates (mutual TLS) from PEM and PKCS#12, the minimum TLS
//! version, and the one loud way to turn certificate verification off.

use http::StatusCode;
use keel_core::{Backend, Client, Error, ErrorKind, Identity, Stage, TlsVersion};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;

/// Expects `result` to be a TLS failure of the handshake: [`ErrorKind::Tls`] in [`Stage::Tls`].
fn expect_tls_error<T>(result: Result<T, Error>, what: &str) -> Result<Error, Failure> {
    let err = match result {
        Ok(_) => return Err(Failure(format!("{what}: the request succeeded"))),
        Err(e) => e,
    };
    ensure!(
        err.kind() == ErrorKind::Tls && err.stage() == Some(Stage::Tls),
        "{what}: expected a TLS error in the TLS stage, got {:?} in {:?} ({err:?})",
        err.kind(),
        err.stage()
    );
    ensure!(
        !err.is_retryable(),
        "{what}: a refused handshake is not worth retrying"
    );
    Ok(err)
}

/// The body the mTLS listener answers with, through `client`.
async fn mtls_answer<T: Backend>(cx: &Cx<T>, client: &Client<T>) -> Result<String, Failure> {
    let resp = client.get(&cx.server.mtls_url("/whoami")).send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    Ok(resp.text().await?)
}

/// Checks that a backend without client certificates refuses `identity` by name.
fn refuses_identity<T: Backend>(cx: &Cx<T>, identity: Identity) -> CaseResult {
    match cx.builder().identity(identity).build() {
        Ok(_) => Err(Failure(
            "identity was accepted by a backend that can't present it".into(),
        )),
        Err(e) => {
            ensure!(
                e.kind() == ErrorKind::Config && e.setting() == Some("identity"),
                "expected a Config error naming identity, got {e:?}"
            );
            Ok(Outcome::NotSupported("identity"))
        }
    }
}

/// A server that requires a client certificate refuses a client without one (or with one its
/// CA didn't issue) with a TLS error in the TLS stage, and serves a client with the right
/// certificate and key from PEM: the server saw the certificate (its common name comes back).
pub async fn mtls_accepts_the_right_certificate_only<T: Backend>(cx: Cx<T>) -> CaseResult {
    let trusting = || cx.builder().add_root_certificate(cx.server_root());
    let anonymous = trusting().build()?;
    let refused = anonymous.get(&cx.server.mtls_url("/whoami")).send().await;
    let identity = Identity::from_pem(cx.server.client_cert_pem(), cx.server.client_key_pem())?;
    if !cx.capabilities().identity {
        // Still refused, with a typed error (libcurl reports the server's alert as a failed
        // read, not as a handshake failure).
        ensure!(
            refused.is_err(),
            "the mTLS server answered a client without a certificate"
        );
        return refuses_identity(&cx, identity);
    }
    expect_tls_error(refused, "without a client certificate")?;
    let (cert, key) = cx.server.stranger_cert_and_key_pem();
    let stranger = trusting()
        .identity(Identity::from_pem(cert, key)?)
        .build()?;
    expect_tls_error(
        stranger.get(&cx.server.mtls_url("/whoami")).send().await,
        "with a certificate the client CA didn't issue",
    )?;

    let client = trusting().identity(identity).build()?;
    let expected = format!("CN={}", cx.server.client_cn());
    for _ in 0..2 {
        let body = mtls_answer(&cx, &client).await?;
        ensure!(
            body == expected,
            "the server saw {body:?}, not {expected:?}"
        );
    }
    Ok(Outcome::Pass)
}

/// The same client certificate from a PKCS#12 archive (AES-256, as current tools write them)
/// is accepted; a wrong password fails when the identity is made, naming `identity`.
pub async fn mtls_identity_from_pkcs12<T: Backend>(cx: Cx<T>) -> CaseResult {
    let (der, password) = cx.server.client_pkcs12();
    let err = match Identity::from_pkcs12(&der, "not the password") {
        Ok(_) => return Err(Failure("a wrong PKCS#12 password was accepted".into())),
        Err(e) => e,
    };
    ensure!(
        err.kind() == ErrorKind::Config && err.setting() == Some("identity"),
        "a wrong password: {err:?}"
    );
    let identity = Identity::from_pkcs12(&der, password)?;
    if !cx.capabilities().identity {
        return refuses_identity(&cx, identity);
    }
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .identity(identity)
        .build()?;
    let body = mtls_answer(&cx, &client).await?;
    let expected = format!("CN={}", cx.server.client_cn());
    ensure!(
        body == expected,
        "the server saw {body:?}, not {expected:?}"
    );
    Ok(Outcome::Pass)
}

/// `min_tls_version(Tls1_3)` refuses a TLS 1.2-only server with a TLS error in the TLS stage,
/// and still reaches a server that speaks 1.3; `min_tls_version(Tls1_2)` reaches both.
pub async fn min_tls_version_refuses_older_servers<T: Backend>(cx: Cx<T>) -> CaseResult {
    let with_min = |v| {
        cx.builder()
            .add_root_certificate(cx.server_root())
            .min_tls_version(v)
            .build()
    };
    if !cx.capabilities().min_tls_version {
        return match with_min(TlsVersion::Tls1_3) {
            Ok(_) => Err(Failure("min_tls_version was accepted".into())),
            Err(e) if e.setting() == Some("min_tls_version") => {
                Ok(Outcome::NotSupported("min_tls_version"))
            }
            Err(e) => Err(Failure(format!(
                "expected a Config error naming min_tls_version, got {e:?}"
            ))),
        };
    }
    let tls13 = with_min(TlsVersion::Tls1_3)?;
    expect_tls_error(
        tls13.get(&cx.server.tls12_url("/status/200")).send().await,
        "TLS 1.3 required of a TLS 1.2-only server",
    )?;
    ensure!(
        cx.server.requests_to("/status/200") == 0,
        "a request reached the TLS 1.2 server"
    );
    let resp = tls13.get(&cx.server.tls_url("/status/200")).send().await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "TLS 1.3 server: status {}",
        resp.status()
    );

    let tls12 = with_min(TlsVersion::Tls1_2)?;
    for url in [
        cx.server.tls12_url("/status/200"),
        cx.server.tls_url("/status/200"),
    ] {
        let resp = tls12.get(&url).send().await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "{url} with TLS 1.2 allowed: status {}",
            resp.status()
        );
    }
    Ok(Outcome::Pass)
}

/// A server certificate the client doesn't trust fails by default; it is accepted only with
/// `danger_accept_invalid_certs(true)`, and `danger_accept_invalid_certs(false)` is the default.
pub async fn only_the_danger_option_skips_verification<T: Backend>(cx: Cx<T>) -> CaseResult {
    let url = cx.server.tls_url("/status/200");
    let strict = [
        cx.builder().build()?,
        cx.builder().danger_accept_invalid_certs(false).build()?,
    ];
    for client in &strict {
        expect_tls_error(client.get(&url).send().await, "an untrusted certificate")?;
    }
    if !cx.capabilities().danger_accept_invalid_certs {
        return match cx.builder().danger_accept_invalid_certs(true).build() {
            Ok(_) => Err(Failure("danger_accept_invalid_certs was accepted".into())),
            Err(e) if e.setting() == Some("danger_accept_invalid_certs") => {
                Ok(Outcome::NotSupported("danger_accept_invalid_certs"))
            }
            Err(e) => Err(Failure(format!(
                "expected a Config error naming the option, got {e:?}"
            ))),
        };
    }
    ensure!(
        cx.server.requests_to("/status/200") == 0,
        "a strict client reached the server"
    );
    let reckless = cx.builder().danger_accept_invalid_certs(true).build()?;
    let resp = reckless.get(&url).send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    // Over TLS 1.2 too (its handshake signatures are checked differently).
    let resp = reckless
        .get(&cx.server.tls12_url("/status/200"))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "TLS 1.2: status {}",
        resp.status()
    );
    Ok(Outcome::Pass)
}
