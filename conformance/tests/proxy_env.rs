//! The environment's proxy variables, in a test process of their own (they are process-wide,
//! and this file holds one test): every backend ignores them unless the client calls
//! `proxy_from_env`, libcurl included (it reads `http_proxy` and `NO_PROXY` by itself unless
//! told not to).

use keel_conformance::server::proxy::TestProxy;
use keel_conformance::server::TestServer;
use keel_core::blocking::{Client, Runtime};
use keel_core::proxy::Proxy;
use keel_core::Backend;

/// Sends one GET to `url` through a client `configure` builds on backend `T`.
fn get<T: Backend + Runtime>(
    url: &str,
    configure: impl FnOnce(
        keel_core::blocking::ClientBuilder<T>,
    ) -> keel_core::blocking::ClientBuilder<T>,
) {
    let client = configure(Client::<T>::builder().deadline(std::time::Duration::from_secs(20)))
        .build()
        .unwrap();
    let response = client.get(url).send().unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let _ = response.bytes().unwrap();
}

#[test]
fn proxy_variables_apply_only_when_asked() {
    let server = TestServer::start().unwrap();
    let proxy = TestProxy::start(None).unwrap();
    let url = server.url("/echo");
    for name in [
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        std::env::set_var(name, proxy.http_url(None));
    }
    std::env::remove_var("no_proxy");
    std::env::remove_var("NO_PROXY");

    // Not asked: direct, whatever the environment says.
    get::<keel_hyper::HyperTransport>(&url, |b| b);
    get::<keel_smol::SmolTransport>(&url, |b| b);
    get::<keel_isahc::IsahcTransport>(&url, |b| b);
    assert_eq!(
        proxy.forwarded(),
        0,
        "a client used the environment's proxy unasked"
    );

    // Asked: through the proxy.
    get::<keel_hyper::HyperTransport>(&url, |b| b.proxy_from_env());
    get::<keel_smol::SmolTransport>(&url, |b| b.proxy_from_env());
    get::<keel_isahc::IsahcTransport>(&url, |b| b.proxy_from_env());
    assert_eq!(proxy.forwarded(), 3, "proxy_from_env didn't use http_proxy");

    // `NO_PROXY` from the environment applies only through `proxy_from_env`: a proxy set in
    // code is used (libcurl must not read `NO_PROXY` by itself)...
    std::env::set_var("NO_PROXY", "*");
    let explicit = Proxy::all(&proxy.http_url(None)).unwrap();
    get::<keel_hyper::HyperTransport>(&url, |b| b.proxy(explicit.clone()));
    get::<keel_smol::SmolTransport>(&url, |b| b.proxy(explicit.clone()));
    get::<keel_isahc::IsahcTransport>(&url, |b| b.proxy(explicit.clone()));
    assert_eq!(
        proxy.forwarded(),
        6,
        "the environment's NO_PROXY bypassed a proxy set in code"
    );

    // ...and read with the rest when asked.
    get::<keel_hyper::HyperTransport>(&url, |b| b.proxy_from_env());
    get::<keel_smol::SmolTransport>(&url, |b| b.proxy_from_env());
    get::<keel_isahc::IsahcTransport>(&url, |b| b.proxy_from_env());
    assert_eq!(
        proxy.forwarded(),
        6,
        "NO_PROXY=* from the environment wasn't honoured"
    );
}
