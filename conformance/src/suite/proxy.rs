//! Proxies: plain `http` requests forwarded by an HTTP proxy, `https` through a `CONNECT`
//! tunnel, SOCKS5 tunnels, `NO_PROXY` bypass, and proxy failures in their own stage. Each case
//! runs a [`TestProxy`] next to the server and checks, from its counts, that the request really
//! went through it (or around it).

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::machine::tunnel::TunnelError;
use keel_core::proxy::Proxy;
use keel_core::{find_source, Backend, Error, ErrorKind, Stage};
use serde::Deserialize;

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;
use crate::server::proxy::TestProxy;

const USER: &str = "keel";
const PASSWORD: &str = "s3cret";

/// What `/echo` saw.
#[derive(Debug, Deserialize)]
struct Seen {
    path: String,
    headers: BTreeMap<String, Vec<String>>,
}

fn start_proxy(credentials: bool) -> Result<TestProxy, Failure> {
    TestProxy::start(credentials.then_some((USER, PASSWORD)))
        .map_err(|e| Failure(format!("the test proxy did not start: {e}")))
}

fn proxy_url(url: String) -> Result<Proxy, Failure> {
    Ok(Proxy::all(&url)?)
}

/// `err` is a failure talking to the proxy: [`Stage::Proxy`], unsent, and never showing the
/// password.
fn is_proxy_failure(err: &Error) -> Result<(), Failure> {
    ensure!(
        err.stage() == Some(Stage::Proxy),
        "expected a proxy-stage error, got stage {:?}: {err:?}",
        err.stage()
    );
    ensure!(
        err.is_unsent(),
        "a proxy failure must count as unsent: {err:?}"
    );
    let shown = format!("{err} {err:?}");
    ensure!(
        !shown.contains(PASSWORD),
        "the proxy password shows in {shown}"
    );
    Ok(())
}

/// The proxy's `407`, reachable from the error: the kind, and the [`TunnelError`] source
/// with its status.
fn names_407(err: &Error) -> bool {
    let source = find_source::<TunnelError>(err)
        .and_then(TunnelError::status)
        .is_some_and(|s| s.as_u16() == 407);
    source && matches!(err.kind(), ErrorKind::Status(s) if s.as_u16() == 407)
}

/// An `http` target through an HTTP proxy with credentials: the proxy forwards the request,
/// which it received in absolute form, and the target doesn't see the proxy's credentials.
/// Without credentials, or with wrong ones, the proxy's `407` is a [`Stage::Proxy`] error
/// that carries the status, and isn't retried.
pub async fn proxy_forwards_plain_http_with_credentials<T: Backend>(cx: Cx<T>) -> CaseResult {
    let proxy = start_proxy(true)?;
    let client = cx
        .builder()
        .proxy(proxy_url(proxy.http_url(Some((USER, PASSWORD))))?)
        .build()?;
    let target = cx.server.url("/echo");
    let seen: Seen = client
        .get(&target)
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    ensure!(seen.path == "/echo", "the server saw {}", seen.path);
    ensure!(
        proxy.forwarded() == 1,
        "the proxy forwarded {} requests",
        proxy.forwarded()
    );
    ensure!(
        proxy.targets() == [format!("forward {target}")],
        "the proxy saw {:?}",
        proxy.targets()
    );
    ensure!(
        !seen.headers.contains_key("proxy-authorization"),
        "the target saw the proxy's credentials"
    );

    for credentials in [None, Some((USER, "wrong"))] {
        let client = cx
            .builder()
            .proxy(proxy_url(proxy.http_url(credentials))?)
            .build()?;
        let err = match client.get(&target).send().await {
            Ok(resp) => {
                return Err(Failure(format!(
                    "the proxy let it through: {}",
                    resp.status()
                )))
            }
            Err(e) => e,
        };
        is_proxy_failure(&err)?;
        ensure!(
            names_407(&err),
            "the error doesn't carry the proxy's 407: {err:?}"
        );
    }
    ensure!(
        proxy.refused() == 2,
        "the proxy refused {} requests",
        proxy.refused()
    );
    ensure!(proxy.forwarded() == 1, "a refused request was forwarded");
    Ok(Outcome::Pass)
}

