//! keel-smol must not bring a tokio runtime along.
//!
//! hyper 1.x depends on tokio's `sync` feature unconditionally, and `h2` on its `io-util`
//! feature (I/O traits and tokio-util's codec): channels and traits, no reactor, scheduler or
//! timer. This test fails if any feature that starts or needs a tokio runtime enters
//! keel-smol's dependency tree.

use std::process::Command;
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

#[test]
fn no_tokio_runtime_feature_in_the_tree() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "keel-smol",
            "-e",
            "normal,features",
            "-i",
            "tokio",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(started.elapsed() < Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // `-i tokio` fails when tokio is not in the tree at all: nothing to check.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("did not match any packages"),
            "cargo tree failed: {err}"
        );
        return;
    }
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
