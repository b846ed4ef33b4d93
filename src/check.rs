//! `chatwoot-ingress check`: every step between this host and the relay
//! ingress, each ✓ or ✗ with its fix, delivering nothing unless asked to.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use crate::cli::CheckArgs;
use crate::config::{Config, Overrides, Source, Target, SYSTEM_CONFIG};
use crate::message::Input;
use crate::message::Raw;
use crate::outcome::{Cause, Mta};
use crate::pipeline::{Mode, Pipeline};
use crate::relay::{self, Answer};
use crate::sys::{self, io_reason, Account};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warning,
    Fail,
}

#[derive(Debug, Serialize)]
struct Step {
    step: &'static str,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

/// The steps, and for monitoring the numbers behind them.
#[derive(Debug, Default, Serialize)]
struct Report {
    ok: bool,
    steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    round_trip_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_days_left: Option<i64>,
}

impl Report {
    fn add(&mut self, step: &'static str, status: Status, detail: impl Into<String>, fix: Option<String>) {
        self.steps.push(Step { step, status, detail: detail.into(), fix });
    }

    fn ok(&mut self, step: &'static str, detail: impl Into<String>) {
        self.add(step, Status::Ok, detail, None);
    }

    fn warn(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(step, Status::Warning, detail, Some(fix.into()));
    }

    fn fail(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(step, Status::Fail, detail, Some(fix.into()));
    }

    fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Status::Fail)
    }

    fn print(&self, json: bool) {
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

pub fn main(args: &CheckArgs, overrides: &Overrides, mta: Mta) -> ExitCode {
    let mut report = Report::default();
    if let Err(panic) = sys::catch_panic(|| check(args, overrides, mta, &mut report)) {
        report.fail("internal error", format!("please report it: {panic}"), "please report it");
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
    let Some(config) = configuration(overrides, r) else { return };
    if let Some(user) = args.user.as_deref().or_else(|| default_user(mta)) {
        access(&config, user, r);
    }
    environment(&config, mta, r);
    if config.target().is_err() {
        return; // already reported
    }
    let pipeline = match Pipeline::new(&config, Mode::Send) {
        Ok(pipeline) => pipeline,
        Err(outcome) => {
            return r.fail(
                "ca_file",
                outcome.reason(),
                "point ca_file at a readable file of PEM certificates",
            )
        }
    };
    if !network(&pipeline, config.timeout.value, r) {
        return;
    }
    match &args.send_test {
        Some(_) if r.failed() => {
            r.fail("send-test", "not sent: fix the steps above first", "run the check again")
        }
        Some(addr) => send_test(&pipeline, addr, r),
        None => {}
    }
}

fn from(source: &Source) -> String {
    match source {
        Source::Default => "default".into(),
        other => format!("from {other}"),
    }
}

/// Each value and where it came from, and what is wrong with them.
fn configuration(overrides: &Overrides, r: &mut Report) -> Option<Config> {
    let config = match Config::load(overrides) {
        Ok(config) => config,
        Err(e) => {
            r.fail(
                "configuration",
                e.to_string(),
                "correct what is named; --help lists every setting's sources",
            );
            return None;
        }
    };
    match &config.file {
        Some(path) => r.ok("configuration", format!("read {}", path.display())),
        None => r.ok(
            "configuration",
            format!("no file ($CHATWOOT_INGRESS_CONFIG, the user config dir or {SYSTEM_CONFIG}); flags and environment only"),
        ),
    }
    match &config.url {
        Some(url) => {
            r.ok("url", format!("{} ({})", url.value, from(&url.source)));
            let host = url.value.host_str().unwrap_or_default();
            if url.value.scheme() == "http" && !is_loopback(host) {
                r.warn(
                    "url",
                    format!("plain http to {host}: the password and every email travel in clear"),
                    "use https:// unless this network is private",
                );
            }
        }
        None => {
            r.fail("url", "not set", "set `url` in the configuration file, CHATWOOT_INGRESS_URL, or --url")
        }
    }
    match &config.password {
        Some(password) => {
            let text = password.value.expose();
            let file =
                config.password_file.as_ref().map(|f| format!(", file {}", f.display())).unwrap_or_default();
            r.ok(
                "password",
                format!("**** ({} characters, {}{file})", text.chars().count(), from(&password.source)),
            );
            if text.trim() != text {
                r.warn(
                    "password",
                    "begins or ends with white space, which is sent as part of it",
                    "remove it, unless RAILS_INBOUND_EMAIL_PASSWORD has it too",
                );
            }
        }
        None => r.fail(
            "password",
            "not set",
            "set `password_file` in the configuration file, CHATWOOT_INGRESS_PASSWORD, or --password-file",
        ),
    }
    for warning in &config.warnings {
        r.add("password", Status::Warning, warning.as_str(), None);
    }
    r.ok("timeout", format!("{}s ({})", config.timeout.value.as_secs(), from(&config.timeout.source)));
    r.ok("max_size", format!("{} bytes ({})", config.max_size.value, from(&config.max_size.source)));
    for (name, setting) in [("ca_file", &config.ca_file), ("reject_dir", &config.reject_dir)] {
        if let Some(setting) = setting {
            r.ok(name, format!("{} ({})", setting.value.display(), from(&setting.source)));
        }
    }
    Some(config)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The user each caller runs us as in our packaging.
fn default_user(mta: Mta) -> Option<&'static str> {
    match mta {
        Mta::Sysexits => None,
        _ => Some("chatwoot-ingress"),
    }
}

/// Values from the environment do not reach us when these callers run us:
/// they give their commands a near-empty environment.
fn environment(config: &Config, mta: Mta, r: &mut Report) {
    if !matches!(mta, Mta::Postfix | Mta::Exim | Mta::Opensmtpd) {
        return;
    }
    let sources = [
        ("url", config.url.as_ref().map(|u| &u.source)),
        ("password", config.password.as_ref().map(|p| &p.source)),
    ];
    for (name, source) in sources {
        if let Some(Source::Env(var)) = source {
            r.warn(
                "environment",
                format!("{name} comes from {var}, which {mta:?} does not pass to the commands it runs"),
                format!("set {name} in the configuration file given with --config"),
            );
        }
    }
}

/// File access as the kernel decides it for an account.
trait Access {
    fn denied(&self, path: &Path, want: u32) -> Option<String>;
    fn may(&self, path: &Path, want: u32) -> bool;
}

impl Access for Account {
    /// Why this user cannot open `path` for `want` (4 read, 1 execute), if
    /// it cannot: every directory above it must be searchable too. Mode bits
    /// only; ACLs are not considered.
    fn denied(&self, path: &Path, want: u32) -> Option<String> {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for dir in path.ancestors().skip(1) {
            if !self.may(dir, 1) {
                return Some(format!("cannot enter directory {}", describe(dir)));
            }
        }
        (!self.may(&path, want)).then(|| describe(&path))
    }

    fn may(&self, path: &Path, want: u32) -> bool {
        let Ok(meta) = fs::metadata(path) else { return false };
        let mode = meta.mode();
        if self.uid == 0 {
            // root may do anything but execute a file that no one may execute.
            return want != 1 || meta.is_dir() || mode & 0o111 != 0;
        }
        let shift = if meta.uid() == self.uid {
            6
        } else if self.gids.contains(&meta.gid()) {
            3
        } else {
            0
        };
        (mode >> shift) & want == want
    }
}

fn describe(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(meta) => {
            format!(
                "{} (mode {:o}, owner uid {}, group gid {})",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            )
        }
        Err(e) => format!("{}: {}", path.display(), io_reason(&e)),
    }
}

/// The files the caller's user must be able to use, as that user.
fn access(config: &Config, user: &str, r: &mut Report) {
    let Some(account) = Account::by_name(user) else {
        return r.fail(
            "access",
            format!("no user {user} on this system"),
            "create it (see the packaging README for your mail system), or name the right one with --user",
        );
    };
    let exe = std::env::current_exe().ok();
    let files: [(&str, Option<&PathBuf>, u32); 4] = [
        ("read the configuration file", config.file.as_ref(), 4),
        ("read the password file", config.password_file.as_ref(), 4),
        ("read ca_file", config.ca_file.as_ref().map(|c| &c.value), 4),
        ("run this program", exe.as_ref(), 1),
    ];
    for (what, path, want) in files {
        let Some(path) = path else { continue };
        match account.denied(path, want) {
            None => r.ok("access", format!("{} can {what} {}", account.name, path.display())),
            Some(why) => r.fail(
                "access",
                format!("{} cannot {what}: {why}", account.name),
                format!(
                    "give {} access, e.g. through a group it is in (chgrp, then chmod g+r or g+x)",
                    account.name
                ),
            ),
        }
    }
}

/// DNS, TCP, TLS and the HTTP probe. False when no HTTP answer came.
fn network(pipeline: &Pipeline, timeout: Duration, r: &mut Report) -> bool {
    let Some(target) = pipeline.target() else { return false };
    let url = &target.url;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);

    let started = Instant::now();
    let addresses: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(addresses) => addresses.collect(),
        Err(e) => {
            r.fail(
                "dns",
                format!("cannot resolve {host}: {}", io_reason(&e)),
                "check the host name in url, and this machine's DNS (/etc/resolv.conf, /etc/hosts)",
            );
            return false;
        }
    };
    let list = addresses.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
    if host.parse::<IpAddr>().is_ok() {
        r.ok("dns", format!("{host} is an address, nothing to resolve"));
    } else {
        r.ok("dns", format!("{host} is {list} ({} ms)", started.elapsed().as_millis()));
    }

    let mut errors = Vec::new();
    let connected = addresses.iter().find_map(|address| {
        let started = Instant::now();
        match TcpStream::connect_timeout(address, timeout.min(Duration::from_secs(10))) {
            Ok(_) => Some((address, started.elapsed())),
            Err(e) => {
                errors.push(format!("{address}: {}", io_reason(&e)));
                None
            }
        }
    });
    match connected {
        Some((address, took)) => r.ok("tcp", format!("connected to {address} in {} ms", took.as_millis())),
        None => {
            r.fail(
                "tcp",
                format!("cannot connect: {}", errors.join("; ")),
                format!(
                    "make sure Chatwoot or its proxy listens on port {port} and no firewall is in between"
                ),
            );
            return false;
        }
    }

    let Some(probe) = pipeline.probe(target, Bytes::new()) else { return false };
    let (answer, certificate, took) = (probe.answer, probe.certificate, probe.took);
    match answer {
        Answer::Failed(outcome, _) if outcome.cause == Cause::Tls => {
            r.fail(
                "tls",
                outcome.reason(),
                format!("the certificate must be valid for {host} and issued by a CA this machine trusts (set ca_file for a private CA); an https URL to a plain-http port fails like this too"),
            );
            false
        }
        Answer::Failed(outcome, _) => {
            r.fail("http", outcome.reason(), "see the reason; Chatwoot's or its proxy's log says more");
            false
        }
        Answer::Status(status, location) => {
            if url.scheme() == "https" {
                tls(certificate.as_deref(), host, r);
            }
            r.http_status = Some(status);
            r.round_trip_ms = Some(took.as_millis());
            http(target, status, location.as_deref(), took, r);
            true
        }
    }
}

