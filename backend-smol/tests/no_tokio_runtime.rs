//! keel-smol must not bring tokio along.
//!
//! With its default features, no tokio crate at all is in keel-smol's dependency tree. With
//! the `http2` feature, hyper (which depends on tokio's `sync` whatever its features) and `h2`
//! (tokio's `io-util`: I/O traits and tokio-util's codec) bring tokio in as a library; then no
//! feature that starts or needs a tokio runtime may come with it.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

const RUNTIME_FEATURES: &[&str] = &[
    "rt",
    "rt-multi-thread",
    "net",
    "time",
    "process",
    "signal",
    "fs",
    "macros",
];

/// `cargo tree` on keel-smol alone, as a dependent crate would resolve it.
fn tree(extra: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "keel-smol", "--prefix", "none"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(started.elapsed() < Duration::from_secs(60));
    out
}

#[test]
fn no_tokio_crate_in_the_default_tree() {
    let out = tree(&["-e", "normal"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.starts_with("keel-smol ")),
        "unexpected cargo tree output:\n{text}"
    );
    let tokio: Vec<&str> = text.lines().filter(|l| l.starts_with("tokio")).collect();
    assert!(
        tokio.is_empty(),
        "tokio crates in keel-smol's default tree: {tokio:?}"
    );
}

#[test]
fn no_tokio_runtime_feature_with_http2() {
    let out = tree(&[
        "--features",
        "http2",
        "-e",
        "normal,features",
        "-i",
        "tokio",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let enabled: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tokio feature \""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(!enabled.is_empty(), "unexpected cargo tree output:\n{text}");
    let runtime: Vec<&&str> = enabled
        .iter()
        .filter(|f| RUNTIME_FEATURES.contains(f))
        .collect();
    assert!(
        runtime.is_empty(),
        "tokio runtime features {runtime:?} in keel-smol's tree:\n{text}"
    );
}
