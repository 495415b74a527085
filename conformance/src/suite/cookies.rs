//! Cookie cases: the core's cookie jar driven over each backend, against a real server.
//!
//! The server's `/status/{code}?header=Set-Cookie:…` sets cookies (on a `3xx` with a
//! `Location` too), and `/echo` shows the `Cookie` header a request carried. The other origin
//! is the same listener reached by another host name (`localhost` instead of `127.0.0.1`):
//! cookies are scoped by host, not by port (RFC 6265 section 8.5), so a second server on
//! another port of `127.0.0.1` would rightly get them.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::{Backend, Client};
use serde::Deserialize;

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;

/// What `/echo` saw of a request's headers.
#[derive(Debug, Deserialize)]
struct Seen {
    headers: BTreeMap<String, Vec<String>>,
}

/// Percent-encodes `s` for a query value: everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path on the server that answers `status` with these headers (`Name:Value`).
fn answer(status: u16, headers: &[&str]) -> String {
    let query: Vec<String> = headers
        .iter()
        .map(|h| format!("header={}", encode(h)))
        .collect();
    format!("/status/{status}?{}", query.join("&"))
}

/// `url` on the other host name: `127.0.0.1` becomes `localhost`.
fn other_host(url: &str) -> String {
    url.replacen("127.0.0.1", "localhost", 1)
}

/// The `Cookie` header `/echo` at `url` got (`None`: none), values joined as sent.
async fn cookie_at<T: Backend>(client: &Client<T>, url: &str) -> Result<Option<String>, Failure> {
    let seen: Seen = client
        .get(url)
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    Ok(seen.headers.get("cookie").map(|v| v.join("; ")))
}

/// Sends a request to `path` and checks it succeeded (redirects followed).
async fn visit<T: Backend>(client: &Client<T>, url: &str) -> Result<(), Failure> {
    client.get(url).send().await?.error_for_status().await?;
    Ok(())
}

/// Cookies a server sets come back to its host, on later calls and on redirect hops, and go
/// nowhere else: not to another host, not across a redirect to one.
pub async fn cookies_return_to_their_origin_only<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().cookies(true).build()?;
    let here = |path: &str| cx.server.url(path);
    let there = |path: &str| other_host(&cx.server.url(path));

    visit(
        &client,
        &here(&answer(200, &["Set-Cookie:sid=s1; Path=/; HttpOnly"])),
    )
    .await?;
    let got = cookie_at(&client, &here("/echo")).await?;
    ensure!(
        got.as_deref() == Some("sid=s1"),
        "the same origin got cookie {got:?}"
    );
    let got = cookie_at(&client, &there("/echo")).await?;
    ensure!(got.is_none(), "another host got cookie {got:?}");

    // A 302 that sets a cookie and leaves for the other host: the hop carries none of ours.
    let leave = answer(
        302,
        &[
            &format!("Location:{}", there("/echo")),
            "Set-Cookie:hop=h1; Path=/",
        ],
    );
    let got = cookie_at(&client, &here(&leave)).await?;
    ensure!(
        got.is_none(),
        "a redirect to another host carried cookie {got:?}"
    );

    // The other host's own cookie stays there; a redirect back home carries ours only.
    visit(
        &client,
        &there(&answer(200, &["Set-Cookie:theirs=t1; Path=/"])),
    )
    .await?;
    let back = answer(302, &[&format!("Location:{}", here("/echo"))]);
    let got = cookie_at(&client, &there(&back)).await?;
    ensure!(
        got.as_deref() == Some("sid=s1; hop=h1"),
        "a redirect back home got cookie {got:?}"
    );
    let got = cookie_at(&client, &there("/echo")).await?;
    ensure!(
        got.as_deref() == Some("theirs=t1"),
        "the other host got cookie {got:?}"
    );

    // A client without cookies sends none and keeps none.
    let plain = cx.client()?;
    visit(&plain, &here(&answer(200, &["Set-Cookie:x=1; Path=/"]))).await?;
    let got = cookie_at(&plain, &here("/echo")).await?;
    ensure!(got.is_none(), "a client without cookies sent {got:?}");
    Ok(Outcome::Pass)
}

/// A cookie is not sent once its `Max-Age` has passed, and `Max-Age=0` deletes one.
pub async fn cookies_expire_and_are_deleted<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().cookies(true).build()?;
    let set = answer(
        200,
        &[
            "Set-Cookie:short=1; Max-Age=1; Path=/",
            "Set-Cookie:long=2; Max-Age=600; Path=/",
            "Set-Cookie:session=3; Path=/",
        ],
    );
    visit(&client, &cx.server.url(&set)).await?;
    let got = cookie_at(&client, &cx.server.url("/echo")).await?;
    ensure!(
        got.as_deref() == Some("short=1; long=2; session=3"),
        "right after setting: {got:?}"
    );
    let timer = client.transport().timer().clone();
    timer
        .sleep_until(timer.now() + Duration::from_millis(1100))
        .await;
    let got = cookie_at(&client, &cx.server.url("/echo")).await?;
    ensure!(
        got.as_deref() == Some("long=2; session=3"),
        "after Max-Age=1 passed: {got:?}"
    );
    let delete = answer(200, &["Set-Cookie:long=; Max-Age=0; Path=/"]);
    visit(&client, &cx.server.url(&delete)).await?;
    let got = cookie_at(&client, &cx.server.url("/echo")).await?;
    ensure!(
        got.as_deref() == Some("session=3"),
        "after Max-Age=0: {got:?}"
    );
    Ok(Outcome::Pass)
}

/// A `Secure` cookie goes over https only, and plain http can't set one.
pub async fn secure_cookies_stay_off_plain_http<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().root_certificates {
        return Ok(Outcome::NotSupported("root_certificates"));
    }
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .cookies(true)
        .build()?;
    // Both listeners answer `localhost`: one host, two schemes.
    let secure = |path: &str| cx.server.tls_url(path);
    let plain = |path: &str| other_host(&cx.server.url(path));
    let set = answer(
        200,
        &["Set-Cookie:s=1; Secure; Path=/", "Set-Cookie:p=2; Path=/"],
    );
    visit(&client, &secure(&set)).await?;
    visit(
        &client,
        &plain(&answer(200, &["Set-Cookie:h=3; Secure; Path=/"])),
    )
    .await?;
    let got = cookie_at(&client, &secure("/echo")).await?;
    ensure!(got.as_deref() == Some("s=1; p=2"), "over https: {got:?}");
    let got = cookie_at(&client, &plain("/echo")).await?;
    ensure!(got.as_deref() == Some("p=2"), "over plain http: {got:?}");
    Ok(Outcome::Pass)
}
