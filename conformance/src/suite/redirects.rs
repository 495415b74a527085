//! Redirect cases: the core's redirect machine driven over each backend, against real servers.
//!
//! The server's `/redirect/{status}?to=<target>` answers with that status and
//! `Location: <target>`; `/chain/{n}` takes `n` hops to reach a 200; `/loop/a` and `/loop/b`
//! point at each other. What a redirected request carried is read back from `/echo`, on this
//! case's server or on a second [`TestServer`] (another port, so another origin).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Method, StatusCode};
use keel_core::{Backend, Body, Client, ErrorKind, RedirectPolicy, RedirectRefusal, Response};
use serde::Deserialize;

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;
use crate::server::TestServer;

/// What `/echo` saw of a request.
#[derive(Debug, Deserialize)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Percent-encodes `s` for a query value: everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path of a `status` redirect to `target` (relative or absolute).
fn redirect(status: u16, target: &str) -> String {
    format!("/redirect/{status}?to={}", encode(target))
}

/// The error of a call that must fail with this redirect refusal.
fn refused<T>(
    result: Result<T, keel_core::Error>,
    refusal: RedirectRefusal,
) -> Result<keel_core::Error, Failure> {
    match result {
        Ok(_) => Err(Failure(format!("expected {refusal:?}, got a response"))),
        Err(e) if e.kind() == ErrorKind::Redirect(refusal) => Ok(e),
        Err(e) => Err(Failure(format!("expected {refusal:?}, got {e:?}"))),
    }
}

/// Checks that `resp` answered a call that followed exactly one `status` hop from `from` to
/// `to` with `method`, and returns what `/echo` saw.
async fn one_hop(
    resp: Response,
    status: u16,
    from: &str,
    to: &str,
    method: &Method,
) -> Result<Seen, Failure> {
    ensure!(
        resp.status() == StatusCode::OK,
        "{status}: the redirected request got {}",
        resp.status()
    );
    ensure!(
        *resp.url() == to,
        "{status}: the response's url is {}, not {to}",
        resp.url()
    );
    let hops = resp.redirects();
    ensure!(hops.len() == 1, "{status}: {} hops: {hops:?}", hops.len());
    let hop = &hops[0];
    ensure!(
        hop.status().as_u16() == status
            && *hop.from() == from
            && *hop.to() == to
            && hop.method() == method,
        "{status}: the hop is {hop:?}, expected {method} {from} -> {to}"
    );
    ensure!(
        resp.attempts() == 1,
        "{status}: {} attempts (a hop is not an attempt)",
        resp.attempts()
    );
    Ok(resp.json().await?)
}

/// A GET is followed to `/echo`; a POST with a JSON body arrives as a GET without a body or
/// body headers (301, 302, 303), or as the same POST with the same body (307, 308).
async fn follows<T: Backend>(cx: Cx<T>, status: u16) -> CaseResult {
    let client = cx.client()?;

    // GET, absolute Location.
    let target = cx.server.url("/echo?landed=1");
    let from = cx.server.url(&redirect(status, &target));
    let resp = client.get(&from).send().await?;
    let seen = one_hop(resp, status, &from, &target, &Method::GET).await?;
    ensure!(
        seen.method == "GET" && seen.path == "/echo",
        "{status}: a GET arrived as {} {}",
        seen.method,
        seen.path
    );

    // POST with a JSON body, relative Location.
    let payload = serde_json::json!({"order": 42, "items": ["a", "b"]});
    let sent = serde_json::to_string(&payload)?;
    let path = redirect(status, "/echo");
    let resp = client.post(&path).json(&payload).send().await?;
    let keeps = matches!(status, 307 | 308);
    let method = if keeps { Method::POST } else { Method::GET };
    let seen = one_hop(
        resp,
        status,
        &cx.server.url(&path),
        &cx.server.url("/echo"),
        &method,
    )
    .await?;
    ensure!(
        seen.method == method.as_str(),
        "{status}: a POST arrived as {}",
        seen.method
    );
    if keeps {
        ensure!(
            seen.body == sent,
            "{status}: the body arrived as {:?}",
            seen.body
        );
        ensure!(
            seen.header("content-type") == ["application/json"],
            "{status}: content-type {:?}",
            seen.header("content-type")
        );
        let length = sent.len().to_string();
        ensure!(
            seen.header("content-length") == [length.as_str()],
            "{status}: content-length {:?} for a {length}-byte body",
            seen.header("content-length")
        );
    } else {
        ensure!(
            seen.body.is_empty(),
            "{status}: the GET carried the body {:?}",
            seen.body
        );
        ensure!(
            seen.header("content-type").is_empty(),
            "{status}: the GET kept content-type {:?}",
            seen.header("content-type")
        );
        let length = seen.header("content-length");
        ensure!(
            length.is_empty() || length == ["0"],
            "{status}: the GET kept content-length {length:?}"
        );
    }
    ensure!(
        cx.server.requests_to(&format!("/redirect/{status}")) == 2
            && cx.server.requests_to("/echo") == 2,
        "{status}: the server saw {} redirects and {} echoes, expected 2 and 2",
        cx.server.requests_to(&format!("/redirect/{status}")),
        cx.server.requests_to("/echo")
    );
    Ok(Outcome::Pass)
}

