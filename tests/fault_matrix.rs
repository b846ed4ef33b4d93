//! The fault matrix: every fault × every `--mta`, in one table.
//!
//! Each row names the [`Cause`] the fault must end in; nothing here restates
//! an exit code or a status code. The expected exit code of a cell comes from
//! [`Outcome::exit_code`] and is cross-checked against [`exit_rows`], the
//! table that the README and the man page render (tests/docs.rs checks that
//! the README holds exactly [`exit_table`](chatwoot_ingress::outcome::exit_table)).
//! Across the whole matrix: exit 0 only after the server answered 2xx.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chatwoot_ingress::outcome::{exit_rows, Cause, Class, Mta, Outcome, EXIT_COLUMNS};
use clap::ValueEnum;
use common::*;

/// What one cell observed.
struct Cell {
    run: Run,
    /// Statuses the server answered with (none when there is no server).
    answered: Vec<u16>,
    /// Bodies the server read in full.
    bodies: Vec<Vec<u8>>,
}

type Scenario = Box<dyn Fn(&str) -> Cell + Send + Sync>;

struct Fault {
    name: &'static str,
    cause: Cause,
    scenario: Scenario,
    /// When set, the server must have received exactly these bodies.
    received: Option<Vec<u8>>,
}

fn message() -> Vec<u8> {
    corpus("lf.eml")
}

/// A valid message whose body takes the slow reader far longer than a second.
fn large_body() -> Vec<u8> {
    let mut message = b"From: a@example.com\n\n".to_vec();
    message.resize(2 << 20, b'y');
    message
}

fn against(behaviour: Behaviour, args: &'static [&'static str], body: fn() -> Vec<u8>) -> Scenario {
    Box::new(move |mta| {
        let server = Server::start(vec![behaviour.clone()]);
        let run = to(&server, &["--mta", mta]).args(args).stdin(body()).run();
        Cell { run, answered: server.answered(), bodies: server.bodies() }
    })
}

fn http(code: u16) -> Scenario {
    against(status(code), &["--timeout", "3"], message)
}

