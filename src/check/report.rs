//! What `check` found: one line per step, as text or one JSON document.

use std::io::{self, Write};

use serde::Serialize;

use crate::config::Source;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The steps, and for monitoring the numbers behind them.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_days_left: Option<i64>,
}

impl Report {
    pub fn add(
        &mut self,
        step: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.steps.push(Step { step, status, detail: detail.into(), fix });
    }

    pub fn ok(&mut self, step: &'static str, detail: impl Into<String>) {
        self.add(step, Status::Ok, detail, None);
    }

    pub fn warn(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(step, Status::Warning, detail, Some(fix.into()));
    }

    pub fn fail(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(step, Status::Fail, detail, Some(fix.into()));
    }

    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Fail)
    }

    /// Whether `step` has failed already (one fault is reported once).
    pub fn step_failed(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s.step == step && s.status == Status::Fail)
    }

    pub fn print(&self, json: bool) {
        // Write errors are ignored: a closed pipe must not become a panic.
        let mut out = io::stdout().lock();
        if json {
            let _ = serde_json::to_writer_pretty(&mut out, self);
            let _ = writeln!(out);
            return;
        }
        for step in &self.steps {
            let mark = match step.status {
                Status::Ok => "✓",
                Status::Warning => "!",
                Status::Fail => "✗",
            };
            let fix = step.fix.as_ref().map(|fix| format!(" — fix: {fix}")).unwrap_or_default();
            let _ = writeln!(out, "{mark} {}: {}{fix}", step.step, step.detail);
        }
        let count = |status| self.steps.iter().filter(|s| s.status == status).count();
        let _ = match (count(Status::Fail), count(Status::Warning)) {
            (0, 0) => writeln!(out, "all checks passed"),
            (0, warnings) => writeln!(out, "all checks passed, with {warnings} warning(s)"),
            (failed, _) => writeln!(out, "{failed} check(s) failed"),
        };
    }
}

/// Where a value came from, for a step's detail.
pub fn from(source: &Source) -> String {
    match source {
        Source::Default => "default".into(),
        other => format!("from {other}"),
    }
}
