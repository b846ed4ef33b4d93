//! What a running `watch` shows of itself: its metrics as Prometheus reads
//! them, its liveness and readiness as Kubernetes asks for them, and its
//! log as JSON lines. Against a real Dovecot; the ingress is the recording
//! server, which answers each message as the test needs.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::imap::free_port;
use common::process::{wait_for, Process};
use common::{ByContent, Server};

use crate::watch::{config, dovecot, mailbox, message, USER};

/// GET `path` from the metrics server: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// Every sample of `text` as Python's Prometheus client parses it:
/// "name{label=value,…} value" lines, labels sorted.
fn parsed(text: &str) -> Vec<String> {
    const PARSE: &str = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\nfor f in p(sys.stdin.read()):\n  for s in f.samples:\n    print(s.name + '{' + ','.join(k + '=' + v for k, v in sorted(s.labels.items())) + '} ' + repr(s.value))\n";
    // Debian's python3, which has the package (not another on PATH).
    let mut child = Command::new("python3")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused:\n{text}");
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

fn sample(samples: &[String], name_and_labels: &str) -> Option<f64> {
    samples.iter().find_map(|s| s.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
}

#[test]
#[ignore = "needs Dovecot and python3-prometheus-client"]
fn metrics_json_logs_and_health_tell_what_was_delivered_refused_and_deferred() {
    let dovecot = dovecot();
    let dir = tempfile::tempdir().unwrap();
    // The probe (an empty body) gets the ingress's 415; messages as they say.
    let ingress = Server::start(vec![ByContent(vec![("deliver-me", 204), ("defer-me", 500)], 415)]);
    let config = config(dir.path(), &ingress.url(), &mailbox("support", &dovecot, dir.path(), ""));
    for id in ["deliver-me-1", "deliver-me-2", "defer-me"] {
        dovecot.append(USER, "INBOX", &message(id, "support@inbox.test"));
    }
    dovecot.append(USER, "INBOX", b"this is not an email\r\n");
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut watcher = Process::watch(&config, &["--metrics-listen", &listen, "--log-format", "json"], &[]);
    wait_for(Duration::from_secs(30), "all four handled", || {
        let log = watcher.stdout();
        log.matches("\"event\":\"delivered\"").count() == 2
            && log.contains("\"event\":\"refused\"")
            && log.contains("\"event\":\"deferred\"")
    });
    // A scraper that holds 200 connections open does not stop a message.
    let idle: Vec<TcpStream> =
        (0..200).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() >= 64, "{} connections", idle.len());
    dovecot.append(USER, "INBOX", &message("deliver-me-3", "support@inbox.test"));
    wait_for(Duration::from_secs(20), "delivered beside the idle scraper", || {
        watcher.stdout().matches("\"event\":\"delivered\"").count() == 3
    });
    drop(idle);

    let (code, text) = get(port, "/metrics");
    assert_eq!(code, 200, "{text}");
    let samples = parsed(&text);
    let count = |outcome: &str| {
        sample(
            &samples,
            &format!("chatwoot_ingress_messages_total{{folder=INBOX,mailbox=support,outcome={outcome}}}"),
        )
    };
    assert_eq!((count("delivered"), count("refused")), (Some(3.0), Some(1.0)), "{samples:#?}");
    assert!(count("deferred").is_some_and(|n| n >= 1.0), "{samples:#?}");
    let timed =
        sample(&samples, "chatwoot_ingress_delivery_duration_seconds_count{mailbox=support}").unwrap();
    assert_eq!(timed, 3.0 + count("deferred").unwrap(), "POSTs are timed, the refusal (no POST) is not");
    assert_eq!(sample(&samples, "chatwoot_ingress_mailbox_up{folder=INBOX,mailbox=support}"), Some(1.0));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(sample(&samples, &format!("chatwoot_ingress_build_info{{version={version}}}")), Some(1.0));
    let last = sample(&samples, "chatwoot_ingress_last_delivery_timestamp_seconds{mailbox=support}").unwrap();
    assert!(last >= started.floor(), "{last} < {started}");
    assert!(!text.contains(common::PASSWORD) && !text.contains("deliver-me"), "no secret, no content");

    assert_eq!(get(port, "/healthz/live"), (200, "ok\n".into()));
    assert_eq!(get(port, "/healthz/ready").0, 200);

    // Every line is one JSON object with the fields a pipeline indexes.
    let log = watcher.stdout();
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{line}");
        assert!(["info", "warning", "error"].contains(&event["level"].as_str().unwrap()), "{line}");
        assert!(event["event"].is_string() && event["message"].is_string(), "{line}");
    }
    let delivered: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "delivered")
        .collect();
    let first = &delivered[0];
    assert_eq!((first["mailbox"].as_str(), first["folder"].as_str()), (Some("support"), Some("INBOX")));
    assert_eq!(first["message_id"], "<deliver-me-1@sender.test>");
    assert_eq!(first["status"], "2.0.0");
    assert!(
        first["uid"].is_string() && first["bytes"].as_u64().unwrap() > 100 && first["ms"].is_u64(),
        "{first}"
    );
    let deferred = log.lines().find(|l| l.contains("\"event\":\"deferred\"")).unwrap();
    let deferred: serde_json::Value = serde_json::from_str(deferred).unwrap();
    assert!(deferred["status"].as_str().unwrap().starts_with("4."), "{deferred}");
    assert!(deferred["error"].is_string() && deferred["fix"].is_string(), "{deferred}");
    assert!(!log.contains(common::PASSWORD), "{log}");
    assert_eq!(watcher.stop("TERM").0, 0);
}