/// The handshake succeeded, so the certificate is valid for the host: say for how long.
fn tls(certificate: Option<&[u8]>, host: &str, r: &mut Report) {
    let Some(expiry) = certificate.and_then(not_after) else {
        return r.ok("tls", format!("certificate valid for {host} (its expiry date could not be read)"));
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = (expiry - now).div_euclid(86_400);
    r.certificate_days_left = Some(days);
    let (year, month, day) = civil(expiry.div_euclid(86_400));
    let detail = format!("certificate valid for {host}, expires in {days} days ({year}-{month:02}-{day:02})");
    if days < 14 {
        r.warn("tls", detail, "renew it: is the automatic renewal running?");
    } else {
        r.ok("tls", detail);
    }
}

/// What the answer to the probe says about the setup, read through the
/// same table as a delivery's answer. Only 415 means the ingress is right.
fn http(target: &Target, status: u16, location: Option<&str>, took: Duration, r: &mut Report) {
    let took = took.as_millis();
    if status == 415 {
        return r.ok(
            "http",
            format!("HTTP 415 to the empty probe in {took} ms: the URL, Chatwoot's ingress mode and the password are right (nothing was stored)"),
        );
    }
    let outcome = relay::explain(target, status, location);
    if outcome.cause == Cause::Delivered {
        return r.fail(
            "http",
            format!("HTTP {status} in {took} ms: this is not an Action Mailbox relay ingress, which refuses an empty text/plain body with 415; every message sent here would be lost (and the probe may have been stored)"),
            "make sure url reaches Chatwoot itself, not another application or a proxy that answers for it",
        );
    }
    r.fail("http", outcome.reason(), outcome.fix().unwrap_or("see Chatwoot's log"));
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
        rfc5322_date(now.as_secs() as i64)
    );
    (text, id)
}