/// 301: a GET is followed; a POST becomes a GET without its body.
pub async fn redirect_301<T: Backend>(cx: Cx<T>) -> CaseResult {
    follows(cx, 301).await
}

/// 302: a GET is followed; a POST becomes a GET without its body.
pub async fn redirect_302<T: Backend>(cx: Cx<T>) -> CaseResult {
    follows(cx, 302).await
}

/// 303: a GET is followed; a POST becomes a GET without its body.
pub async fn redirect_303<T: Backend>(cx: Cx<T>) -> CaseResult {
    follows(cx, 303).await
}

/// 307: a GET is followed; a POST stays a POST with the same body.
pub async fn redirect_307<T: Backend>(cx: Cx<T>) -> CaseResult {
    follows(cx, 307).await
}

/// 308: a GET is followed; a POST stays a POST with the same body.
pub async fn redirect_308<T: Backend>(cx: Cx<T>) -> CaseResult {
    follows(cx, 308).await
}

/// A one-shot stream can't be sent again: a 307 fails the call with `BodyNotReplayable` and
/// the target is never requested. The same stream given through `body_with` is rebuilt and
/// followed; after a 303, which drops the body, a one-shot stream is no obstacle.
pub async fn redirect_307_one_shot_body_refused<T: Backend>(cx: Cx<T>) -> CaseResult {
    fn once() -> Body {
        let chunks = vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"one ")),
            Ok(Bytes::from_static(b"shot")),
        ];
        Body::from_stream(futures_util::stream::iter(chunks))
    }
    let client = cx.client()?;
    let err = refused(
        client
            .post(&redirect(307, "/echo"))
            .body(once())
            .send()
            .await,
        RedirectRefusal::BodyNotReplayable,
    )?;
    ensure!(
        err.redirects().is_empty(),
        "hops before the refusal: {:?}",
        err.redirects()
    );
    ensure!(
        cx.server.requests_to("/redirect/307") == 1,
        "the redirect was requested {} times",
        cx.server.requests_to("/redirect/307")
    );
    ensure!(
        cx.server.requests_to("/echo") == 0,
        "the target was requested {} times",
        cx.server.requests_to("/echo")
    );

    let seen: Seen = client
        .post(&redirect(307, "/echo"))
        .body_with(once)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        seen.method == "POST" && seen.body == "one shot",
        "with body_with, the 307 arrived as {} {:?}",
        seen.method,
        seen.body
    );

    let seen: Seen = client
        .post(&redirect(303, "/echo"))
        .body(once())
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        seen.method == "GET" && seen.body.is_empty(),
        "a one-shot POST answered by a 303 arrived as {} {:?}",
        seen.method,
        seen.body
    );
    Ok(Outcome::Pass)
}

/// The default policy follows 10 hops and refuses the 11th; a per-request policy overrides it.
pub async fn redirect_chain_10_followed_11_refused<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let resp = client.get("/chain/10").send().await?;
    ensure!(
        resp.redirects().len() == 10,
        "/chain/10 followed {} hops",
        resp.redirects().len()
    );
    ensure!(
        resp.attempts() == 1,
        "/chain/10 counted {} attempts (hops are not attempts)",
        resp.attempts()
    );
    let end = cx.server.url("/chain/0");
    ensure!(
        resp.url().to_string() == end,
        "/chain/10 ended at {}",
        resp.url()
    );
    let body = resp.error_for_status().await?.text().await?;
    ensure!(body == "end", "/chain/10 ended with {body:?}");

    let err = refused(
        client.get("/chain/11").send().await,
        RedirectRefusal::TooManyHops { max: 10 },
    )?;
    ensure!(
        err.redirects().len() == 10,
        "{} hops before the refusal",
        err.redirects().len()
    );
    let last = err.redirects().last().map(|hop| hop.to().to_string());
    ensure!(
        last.as_deref() == Some(cx.server.url("/chain/1").as_str()),
        "the last hop followed led to {last:?}"
    );
    ensure!(
        cx.server.requests_to("/chain/0") == 1,
        "the 11th hop was followed: /chain/0 was requested {} times",
        cx.server.requests_to("/chain/0")
    );

    let short = RedirectPolicy::limited(2);
    let resp = client
        .get("/chain/2")
        .redirect_policy(short.clone())
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK && resp.redirects().len() == 2,
        "limited(2) on /chain/2: {} after {} hops",
        resp.status(),
        resp.redirects().len()
    );
    refused(
        client.get("/chain/3").redirect_policy(short).send().await,
        RedirectRefusal::TooManyHops { max: 2 },
    )?;
    Ok(Outcome::Pass)
}