fn without_server(args: Vec<String>, env: Vec<(&'static str, String)>, body: fn() -> Vec<u8>) -> Scenario {
    Box::new(move |mta| {
        let mut invocation = ingress(&["--mta", mta]).args(&args);
        for (name, value) in &env {
            invocation = invocation.env(name, value);
        }
        Cell { run: invocation.stdin(body()).run(), answered: Vec::new(), bodies: Vec::new() }
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn password() -> Vec<(&'static str, String)> {
    vec![("CHATWOOT_INGRESS_PASSWORD", PASSWORD.to_string())]
}

fn sigterm_in_flight(mta: &str) -> Cell {
    let server = Server::start(vec![Hang]);
    let (child, writer) = to(&server, &["--mta", mta]).stdin(message()).spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.received().is_empty() {
        assert!(Instant::now() < deadline, "the request never arrived");
        thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let run = Run::wait(child, writer);
    Cell { run, answered: server.answered(), bodies: server.bodies() }
}

fn faults(dir: &std::path::Path) -> Vec<Fault> {
    let location =
        vec![("Location", "https://chatwoot.example.com/rails/action_mailbox/relay/inbound_emails".into())];

    let typo = dir.join("typo.toml");
    fs::write(&typo, "url = \"http://127.0.0.1:1\"\npasword = \"x\"\n").unwrap();
    // A directory cannot be read as a file, not even by root.
    let unreadable: PathBuf = dir.join("password-is-a-directory");
    fs::create_dir(&unreadable).unwrap();

    let half = {
        let m = message();
        m[..m.len() / 2].to_vec()
    };
    let truncated = half.clone();

    let f = |name, cause, scenario| Fault { name, cause, scenario, received: None };
    vec![
        // The slow ones first: the rest fill the gaps while they wait.
        f("HTTP 502 (after retries)", Cause::Busy, http(502)),
        f("HTTP 503 (after retries)", Cause::Busy, http(503)),
        f(
            "reset mid-body (after retries)",
            Cause::ConnectionLost,
            against(Reset, &["--timeout", "3"], message),
        ),
        f(
            "refused connection (after retries)",
            Cause::Refused,
            without_server(strings(&["--url", "http://127.0.0.1:1", "--timeout", "3"]), password(), message),
        ),
        f("hang", Cause::Timeout, against(Hang, &["--timeout", "2"], message)),
        f("slow server", Cause::Timeout, against(SlowReader, &["--timeout", "1"], large_body)),
        f("SIGTERM during delivery", Cause::Interrupted, Box::new(sigterm_in_flight)),
        f(
            "DNS failure",
            Cause::Dns,
            without_server(
                strings(&["--url", "https://chatwoot.invalid", "--timeout", "3"]),
                password(),
                message,
            ),
        ),
        f(
            "TLS failure (https to a plain HTTP server)",
            Cause::Tls,
            Box::new(|mta| {
                let plain = Server::start(vec![status(204)]);
                let url = format!("https://127.0.0.1:{}", plain.port);
                let run = ingress(&["--mta", mta, "--url", &url, "--timeout", "3"])
                    .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
                    .stdin(message())
                    .run();
                Cell { run, answered: plain.answered(), bodies: plain.bodies() }
            }),
        ),
        f("HTTP 200", Cause::Delivered, http(200)),
        f("HTTP 204", Cause::Delivered, http(204)),
        f(
            "HTTP 301 with a Location",
            Cause::Redirected,
            against(Status(301, location), &["--timeout", "3"], message),
        ),
        f("HTTP 401", Cause::PasswordRejected, http(401)),
        f("HTTP 403", Cause::PasswordRejected, http(403)),
        f("HTTP 404", Cause::NoIngress, http(404)),
        f("HTTP 408", Cause::Busy, http(408)),
        f("HTTP 413", Cause::ProxyLimit, http(413)),
        f("HTTP 415", Cause::MediaTypeRefused, http(415)),
        f("HTTP 429", Cause::Busy, http(429)),
        f("HTTP 500", Cause::ServerError, http(500)),
        f("HTTP 400", Cause::UnexpectedStatus, http(400)),
        f("missing configuration (no url)", Cause::Config, without_server(Vec::new(), password(), message)),
        f(
            "typo'd configuration key",
            Cause::Config,
            without_server(vec!["--config".into(), typo.display().to_string()], Vec::new(), message),
        ),
        f(
            "unreadable password file",
            Cause::Config,
            without_server(
                vec![
                    "--url".into(),
                    "http://127.0.0.1:1".into(),
                    "--password-file".into(),
                    unreadable.display().to_string(),
                ],
                Vec::new(),
                message,
            ),
        ),
        f("unknown flag", Cause::Usage, without_server(strings(&["--no-such-flag"]), password(), message)),
        // A pipe's EOF is the only end a message has: a writer that stops
        // half way looks like a shorter message. If what arrived is still a
        // header section, it is relayed as it is (the bytes are not altered);
        // the caller saw its write fail and knows better than we can.
        Fault {
            name: "stdin closed half way through the message",
            cause: Cause::Delivered,
            scenario: Box::new(move |mta| {
                let server = Server::start(vec![status(204)]);
                let run = to(&server, &["--mta", mta, "--timeout", "3"]).stdin(half.clone()).run();
                Cell { run, answered: server.answered(), bodies: server.bodies() }
            }),
            received: Some(truncated),
        },
        // Closed before the first byte: nothing to relay, refused as not mail.
        f("stdin closed before the first byte", Cause::Invalid, against(status(204), &[], Vec::new)),
        f("not an email", Cause::Invalid, against(status(204), &[], || b"{\"json\": true}\n".to_vec())),
        f("larger than --max-size", Cause::TooLarge, against(status(204), &["--max-size", "1K"], large_body)),
        f(
            "panic",
            Cause::Bug,
            Box::new(|mta| {
                let server = Server::start(vec![status(204)]);
                let run = to(&server, &["--mta", mta])
                    .env("CHATWOOT_INGRESS_TEST_PANIC", "1")
                    .stdin(message())
                    .run();
                Cell { run, answered: server.answered(), bodies: server.bodies() }
            }),
        ),
    ]
}

/// Every `--mta` value, from the enum itself.
fn mtas() -> Vec<(String, Mta)> {
    Mta::value_variants()
        .iter()
        .map(|mta| (mta.to_possible_value().unwrap().get_name().to_string(), *mta))
        .collect()
}

/// The exit code the published table gives `cause` under `mta`.
fn published_exit(cause: Cause, mta: &str) -> String {
    let row = exit_rows()
        .into_iter()
        .find(|row| row.code == cause.code() && row.meaning == cause.meaning())
        .unwrap_or_else(|| panic!("{cause:?} is not in the exit table"));
    let column = EXIT_COLUMNS
        .iter()
        .position(|(names, _)| names.split(", ").any(|name| name == mta))
        .unwrap_or_else(|| panic!("--mta {mta} has no column in the exit table"));
    // "65 (0 once saved by --reject-dir)": no cell here saves a refusal.
    row.exits[column].split(' ').next().unwrap().to_string()
}

#[test]
fn every_fault_under_every_mta() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(faults(dir.path()));
    let mtas = mtas();
    assert_eq!(mtas.len(), MTAS.len(), "a new --mta must join the matrix");

    let mut cells = Vec::new();
    for row in 0..faults.len() {
        for (name, mta) in &mtas {
            cells.push((row, name.clone(), *mta));
        }
    }
    let queue = Arc::new(Mutex::new(cells.into_iter()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    // Enough workers that the waits (retries, timeouts) overlap, few enough
    // that a busy 2-core machine does not push a fast cell past its --timeout.
    let workers: Vec<_> = (0..24)
        .map(|_| {
            let (queue, results, faults) = (queue.clone(), results.clone(), faults.clone());
            thread::spawn(move || loop {
                let Some((row, name, mta)) = queue.lock().unwrap().next() else { return };
                let cell = (faults[row].scenario)(&name);
                results.lock().unwrap().push((row, name, mta, cell));
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    eprintln!("fault matrix: {} cells in {:.1?}", results.lock().unwrap().len(), started.elapsed());

    let mut problems = Vec::new();
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (row, name, mta, cell) in &results {
        let fault = &faults[*row];
        let cause = fault.cause;
        let expected = Outcome::new(cause, "").exit_code(*mta);
        let run = &cell.run;
        let mut wrong = Vec::new();
        if published_exit(cause, name) != expected.to_string() {
            wrong.push(format!(
                "the published table says {} for exit {expected}",
                published_exit(cause, name)
            ));
        }
        if run.code != i32::from(expected) {
            wrong.push(format!("exit {} instead of {expected}", run.code));
        }
        if cause.class() == Class::Success {
            if !run.stderr.is_empty() {
                wrong.push("stderr is not empty on success".into());
            }
        } else if !run.stderr.starts_with(&format!("{} ", cause.code())) || run.stderr.lines().count() != 1 {
            wrong.push(format!("stderr is not one line starting with {}", cause.code()));
        }
        // The invariant: exit 0 only after a 2xx.
        if run.code == 0 && !cell.answered.iter().any(|s| (200..300).contains(s)) {
            wrong.push(format!("exit 0 without a 2xx (answers: {:?})", cell.answered));
        }
        if run.stdout.contains(PASSWORD) || run.stderr.contains(PASSWORD) {
            wrong.push("the password leaked".into());
        }
        if let Some(expected_body) = &fault.received {
            if cell.bodies != [expected_body.clone()] {
                wrong.push("the server did not receive exactly the bytes given".into());
            }
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "{} × --mta {name} ({cause:?}): {} — {run:?}",
                fault.name,
                wrong.join("; ")
            ));
        }
    }
    assert!(problems.is_empty(), "{} cells wrong:\n{}", problems.len(), problems.join("\n"));
    assert_eq!(results.len(), faults.len() * mtas.len());
}
