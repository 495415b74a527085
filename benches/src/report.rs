//! Aggregation over repetitions, the Markdown report, the targets, and two SVG plots.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::clients::{self, Runtime};
use crate::scenario::Sample;

/// One measured (pair, scenario) run.
pub(crate) struct Run {
    pub(crate) client: String,
    pub(crate) runtime: Runtime,
    pub(crate) scenario: &'static str,
    pub(crate) sample: Sample,
}

/// One (pair, scenario) repetition that produced no sample: the child failed, or did not
/// finish in time (`scenario` is `"callgrind"` for a failed instruction count).
pub(crate) struct Failed {
    pub(crate) client: String,
    pub(crate) runtime: Runtime,
    pub(crate) scenario: &'static str,
    pub(crate) reason: String,
}

/// What wrk measured on the S2 shape, when wrk is installed.
pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) cpu_us_per_req: f64,
}

/// Medians and spreads of one (client, scenario) over its repetitions.
struct Cell {
    client: String,
    runtime: Runtime,
    scenario: &'static str,
    /// Repetitions that produced a sample.
    reps: usize,
    rps: Stat,
    /// Bytes per second (S3).
    bps: Stat,
    cpu_us: Stat,
    p50: f64,
    p99: f64,
    /// p99 over the repetitions, for its spread.
    p99s: Stat,
    p999: f64,
    max: f64,
    rss_mib: f64,
    /// Peak RSS over the repetitions, MiB, for its spread.
    rss: Stat,
    errors: u64,
    cdf: Vec<(f64, u64)>,
    first_error: Option<String>,
    /// CPU-µs per request of the client's helper process (its own Redis), when it has one.
    helper_cpu_us: Option<Stat>,
}

#[derive(Clone, Copy, Default)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(mut xs: Vec<f64>) -> Self {
        if xs.is_empty() {
            return Self::default();
        }
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        let median = if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        };
        Self {
            median,
            min: xs[0],
            max: xs[n - 1],
        }
    }

    /// The spread as a percentage of the median.
    fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median * 100.0
        }
    }
}

/// Everything the report says.
pub(crate) struct Summary {
    cells: Vec<Cell>,
    failed: Vec<Failed>,
    /// Instructions per request, by pair name (`client@runtime`).
    instructions: Vec<(String, f64)>,
    wrk: Option<Wrk>,
    quick: bool,
    reps: usize,
    /// The pairs this run selected, in report order: each one is reported, measured or not.
    pairs: Vec<(String, Runtime)>,
}

const SCENARIOS: [(&str, &str); 4] = [
    (
        "S1",
        "1000 requests launched at once on one client (bursts), ~1 KiB JSON",
    ),
    (
        "S2",
        "20 concurrent workers, sequential requests, ~1 KiB JSON, fixed time",
    ),
    (
        "S3",
        "a 1 GiB body streamed chunk by chunk and discarded, 5 times in a row",
    ),
    ("S4", "S2 against a 50 ms delayed endpoint"),
];

impl Summary {
    pub(crate) fn new(
        runs: Vec<Run>,
        failed: Vec<Failed>,
        instructions: Vec<(String, f64)>,
        wrk: Option<Wrk>,
        quick: bool,
        reps: usize,
        pairs: Vec<(String, Runtime)>,
    ) -> Self {
        let mut cells = Vec::new();
        for (scenario, _) in SCENARIOS {
            let mut keys: Vec<(&str, Runtime)> = Vec::new();
            for r in runs.iter().filter(|r| r.scenario == scenario) {
                if !keys.contains(&(r.client.as_str(), r.runtime)) {
                    keys.push((&r.client, r.runtime));
                }
            }
            // Report order: the selected pairs' order, then by client rank.
            keys.sort_by_key(|(c, rt)| {
                (
                    pairs
                        .iter()
                        .position(|(pc, pr)| pc == c && pr == rt)
                        .unwrap_or(usize::MAX),
                    clients::rank(c),
                )
            });
            for (name, runtime) in keys {
                let mine: Vec<&Sample> = runs
                    .iter()
                    .filter(|r| r.scenario == scenario && r.client == name && r.runtime == runtime)
                    .map(|r| &r.sample)
                    .collect();
                let med = |f: &dyn Fn(&Sample) -> f64| {
                    Stat::of(mine.iter().map(|s| f(s)).collect()).median
                };
                let best = mine.iter().max_by(|a, b| {
                    (a.requests as f64 / a.secs).total_cmp(&(b.requests as f64 / b.secs))
                });
                cells.push(Cell {
                    client: name.to_owned(),
                    runtime,
                    scenario,
                    reps: mine.len(),
                    rps: Stat::of(mine.iter().map(|s| s.requests as f64 / s.secs).collect()),
                    bps: Stat::of(mine.iter().map(|s| s.bytes as f64 / s.secs).collect()),
                    cpu_us: Stat::of(
                        mine.iter()
                            .map(|s| s.cpu_us / s.requests.max(1) as f64)
                            .collect(),
                    ),
                    p50: med(&|s| s.latency_us[0] as f64),
                    p99: med(&|s| s.latency_us[2] as f64),
                    p99s: Stat::of(mine.iter().map(|s| s.latency_us[2] as f64).collect()),
                    p999: med(&|s| s.latency_us[3] as f64),
                    max: med(&|s| s.latency_us[4] as f64),
                    rss_mib: mine.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
                    rss: Stat::of(
                        mine.iter()
                            .map(|s| s.peak_rss_kib as f64 / 1024.0)
                            .collect(),
                    ),
                    errors: mine.iter().map(|s| s.errors).sum(),
                    cdf: best.map(|s| s.cdf.clone()).unwrap_or_default(),
                    first_error: mine.iter().find_map(|s| s.first_error.clone()),
                    helper_cpu_us: mine
                        .iter()
                        .map(|s| s.helper_cpu_us.map(|us| us / s.requests.max(1) as f64))
                        .collect::<Option<Vec<f64>>>()
                        .map(Stat::of),
                });
            }
        }
        Self {
            cells,
            failed,
            instructions,
            wrk,
            quick,
            reps,
            pairs,
        }
    }