/// `/loop/a` → `/loop/b` → `/loop/a` is a loop, refused before `/loop/a` is requested again.
pub async fn redirect_loop_detected<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let err = refused(client.get("/loop/a").send().await, RedirectRefusal::Loop)?;
    let hops: Vec<String> = err.redirects().iter().map(ToString::to_string).collect();
    ensure!(
        hops == [format!(
            "302 {} -> {}",
            cx.server.url("/loop/a"),
            cx.server.url("/loop/b")
        )],
        "hops before the refusal: {hops:?}"
    );
    ensure!(
        cx.server.requests_to("/loop/a") == 1 && cx.server.requests_to("/loop/b") == 1,
        "the server saw /loop/a {} times and /loop/b {} times",
        cx.server.requests_to("/loop/a"),
        cx.server.requests_to("/loop/b")
    );
    Ok(Outcome::Pass)
}

/// A redirect from the TLS listener to the plain one is refused unless the policy allows it;
/// https → https is followed.
pub async fn redirect_https_to_http_refused<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .build()?;
    let plain = cx.server.url("/echo");
    let down = cx.server.tls_url(&redirect(302, &plain));
    let err = refused(
        client.get(&down).send().await,
        RedirectRefusal::InsecureDowngrade,
    )?;
    ensure!(
        err.redirects().is_empty(),
        "hops before the refusal: {:?}",
        err.redirects()
    );
    ensure!(
        cx.server.requests_to("/echo") == 0,
        "the plain target was requested"
    );

    let secure = cx.server.tls_url("/echo");
    let resp = client
        .get(&cx.server.tls_url(&redirect(302, &secure)))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK && resp.url().to_string() == secure,
        "https -> https: {} at {}",
        resp.status(),
        resp.url()
    );

    let resp = client
        .get(&down)
        .redirect_policy(RedirectPolicy::limited(10).allow_https_downgrade(true))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "an allowed downgrade got {}",
        resp.status()
    );
    ensure!(
        resp.url().to_string() == plain,
        "an allowed downgrade ended at {}",
        resp.url()
    );
    let seen: Seen = resp.json().await?;
    ensure!(seen.path == "/echo", "arrived at {}", seen.path);

    let allowing = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .redirect_policy(RedirectPolicy::limited(10).allow_https_downgrade(true))
        .build()?;
    let resp = allowing.get(&down).send().await?;
    ensure!(
        resp.url().to_string() == plain,
        "a client allowing downgrades ended at {}",
        resp.url()
    );
    Ok(Outcome::Pass)
}

/// The headers [`redirect_cross_origin_strips_credentials`] sends that must not cross origins
/// (`x-api-key` because the client marks it sensitive).
const CREDENTIALS: [&str; 4] = [
    "authorization",
    "x-api-key",
    "cookie",
    "proxy-authorization",
];

/// On a redirect to another origin, `Authorization`, `Cookie`, `Proxy-Authorization` and the
/// headers the client marked sensitive are dropped, and other headers kept; on a same-origin
/// redirect everything is kept.
pub async fn redirect_cross_origin_strips_credentials<T: Backend>(cx: Cx<T>) -> CaseResult {
    let other = TestServer::start()?;
    let client = cx.builder().sensitive_header("x-api-key").build()?;
    let send = |client: &Client<T>, target: String| {
        client
            .get(&redirect(302, &target))
            .bearer_auth("secret")
            .header("x-api-key", "key-1")
            .header("cookie", "session=1")
            .header("proxy-authorization", "Basic cHJveHk6cHc=")
            .header("x-trace", "trace-1")
            .send()
    };

    let seen: Seen = send(&client, other.url("/echo")).await?.json().await?;
    for name in CREDENTIALS {
        ensure!(
            seen.header(name).is_empty(),
            "{name} crossed to another origin: {:?}",
            seen.header(name)
        );
    }
    ensure!(
        seen.header("x-trace") == ["trace-1"],
        "x-trace across origins: {:?}",
        seen.header("x-trace")
    );
    ensure!(
        other.requests_to("/echo") == 1,
        "the other origin saw {} requests",
        other.requests_to("/echo")
    );

    let seen: Seen = send(&client, cx.server.url("/echo")).await?.json().await?;
    let expected = [
        ("authorization", "Bearer secret"),
        ("x-api-key", "key-1"),
        ("cookie", "session=1"),
        ("proxy-authorization", "Basic cHJveHk6cHc="),
        ("x-trace", "trace-1"),
    ];
    for (name, value) in expected {
        ensure!(
            seen.header(name) == [value],
            "{name} on a same-origin redirect: {:?}",
            seen.header(name)
        );
    }
    Ok(Outcome::Pass)
}

