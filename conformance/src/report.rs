//! The scorecard: case × (backend, runtime), as text, Markdown and a self-contained HTML page.

use std::fmt::Write as _;
use std::time::Duration;

use crate::faults::{FaultKind, FAULT_KINDS};
use crate::suite::{CaseReport, Status};

/// The results of running the suite on several (backend, runtime) pairs.
#[derive(Debug, Default)]
pub struct Scorecard {
    columns: Vec<Column>,
}

#[derive(Debug)]
struct Column {
    backend: &'static str,
    runtime: &'static str,
    reports: Vec<CaseReport>,
}

/// Totals over a scorecard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases the backend does not support.
    pub not_supported: usize,
}

/// One fault kind's results over the pairs.
#[derive(Debug, Default)]
struct FaultRow {
    passed: usize,
    failed: usize,
    not_supported: usize,
    /// "pair (capability)" for each pair that can't observe the fault.
    capabilities: Vec<String>,
}

impl Scorecard {
    /// Adds the reports of one (backend, runtime) pair.
    pub fn push(&mut self, backend: &'static str, runtime: &'static str, reports: Vec<CaseReport>) {
        self.columns.push(Column {
            backend,
            runtime,
            reports,
        });
    }

    /// Counts passes, failures and unsupported cases.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for r in self.columns.iter().flat_map(|c| &c.reports) {
            match r.status {
                Status::Pass => t.passed += 1,
                Status::Fail(_) => t.failed += 1,
                Status::NotSupported(_) => t.not_supported += 1,
            }
        }
        t
    }

    fn case_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for r in self.columns.iter().flat_map(|c| &c.reports) {
            if !names.contains(&r.case) {
                names.push(r.case);
            }
        }
        names
    }

    fn cell<'a>(&self, column: &'a Column, case: &str) -> Option<&'a CaseReport> {
        column.reports.iter().find(|r| r.case == case)
    }

    fn header(column: &Column) -> String {
        format!("{} / {}", column.backend, column.runtime)
    }

    fn short(report: Option<&CaseReport>) -> String {
        match report {
            None => "-".to_owned(),
            Some(r) => match &r.status {
                Status::Pass => format!("pass {}", ms(r.elapsed)),
                Status::Fail(_) => format!("FAIL {}", ms(r.elapsed)),
                Status::NotSupported(what) => format!("not supported ({what})"),
            },
        }
    }

    /// A plain-text table for a terminal, followed by the reasons of every failure.
    pub fn to_text(&self) -> String {
        let names = self.case_names();
        let headers: Vec<String> = self.columns.iter().map(Self::header).collect();
        let first = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
        let widths: Vec<usize> = self
            .columns
            .iter()
            .zip(&headers)
            .map(|(c, h)| {
                names
                    .iter()
                    .map(|n| Self::short(self.cell(c, n)).len())
                    .max()
                    .unwrap_or(0)
                    .max(h.len())
            })
            .collect();
        let mut out = String::new();
        let _ = write!(out, "{:first$}", "case");
        for (h, w) in headers.iter().zip(&widths) {
            let _ = write!(out, "  {h:w$}");
        }
        out.push('\n');
        let _ = write!(out, "{}", "-".repeat(first));
        for w in &widths {
            let _ = write!(out, "  {}", "-".repeat(*w));
        }
        out.push('\n');
        for name in &names {
            let _ = write!(out, "{name:first$}");
            for (c, w) in self.columns.iter().zip(&widths) {
                let _ = write!(out, "  {:w$}", Self::short(self.cell(c, name)));
            }
            out.push('\n');
        }
        out.push_str("\nfault matrix: ");
        out.push_str(&self.fault_matrix_markdown());
        let failures = self.failures();
        if !failures.is_empty() {
            out.push_str("\nfailures:\n");
            for (col, case, msg) in failures {
                let _ = writeln!(out, "- {case} on {col}: {msg}");
            }
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "\n{} passed, {} failed, {} not supported",
            t.passed, t.failed, t.not_supported
        );
        out
    }

    /// The same table in Markdown.
    pub fn to_markdown(&self) -> String {
        let names = self.case_names();
        let mut out = String::from("# keel conformance scorecard\n\n| case |");
        for c in &self.columns {
            let _ = write!(out, " {} |", Self::header(c));
        }
        out.push_str("\n|---|");
        for _ in &self.columns {
            out.push_str("---|");
        }
        out.push('\n');
        for name in &names {
            let _ = write!(out, "| {name} |");
            for c in &self.columns {
                let _ = write!(out, " {} |", Self::short(self.cell(c, name)));
            }
            out.push('\n');
        }
        out.push_str("\n## Fault matrix\n\n");
        out.push_str(&self.fault_matrix_markdown());
        let failures = self.failures();
        if !failures.is_empty() {
            out.push_str("\n## Failures\n\n");
            for (col, case, msg) in failures {
                let _ = writeln!(out, "- **{case}** on {col}: {}", msg.replace('|', "\\|"));
            }
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "\n{} passed, {} failed, {} not supported",
            t.passed, t.failed, t.not_supported
        );
        out
    }

    /// A self-contained HTML page (inline style, no scripts, no external resources).
    pub fn to_html(&self) -> String {
        let names = self.case_names();
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>keel conformance</title>\
             <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}\
             .pass{background:#d8f5d0}.fail{background:#f9d0d0}.ns{background:#eee;color:#666}\
             </style></head><body><h1>keel conformance scorecard</h1><table><tr><th>case</th>",
        );
        for c in &self.columns {
            let _ = write!(out, "<th>{}</th>", escape(&Self::header(c)));
        }
        out.push_str("</tr>");
        for name in &names {
            let _ = write!(out, "<tr><td>{}</td>", escape(name));
            for c in &self.columns {
                let report = self.cell(c, name);
                let (class, title) = match report.map(|r| &r.status) {
                    Some(Status::Pass) => ("pass", String::new()),
                    Some(Status::Fail(msg)) => ("fail", msg.clone()),
                    Some(Status::NotSupported(what)) => ("ns", format!("needs {what}")),
                    None => ("ns", String::new()),
                };
                let _ = write!(
                    out,
                    "<td class=\"{class}\" title=\"{}\">{}</td>",
                    escape(&title),
                    escape(&Self::short(report))
                );
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
        let t = self.totals();
        let _ = write!(
            out,
            "<p>{} passed, {} failed, {} not supported</p>",
            t.passed, t.failed, t.not_supported
        );
        let failures = self.failures();
        if !failures.is_empty() {
            out.push_str("<h2>Failures</h2><ul>");
            for (col, case, msg) in failures {
                let _ = write!(
                    out,
                    "<li><b>{}</b> on {}: {}</li>",
                    escape(case),
                    escape(&col),
                    escape(msg)
                );
            }
            out.push_str("</ul>");
        }
        out.push_str("</body></html>\n");
        out
    }

    /// How one fault kind went over the pairs: passes, failures, and the capabilities named by
    /// the pairs that can't observe it.
    fn fault_row(&self, fault: &FaultKind) -> FaultRow {
        let mut row = FaultRow::default();
        for c in &self.columns {
            match self.cell(c, fault.case).map(|r| &r.status) {
                Some(Status::Pass) => row.passed += 1,
                Some(Status::Fail(_)) => row.failed += 1,
                Some(Status::NotSupported(what)) => {
                    row.not_supported += 1;
                    let named = format!("{} ({what})", Self::header(c));
                    row.capabilities.push(named);
                }
                None => {}
            }
        }
        row
    }

    /// The fault matrix: each fault kind of [`FAULT_KINDS`] that this scorecard ran, with what
    /// a caller sees and how many pairs passed it, in Markdown.
    pub fn fault_matrix_markdown(&self) -> String {
        let names = self.case_names();
        let ran: Vec<&FaultKind> = FAULT_KINDS
            .iter()
            .filter(|k| names.contains(&k.case))
            .collect();
        let (mut cells, mut passed, mut failed) = (0, 0, 0);
        let mut out = String::from(
            "| fault | what the caller sees | retried | pairs passing | not observable on |\n\
             |---|---|---|---|---|\n",
        );
        for k in &ran {
            let row = self.fault_row(k);
            cells += row.passed + row.failed + row.not_supported;
            passed += row.passed;
            failed += row.failed;
            let failing = match row.failed {
                0 => String::new(),
                n => format!(", **{n} failed**"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}/{}{failing} | {} |",
                k.fault,
                k.sees,
                k.retried,
                row.passed,
                self.columns.len(),
                row.capabilities.join(", ")
            );
        }
        format!(
            "{} fault kinds on {} pairs: {passed} of {cells} cells passed, {failed} failed, the \
             rest name the capability their backend lacks.\n\n{out}",
            ran.len(),
            self.columns.len()
        )
    }

    fn failures(&self) -> Vec<(String, &'static str, &str)> {
        let mut out = Vec::new();
        for c in &self.columns {
            for r in &c.reports {
                if let Status::Fail(msg) = &r.status {
                    out.push((Self::header(c), r.case, msg.as_str()));
                }
            }
        }
        out
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(case: &'static str, status: Status) -> CaseReport {
        CaseReport {
            case,
            status,
            elapsed: Duration::from_millis(12),
        }
    }

    #[test]
    fn the_fault_matrix_counts_each_fault_over_the_pairs() {
        let mut card = Scorecard::default();
        card.push(
            "hyper",
            "tokio",
            vec![
                report("connection_refused", Status::Pass),
                report("truncated_body", Status::Fail("short".into())),
                report("methods", Status::Pass),
            ],
        );
        card.push(
            "isahc",
            "tokio",
            vec![
                report("connection_refused", Status::Pass),
                report("truncated_body", Status::NotSupported("body_framing")),
            ],
        );
        let md = card.fault_matrix_markdown();
        assert!(
            md.starts_with("2 fault kinds on 2 pairs: 2 of 4 cells passed, 1 failed"),
            "{md}"
        );
        assert!(md.contains("| the port refuses the connection | `Connect` in `Connect`, unsent | yes, any method | 2/2 |  |"), "{md}");
        assert!(
            md.contains("| 0/2, **1 failed** | isahc / tokio (body_framing) |"),
            "{md}"
        );
    }

    #[test]
    fn totals_and_renderings_agree() {
        let mut card = Scorecard::default();
        card.push(
            "hyper",
            "tokio",
            vec![
                report("methods", Status::Pass),
                report("h2", Status::NotSupported("http2")),
                report("reset", Status::Fail("kind <Body>".into())),
            ],
        );
        assert_eq!(
            card.totals(),
            Totals {
                passed: 1,
                failed: 1,
                not_supported: 1
            }
        );
        let text = card.to_text();
        assert!(text.contains("pass 12 ms"));
        assert!(text.contains("not supported (http2)"));
        assert!(text.contains("- reset on hyper / tokio: kind <Body>"));
        let md = card.to_markdown();
        assert!(md.contains("| methods | pass 12 ms |"));
        assert!(md.contains("| h2 | not supported (http2) |"));
        assert!(md.contains("## Fault matrix"));
        let html = card.to_html();
        assert!(html.contains("kind &lt;Body&gt;"));
        assert!(!html.contains("<Body>"));
    }
}