    /// The cells of `scenario` whose pair is its client's home pair (the per-client tables).
    fn cells_of(&self, scenario: &str) -> Vec<&Cell> {
        self.cells
            .iter()
            .filter(|c| c.scenario == scenario && c.runtime == clients::home(&c.client))
            .collect()
    }

    /// `client`'s cell in `scenario`, on its home runtime.
    fn cell(&self, scenario: &str, client: &str) -> Option<&Cell> {
        self.pair_cell(scenario, client, clients::home(client))
    }

    fn pair_cell(&self, scenario: &str, client: &str, runtime: Runtime) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.scenario == scenario && c.client == client && c.runtime == runtime)
    }

    /// How many (pair, scenario) results are not clean: repetitions that failed or did not
    /// finish, cells with request errors, and selected pairs with nothing to report.
    pub(crate) fn incomplete(&self) -> usize {
        let scenarios: Vec<&str> = SCENARIOS
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| {
                self.cells.iter().any(|c| c.scenario == *s)
                    || self.failed.iter().any(|f| f.scenario == *s)
            })
            .collect();
        let missing = self
            .pairs
            .iter()
            .flat_map(|(c, r)| scenarios.iter().map(move |s| (c, *r, *s)))
            .filter(|(c, r, s)| {
                self.pair_cell(s, c, *r).is_none()
                    && !self
                        .failed
                        .iter()
                        .any(|f| f.scenario == *s && &f.client == *c && f.runtime == *r)
            })
            .count();
        self.failed.len() + self.cells.iter().filter(|c| c.errors > 0).count() + missing
    }

    pub(crate) fn to_markdown(&self) -> String {
        let mut out = String::from("# keel benchmarks\n\n");
        let _ = writeln!(
            out,
            "{} run, {} repetition(s) per (scenario, client), clients in rotating order; \
             server pinned to CPU 0 and each client to CPU 1 (when the machine has 2+); {} CPUs, {}.\n\
             Figures are medians; `[min–max]` is the spread over repetitions.\n",
            if self.quick { "Quick" } else { "Full" },
            self.reps,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model(),
        );
        for (scenario, what) in SCENARIOS {
            let cells = self.cells_of(scenario);
            if cells.is_empty() {
                continue;
            }
            let _ = writeln!(out, "## {scenario}: {what}\n");
            if scenario == "S3" {
                out.push_str(
                    "| client | GB/s [min–max] | peak RSS MiB | errors |\n|---|---|---|---|\n",
                );
                for c in cells {
                    let _ = writeln!(
                        out,
                        "| {} | {:.2} [{:.2}–{:.2}] | {:.1} | {} |",
                        c.client,
                        c.bps.median / 1e9,
                        c.bps.min / 1e9,
                        c.bps.max / 1e9,
                        c.rss_mib,
                        c.errors
                    );
                }
            } else {
                out.push_str(
                    "| client | req/s [min–max] | CPU-µs/req [min–max] | p50 µs | p99 µs | p99.9 µs | max µs | p99/p50 | peak RSS MiB | errors |\n\
                     |---|---|---|---|---|---|---|---|---|---|\n",
                );
                for c in &cells {
                    let _ = writeln!(
                        out,
                        "| {} | {:.0} [{:.0}–{:.0}] | {:.1} [{:.1}–{:.1}] | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {} |",
                        c.client,
                        c.rps.median, c.rps.min, c.rps.max,
                        c.cpu_us.median, c.cpu_us.min, c.cpu_us.max,
                        c.p50, c.p99, c.p999, c.max,
                        c.p99 / c.p50.max(1.0),
                        c.rss_mib, c.errors
                    );
                }
                let helpers: Vec<String> = cells
                    .iter()
                    .filter_map(|c| {
                        c.helper_cpu_us.map(|s| {
                            format!("{} {:.1} [{:.1}–{:.1}]", c.client, s.median, s.min, s.max)
                        })
                    })
                    .collect();
                if !helpers.is_empty() {
                    let _ = writeln!(
                        out,
                        "\nredis-server's own CPU-µs/req (the client's Redis, not in the table's \
                         CPU-µs/req): {}.",
                        helpers.join(", ")
                    );
                }
            }
            out.push('\n');
        }
        if let Some(w) = &self.wrk {
            let _ = writeln!(
                out,
                "wrk (1 thread, 20 connections, S2 shape): {:.0} req/s, {:.1} CPU-µs/req.\n",
                w.rps, w.cpu_us_per_req
            );
        }
        out.push_str(&self.tax_markdown());
        out.push_str(&self.variants_markdown());
        out.push_str(&self.runtimes_markdown());
        out.push_str(&self.targets_markdown());
        let errors: Vec<&Cell> = self.cells.iter().filter(|c| c.errors > 0).collect();
        if !errors.is_empty() || !self.failed.is_empty() {
            out.push_str("\n## Errors\n\n");
            for c in errors {
                let _ = writeln!(
                    out,
                    "- {} {}: {} errors, first: {}",
                    c.scenario,
                    clients::pair_name(&c.client, c.runtime),
                    c.errors,
                    c.first_error.as_deref().unwrap_or("?")
                );
            }
            for f in &self.failed {
                let _ = writeln!(
                    out,
                    "- {} {}: failed: {}",
                    f.scenario,
                    clients::pair_name(&f.client, f.runtime),
                    f.reason
                );
            }
        }
        out
    }

    /// Instructions per request of `client` on its home runtime.
    fn instructions_of(&self, client: &str) -> Option<f64> {
        self.pair_instructions(client, clients::home(client))
    }

    fn pair_instructions(&self, client: &str, runtime: Runtime) -> Option<f64> {
        let name = clients::pair_name(client, runtime);
        self.instructions
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, i)| *i)
    }

    fn tax_markdown(&self) -> String {
        let mut out = String::from(
            "## The abstraction tax: keel over each backend used natively (ratio keel / native)\n\n\
             | backend | S1 req/s | S1 CPU-µs/req | S2 req/s | S2 CPU-µs/req | S3 GB/s | instructions/req |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for keel in clients::ALL.iter().filter(|c| c.starts_with("keel-")) {
            let Some(native) = clients::native_of(keel) else {
                continue;
            };
            let ratio = |scenario: &str, f: &dyn Fn(&Cell) -> f64| -> String {
                match (self.cell(scenario, keel), self.cell(scenario, native)) {
                    (Some(k), Some(n)) if f(n) > 0.0 => format!("{:.3}", f(k) / f(n)),
                    _ => "-".to_owned(),
                }
            };
            let instr = match (self.instructions_of(keel), self.instructions_of(native)) {
                (Some(k), Some(n)) => format!("{:.3} ({k:.0} / {n:.0})", k / n),
                _ => "not measured (run with --callgrind)".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                keel.trim_start_matches("keel-"),
                ratio("S1", &|c| c.rps.median),
                ratio("S1", &|c| c.cpu_us.median),
                ratio("S2", &|c| c.rps.median),
                ratio("S2", &|c| c.cpu_us.median),
                ratio("S3", &|c| c.bps.median),
                instr
            );
        }
        out.push('\n');
        out
    }

    /// Each variant that was measured against the client it adds to; empty when none was.
    fn variants_markdown(&self) -> String {
        let mut rows = String::new();
        for variant in clients::VARIANTS {
            let Some(base) = clients::base_of(variant) else {
                continue;
            };
            let ratio = |scenario: &str, f: &dyn Fn(&Cell) -> f64| -> Option<String> {
                match (self.cell(scenario, variant), self.cell(scenario, base)) {
                    (Some(v), Some(b)) if f(b) > 0.0 => Some(format!("{:.3}", f(v) / f(b))),
                    _ => None,
                }
            };
            let instr = match (self.instructions_of(variant), self.instructions_of(base)) {
                (Some(v), Some(b)) => Some(format!("{:.3} ({v:.0} / {b:.0})", v / b)),
                _ => None,
            };
            let cells = [
                ratio("S1", &|c| c.rps.median),
                ratio("S1", &|c| c.cpu_us.median),
                ratio("S2", &|c| c.rps.median),
                ratio("S2", &|c| c.cpu_us.median),
                instr,
            ];
            if cells.iter().all(Option::is_none) {
                continue;
            }
            let _ = write!(rows, "| {variant} | {base} |");
            for cell in cells {
                let _ = write!(rows, " {} |", cell.as_deref().unwrap_or("-"));
            }
            rows.push('\n');
        }
        if rows.is_empty() {
            return rows;
        }
        format!(
            "## Variants: what an addition costs (ratio variant / base client)\n\n\
             | variant | base | S1 req/s | S1 CPU-µs/req | S2 req/s | S2 CPU-µs/req | instructions/req |\n\
             |---|---|---|---|---|---|---|\n{rows}\n"
        )
    }

    fn targets_markdown(&self) -> String {
        let mut out = String::from("## Targets\n\n");
        let mut line = |ok: Option<bool>, text: String| {
            let mark = match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let _ = writeln!(out, "- {mark}: {text}");
        };
        for keel in clients::ALL.iter().filter(|c| c.starts_with("keel-")) {
            let Some(native) = clients::native_of(keel) else {
                continue;
            };
            for scenario in ["S1", "S2"] {
                if let (Some(k), Some(n)) = (self.cell(scenario, keel), self.cell(scenario, native))
                {
                    let cpu = k.cpu_us.median / n.cpu_us.median;
                    line(
                        Some(cpu <= 1.03),
                        format!("{keel} {scenario} CPU-µs/req within 3% of {native}: ratio {cpu:.3} (spread ±{:.0}%)", k.cpu_us.spread_pct().max(n.cpu_us.spread_pct()) / 2.0),
                    );
                }
            }
        }
        for (scenario, factor) in [("S2", 1.3), ("S1", 1.2), ("S4", 1.2)] {
            if let (Some(k), Some(r)) = (
                self.cell(scenario, "keel-hyper"),
                self.cell(scenario, "reqwest"),
            ) {
                let x = k.rps.median / r.rps.median;
                line(
                    Some(x >= factor),
                    format!("keel-hyper {scenario} req/s at least {factor}x reqwest: {x:.2}x"),
                );
                line(
                    Some(k.p99 <= r.p99 * 1.05),
                    format!(
                        "keel-hyper {scenario} p99 no worse than reqwest (5% allowed for noise): {:.0} µs vs {:.0} µs",
                        k.p99, r.p99
                    ),
                );
            }
        }
        for (ok, text) in self.runtime_targets() {
            line(ok, text);
        }
        match (&self.wrk, self.cell("S2", "keel-hyper")) {
            (Some(w), Some(k)) => {
                let r = k.cpu_us.median / w.cpu_us_per_req;
                line(
                    Some(r <= 1.5),
                    format!("keel-hyper S2 CPU-µs/req within 1.5x of wrk's: {r:.2}x"),
                );
            }
            _ => line(
                None,
                "keel-hyper S2 CPU-µs/req within 1.5x of wrk's (wrk not installed)".to_owned(),
            ),
        }
        out.push('\n');
        out
    }

    /// The runtime matrix's targets, one line per keel pair (and per pair for p99/p50),
    /// each against its same-runtime floor: `(met?, what)`, `None` when not measured.
    fn runtime_targets(&self) -> Vec<(Option<bool>, String)> {
        let mut out = Vec::new();
        let keel_pairs: Vec<&(String, Runtime)> = self
            .pairs
            .iter()
            .filter(|(c, _)| c.starts_with("keel-") && clients::VARIANTS.iter().all(|v| v != c))
            .collect();
        for (client, runtime) in &keel_pairs {
            let pair = clients::pair_name(client, *runtime);
            let Some((floor, frt)) = clients::floor_of(client, *runtime) else {
                continue;
            };
            let floor_name = clients::pair_name(floor, frt);
            match (
                self.pair_instructions(client, *runtime),
                self.pair_instructions(floor, frt),
            ) {
                (Some(k), Some(n)) => out.push((
                    Some(k / n <= 1.03),
                    format!(
                        "{pair} S2 instructions/req at most 1.03x {floor_name}'s: {:.3} ({k:.0} / {n:.0})",
                        k / n
                    ),
                )),
                _ => out.push((
                    None,
                    format!("{pair} S2 instructions/req at most 1.03x {floor_name}'s (needs --callgrind)"),
                )),
            }
            if let (Some(k), Some(n)) = (
                self.pair_cell("S3", client, *runtime),
                self.pair_cell("S3", floor, frt),
            ) {
                let r = k.bps.median / n.bps.median;
                out.push((
                    Some(r >= 0.9),
                    format!(
                        "{pair} S3 at least 90% of {floor_name}'s MB/s: {:.0}% ({:.0} [{:.0}–{:.0}] vs {:.0} [{:.0}–{:.0}] MB/s)",
                        r * 100.0,
                        k.bps.median / 1e6,
                        k.bps.min / 1e6,
                        k.bps.max / 1e6,
                        n.bps.median / 1e6,
                        n.bps.min / 1e6,
                        n.bps.max / 1e6
                    ),
                ));
                out.push((
                    Some(k.rss_mib < 32.0),
                    format!("{pair} S3 peak RSS under 32 MiB: {:.1} MiB", k.rss_mib),
                ));
            }
            if let (Some(k), Some(n)) = (
                self.pair_cell("S1", client, *runtime),
                self.pair_cell("S1", floor, frt),
            ) {
                let r = k.rss_mib / n.rss_mib.max(0.1);
                out.push((
                    Some(r <= 1.25),
                    format!(
                        "{pair} S1 peak RSS at most 1.25x {floor_name}'s: {r:.2}x ({:.1} [{:.1}–{:.1}] vs {:.1} [{:.1}–{:.1}] MiB)",
                        k.rss_mib, k.rss.min, k.rss.max, n.rss_mib, n.rss.min, n.rss.max
                    ),
                ));
            }
        }
        for (client, runtime) in &self.pairs {
            if let Some(k) = self.pair_cell("S2", client, *runtime) {
                let r = k.p99 / k.p50.max(1.0);
                out.push((
                    Some(r < 3.0),
                    format!(
                        "{} S2 p99/p50 under 3: {r:.2} (p50 {:.0} µs, p99 {:.0} [{:.0}–{:.0}] µs)",
                        clients::pair_name(client, *runtime),
                        k.p50,
                        k.p99,
                        k.p99s.min,
                        k.p99s.max
                    ),
                ));
            }
        }
        out
    }

    /// The figures of every measured pair in a scenario, with their ratios; `None` for a
    /// scenario nothing ran in.
    fn runtime_rows(&self, scenario: &str) -> Option<Vec<RuntimeRow<'_>>> {
        let ran = self.cells.iter().any(|c| c.scenario == scenario)
            || self.failed.iter().any(|f| f.scenario == scenario);
        if !ran {
            return None;
        }
        let metrics = Metric::of(scenario);
        let cells: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| c.scenario == scenario && c.reps > 0)
            .collect();
        let value = |m: Metric, c: &Cell| -> Option<f64> {
            match m {
                Metric::Instructions => self.pair_instructions(&c.client, c.runtime),
                m => Some(m.value(c)),
            }
        };
        let best: Vec<Option<f64>> = metrics
            .iter()
            .map(|m| {
                let vs = cells.iter().filter_map(|c| value(*m, c));
                if m.higher_is_better() {
                    vs.reduce(f64::max)
                } else {
                    vs.reduce(f64::min)
                }
            })
            .collect();
        let mut rows = Vec::new();
        for (client, runtime) in &self.pairs {
            let cell = self.pair_cell(scenario, client, *runtime);
            let floor = clients::floor_of(client, *runtime);
            let floor_cell = floor.and_then(|(f, r)| self.pair_cell(scenario, f, r));
            let failures: Vec<&Failed> = self
                .failed
                .iter()
                .filter(|f| f.scenario == scenario && &f.client == client && f.runtime == *runtime)
                .collect();
            let figures = metrics
                .iter()
                .zip(&best)
                .map(|(m, b)| {
                    let v = cell.and_then(|c| value(*m, c));
                    let fv = floor_cell.and_then(|c| value(*m, c));
                    Figure {
                        metric: *m,
                        value: v,
                        spread: cell.map(|c| m.spread(c)),
                        to_floor: match (v, fv) {
                            (Some(v), Some(f)) if f > 0.0 => Some(v / f),
                            _ => None,
                        },
                        to_best: match (v, b) {
                            (Some(v), Some(b)) if *b > 0.0 => Some(v / b),
                            _ => None,
                        },
                    }
                })
                .collect();
            rows.push(RuntimeRow {
                client,
                runtime: *runtime,
                floor,
                cell,
                failures,
                figures,
            });
        }
        Some(rows)
    }

    /// The "Across runtimes" section: per scenario, every pair with its figures, their ratio to
    /// the same runtime's native floor and to the best pair, then the cost of each choice in
    /// plain words beside the seeds' httpx-vs-aiohttp figures.
    fn runtimes_markdown(&self) -> String {
        let mut out = String::from(
            "## Across runtimes\n\n\
             Every pair is a client on a host runtime (`tokio-mt`: tokio's multi-thread runtime; \
             `no-runtime`: a plain thread and `futures::executor::block_on`). `÷ floor` is a \
             figure over the same runtime's native floor's (the floor column: raw isahc for \
             keel-isahc, the runtime's own hyper for the others); `÷ best` over the best pair's \
             in the scenario (highest throughput, lowest of the rest). `n` is the repetitions \
             that finished; `[min–max]` their spread. Instructions/request are callgrind's, S2's \
             shape (deterministic, one run). Heat map: `bench-runtimes.svg`.\n\n",
        );
        for (scenario, what) in SCENARIOS {
            let Some(rows) = self.runtime_rows(scenario) else {
                continue;
            };
            let metrics = Metric::of(scenario);
            let _ = writeln!(out, "### {scenario}: {what}\n");
            out.push_str("| runtime | client | floor | n |");
            for m in &metrics {
                let _ = write!(out, " {} | ÷ floor | ÷ best |", m.header(scenario));
            }
            out.push_str(" errors |\n|---|---|---|---|");
            for _ in &metrics {
                out.push_str("---|---|---|");
            }
            out.push_str("---|\n");
            for row in &rows {
                let attempted = row.cell.map_or(0, |c| c.reps) + row.failures.len();
                let _ = write!(
                    out,
                    "| {} | {} | {} | {}/{} |",
                    row.runtime.name(),
                    row.client,
                    row.floor
                        .map_or("—".to_owned(), |(f, r)| clients::pair_name(f, r)),
                    row.cell.map_or(0, |c| c.reps),
                    attempted.max(self.reps)
                );
                if row.cell.is_none() {
                    let why = row
                        .failures
                        .first()
                        .map_or("did not run", |f| f.reason.as_str());
                    let _ = write!(out, " FAILED: {} |", why.replace('|', "\\|"));
                    for _ in 1..metrics.len() * 3 {
                        out.push_str(" |");
                    }
                    out.push_str(" - |\n");
                    continue;
                }
                for f in &row.figures {
                    let _ = write!(
                        out,
                        " {} | {} | {} |",
                        f.text(),
                        ratio_text(f.to_floor),
                        ratio_text(f.to_best)
                    );
                }
                let errors = row.cell.map_or(0, |c| c.errors);
                let failed = row.failures.len();
                let _ = writeln!(
                    out,
                    " {}{} |",
                    errors,
                    if failed > 0 {
                        format!(
                            "; {failed} repetition(s) failed: {}",
                            row.failures[0].reason.replace('|', "\\|")
                        )
                    } else {
                        String::new()
                    }
                );
            }
            out.push('\n');
        }
        out.push_str(&self.plain_words());
        out
    }

    /// The cost of choosing each backend and runtime, in sentences, from this run's figures.
    fn plain_words(&self) -> String {
        let mut out = String::from("### What each choice costs, in plain words\n\n");
        let keel_pairs: Vec<&(String, Runtime)> = self
            .pairs
            .iter()
            .filter(|(c, _)| c.starts_with("keel-") && clients::VARIANTS.iter().all(|v| v != c))
            .collect();
        // Against the floor on the same runtime: what keel adds where a user would otherwise
        // write the native client.
        for scenario in ["S1", "S2"] {
            let mut parts = Vec::new();
            for (client, runtime) in &keel_pairs {
                let Some((floor, frt)) = clients::floor_of(client, *runtime) else {
                    continue;
                };
                if let (Some(k), Some(f)) = (
                    self.pair_cell(scenario, client, *runtime),
                    self.pair_cell(scenario, floor, frt),
                ) {
                    parts.push(format!(
                        "{} {:.2}x the time and {:.2}x the CPU of {}",
                        clients::pair_name(client, *runtime),
                        f.rps.median / k.rps.median.max(1e-9),
                        k.cpu_us.median / f.cpu_us.median.max(1e-9),
                        clients::pair_name(floor, frt)
                    ));
                }
            }
            if !parts.is_empty() {
                let _ = writeln!(
                    out,
                    "- {scenario}, each keel pair against its same-runtime floor: {}.",
                    parts.join("; ")
                );
            }
        }
        // Choosing a runtime: each keel backend on each runtime, against its best runtime.
        for backend in ["keel-hyper", "keel-smol", "keel-isahc"] {
            let mut mine: Vec<(Runtime, f64, f64)> = keel_pairs
                .iter()
                .filter(|(c, _)| c == backend)
                .filter_map(|(c, r)| {
                    self.pair_cell("S2", c, *r)
                        .map(|cell| (*r, cell.rps.median, cell.cpu_us.median))
                })
                .collect();
            if mine.len() < 2 {
                continue;
            }
            let best = mine.iter().map(|m| m.1).fold(0.0, f64::max).max(1e-9);
            mine.sort_by(|a, b| b.1.total_cmp(&a.1));
            let _ = writeln!(
                out,
                "- {backend} on each runtime (S2 req/s over its best runtime's, CPU-µs/req): {}.",
                mine.iter()
                    .map(|(r, rps, cpu)| format!("{} {:.2} ({cpu:.1})", r.name(), rps / best))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        // The seeds' figures, for scale: httpx over anyio against aiohttp on asyncio.
        let worst = |scenario: &str| -> Option<(String, f64)> {
            keel_pairs
                .iter()
                .filter_map(|(c, r)| {
                    let (f, fr) = clients::floor_of(c, *r)?;
                    let k = self.pair_cell(scenario, c, *r)?;
                    let n = self.pair_cell(scenario, f, fr)?;
                    Some((
                        clients::pair_name(c, *r),
                        n.rps.median / k.rps.median.max(1e-9),
                    ))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        let _ = writeln!(
            out,
            "- For scale, the seeds: httpx (runtime-agnostic through anyio) took 10.22 s against \
             aiohttp's 3.79 s for 1000 concurrent requests (2.70x the time; S1's shape) and was \
             more than 10x slower with 20 concurrent requests (S2's shape).{}{}\n",
            worst("S1").map_or(String::new(), |(p, x)| format!(
                " keel's largest same-runtime time ratio on S1: {x:.2}x ({p})."
            )),
            worst("S2").map_or(String::new(), |(p, x)| format!(" On S2: {x:.2}x ({p}).")),
        );
        out
    }

    /// A heat map of the "Across runtimes" ratios: per scenario, a row per pair and a column
    /// per figure, over the floor and over the best pair; green is cheaper or equal, red
    /// costlier (log scale, saturated at 4x).
    pub(crate) fn runtimes_svg(&self) -> String {
        let (label_w, cell_w, cell_h) = (210.0, 62.0, 20.0);
        let mut y = 30.0;
        let mut width: f64 = 700.0;
        let mut body = String::from(
            r#"<text x="10" y="18" font-weight="bold">Across runtimes: each figure over the same runtime's native floor, and over the best pair (green: cheaper or equal, red: costlier)</text>"#,
        );
        for (scenario, what) in SCENARIOS {
            let Some(rows) = self.runtime_rows(scenario) else {
                continue;
            };
            let metrics = Metric::of(scenario);
            y += 16.0;
            let _ = write!(
                body,
                r#"<text x="10" y="{y}" font-weight="bold">{scenario}: {}</text>"#,
                escape(what)
            );
            y += 8.0;
            for (g, group) in ["÷ floor", "÷ best"].iter().enumerate() {
                for (i, m) in metrics.iter().enumerate() {
                    let x = label_w + (g * metrics.len() + i) as f64 * cell_w + g as f64 * 16.0;
                    let _ = write!(
                        body,
                        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{} {}</text>"#,
                        x + cell_w / 2.0,
                        y + 10.0,
                        escape(m.short()),
                        escape(group)
                    );
                }
            }
            y += 14.0;
            for row in &rows {
                let _ = write!(
                    body,
                    r#"<text x="10" y="{:.1}">{}</text>"#,
                    y + 14.0,
                    escape(&clients::pair_name(row.client, row.runtime))
                );
                for g in 0..2 {
                    for (i, f) in row.figures.iter().enumerate() {
                        let x = label_w + (g * metrics.len() + i) as f64 * cell_w + g as f64 * 16.0;
                        let r = if g == 0 { f.to_floor } else { f.to_best };
                        let (fill, label) = match (row.cell, r) {
                            (None, _) => ("#8b0000".to_owned(), "failed".to_owned()),
                            (Some(_), None) => ("#eeeeee".to_owned(), "—".to_owned()),
                            (Some(_), Some(r)) => {
                                let cost = if f.metric.higher_is_better() {
                                    1.0 / r.max(1e-9)
                                } else {
                                    r
                                };
                                (heat(cost), format!("{r:.2}"))
                            }
                        };
                        let color = if row.cell.is_none() { "white" } else { "black" };
                        let _ = write!(
                            body,
                            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}" stroke="white"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="{color}">{label}</text>"#,
                            cell_w,
                            cell_h,
                            x + cell_w / 2.0,
                            y + 14.0
                        );
                        width = width.max(x + cell_w + 10.0);
                    }
                }
                y += cell_h;
            }
            y += 10.0;
        }
        svg(width, y + 10.0, &body)
    }

    /// One horizontal bar chart per scenario: median with a min–max whisker.
    pub(crate) fn throughput_svg(&self) -> String {
        let row = 22.0;
        let label_w = 130.0;
        let bar_w = 420.0;
        let mut y = 30.0;
        let mut body = String::new();
        for (scenario, what) in SCENARIOS {
            let cells = self.cells_of(scenario);
            if cells.is_empty() {
                continue;
            }
            // S3 is measured in bytes and shown in GB/s; the others in requests per second.
            let (unit, scale, decimals) = if scenario == "S3" {
                ("GB/s", 1e9, 2)
            } else {
                ("req/s", 1.0, 0)
            };
            let stat = |c: &Cell| if scenario == "S3" { c.bps } else { c.rps };
            let scale_max = cells
                .iter()
                .map(|c| stat(c).max / scale)
                .fold(0.0, f64::max)
                .max(1e-9);
            let _ = write!(
                body,
                r#"<text x="10" y="{y}" font-weight="bold">{scenario} ({unit}): {}</text>"#,
                escape(what)
            );
            y += 10.0;
            for c in cells {
                let s = stat(c);
                let x = |v: f64| v / scale / scale_max * bar_w;
                let (w, lo, hi) = (x(s.median), x(s.min), x(s.max));
                let color = if c.client.starts_with("keel-") {
                    "#2a6fdb"
                } else if c.client == "reqwest" {
                    "#d98c1f"
                } else {
                    "#7a7a7a"
                };
                let _ = write!(
                    body,
                    r#"<text x="10" y="{ty}">{name}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="16" fill="{color}"/><line x1="{x1:.1}" x2="{x2:.1}" y1="{my}" y2="{my}" stroke="black"/><text x="{tx:.1}" y="{ty}">{v:.decimals$}</text>"#,
                    ty = y + 13.0,
                    name = escape(&c.client),
                    x1 = label_w + lo,
                    x2 = label_w + hi,
                    my = y + 8.0,
                    tx = label_w + w.max(hi) + 6.0,
                    v = s.median / scale,
                );
                y += row;
            }
            y += 20.0;
        }
        svg(label_w + bar_w + 120.0, y, &body)
    }

    /// S2 latency percentile spectrum per client (log scale).
    pub(crate) fn latency_svg(&self) -> String {
        let mut cells = self.cells_of("S2");
        cells.retain(|c| !c.cdf.is_empty());
        let (left, top, w, h) = (70.0, 40.0, 560.0, 300.0);
        let mut body = String::from(
            r#"<text x="10" y="20" font-weight="bold">S2 latency by percentile (µs, log scale)</text>"#,
        );
        let points = cells.first().map_or(0, |c| c.cdf.len());
        if points < 2 {
            return svg(left + w + 200.0, top + h + 60.0, &body);
        }
        let max_lat = cells
            .iter()
            .flat_map(|c| c.cdf.iter().map(|p| p.1))
            .max()
            .unwrap_or(1)
            .max(2) as f64;
        let min_lat = cells
            .iter()
            .flat_map(|c| c.cdf.iter().map(|p| p.1))
            .min()
            .unwrap_or(1)
            .max(1) as f64;
        let (lo, hi) = (
            min_lat.log10().floor(),
            max_lat.log10().ceil().max(min_lat.log10().floor() + 1.0),
        );
        let ypos = |v: f64| top + h - (v.max(1.0).log10() - lo) / (hi - lo) * h;
        let xpos = |i: usize| left + i as f64 / (points - 1) as f64 * w;
        let mut decade = lo;
        while decade <= hi {
            let yy = ypos(10f64.powf(decade));
            let _ = write!(
                body,
                r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="5" y="{:.1}">{}</text>"##,
                left + w,
                yy + 4.0,
                10f64.powf(decade)
            );
            decade += 1.0;
        }
        for (i, (q, _)) in cells[0].cdf.iter().enumerate() {
            let label = if *q >= 1.0 {
                "max".to_owned()
            } else {
                format!("p{}", q * 100.0)
            };
            let _ = write!(
                body,
                r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{label}</text>"#,
                xpos(i),
                top + h + 16.0
            );
        }
        let palette = [
            "#2a6fdb", "#7a7a7a", "#d98c1f", "#2aa876", "#a83279", "#6b4fd8", "#c0392b",
        ];
        for (n, c) in cells.iter().enumerate() {
            let color = palette[n % palette.len()];
            let pts: Vec<String> = c
                .cdf
                .iter()
                .enumerate()
                .map(|(i, (_, v))| format!("{:.1},{:.1}", xpos(i), ypos(*v as f64)))
                .collect();
            line_with_legend(&mut body, color, &pts, &c.client, (left + w + 20.0, top), n);
        }
        svg(left + w + 200.0, top + h + 40.0, &body)
    }
}

/// One figure the "Across runtimes" tables show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    /// Requests per second (S1, S2, S4).
    Rps,
    /// Bytes per second (S3), shown in MB/s.
    Bps,
    /// CPU-µs per request (S3: per MiB).
    Cpu,
    P99,
    Rss,
    /// callgrind's instructions per request (S2's shape).
    Instructions,
}

impl Metric {
    fn of(scenario: &str) -> Vec<Metric> {
        match scenario {
            "S3" => vec![Metric::Bps, Metric::Cpu, Metric::P99, Metric::Rss],
            "S2" => vec![
                Metric::Rps,
                Metric::Cpu,
                Metric::P99,
                Metric::Rss,
                Metric::Instructions,
            ],
            _ => vec![Metric::Rps, Metric::Cpu, Metric::P99, Metric::Rss],
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::Rps | Metric::Bps)
    }

    fn header(self, scenario: &str) -> &'static str {
        match self {
            Metric::Rps => "req/s [min–max]",
            Metric::Bps => "MB/s [min–max]",
            Metric::Cpu if scenario == "S3" => "CPU-µs/MiB [min–max]",
            Metric::Cpu => "CPU-µs/req [min–max]",
            Metric::P99 => "p99 µs [min–max]",
            Metric::Rss => "peak RSS MiB [min–max]",
            Metric::Instructions => "instructions/req",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Metric::Rps => "req/s",
            Metric::Bps => "MB/s",
            Metric::Cpu => "CPU",
            Metric::P99 => "p99",
            Metric::Rss => "RSS",
            Metric::Instructions => "instr",
        }
    }

    /// The median figure of a cell (not for instructions, which come from callgrind).
    fn value(self, c: &Cell) -> f64 {
        self.spread(c).median
    }

    fn spread(self, c: &Cell) -> Stat {
        let scale = |s: Stat, k: f64| Stat {
            median: s.median * k,
            min: s.min * k,
            max: s.max * k,
        };
        match self {
            Metric::Rps => c.rps,
            Metric::Bps => scale(c.bps, 1e-6),
            // S3's "requests" are 1 GiB bodies: report CPU per MiB streamed instead.
            Metric::Cpu if c.scenario == "S3" => {
                let mib_per_req = bytes_per_request(c) / f64::from(1u32 << 20);
                scale(c.cpu_us, 1.0 / mib_per_req.max(1e-9))
            }
            Metric::Cpu => c.cpu_us,
            Metric::P99 => c.p99s,
            Metric::Rss => c.rss,
            Metric::Instructions => Stat::default(),
        }
    }
}

/// Body bytes per request of a cell (S3's streamed body size).
fn bytes_per_request(c: &Cell) -> f64 {
    if c.rps.median > 0.0 {
        c.bps.median / c.rps.median
    } else {
        0.0
    }
}

/// One figure of one pair in the "Across runtimes" tables.
struct Figure {
    metric: Metric,
    value: Option<f64>,
    spread: Option<Stat>,
    to_floor: Option<f64>,
    to_best: Option<f64>,
}

impl Figure {
    fn text(&self) -> String {
        match (self.metric, self.value, self.spread) {
            (_, None, _) => "-".to_owned(),
            (Metric::Instructions, Some(v), _) => format!("{v:.0}"),
            (Metric::Rss | Metric::Cpu, Some(_), Some(s)) => {
                format!("{:.1} [{:.1}–{:.1}]", s.median, s.min, s.max)
            }
            (_, Some(_), Some(s)) => format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max),
            (_, Some(v), None) => format!("{v:.0}"),
        }
    }
}

