//! keel-benches: load scenarios against a loopback server, each client natively and through
//! keel, and reqwest as the peer, side by side in one run.
//!
//! ```text
//! cargo run --release -p keel-benches -- [--quick] [--reps N] [--scenarios S1,S2,S3,S4]
//!                                        [--clients a,b,…] [--pairs c@rt,…] [--callgrind]
//! ```
//!
//! By default every pair of the runtime matrix runs (every client on every runtime it is
//! measured on, [`clients::MATRIX`]). `--clients` picks clients on their home runtime (hyper,
//! reqwest on tokio; isahc, smol on smol), `--pairs` picks `client@runtime` pairs, either side
//! may be `*` (`--pairs '*@no-runtime,keel-smol@*'`); both together run the union.
//!
//! `--clients` may also name a variant (`keel-hyper-guarded`: keel-hyper with a circuit breaker
//! and a rate limit that never trip; `keel-hyper-redis`, `keel-hyper-redis-nolease`: with a
//! fleet rate limit in a `redis-server` the client starts), which is reported beside the client
//! it adds to; variants don't run by default.
//!
//! `--soak [N]` runs the soak instead (see `soak.rs`): N requests (default 1,000,000) per keel
//! backend through a mix of keep-alive, `Connection: close`, retried 503s, dropped bodies and
//! read-idle timeouts, sampling the client's RSS and descriptors; it fails on growth.
//!
//! ```text
//! cargo run --release -p keel-benches -- --soak 100000 [--clients keel-hyper,keel-smol]
//! ```
//!
//! The orchestrator starts the server as a child process pinned to CPU 0, then runs every
//! (scenario, client) pair as its own child process pinned to CPU 1, in an order that rotates
//! between repetitions, and reports medians and spreads. See BENCHMARKS.md.

mod clients;
mod redis_server;
mod report;
mod scenario;
mod server;
mod soak;
mod sys;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use crate::clients::Runtime;
use crate::report::{Failed, Run, Summary};
use crate::scenario::{Sample, Scenario};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("__server") => child_server(&args[1..]),
        Some("__client") => child_client(&args[1..]),
        Some("__soak") => child_soak(&args[1..]),
        _ if args.iter().any(|a| a == "--soak") => orchestrate_soak(&args),
        _ => orchestrate(&args),
    };
    std::process::exit(code);
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn child_server(args: &[String]) -> i32 {
    sys::raise_fd_limit();
    if let Some(cpu) = flag(args, "--cpu").and_then(|c| c.parse().ok()) {
        sys::pin_to(cpu);
    }
    match server::run(([127, 0, 0, 1], 0).into()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("server: {e}");
            1
        }
    }
}

fn child_client(args: &[String]) -> i32 {
    sys::raise_fd_limit();
    let cpu = flag(args, "--cpu").and_then(|c| c.parse::<usize>().ok());
    if let Some(cpu) = cpu {
        sys::pin_to(cpu);
    }
    // A helper the client needs (the `-redis` variants' Redis) stands for another remote
    // service: it goes beside the server, on CPU 0, when the client is pinned, unless
    // KEEL_BENCHES_HELPER_CPU names another CPU (to see how much the placement matters).
    let helper_cpu = cpu.map(|_| {
        std::env::var("KEEL_BENCHES_HELPER_CPU")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    });
    let (Some(client), Some(scenario), Some(port)) = (
        flag(args, "--client"),
        flag(args, "--scenario").and_then(|s| serde_json::from_str::<Scenario>(s).ok()),
        flag(args, "--port").and_then(|p| p.parse().ok()),
    ) else {
        eprintln!("usage: __client --client NAME[@RUNTIME] --scenario JSON --port PORT [--cpu N]");
        return 2;
    };
    let (client, runtime) = match clients::parse_pair(client) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    match clients::run(client, runtime, scenario, port, helper_cpu) {
        Ok(sample) => {
            println!(
                "{}",
                serde_json::to_string(&sample).expect("a sample serializes")
            );
            0
        }
        Err(e) => {
            eprintln!("{client}: {e}");
            1
        }
    }
}