/// An `https` target through an HTTP proxy: a `CONNECT localhost:PORT` tunnel with the
/// credentials, TLS to the target inside it. Without credentials the `CONNECT` is refused,
/// in [`Stage::Proxy`].
pub async fn proxy_tunnels_https_with_connect<T: Backend>(cx: Cx<T>) -> CaseResult {
    let proxy = start_proxy(true)?;
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .proxy(proxy_url(proxy.http_url(Some((USER, PASSWORD))))?)
        .build()?;
    let target = cx.server.tls_url("/echo");
    for _ in 0..2 {
        client
            .get(&target)
            .send()
            .await?
            .error_for_status()
            .await?
            .bytes()
            .await?;
    }
    ensure!(
        proxy.tunnels() == 1,
        "{} tunnels for two requests on one pooled connection",
        proxy.tunnels()
    );
    let authority = target
        .trim_start_matches("https://")
        .trim_end_matches("/echo");
    ensure!(
        proxy.targets() == [format!("connect {authority}")],
        "the proxy saw {:?}",
        proxy.targets()
    );
    ensure!(
        proxy.forwarded() == 0,
        "an https request was forwarded in the clear"
    );

    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .proxy(proxy_url(proxy.http_url(None))?)
        .build()?;
    let err = match client.get(&target).send().await {
        Ok(resp) => {
            return Err(Failure(format!(
                "the proxy let it through: {}",
                resp.status()
            )))
        }
        Err(e) => e,
    };
    is_proxy_failure(&err)?;
    if !names_407(&err) {
        // libcurl keeps the status of a refused CONNECT to itself (isahc doesn't expose
        // CURLINFO_HTTP_CONNECTCODE): the stage is right, the status can't be had, and the
        // refusal is retried like a failed connection.
        ensure!(
            err.kind() == ErrorKind::Connect,
            "expected a connect error, got {err:?}"
        );
        return Ok(Outcome::NotSupported("status of a refused CONNECT"));
    }
    ensure!(
        proxy.refused() == 1,
        "the proxy refused {} CONNECTs: a 407 was retried",
        proxy.refused()
    );
    Ok(Outcome::Pass)
}

/// SOCKS5 tunnels with user/password: `socks5h://` hands the proxy the name (`localhost`),
/// `socks5://` resolves it first and hands over an address; an `https` target gets TLS inside
/// the tunnel. Wrong credentials are a [`Stage::Proxy`] connect error.
pub async fn proxy_socks5_tunnels<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().proxy_socks5 {
        let refused = cx
            .builder()
            .proxy(Proxy::all("socks5h://127.0.0.1:1080")?)
            .build();
        let err = match refused {
            Ok(_) => return Err(Failure("a socks5 proxy was accepted".into())),
            Err(e) => e,
        };
        ensure!(
            err.kind() == ErrorKind::Config && err.setting() == Some("proxy_socks5"),
            "expected a Config error naming proxy_socks5, got {err:?}"
        );
        return Ok(Outcome::NotSupported("proxy_socks5"));
    }
    let proxy = start_proxy(true)?;
    let creds = Some((USER, PASSWORD));
    let plain_target = cx.server.url("/echo").replace("127.0.0.1", "localhost");
    let tls_target = cx.server.tls_url("/echo");
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .proxy(proxy_url(proxy.socks_url("socks5h", creds))?)
        .build()?;
    client
        .get(&plain_target)
        .send()
        .await?
        .error_for_status()
        .await?
        .bytes()
        .await?;
    client
        .get(&tls_target)
        .send()
        .await?
        .error_for_status()
        .await?
        .bytes()
        .await?;
    let targets = proxy.targets();
    ensure!(
        targets.len() == 2
            && targets
                .iter()
                .all(|t| t.starts_with("socks name localhost:")),
        "socks5h must hand over the name: the proxy saw {targets:?}"
    );

    let client = cx
        .builder()
        .proxy(proxy_url(proxy.socks_url("socks5", creds))?)
        .build()?;
    client
        .get(&plain_target)
        .send()
        .await?
        .error_for_status()
        .await?
        .bytes()
        .await?;
    let last = proxy.targets().pop().unwrap_or_default();
    ensure!(
        last.starts_with("socks ip "),
        "socks5 must hand over an address: the proxy saw {last}"
    );
    ensure!(
        proxy.socks_tunnels() == 3,
        "{} socks tunnels",
        proxy.socks_tunnels()
    );

    let client = cx
        .builder()
        .proxy(proxy_url(
            proxy.socks_url("socks5h", Some((USER, "wrong"))),
        )?)
        .build()?;
    let err = match client.get(&plain_target).send().await {
        Ok(resp) => {
            return Err(Failure(format!(
                "the proxy let it through: {}",
                resp.status()
            )))
        }
        Err(e) => e,
    };
    is_proxy_failure(&err)?;
    // No status to go by: a connect error, retried like one.
    ensure!(
        err.kind() == ErrorKind::Connect,
        "expected a connect error, got {err:?}"
    );
    ensure!(
        proxy.refused() >= 1,
        "the proxy refused {} clients",
        proxy.refused()
    );
    ensure!(proxy.socks_tunnels() == 3, "a refused client got a tunnel");
    Ok(Outcome::Pass)
}

