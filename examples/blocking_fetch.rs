//! A blocking CLI fetch: no async anywhere in sight.
//!
//! ```sh
//! cargo run --example blocking_fetch --features blocking -- https://example.com/ > page.html
//! ```
//!
//! Prints the status and the headers to stderr and streams the body to stdout through
//! `std::io::copy`, one chunk in memory at a time, however large the body. A status of 4xx or
//! 5xx exits with code 1 after printing what the server said. Without a URL it fetches from
//! keel's own test server on 127.0.0.1.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Without an argument, a loopback server of keel's own serves a 1 MB body.
    let mut server = None;
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            let started = keel_conformance::server::TestServer::start()?;
            let url = started.url("/bytes/1000000");
            server = Some(started);
            url
        }
    };

    let client = keel::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_idle_timeout(Duration::from_secs(30))
        // A download may take long; the default 5-minute deadline would cut it.
        .deadline(Duration::from_secs(3600))
        .build()?;
    let mut response = client.get(&url).send()?;

    let mut stderr = std::io::stderr().lock();
    writeln!(stderr, "{:?} {}", response.version(), response.status())?;
    for (name, value) in response.headers() {
        writeln!(
            stderr,
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        )?;
    }
    writeln!(stderr)?;

    let mut stdout = std::io::stdout().lock();
    let copied = std::io::copy(&mut response, &mut stdout)?;
    stdout.flush()?;
    writeln!(stderr, "({copied} bytes)")?;
    drop(server);

    let failed = response.status().is_client_error() || response.status().is_server_error();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