fn rfc5322_date(seconds: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, time) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil(days);
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[month as usize - 1],
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

/// The notAfter of a DER X.509 certificate, in seconds since the epoch: the
/// few fields before it are skipped, which needs no X.509 parser crate.
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, certificate, _) = tlv(der)?;
    let (_, mut tbs, _) = tlv(certificate)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2; // [0] version
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = tlv(tbs)?;
    let (tag, time, _) = tlv(tlv(validity)?.2)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest): (i64, &str) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?) // UTCTime
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?), // GeneralizedTime
        _ => return None,
    };
    let n = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    Some(days_from_civil(year, n(0)?, n(2)?) * 86_400 + n(4)? * 3600 + n(6)? * 60 + n(8)?)
}

/// One DER element: (tag, contents, what follows).
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        let (bytes, after) = rest.split_at_checked(n).filter(|_| (1..=4).contains(&n))?;
        rest = after;
        bytes.iter().fold(0, |len, &b| len << 8 | usize::from(b))
    };
    let (contents, after) = rest.split_at_checked(len)?;
    Some((tag, contents, after))
}

/// Days since 1970-01-01 from a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (year.div_euclid(400), year.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    era * 146_097 + year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year - 719_468
}

/// The date of a day since 1970-01-01, the inverse of [`days_from_civil`].
fn civil(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let (era, day_of_era) = (days.div_euclid(146_097), days.rem_euclid(146_097));
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let m = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * m + 2) / 5 + 1) as u32;
    let month = if m < 10 { m + 3 } else { m - 9 } as u32;
    (era * 400 + year_of_era + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_in_both_time_formats() {
        // Made with `openssl req -x509 -days 30` and `-days 36500`.
        let utc_time = include_bytes!("../tests/certs/not-after-2026.der");
        let generalized_time = include_bytes!("../tests/certs/not-after-2126.der");
        assert_eq!(not_after(utc_time), Some(1_798_054_456)); // 2026-12-23 19:34:16
        assert_eq!(not_after(generalized_time), Some(4_949_062_456)); // 2126-10-30 19:34:16
        assert_eq!(not_after(&utc_time[..100]), None);
        assert_eq!(not_after(b""), None);
    }

    #[test]
    fn dates() {
        for days in [-1, 0, 11_016, 19_723, 20_415, 57_280] {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, m.into(), d.into()), days);
        }
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(rfc5322_date(1_798_054_456), "Wed, 23 Dec 2026 19:34:16 +0000");
    }

    #[test]
    fn file_access_follows_owner_group_other_bits_and_directories() {
        let account = |uid, gids| Account { name: "t".into(), uid, gids };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        let set = |path: &Path, mode| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        };
        let (uid, gid) = (fs::metadata(&file).unwrap().uid(), fs::metadata(&file).unwrap().gid());
        set(&file, 0o640);
        assert!(account(uid, vec![]).denied(&file, 4).is_none());
        assert!(account(uid + 1, vec![gid]).denied(&file, 4).is_none());
        assert!(account(uid + 1, vec![gid + 1]).denied(&file, 4).unwrap().contains("mode 640"));
        set(&file, 0o644);
        set(dir.path(), 0o700);
        let why = account(uid + 1, vec![]).denied(&file, 4).unwrap();
        assert!(why.starts_with("cannot enter directory"), "{why}");
        assert!(account(0, vec![]).denied(&file, 4).is_none());
        assert!(account(0, vec![]).denied(&file, 1).is_some(), "no x bit: not even root runs it");
    }
}