/// One backend's soak, in a child process of its own: prints its result as one JSON line.
fn child_soak(args: &[String]) -> i32 {
    sys::raise_fd_limit();
    if let Some(cpu) = flag(args, "--cpu").and_then(|c| c.parse().ok()) {
        sys::pin_to(cpu);
    }
    let (Some(client), Some(requests), Some(port)) = (
        flag(args, "--client"),
        flag(args, "--requests").and_then(|n| n.parse().ok()),
        flag(args, "--port").and_then(|p| p.parse().ok()),
    ) else {
        eprintln!("usage: __soak --client NAME --requests N --port PORT [--cpu N]");
        return 2;
    };
    match soak::run(client, requests, port) {
        Ok(run) => {
            println!(
                "{}",
                serde_json::to_string(&run).expect("a soak result serializes")
            );
            0
        }
        Err(e) => {
            eprintln!("{client}: {e}");
            1
        }
    }
}

fn orchestrate_soak(args: &[String]) -> i32 {
    let opts = match soak::options(args) {
        Ok(opts) => opts,
        Err(why) => {
            eprintln!("{why}\n{}", soak::USAGE);
            return 2;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find my own executable: {e}");
            return 1;
        }
    };
    soak::orchestrate(&opts, &exe, &report_dir())
}

struct Options {
    quick: bool,
    reps: usize,
    scenarios: Vec<Scenario>,
    /// The (client, runtime) pairs to run, in report order.
    pairs: Vec<(String, Runtime)>,
    callgrind: bool,
}

fn options(args: &[String]) -> Options {
    let quick = args.iter().any(|a| a == "--quick");
    let reps = flag(args, "--reps")
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 2 } else { 3 });
    let (millis, bursts, stream, streams) = if quick {
        (700, 3, 256 << 20, 2)
    } else {
        (4000, 20, 1 << 30, 5)
    };
    let all = [
        Scenario::S1 {
            bursts,
            concurrent: 1000,
        },
        Scenario::S2 {
            workers: 20,
            millis,
        },
        Scenario::S3 {
            bytes: stream,
            count: streams,
        },
        Scenario::S4 {
            workers: 20,
            millis,
        },
    ];
    let scenarios = match flag(args, "--scenarios") {
        Some(list) => all
            .into_iter()
            .filter(|s| list.split(',').any(|n| n.eq_ignore_ascii_case(s.name())))
            .collect(),
        None => all.to_vec(),
    };
    Options {
        quick,
        reps,
        scenarios,
        pairs: selected_pairs(args).unwrap_or_default(),
        callgrind: args.iter().any(|a| a == "--callgrind"),
    }
}

