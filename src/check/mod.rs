//! `chatwoot-ingress check`: every step between this host and the relay
//! ingress, and to each IMAP mailbox `watch` fetches from, each ✓ or ✗ with
//! its fix, delivering nothing unless asked to.
//!
//! [`access`] reads the configuration as the caller will (its user, its
//! environment, its limits), [`network`] follows the way to the ingress
//! and probes it, [`tls`] reads the certificate's expiry, [`imap`] goes
//! through each `[[mailbox]]`, [`chatwoot_env`] reads Chatwoot's own
//! environment, and [`report`] prints the steps as text or JSON.

mod access;
mod chatwoot_env;
mod imap;
mod network;
mod report;
mod tls;

use std::fs;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use mail_parser::DateTime;

use crate::cli::CheckArgs;
use crate::config::{Config, Overrides};
use crate::message::{Input, Raw};
use crate::outcome::{Cause, Mta};
use crate::pipeline::{Mode, Pipeline};
use crate::run;
use report::{Report, Steps};

pub fn main(args: &CheckArgs, overrides: &Overrides, mta: Mta) -> ExitCode {
    let mut report = Report::default();
    // Signals keep their defaults: check changes nothing a signal could
    // leave half done. A panic is a failed step, in the report it ends.
    if let Err(bug) = run::catch(|| check(args, overrides, mta, &mut report)) {
        report.fail("internal error", bug.reason(), bug.fix().unwrap_or_default());
    }
    report.ok = !report.failed();
    report.print(args.json);
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(args: &CheckArgs, overrides: &Overrides, mta: Mta, r: &mut Report) {
    let Some(config) = access::configuration(overrides, r) else { return };
    if let Some(user) = args.user.as_deref().or_else(|| access::default_user(mta)) {
        access::access(&config, user, r);
    }
    access::environment(&config, mta, r);
    access::limits(&config, mta, r);
    if let Some(path) = &args.chatwoot_env {
        chatwoot_env::check(path, &config, r);
    }
    ingress(args, &config, r);
    // Whatever became of the ingress: each mailbox has its own faults.
    for mailbox in &config.mailboxes {
        imap::mailbox(mailbox, &config, r);
    }
}

/// The way to each ingress, its probes, and the test message.
fn ingress(args: &CheckArgs, config: &Config, r: &mut Report) {
    // Routes may stand in for a top-level url; otherwise it was reported missing.
    if config.target().is_err() && config.routes.is_empty() {
        return;
    }
    let pipeline = match Pipeline::new(config, Mode::Send) {
        Ok(pipeline) => pipeline,
        // A ca_file that cannot be used was reported with the configuration.
        Err(_) if r.step_failed("ca_file") => return,
        Err(outcome) => {
            return r.fail("tls", outcome.reason(), outcome.fix().unwrap_or("correct what is named"));
        }
    };
    // Every ingress mail may go to: the top-level url, then each [[route]].
    let targets = pipeline.targets();
    for (name, target) in &targets {
        if targets.len() > 1 {
            r.ok("route", name.clone());
        }
        let Some(status) = network::probe(&pipeline, target, config.timeout.value, r) else { continue };
        if args.size_limit {
            match status {
                network::INGRESS_REFUSES => network::size_limit(&pipeline, target, &config.max_size, r),
                _ => r.fail("size-limit", "not tested: fix the steps above first", "run the check again"),
            }
        }
    }
    match &args.send_test {
        Some(_) if r.failed() => {
            r.fail("send-test", "not sent: fix the steps above first", "run the check again")
        }
        Some(addr) => send_test(&pipeline, addr, r),
        None => {}
    }
}

/// Deliver a generated, clearly marked message through the normal path.
fn send_test(pipeline: &Pipeline, addr: &str, r: &mut Report) {
    let addr = addr.trim();
    let checked =
        Pipeline::recipient(Some(addr)).map_err(|o| o.reason().to_string()).and_then(|_| {
            match addr.contains('@') {
                true => Ok(()),
                false => Err(format!("{addr:?} is not an email address")),
            }
        });
    if let Err(e) = checked {
        return r.fail("send-test", e, "give the address of a Chatwoot inbox to --send-test");
    }
    let (text, id) = test_message(addr);
    let input = Input::Complete(Raw::from_slice(text.as_bytes(), Some(addr)));
    let (outcome, _) = pipeline.deliver(input, Some(addr), &mut std::io::empty());
    if outcome.cause == Cause::Delivered {
        r.ok(
            "send-test",
            format!("delivered {id} to {addr}: it should appear in the inbox for that address"),
        );
    } else {
        r.fail("send-test", outcome.reason(), outcome.fix().unwrap_or("see Chatwoot's log for this message"));
    }
}

/// The test message and its Message-ID, unique by time, process and host.
fn test_message(addr: &str) -> (String, String) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let id = format!("<chatwoot-ingress-check.{}.{}@{host}>", now.as_millis(), std::process::id());
    let text = format!(
        "From: chatwoot-ingress check <chatwoot-ingress@{host}>\r\n\
         To: <{addr}>\r\n\
         Subject: chatwoot-ingress test message\r\n\
         Date: {}\r\n\
         Message-ID: {id}\r\n\
         Auto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This test message was sent by `chatwoot-ingress check --send-test` on {host}\r\n\
         to prove that mail for {addr} reaches this inbox. It can be deleted.\r\n",
        DateTime::from_timestamp(now.as_secs() as i64).to_rfc822()
    );
    (text, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_message_is_dated_in_rfc_5322_form() {
        assert_eq!(DateTime::from_timestamp(1_798_054_456).to_rfc822(), "Wed, 23 Dec 2026 19:34:16 +0000");
        assert_eq!(DateTime::from_timestamp(19_782 * 86_400).to_rfc822(), "Thu, 29 Feb 2024 00:00:00 +0000");
        let (text, id) = test_message("inbox@example.com");
        assert!(text.contains(&format!("\r\nMessage-ID: {id}\r\n")), "{text}");
        let date = text.lines().find_map(|l| l.strip_prefix("Date: ")).unwrap().trim_end();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let parsed = DateTime::parse_rfc822(date).unwrap().to_timestamp();
        assert!((now - parsed).abs() < 5, "{date}");
    }
}
