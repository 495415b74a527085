//! The clients under test, each on the runtime it is normally used with.
//!
//! "native" clients use the library directly, the way its own documentation does; "keel-*"
//! clients go through keel with its default policies (time limits, body limit) on.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};

use crate::scenario::{self, Fetch, Sample, Scenario};

/// Every client name the benchmark knows, in report order.
pub(crate) const ALL: &[&str] = &["hyper-native", "keel-hyper", "reqwest"];

/// For a keel client, the native client it wraps.
pub(crate) fn native_of(client: &str) -> Option<&'static str> {
    match client {
        "keel-hyper" => Some("hyper-native"),
        _ => None,
    }
}

/// Runs `scenario` on `client` against the server at `port`.
pub(crate) fn run(client: &str, scenario: Scenario, port: u16) -> Result<Sample, String> {
    let base = format!("http://127.0.0.1:{port}");
    match client {
        "hyper-native" => tokio_current_thread(async {
            let c =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Empty<Bytes>>();
            scenario::run(&HyperNative { client: c, base }, scenario).await
        }),
        "keel-hyper" => tokio_current_thread(async {
            let c = keel_core::Client::<keel_hyper::HyperTransport>::builder()
                .base_url(&base)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(scenario::run(&Keel(c), scenario).await)
        })
        .and_then(|r| r),
        "reqwest" => tokio_current_thread(async {
            let c = reqwest::Client::builder()
                .build()
                .map_err(|e| e.to_string())?;
            Ok(scenario::run(&Reqwest { client: c, base }, scenario).await)
        })
        .and_then(|r| r),
        other => Err(format!("unknown client {other}")),
    }
}

fn tokio_current_thread<F: std::future::Future>(fut: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(rt.block_on(fut))
}

struct HyperNative {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    base: String,
}

impl Fetch for HyperNative {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        let uri: http::Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let resp = self.client.get(uri).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes().len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        let uri: http::Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut body = self
            .client
            .get(uri)
            .await
            .map_err(|e| e.to_string())?
            .into_body();
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                n += data.len() as u64;
            }
        }
        Ok(n)
    }
}

struct Keel<T>(keel_core::Client<T>);

impl<T: keel_core::Transport> Fetch for Keel<T> {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        let resp = self.0.get(path).send().await.map_err(|e| e.to_string())?;
        Ok(resp.bytes().await.map_err(|e| e.to_string())?.len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        let mut resp = self
            .0
            .get(path)
            .deadline(std::time::Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

struct Reqwest {
    client: reqwest::Client,
    base: String,
}

impl Fetch for Reqwest {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.bytes().await.map_err(|e| e.to_string())?.len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        let mut resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}