/// Hosts `no_proxy` lists are reached directly: the request succeeds and the proxy sees
/// nothing, for an exact IP, a CIDR block and a domain; a host not listed goes through it.
pub async fn no_proxy_bypasses_the_proxy<T: Backend>(cx: Cx<T>) -> CaseResult {
    let proxy = start_proxy(false)?;
    let plain = cx.server.url("/echo");
    let by_name = plain.replace("127.0.0.1", "localhost");
    for list in ["127.0.0.1", "10.0.0.0/8, 127.0.0.0/8", "example.com,*"] {
        let client = cx
            .builder()
            .proxy(proxy_url(proxy.http_url(None))?)
            .no_proxy(list)
            .build()?;
        client
            .get(&plain)
            .send()
            .await?
            .error_for_status()
            .await?
            .bytes()
            .await?;
        ensure!(
            proxy.forwarded() == 0,
            "with no_proxy {list:?} the request went through the proxy"
        );
    }
    let client = cx
        .builder()
        .proxy(proxy_url(proxy.http_url(None))?)
        .no_proxy(".localhost")
        .build()?;
    client
        .get(&by_name)
        .send()
        .await?
        .error_for_status()
        .await?
        .bytes()
        .await?;
    ensure!(
        proxy.forwarded() == 0,
        "`.localhost` didn't match localhost"
    );
    // Not listed: through the proxy.
    client
        .get(&plain)
        .send()
        .await?
        .error_for_status()
        .await?
        .bytes()
        .await?;
    ensure!(
        proxy.forwarded() == 1,
        "a host not listed didn't go through the proxy"
    );
    Ok(Outcome::Pass)
}

/// A proxy nobody listens at: a connect error in [`Stage::Proxy`] (not [`Stage::Connect`]:
/// the target was never tried), unsent; so is a proxy that isn't one (the plain server,
/// answering a `CONNECT` with a 4xx).
pub async fn proxy_refusing_connections_is_a_proxy_error<T: Backend>(cx: Cx<T>) -> CaseResult {
    let refused = cx.server.refused_url("").trim_end_matches('/').to_owned();
    let client = cx
        .builder()
        .connect_timeout(Duration::from_secs(5))
        .proxy(proxy_url(refused)?)
        .build()?;
    let err = match client.get("/echo").send().await {
        Ok(resp) => return Err(Failure(format!("no proxy, yet {}", resp.status()))),
        Err(e) => e,
    };
    ensure!(
        err.kind() == ErrorKind::Connect,
        "expected a connect error, got {err:?}"
    );
    is_proxy_failure(&err)?;

    // The test server as a "proxy": it answers CONNECT with an error status.
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .proxy(proxy_url(cx.server.url(""))?)
        .build()?;
    let err = match client.get(&cx.server.tls_url("/echo")).send().await {
        Ok(resp) => return Err(Failure(format!("not a proxy, yet {}", resp.status()))),
        Err(e) => e,
    };
    is_proxy_failure(&err)?;
    Ok(Outcome::Pass)
}

/// An `https://` proxy: TLS to the proxy (trusting its certificate), then a plain `http`
/// target forwarded over it, and an `https` target through a `CONNECT` tunnel inside it (TLS in
/// TLS). Without trusting the proxy's certificate, a TLS error in [`Stage::Proxy`]. A backend
/// that can't speak TLS to a proxy refuses it by name.
pub async fn proxy_over_tls<T: Backend>(cx: Cx<T>) -> CaseResult {
    let proxy = start_proxy(true)?;
    let url = proxy.https_url(Some((USER, PASSWORD)));
    if !cx.capabilities().proxy_tls {
        let err = match cx.builder().proxy(proxy_url(url)?).build() {
            Ok(_) => {
                return Err(Failure(
                    "an https:// proxy was accepted by a backend that can't speak TLS to it".into(),
                ))
            }
            Err(e) => e,
        };
        ensure!(
            err.kind() == ErrorKind::Config && err.setting() == Some("proxy_tls"),
            "expected a Config error naming proxy_tls, got {err:?}"
        );
        return Ok(Outcome::NotSupported("proxy_tls"));
    }
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .add_root_certificate(keel_core::Certificate::from_pem(proxy.ca_cert_pem()))
        .proxy(proxy_url(url.clone())?)
        .build()?;
    let plain = cx.server.url("/echo");
    let seen: Seen = client
        .get(&plain)
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    ensure!(seen.path == "/echo", "the server saw {}", seen.path);
    client
        .get(&cx.server.tls_url("/echo"))
        .send()
        .await?
        .error_for_status()
        .await?
        .bytes()
        .await?;
    ensure!(
        (proxy.forwarded(), proxy.tunnels()) == (1, 1),
        "forwarded {}, tunnels {}",
        proxy.forwarded(),
        proxy.tunnels()
    );
    ensure!(
        proxy.tls_clients() >= 1,
        "nothing reached the proxy over TLS"
    );

    // The proxy's certificate not trusted: the proxy's TLS fails, in the proxy stage.
    let untrusting = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .proxy(proxy_url(url)?)
        .build()?;
    let err = match untrusting.get(&plain).send().await {
        Ok(resp) => {
            return Err(Failure(format!(
                "an untrusted proxy was used: {} (forwarded {}, tls clients {})",
                resp.status(),
                proxy.forwarded(),
                proxy.tls_clients()
            )))
        }
        Err(e) => e,
    };
    is_proxy_failure(&err)?;
    ensure!(
        err.kind() == ErrorKind::Tls,
        "expected a TLS error, got {err:?}"
    );
    Ok(Outcome::Pass)
}