/// A client-level `Authorization` (bearer, basic or a default header) goes only to the base
/// URL's origin: not to an absolute URL elsewhere, not across a redirect.
pub async fn redirect_default_authorization_stays_on_its_origin<T: Backend>(
    cx: Cx<T>,
) -> CaseResult {
    let other = TestServer::start()?;
    let clients = [
        (
            "bearer_auth",
            cx.builder().bearer_auth("secret"),
            "Bearer secret",
        ),
        (
            "basic_auth",
            cx.builder().basic_auth("user", Some("pw")),
            "Basic dXNlcjpwdw==",
        ),
        (
            "default_header",
            cx.builder().default_header(AUTHORIZATION, "Token abc"),
            "Token abc",
        ),
    ];
    for (how, builder, value) in clients {
        let client = builder.build()?;
        let seen: Seen = client.get("/echo").send().await?.json().await?;
        ensure!(
            seen.header("authorization") == [value],
            "{how}: the base origin got authorization {:?}",
            seen.header("authorization")
        );
        let seen: Seen = client
            .get(&redirect(302, "/echo"))
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            seen.header("authorization") == [value],
            "{how}: a same-origin redirect got authorization {:?}",
            seen.header("authorization")
        );
        let seen: Seen = client.get(&other.url("/echo")).send().await?.json().await?;
        ensure!(
            seen.header("authorization").is_empty(),
            "{how}: an absolute URL on another origin got authorization {:?}",
            seen.header("authorization")
        );
        let seen: Seen = client
            .get(&redirect(302, &other.url("/echo")))
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            seen.header("authorization").is_empty(),
            "{how}: a redirect to another origin got authorization {:?}",
            seen.header("authorization")
        );
        // Another origin that bounces back to ours doesn't get to pick which of our URLs
        // receives the credentials: once a call has left the origin, they stay off.
        let back = cx.server.url("/echo");
        let bounce = other.url(&redirect(302, &back));
        let resp = client.get(&redirect(302, &bounce)).send().await?;
        ensure!(
            resp.redirects().len() == 2 && resp.url().to_string() == back,
            "{how}: the bounce ended at {} after {} hops",
            resp.url(),
            resp.redirects().len()
        );
        let seen: Seen = resp.json().await?;
        ensure!(
            seen.header("authorization").is_empty(),
            "{how}: a redirect back from another origin got authorization {:?}",
            seen.header("authorization")
        );
    }
    ensure!(
        other.requests_to("/echo") == 6,
        "the other origin saw {} requests, expected 6",
        other.requests_to("/echo")
    );
    Ok(Outcome::Pass)
}

/// With `RedirectPolicy::none()`, on the client or on one request, the 3xx is the response.
pub async fn redirect_none_delivers_the_3xx<T: Backend>(cx: Cx<T>) -> CaseResult {
    let path = redirect(302, "/echo");
    let url = cx.server.url(&path);
    let never = cx
        .builder()
        .redirect_policy(RedirectPolicy::none())
        .build()?;
    let following = cx.client()?;
    for (how, request) in [
        ("client", never.get(&path)),
        (
            "request",
            following.get(&path).redirect_policy(RedirectPolicy::none()),
        ),
    ] {
        let resp = request.send().await?;
        ensure!(
            resp.status() == StatusCode::FOUND,
            "{how}: status {}",
            resp.status()
        );
        let location = resp.headers().get("location").map(|v| v.to_str());
        ensure!(
            matches!(location, Some(Ok("/echo"))),
            "{how}: location {location:?}"
        );
        ensure!(
            resp.redirects().is_empty(),
            "{how}: hops {:?}",
            resp.redirects()
        );
        ensure!(resp.url().to_string() == url, "{how}: url {}", resp.url());
    }
    ensure!(
        cx.server.requests_to("/echo") == 0,
        "the Location was followed"
    );
    Ok(Outcome::Pass)
}
