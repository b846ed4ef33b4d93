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
    /// The `[[mailbox]]` an IMAP step is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
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
    /// Each `[[mailbox]]`, with the figures its check got to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mailboxes: Vec<MailboxFigures>,
}

#[derive(Debug, Serialize)]
pub struct MailboxFigures {
    pub name: String,
    /// What the text shows before its name: "imap", "graph".
    #[serde(skip)]
    pub source: &'static str,
    pub folders: Vec<FolderFigures>,
}

/// A watched folder as STATUS and the state file see it.
#[derive(Debug, Serialize)]
pub struct FolderFigures {
    pub folder: String,
    pub messages: u32,
    pub unseen: u32,
    /// What `watch` would take now; unknown if its state file is unreadable.
    pub waiting: Option<u32>,
}

/// The steps of one `[[mailbox]]`, each marked with its name.
pub struct MailboxSteps<'r> {
    report: &'r mut Report,
    /// Its place in `report.mailboxes`.
    index: usize,
}

/// Where steps are written: the report, or one mailbox's part of it.
pub trait Steps {
    fn add(&mut self, step: &'static str, status: Status, detail: impl Into<String>, fix: Option<String>);

    fn ok(&mut self, step: &'static str, detail: impl Into<String>) {
        self.add(step, Status::Ok, detail, None);
    }

    fn warn(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(step, Status::Warning, detail, Some(fix.into()));
    }

    fn fail(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(step, Status::Fail, detail, Some(fix.into()));
    }
}

impl Steps for MailboxSteps<'_> {
    fn add(&mut self, step: &'static str, status: Status, detail: impl Into<String>, fix: Option<String>) {
        let mailbox = Some(self.report.mailboxes[self.index].name.clone());
        self.report.steps.push(Step { step, mailbox, status, detail: detail.into(), fix });
    }
}

impl MailboxSteps<'_> {
    pub fn folder(&mut self, figures: FolderFigures) {
        self.report.mailboxes[self.index].folders.push(figures);
    }
}

impl Steps for Report {
    fn add(&mut self, step: &'static str, status: Status, detail: impl Into<String>, fix: Option<String>) {
        self.steps.push(Step { step, mailbox: None, status, detail: detail.into(), fix });
    }
}

impl Report {
    /// Where the steps of the mailbox `name` (reached by `source`) go.
    pub fn mailbox(&mut self, source: &'static str, name: &str) -> MailboxSteps<'_> {
        self.mailboxes.push(MailboxFigures { name: name.to_string(), source, folders: Vec::new() });
        MailboxSteps { index: self.mailboxes.len() - 1, report: self }
    }

    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Fail)
    }

    /// Whether `step` (not a mailbox's) has failed already (one fault is reported once).
    pub fn step_failed(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s.step == step && s.mailbox.is_none() && s.status == Status::Fail)
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
            let _ = match &step.mailbox {
                // "imap support: login", so that a mailbox's steps read together.
                Some(mailbox) => {
                    let source = self.mailboxes.iter().find(|m| &m.name == mailbox).map_or("", |m| m.source);
                    writeln!(out, "{mark} {source} {mailbox}: {}: {}{fix}", step.step, step.detail)
                }
                None => writeln!(out, "{mark} {}: {}{fix}", step.step, step.detail),
            };
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
