//! Connection-level facts on responses: the remote address, the negotiated version, and
//! whether the connection was reused.

use std::net::{Ipv4Addr, SocketAddr};

use http::Version;
use keel_core::Backend;

use super::{CaseResult, Cx, Outcome};
use crate::ensure;

/// Two sequential requests on one client: the first opens the connection, the second reuses
/// it; both report the server's `127.0.0.1:port` and HTTP/1.1. Over TLS, where the backend
/// negotiates HTTP/2, the version says so.
pub async fn connection_facts_on_responses<T: Backend>(cx: Cx<T>) -> CaseResult {
    let caps = cx.capabilities();
    if !caps.connection_addrs && !caps.connection_reused {
        return Ok(Outcome::NotSupported("connection_addrs, connection_reused"));
    }
    let url: http::Uri = cx.server.url("/status/200?body=hello").parse()?;
    let port = url.port_u16().ok_or("the server URL has a port")?;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let client = cx.client()?;

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
        if caps.connection_reused {
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
        cx.server.connections_accepted() == 1,
        "two sequential requests opened {} connections",
        cx.server.connections_accepted()
    );

    if caps.http2 && caps.root_certificates {
        let tls = cx
            .builder()
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
    Ok(Outcome::Pass)
}