/// One pair's row in a scenario of the "Across runtimes" tables.
struct RuntimeRow<'a> {
    client: &'a str,
    runtime: Runtime,
    floor: Option<(&'static str, Runtime)>,
    cell: Option<&'a Cell>,
    failures: Vec<&'a Failed>,
    figures: Vec<Figure>,
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("-".to_owned(), |r| format!("{r:.2}"))
}

/// A heat-map colour for a cost factor: 1 or less is green, growing costs go through yellow
/// to red, saturated at 4x (log scale).
fn heat(cost: f64) -> String {
    if cost <= 1.0 {
        // Cheaper than the reference: the cheaper, the deeper the green (saturated at 0.5x).
        let t = ((1.0 / cost.max(1e-9)).log2()).clamp(0.0, 1.0);
        let g = (230.0 - 60.0 * t) as u8;
        let rb = (200.0 - 120.0 * t) as u8;
        return format!("#{rb:02x}{g:02x}{rb:02x}");
    }
    let t = (cost.log2() / 2.0).clamp(0.0, 1.0);
    // Yellow (255, 235, 130) at 1x to red (215, 48, 39) at 4x.
    let lerp = |a: f64, b: f64| (a + (b - a) * t) as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(255.0, 215.0),
        lerp(235.0, 48.0),
        lerp(130.0, 39.0)
    )
}