/// The pairs the arguments select: `--clients` on their home runtimes, then `--pairs`; the
/// whole matrix when neither is given.
fn selected_pairs(args: &[String]) -> Result<Vec<(String, Runtime)>, String> {
    let clients = flag(args, "--clients");
    let pairs = flag(args, "--pairs");
    if clients.is_none() && pairs.is_none() {
        return Ok(clients::MATRIX
            .iter()
            .map(|(c, r)| ((*c).to_owned(), *r))
            .collect());
    }
    let mut out: Vec<(String, Runtime)> = Vec::new();
    for client in clients
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty())
    {
        if !clients::is_known(client) {
            return Err(format!(
                "unknown client `{client}` (known: {}; variants: {})",
                clients::ALL.join(","),
                clients::VARIANTS.join(",")
            ));
        }
        let pair = (client.to_owned(), clients::home(client));
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    for pair in clients::select_pairs(pairs.unwrap_or_default())? {
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    Ok(out)
}

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(exe: &std::path::Path, pin: bool) -> Result<(ServerProcess, u16), String> {
    let mut cmd = Command::new(exe);
    cmd.arg("__server")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if pin {
        cmd.args(["--cpu", "0"]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning the server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let server = ServerProcess(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("reading the server's port: {e}"))?;
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("unexpected server output {line:?}"))?;
    Ok((server, port))
}

/// Runs `cmd` (a child mode of this binary) pinned to CPU 1 when `pin`, with its stdout piped
/// and its stderr passed through, within `limit` (see [`wait_child`]): what it printed.
pub(crate) fn run_child_process(
    mut cmd: Command,
    pin: bool,
    limit: Duration,
) -> Result<String, String> {
    if pin {
        cmd.args(["--cpu", "1"]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_child(&mut child, limit)
}

/// Waits for `child`, whose stdout is piped, to exit within `limit` (killing it past that) and
/// returns what it printed; an exit that is not a success is an error.
pub(crate) fn wait_child(child: &mut Child, limit: Duration) -> Result<String, String> {
    let mut stdout = child.stdout.take().ok_or("no child stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(format!("did not finish within {} s", limit.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    Ok(text)
}

/// Runs one (pair, scenario) in a child process; a child still running after `limit` is
/// killed and reported as not finished.
fn run_child(
    exe: &PathBuf,
    client: &str,
    scenario: Scenario,
    port: u16,
    pin: bool,
    wrapper: &[String],
    limit: Duration,
) -> Result<Sample, String> {
    let scenario_json = serde_json::to_string(&scenario).map_err(|e| e.to_string())?;
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args([
        "__client",
        "--client",
        client,
        "--scenario",
        &scenario_json,
        "--port",
        &port.to_string(),
    ]);
    let text = run_child_process(cmd, pin, limit)
        .map_err(|e| format!("{client} {}: {e}", scenario.name()))?;
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("{client}: bad sample {line:?}: {e}"))
}

const USAGE: &str = "usage: keel-benches [--quick] [--reps N] [--scenarios S1,S2,S3,S4] \
[--clients a,b,...] [--pairs client@runtime,...] [--callgrind]\n       keel-benches --soak [N] \
[--clients keel-hyper,keel-smol,keel-isahc]";

/// Flags the orchestrator knows, and whether each takes a value.
const FLAGS: &[(&str, bool)] = &[
    ("--quick", false),
    ("--reps", true),
    ("--scenarios", true),
    ("--clients", true),
    ("--pairs", true),
    ("--callgrind", false),
];

/// Rejects what the orchestrator doesn't understand: a mistyped flag must not start a
/// half-hour run that ignores it.
fn check_args(args: &[String]) -> Result<(), String> {
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match FLAGS.iter().find(|(name, _)| name == arg) {
            Some((_, true)) if rest.next().is_none() => return Err(format!("{arg} needs a value")),
            Some(_) => {}
            None if arg == "--help" || arg == "-h" => return Err(String::new()),
            None => return Err(format!("unknown argument `{arg}`")),
        }
    }
    selected_pairs(args)?;
    let scenarios = flag(args, "--scenarios").unwrap_or_default();
    if let Some(unknown) = scenarios.split(',').find(|s| {
        !s.is_empty()
            && !["S1", "S2", "S3", "S4"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(s))
    }) {
        return Err(format!("unknown scenario `{unknown}` (known: S1,S2,S3,S4)"));
    }
    Ok(())
}

fn orchestrate(args: &[String]) -> i32 {
    if let Err(why) = check_args(args) {
        if !why.is_empty() {
            eprintln!("{why}");
        }
        eprintln!("{USAGE}");
        eprintln!(
            "clients: {}\nvariants (only when named): {}\nruntimes: {}\npairs (all by default): {}",
            clients::ALL.join(","),
            clients::VARIANTS.join(","),
            Runtime::ALL.map(Runtime::name).join(","),
            clients::MATRIX
                .iter()
                .map(|(c, r)| clients::pair_name(c, *r))
                .collect::<Vec<_>>()
                .join(",")
        );
        return if why.is_empty() { 0 } else { 2 };
    }
    let opts = options(args);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find my own executable: {e}");
            return 1;
        }
    };
    let pin = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let (server, port) = match start_server(&exe, pin) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    // Long enough for the slowest pair on a busy machine (isahc streams 5 GiB at about
    // 1 GB/s), short enough that a hung pair can't stall the run.
    let limit = Duration::from_secs(if opts.quick { 60 } else { 180 });
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for rep in 0..opts.reps {
        for scenario in &opts.scenarios {
            // Rotate the order every repetition so no pair always runs first or last.
            let mut order = opts.pairs.clone();
            let shift = rep % order.len().max(1);
            order.rotate_left(shift);
            for (client, runtime) in &order {
                let name = clients::pair_name(client, *runtime);
                eprint!("rep {} {} {name:<28} ", rep + 1, scenario.name());
                match run_child(&exe, &name, *scenario, port, pin, &[], limit) {
                    Ok(sample) => {
                        eprintln!(
                            "{:>9.0} req/s {:>7.1} cpu-us/req p99 {} us{}{}",
                            sample.requests as f64 / sample.secs,
                            sample.cpu_us / sample.requests.max(1) as f64,
                            sample.latency_us[2],
                            match sample.helper_cpu_us {
                                Some(us) => format!(
                                    " (+ redis {:.1} cpu-us/req)",
                                    us / sample.requests.max(1) as f64
                                ),
                                None => String::new(),
                            },
                            if sample.errors > 0 {
                                format!(" ({} errors)", sample.errors)
                            } else {
                                String::new()
                            }
                        );
                        runs.push(Run {
                            client: client.clone(),
                            runtime: *runtime,
                            scenario: scenario.name(),
                            sample,
                        });
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failed.push(Failed {
                            client: client.clone(),
                            runtime: *runtime,
                            scenario: scenario.name(),
                            reason: e,
                        });
                    }
                }
            }
        }
    }
    let mut instructions = Vec::new();
    if opts.callgrind {
        instructions = callgrind(&exe, &opts.pairs, port, pin, &mut failed);
    }
    let wrk = report::run_wrk(port, if opts.quick { 1 } else { 4 });
    drop(server);
    let summary = Summary::new(
        runs,
        failed,
        instructions,
        wrk,
        opts.quick,
        opts.reps,
        opts.pairs.clone(),
    );
    let md = summary.to_markdown();
    print!("{md}");
    let dir = report_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("bench.md"), &md))
        .and_then(|()| std::fs::write(dir.join("bench-throughput.svg"), summary.throughput_svg()))
        .and_then(|()| std::fs::write(dir.join("bench-latency.svg"), summary.latency_svg()))
        .and_then(|()| std::fs::write(dir.join("bench-runtimes.svg"), summary.runtimes_svg()));
    match written {
        Ok(()) => eprintln!(
            "wrote {}/bench.md, bench-throughput.svg, bench-latency.svg, bench-runtimes.svg",
            dir.display()
        ),
        Err(e) => eprintln!("could not write the report: {e}"),
    }
    // Speed never fails the run; a pair that failed, erred or did not report does (the smoke
    // test CI runs).
    match summary.incomplete() {
        0 => 0,
        n => {
            eprintln!("{n} (pair, scenario) result(s) failed or had errors: see the report");
            1
        }
    }
}

