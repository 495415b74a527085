//! Connection-level facts on responses: the remote address, the negotiated version, and
//! whether the connection was reused.

use std::net::{Ipv4Addr, SocketAddr};

use http::Version;
use std::time::Duration;

use keel_core::{Backend, ConnectionInfo, Origin};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;

/// Two sequential requests on one client built with `connection_info(true)`: the first opens
/// the connection, the second reuses it; both report the server's `127.0.0.1:port` and
/// HTTP/1.1. Over TLS, where the backend negotiates HTTP/2, the version says so. Without the
/// setting (the default) nothing is reported.
pub async fn connection_facts_on_responses<T: Backend>(cx: Cx<T>) -> CaseResult {
    let caps = cx.capabilities();
    let url: http::Uri = cx.server.url("/status/200?body=hello").parse()?;
    let port = url.port_u16().ok_or("the server URL has a port")?;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let off = cx.client()?.get(&url.to_string()).send().await?;
    ensure!(
        off.connection() == ConnectionInfo::new(),
        "facts {:?} from a client that didn't ask for them",
        off.connection()
    );
    let _ = off.bytes().await?;
    if !caps.connection_addrs && !caps.connection_reused {
        return Ok(Outcome::NotSupported("connection_addrs, connection_reused"));
    }

    let client = cx.builder().connection_info(true).build()?;
    // Where the second request may find the first's connection not yet back in the pool, its
    // reuse and the connection count are not checked, and the case says so.
    let racy = !caps.pool_return_on_body_end && super::tasks_run_on_other_threads();

    for (i, reused) in [false, true].into_iter().enumerate() {
        let resp = client.get(&url.to_string()).send().await?;
        let conn = resp.connection();
        ensure!(
            resp.version() == Version::HTTP_11,
            "request {i}: version {:?}",
            resp.version()
        );
        if caps.connection_addrs {
            ensure!(
                conn.remote_addr == Some(server),
                "request {i}: remote {:?}, server at {server}",
                conn.remote_addr
            );
            ensure!(
                conn.local_addr
                    .is_some_and(|a| a.ip() == server.ip() && a.port() != 0),
                "request {i}: local {:?}",
                conn.local_addr
            );
        } else {
            ensure!(
                conn.remote_addr.is_none() && conn.local_addr.is_none(),
                "request {i}: addresses {conn:?} from a backend that says it has none"
            );
        }
        if caps.connection_reused && racy && reused {
            ensure!(conn.reused.is_some(), "request {i}: reuse not reported");
        } else if caps.connection_reused {
            ensure!(
                conn.reused == Some(reused),
                "request {i}: reused {:?}, expected {reused}",
                conn.reused
            );
        } else {
            ensure!(
                conn.reused.is_none(),
                "request {i}: reused {:?} from a backend that says it can't know",
                conn.reused
            );
        }
        let body = resp.text().await?;
        ensure!(body == "hello", "request {i} got {body:?}");
    }
    ensure!(
        racy || cx.server.connections_accepted() == 2,
        "two sequential requests opened {} connections, and the first client one",
        cx.server.connections_accepted() - 1
    );

    if caps.http2 && caps.root_certificates {
        let tls = cx
            .builder()
            .connection_info(true)
            .add_root_certificate(cx.server_root())
            .build()?;
        let resp = tls.get(&cx.server.tls_url("/echo")).send().await?;
        let conn = resp.connection();
        ensure!(
            resp.version() == Version::HTTP_2,
            "over TLS: version {:?}",
            resp.version()
        );
        if caps.connection_addrs {
            ensure!(
                conn.remote_addr.is_some_and(|a| a.ip().is_loopback()),
                "over TLS: remote {:?}",
                conn.remote_addr
            );
        }
        if caps.connection_reused {
            ensure!(
                conn.reused == Some(false),
                "over TLS: reused {:?} on a new client",
                conn.reused
            );
        }
        let _ = resp.bytes().await?;
    }

    if !caps.connection_reused {
        return Ok(Outcome::NotSupported("connection_reused"));
    }
    if !caps.connection_addrs {
        return Ok(Outcome::NotSupported("connection_addrs"));
    }
    if racy {
        return Ok(Outcome::NotSupported("pool_return_on_body_end"));
    }
    Ok(Outcome::Pass)
}

/// `pool_stats` counts a client's connections per origin: three responses held at once keep
/// three connections open and in use; read to their end, the three are idle; one dropped
/// half-read is closed and no longer counted.
pub async fn pool_stats_count_connections<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().pool_stats {
        let client = cx.client()?;
        ensure!(
            client.pool_stats().is_none(),
            "pool stats from a backend that says it keeps none"
        );
        return Ok(Outcome::NotSupported("pool_stats"));
    }
    let client = cx.client()?;
    let origin = Origin::from_uri(&cx.server.url("/").parse()?)?;
    let stats = || -> Result<(usize, Option<usize>, Option<usize>), Failure> {
        let all = client.pool_stats().ok_or("no pool stats")?;
        ensure!(
            all.iter().all(|s| s.origin == origin),
            "stats for another origin: {all:?}"
        );
        Ok(all
            .first()
            .map_or((0, Some(0), Some(0)), |s| (s.open, s.idle, s.in_use)))
    };
    let (open, _, _) = stats()?;
    ensure!(open == 0, "{open} connections open before any request");

    // Three responses held with their bodies unread: three connections, all in use.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(client.get("/bytes/100000").send().await?);
    }
    let (open, idle, in_use) = stats()?;
    ensure!(
        open == 3,
        "{open} connections open under three held responses"
    );
    ensure!(
        idle.is_none_or(|i| i == 0) && in_use.is_none_or(|u| u == 3),
        "idle {idle:?}, in use {in_use:?} under three held responses"
    );
    ensure!(
        cx.server.connections_accepted() == 3,
        "the server saw {} connections",
        cx.server.connections_accepted()
    );

    // Two read to their end go back to the pool; one dropped half-read is closed.
    let mut held = held.into_iter();
    let mut half = held.next().ok_or("three responses")?;
    let first = half.chunk().await?.ok_or("no first chunk")?;
    ensure!(!first.is_empty(), "an empty first chunk");
    drop(half);
    for resp in held {
        let body = resp.bytes().await?;
        ensure!(body.len() == 100_000, "a body of {} bytes", body.len());
    }
    // A backend may close a dropped connection on its own task: give it a moment.
    let timer = client.transport().timer().clone();
    let give_up = timer.now() + Duration::from_secs(5);
    loop {
        let (open, idle, in_use) = stats()?;
        let settled = open == 2 && idle.is_none_or(|i| i == 2) && in_use.is_none_or(|u| u == 0);
        if settled {
            break;
        }
        if timer.now() >= give_up {
            return Err(Failure(format!(
                "after one dropped and two read: open {open}, idle {idle:?}, in use {in_use:?}"
            )));
        }
        timer
            .sleep_until(timer.now() + Duration::from_millis(10))
            .await;
    }

    // The next request takes an idle connection.
    let body = client
        .get("/status/200?body=ok")
        .send()
        .await?
        .text()
        .await?;
    ensure!(body == "ok", "got {body:?}");
    ensure!(
        cx.server.connections_accepted() == 3,
        "a request with two idle connections opened a new one ({} in all)",
        cx.server.connections_accepted()
    );
    Ok(Outcome::Pass)
}