/// A plot's line through `points` in `color`, and its legend entry (`label`, the `n`th) in the
/// column that starts at `legend`.
pub(crate) fn line_with_legend(
    body: &mut String,
    color: &str,
    points: &[String],
    label: &str,
    legend: (f64, f64),
    n: usize,
) {
    let (lx, top) = legend;
    let ly = top + n as f64 * 20.0;
    let _ = write!(
        body,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/><rect x="{lx}" y="{ly}" width="12" height="12" fill="{color}"/><text x="{tx}" y="{ty}">{}</text>"#,
        points.join(" "),
        escape(label),
        tx = lx + 18.0,
        ty = ly + 11.0,
    );
}

pub(crate) fn svg(width: f64, height: f64, body: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>{body}</svg>
"#
    )
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// The total instruction count ("summary:" or "totals:" line) of a callgrind output file.
pub(crate) fn callgrind_total(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Runs wrk with 1 thread and 20 connections on `/json` for `secs` seconds, if installed.
pub(crate) fn run_wrk(port: u16, secs: u64) -> Option<Wrk> {
    let before = children_cpu_us();
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c20",
            &format!("-d{secs}s"),
            &format!("http://127.0.0.1:{port}/json"),
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let cpu = children_cpu_us() - before;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    let total = rps * secs as f64;
    Some(Wrk {
        rps,
        cpu_us_per_req: cpu / total.max(1.0),
    })
}

fn children_cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client: &str, requests: u64, cpu_us: f64) -> Run {
        Run {
            client: client.to_owned(),
            runtime: clients::home(client),
            scenario: "S2",
            sample: Sample {
                requests,
                errors: 0,
                bytes: requests * 1024,
                secs: 1.0,
                cpu_us,
                peak_rss_kib: 1024,
                latency_us: [100, 150, 200, 300, 400],
                cdf: Vec::new(),
                first_error: None,
                helper_cpu_us: None,
            },
        }
    }

    #[test]
    fn a_variant_is_reported_against_its_base_client() {
        let runs = vec![
            run("keel-hyper-guarded", 900, 18_000.0),
            run("keel-hyper", 1000, 10_000.0),
        ];
        let instructions = vec![
            ("keel-hyper@tokio".to_owned(), 100_000.0),
            ("keel-hyper-guarded@tokio".to_owned(), 102_000.0),
        ];
        let md =
            Summary::new(runs, Vec::new(), instructions, None, true, 1, Vec::new()).to_markdown();
        // S2 req/s 900 / 1000, CPU-µs/req 20 / 10; no S1 run.
        assert!(
            md.contains(
                "| keel-hyper-guarded | keel-hyper | - | - | 0.900 | 2.000 | 1.020 (102000 / 100000) |"
            ),
            "{md}"
        );
        // The variant is listed after its base client, and stays out of the abstraction tax.
        let base = md.find("| keel-hyper |").expect("a keel-hyper row");
        let variant = md.find("| keel-hyper-guarded |").expect("a variant row");
        assert!(base < variant, "{md}");
        assert!(!md.contains("| hyper-guarded |"), "{md}");
    }

    #[test]
    fn a_helpers_cpu_is_reported_per_request_beside_the_table() {
        let mut redis = run("keel-hyper-redis", 1000, 12_000.0);
        redis.sample.helper_cpu_us = Some(3_000.0);
        let runs = vec![run("keel-hyper", 1000, 10_000.0), redis];
        let md =
            Summary::new(runs, Vec::new(), Vec::new(), None, true, 1, Vec::new()).to_markdown();
        assert!(
            md.contains("(the client's Redis, not in the table's CPU-µs/req): keel-hyper-redis 3.0 [3.0–3.0]."),
            "{md}"
        );
        assert!(!md.contains("keel-hyper 0.0"), "{md}");
    }

    #[test]
    fn every_selected_pair_is_reported_with_its_floor_ratio_or_its_failure() {
        let mut on_plain = run("keel-smol", 800, 16_000.0);
        on_plain.runtime = Runtime::Plain;
        let mut floor = run("smol-native", 1000, 10_000.0);
        floor.runtime = Runtime::Plain;
        let failed = vec![Failed {
            client: "keel-isahc".to_owned(),
            runtime: Runtime::Plain,
            scenario: "S2",
            reason: "did not finish within 60 s".to_owned(),
        }];
        let pairs = vec![
            ("smol-native".to_owned(), Runtime::Plain),
            ("keel-smol".to_owned(), Runtime::Plain),
            ("keel-isahc".to_owned(), Runtime::Plain),
        ];
        let instructions = vec![
            ("smol-native@no-runtime".to_owned(), 50_000.0),
            ("keel-smol@no-runtime".to_owned(), 40_000.0),
        ];
        let summary = Summary::new(
            vec![floor, on_plain],
            failed,
            instructions,
            None,
            true,
            1,
            pairs,
        );
        let md = summary.to_markdown();
        // keel-smol: 800 req/s over 1000 (floor and best), CPU 20 µs over 10, instructions
        // 40000 over 50000 (the best).
        assert!(
            md.contains(
                "| no-runtime | keel-smol | smol-native@no-runtime | 1/1 | 800 [800–800] | 0.80 | 0.80 | 20.0 [20.0–20.0] | 2.00 | 2.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("| 40000 | 0.80 | 1.00 |"), "{md}");
        // The pair that did not finish keeps its row, with the reason.
        assert!(
            md.contains("| no-runtime | keel-isahc | isahc-native@no-runtime | 0/1 | FAILED: did not finish within 60 s |"),
            "{md}"
        );
        assert!(
            md.contains("- met: keel-smol@no-runtime S2 instructions/req at most 1.03x smol-native@no-runtime's: 0.800 (40000 / 50000)"),
            "{md}"
        );
        assert_eq!(summary.incomplete(), 1);
        let svg = summary.runtimes_svg();
        assert!(
            svg.contains(">failed</text>") && svg.contains(">0.80</text>"),
            "{svg}"
        );
    }

    #[test]
    fn no_variant_no_section() {
        let md = Summary::new(
            vec![run("keel-hyper", 1000, 10_000.0)],
            Vec::new(),
            Vec::new(),
            None,
            true,
            1,
            Vec::new(),
        )
        .to_markdown();
        assert!(!md.contains("## Variants"), "{md}");
    }
}
