//! `cargo run --release -p keel-conformance`: runs the suite for every backend and runtime built
//! in, against the loopback test server, prints the scorecard and writes it as Markdown and HTML
//! under `target/keel-report/`. Exits non-zero if any case failed.
//!
//! `-- --failure-table` prints the README's "Failure behaviour" table instead.

use std::path::PathBuf;
use std::process::ExitCode;

use keel_conformance::report::Scorecard;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--failure-table") {
        // The README's "Failure behaviour" table, from the fault matrix's one list.
        print!("{}", keel_conformance::faults::failure_table());
        return ExitCode::SUCCESS;
    }
    let mut card = Scorecard::default();
    for pair in keel_conformance::matrix() {
        eprintln!(
            "running the suite on {} / {} ...",
            pair.backend, pair.runtime
        );
        card.push(pair.backend, pair.runtime, (pair.run)());
    }
    print!("{}", card.to_text());
    let dir = report_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("conformance.md"), card.to_markdown()))
        .and_then(|()| std::fs::write(dir.join("conformance.html"), card.to_html()));
    match written {
        Ok(()) => eprintln!("wrote {}/conformance.{{md,html}}", dir.display()),
        Err(e) => eprintln!("could not write the report under {}: {e}", dir.display()),
    }
    if card.totals().failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `target/keel-report` of the workspace (or `$CARGO_TARGET_DIR/keel-report`).
fn report_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("keel-report")
}