/// Instructions per request for each client, from callgrind: two fixed-size runs, so the
/// start-up cost cancels out.
fn callgrind(
    exe: &PathBuf,
    pairs: &[(String, Runtime)],
    port: u16,
    pin: bool,
    failed: &mut Vec<Failed>,
) -> Vec<(String, f64)> {
    let (small, large) = (1000u64, 3000u64);
    let mut out = Vec::new();
    for (pair_client, runtime) in pairs {
        let client = &clients::pair_name(pair_client, *runtime);
        let mut totals = Vec::new();
        let mut reason = String::new();
        for requests in [small, large] {
            let file = std::env::temp_dir().join(format!("keel-callgrind-{client}-{requests}.out"));
            let wrapper = vec![
                "valgrind".to_owned(),
                "--tool=callgrind".to_owned(),
                "-q".to_owned(),
                format!("--callgrind-out-file={}", file.display()),
            ];
            let scenario = Scenario::Fixed {
                workers: 20,
                requests,
            };
            let limit = Duration::from_secs(900);
            match run_child(exe, client, scenario, port, pin, &wrapper, limit) {
                Ok(_) => {
                    let total = report::callgrind_total(&file);
                    if total.is_none() {
                        reason = "no total in callgrind's output (is valgrind installed?)".into();
                    }
                    totals.push(total);
                }
                Err(e) => {
                    eprintln!("callgrind {client}: {e}");
                    reason = e;
                    totals.push(None);
                }
            }
            let _ = std::fs::remove_file(&file);
        }
        let per = match totals[..] {
            [Some(a), Some(b)] => Some((b as f64 - a as f64) / (large - small) as f64),
            _ => None,
        };
        if let Some(per) = per.filter(|per| *per > 0.0) {
            eprintln!("callgrind {client:<28} {per:>10.0} instructions/request");
            out.push((client.clone(), per));
        } else {
            if let Some(per) = per {
                // More instructions for fewer requests: the count follows timing, not the work
                // per request (a client that polls in a loop while it waits).
                reason = format!(
                    "the 1000-request run took more instructions than the 3000-request one \
                     ({per:.0}/request): the count depends on timing"
                );
            }
            failed.push(Failed {
                client: pair_client.clone(),
                runtime: *runtime,
                scenario: "callgrind",
                reason,
            });
        }
    }
    out
}