#[test]
#[ignore = "needs Dovecot"]
fn ready_is_503_while_the_ingress_is_down_and_live_is_503_while_a_worker_hangs() {
    let dovecot = dovecot();
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let down = config(
        dir.path(),
        &format!("http://127.0.0.1:{closed}"),
        &mailbox("support", &dovecot, dir.path(), ""),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let watcher = Process::watch(&down, &["--metrics-listen", &listen], &[]);
    wait_for(Duration::from_secs(20), "IDLE", || watcher.output().contains("IDLE"));
    let (code, why) = get(port, "/healthz/ready");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("4.4.1"), "the reason, with its status code: {why}");
    assert_eq!(get(port, "/healthz/live").0, 200, "down is not dead");
    drop(watcher);

    // A worker that stops coming back to its loop (the test hook holds it
    // for 60 s on its way to the POST) is named, and healthy again after.
    let ingress = Server::start(vec![ByContent(vec![("hang-me", 204)], 415)]);
    let config = config(dir.path(), &ingress.url(), &mailbox("support", &dovecot, dir.path(), ""));
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("timeout = 10", "timeout = 2"))
        .unwrap();
    let mut watcher = Process::watch(
        &config,
        &["--metrics-listen", &listen],
        &[("CHATWOOT_INGRESS_TEST_HANG", "watch-post:60")],
    );
    wait_for(Duration::from_secs(20), "IDLE", || watcher.output().contains("IDLE"));
    wait_for(Duration::from_secs(10), "ready", || get(port, "/healthz/ready").0 == 200);
    dovecot.append(USER, "INBOX", &message("hang-me", "support@inbox.test"));
    wait_for(Duration::from_secs(50), "live goes 503", || get(port, "/healthz/live").0 == 503);
    let (_, why) = get(port, "/healthz/live");
    assert!(why.contains("support/INBOX"), "the stuck mailbox is named: {why}");
    wait_for(Duration::from_secs(40), "back once the hang ends", || get(port, "/healthz/live").0 == 200);
    wait_for(Duration::from_secs(10), "delivered", || ingress.bodies().iter().any(|b| !b.is_empty()));
    assert_eq!(watcher.stop("TERM").0, 0, "{}", watcher.output());
}
