//! Aggregation over repetitions, the Markdown report, the targets, and two SVG plots.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::clients;
use crate::scenario::Sample;

/// One measured (client, scenario) run.
pub(crate) struct Run {
    pub(crate) client: String,
    pub(crate) scenario: &'static str,
    pub(crate) sample: Sample,
}

/// What wrk measured on the S2 shape, when wrk is installed.
pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) cpu_us_per_req: f64,
}

/// Medians and spreads of one (client, scenario) over its repetitions.
struct Cell {
    client: String,
    scenario: &'static str,
    rps: Stat,
    /// Bytes per second (S3).
    bps: Stat,
    cpu_us: Stat,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    rss_mib: f64,
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
    instructions: Vec<(String, f64)>,
    wrk: Option<Wrk>,
    quick: bool,
    reps: usize,
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
        instructions: Vec<(String, f64)>,
        wrk: Option<Wrk>,
        quick: bool,
        reps: usize,
    ) -> Self {
        let mut cells = Vec::new();
        for (scenario, _) in SCENARIOS {
            let mut names: Vec<&str> = Vec::new();
            for r in runs.iter().filter(|r| r.scenario == scenario) {
                if !names.contains(&r.client.as_str()) {
                    names.push(&r.client);
                }
            }
            names.sort_by_key(|n| clients::rank(n));
            for name in names {
                let mine: Vec<&Sample> = runs
                    .iter()
                    .filter(|r| r.scenario == scenario && r.client == name)
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
                    scenario,
                    rps: Stat::of(mine.iter().map(|s| s.requests as f64 / s.secs).collect()),
                    bps: Stat::of(mine.iter().map(|s| s.bytes as f64 / s.secs).collect()),
                    cpu_us: Stat::of(
                        mine.iter()
                            .map(|s| s.cpu_us / s.requests.max(1) as f64)
                            .collect(),
                    ),
                    p50: med(&|s| s.latency_us[0] as f64),
                    p99: med(&|s| s.latency_us[2] as f64),
                    p999: med(&|s| s.latency_us[3] as f64),
                    max: med(&|s| s.latency_us[4] as f64),
                    rss_mib: mine.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
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
            instructions,
            wrk,
            quick,
            reps,
        }
    }

    fn cells_of(&self, scenario: &str) -> Vec<&Cell> {
        self.cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .collect()
    }

    fn cell(&self, scenario: &str, client: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.scenario == scenario && c.client == client)
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
        out.push_str(&self.targets_markdown());
        let errors: Vec<&Cell> = self.cells.iter().filter(|c| c.errors > 0).collect();
        if !errors.is_empty() {
            out.push_str("\n## Errors\n\n");
            for c in errors {
                let _ = writeln!(
                    out,
                    "- {} {}: {} errors, first: {}",
                    c.scenario,
                    c.client,
                    c.errors,
                    c.first_error.as_deref().unwrap_or("?")
                );
            }
        }
        out
    }

    fn instructions_of(&self, client: &str) -> Option<f64> {
        self.instructions
            .iter()
            .find(|(c, _)| c == client)
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
            if let (Some(k), Some(n)) = (self.instructions_of(keel), self.instructions_of(native)) {
                line(
                    Some(k / n <= 1.03),
                    format!(
                        "{keel} instructions/req within 3% of {native}: ratio {:.3}",
                        k / n
                    ),
                );
            } else {
                line(
                    None,
                    format!("{keel} instructions/req within 3% of {native} (needs --callgrind)"),
                );
            }
            if let (Some(k), Some(n)) = (self.cell("S3", keel), self.cell("S3", native)) {
                let r = k.bps.median / n.bps.median;
                line(
                    Some(r >= 0.9),
                    format!(
                        "{keel} S3 at least 90% of {native} throughput: {:.0}%",
                        r * 100.0
                    ),
                );
                line(
                    Some(k.rss_mib < 32.0),
                    format!("{keel} S3 peak RSS under 32 MiB: {:.1} MiB", k.rss_mib),
                );
            }
            if let Some(k) = self.cell("S2", keel) {
                let r = k.p99 / k.p50.max(1.0);
                line(Some(r < 3.0), format!("{keel} S2 p99/p50 under 3: {r:.2}"));
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
            let _ = write!(
                body,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/><rect x="{lx}" y="{ly}" width="12" height="12" fill="{color}"/><text x="{tx}" y="{ty}">{}</text>"#,
                pts.join(" "),
                escape(&c.client),
                lx = left + w + 20.0,
                ly = top + n as f64 * 20.0,
                tx = left + w + 38.0,
                ty = top + n as f64 * 20.0 + 11.0,
            );
        }
        svg(left + w + 200.0, top + h + 40.0, &body)
    }
}

fn svg(width: f64, height: f64, body: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>{body}</svg>
"#
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cpu_model() -> String {
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
            ("keel-hyper".to_owned(), 100_000.0),
            ("keel-hyper-guarded".to_owned(), 102_000.0),
        ];
        let md = Summary::new(runs, instructions, None, true, 1).to_markdown();
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
        let md = Summary::new(runs, Vec::new(), None, true, 1).to_markdown();
        assert!(
            md.contains("(the client's Redis, not in the table's CPU-µs/req): keel-hyper-redis 3.0 [3.0–3.0]."),
            "{md}"
        );
        assert!(!md.contains("keel-hyper 0.0"), "{md}");
    }

    #[test]
    fn no_variant_no_section() {
        let md = Summary::new(
            vec![run("keel-hyper", 1000, 10_000.0)],
            Vec::new(),
            None,
            true,
            1,
        )
        .to_markdown();
        assert!(!md.contains("## Variants"), "{md}");
    }
}