fn report_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        })
        .join("keel-report")
}

#[cfg(test)]
mod tests {
    use super::{check_args, selected_pairs};

    fn check(args: &str) -> Result<(), String> {
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        check_args(&args)
    }

    #[test]
    fn known_flags_pass_and_anything_else_stops_the_run() {
        assert!(check("").is_ok());
        assert!(
            check("--quick --reps 2 --scenarios S1,s2 --clients keel-smol --callgrind").is_ok()
        );
        assert_eq!(check("--help"), Err(String::new()));
        assert!(check("--quik").unwrap_err().contains("--quik"));
        assert!(check("--reps").unwrap_err().contains("needs a value"));
        assert!(check("--clients keel-smo")
            .unwrap_err()
            .contains("keel-smo"));
        assert!(check("--clients keel-hyper,keel-hyper-guarded,hyper-native").is_ok());
        assert!(check("--clients keel-hyper,keel-hyper-redis,keel-hyper-redis-nolease").is_ok());
        assert!(check("--clients keel-hyper-redis-lease")
            .unwrap_err()
            .contains("keel-hyper-redis-lease"));
        assert!(check("--clients keel-hyper-guard")
            .unwrap_err()
            .contains("keel-hyper-guard"));
        assert!(check("--scenarios S5").unwrap_err().contains("S5"));
        assert!(check("--pairs keel-smol@no-runtime,*@tokio-mt,keel-isahc@*").is_ok());
        assert!(check("--pairs keel-hyper@no-runtime")
            .unwrap_err()
            .contains("does not run on no-runtime"));
        assert!(check("--pairs keel-smol@tokyo")
            .unwrap_err()
            .contains("tokyo"));
        assert!(check("--pairs reqwest@smol").is_err());
    }

    #[test]
    fn no_selection_is_the_whole_matrix_and_clients_are_on_their_home_runtime() {
        let args = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
        let all = selected_pairs(&[]).unwrap();
        assert_eq!(all.len(), crate::clients::MATRIX.len());
        let picked = selected_pairs(&args(
            "--clients keel-isahc --pairs keel-smol@*,keel-isahc@smol",
        ))
        .unwrap();
        let names: Vec<String> = picked
            .iter()
            .map(|(c, r)| crate::clients::pair_name(c, *r))
            .collect();
        assert_eq!(
            names,
            [
                "keel-isahc@smol",
                "keel-smol@tokio",
                "keel-smol@tokio-mt",
                "keel-smol@smol",
                "keel-smol@async-std",
                "keel-smol@no-runtime"
            ]
        );
    }
}
