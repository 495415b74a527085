//! DNS control: static overrides, a custom resolver with the bounded cache, local address
//! binding. The host names are under `.invalid` (RFC 6761): no resolver may answer for them, so
//! a request reaches the server only through keel's DNS settings.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_core::dns::{Resolve, Resolving};
use keel_core::{Backend, ErrorKind, Stage};
use serde::Deserialize;

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;

/// What `/echo` saw of a request's headers.
#[derive(Debug, Deserialize)]
struct Seen {
    headers: BTreeMap<String, Vec<String>>,
}

/// The server's plain port.
fn port<T>(cx: &Cx<T>) -> Result<u16, Failure> {
    let url = cx.server.url("");
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Failure(format!("no port in {url}")))?;
    Ok(port)
}

/// `resolve("api.invalid", 127.0.0.1:PORT)` sends the request to the server, with
/// `Host: api.invalid:PORT`; without the override the same request fails in the DNS stage.
pub async fn resolve_override_reaches_the_server<T: Backend>(cx: Cx<T>) -> CaseResult {
    let port = port(&cx)?;
    let url = format!("http://api.invalid:{port}/echo");
    let client = cx
        .builder()
        .resolve("api.invalid", SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .build()?;
    let seen: Seen = client
        .get(&url)
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    let host = seen.headers.get("host").map(|v| v.join(","));
    let expected = format!("api.invalid:{port}");
    ensure!(
        host.as_deref() == Some(expected.as_str()),
        "the server saw Host {host:?}, not {expected}"
    );

    // Without the override: a DNS-stage error (a resolver that takes its time may run into the
    // connect timeout instead, still in the DNS stage).
    let plain = cx
        .builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let err = match plain.get(&url).send().await {
        Ok(resp) => return Err(Failure(format!("api.invalid resolved: {}", resp.status()))),
        Err(e) => e,
    };
    ensure!(
        matches!(err.kind(), ErrorKind::Connect | ErrorKind::Timeout(_)),
        "expected a connect error, got {err:?}"
    );
    ensure!(
        err.stage() == Some(Stage::Dns),
        "stage {:?} ({err:?})",
        err.stage()
    );
    ensure!(err.is_unsent(), "a failed lookup must count as unsent");
    Ok(Outcome::Pass)
}

/// Answers every name with 127.0.0.1, and counts the lookups.
struct Loopback(Arc<AtomicUsize>);

impl Resolve for Loopback {
    fn resolve(&self, _host: &str) -> Resolving {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(vec![IpAddr::from(Ipv4Addr::LOCALHOST)]) })
    }
}

/// A custom resolver sends `api.invalid` to the server, and with the DNS cache on, two
/// connections cost one lookup. A backend that can't call a resolver of keel's (libcurl
/// resolves by itself) fails the build naming `dns_resolver`, and `dns_cache` likewise.
pub async fn custom_resolver_and_cache_resolve_once<T: Backend>(cx: Cx<T>) -> CaseResult {
    let lookups = Arc::new(AtomicUsize::new(0));
    if !cx.capabilities().dns_resolver || !cx.capabilities().dns_cache {
        let refused = cx.builder().dns_resolver(Loopback(lookups.clone())).build();
        let err = match refused {
            Ok(_) => return Err(Failure("dns_resolver was accepted".into())),
            Err(e) => e,
        };
        ensure!(
            err.kind() == ErrorKind::Config && err.setting() == Some("dns_resolver"),
            "expected a Config error naming dns_resolver, got {err:?}"
        );
        let refused = cx.builder().dns_cache(Duration::from_secs(60), 16).build();
        let err = match refused {
            Ok(_) => return Err(Failure("dns_cache was accepted".into())),
            Err(e) => e,
        };
        ensure!(
            err.kind() == ErrorKind::Config && err.setting() == Some("dns_cache"),
            "expected a Config error naming dns_cache, got {err:?}"
        );
        return Ok(Outcome::NotSupported("dns_resolver"));
    }
    let port = port(&cx)?;
    let url = format!("http://api.invalid:{port}/echo");
    let mut builder = cx
        .builder()
        .dns_resolver(Loopback(lookups.clone()))
        .dns_cache(Duration::from_secs(60), 16);
    if cx.capabilities().pool_max_idle_per_host {
        // Every request on a new connection, each needing an address.
        builder = builder.pool_max_idle_per_host(0);
    }
    let client = builder.build()?;
    for _ in 0..2 {
        client.get(&url).send().await?.error_for_status().await?;
    }
    let n = lookups.load(Ordering::SeqCst);
    ensure!(n == 1, "{n} lookups for two requests with the cache on");
    Ok(Outcome::Pass)
}

/// `local_address(127.0.0.1)` binds new connections and still reaches the server; an IPv6
/// local address can't reach an IPv4 server, and the connection fails.
pub async fn local_address_binds_new_connections<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().local_address {
        let err = match cx
            .builder()
            .local_address(Ipv4Addr::LOCALHOST.into())
            .build()
        {
            Ok(_) => return Err(Failure("local_address was accepted".into())),
            Err(e) => e,
        };
        ensure!(
            err.setting() == Some("local_address"),
            "expected a Config error naming local_address, got {err:?}"
        );
        return Ok(Outcome::NotSupported("local_address"));
    }
    let client = cx
        .builder()
        .local_address(Ipv4Addr::LOCALHOST.into())
        .build()?;
    client.get("/echo").send().await?.error_for_status().await?;

    let v6 = cx
        .builder()
        .local_address("::1".parse().map_err(Failure::from)?)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    match v6.get("/echo").send().await {
        Ok(resp) => Err(Failure(format!(
            "an IPv4 server was reached from ::1: {}",
            resp.status()
        ))),
        Err(e) if e.is_unsent() => Ok(Outcome::Pass),
        Err(e) => Err(Failure(format!("expected a connect error, got {e:?}"))),
    }
}
