//! The fault matrix: every fault × every `--mta`, in one table.
//!
//! Each row states the RFC 3463 status the fault must end in and words its
//! status line must carry; the exit code of a cell follows from that status
//! by [`contract_exit`], written here from the callers' documentation and
//! not taken from the code under test. Across the whole matrix: one status
//! line, exit 0 only after the server answered 2xx, no secret in the output.
//! The published exit table (README, man page) is cross-checked against the
//! same contract.

use crate::common;

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chatwoot_ingress::outcome::{exit_rows, Mta, EXIT_COLUMNS};
use clap::ValueEnum;
use common::*;

/// The exit code each caller must see for a status code, by its class:
/// sysexits(3) EX_TEMPFAIL / EX_DATAERR, which Postfix's pipe(8), Exim's
/// `temp_errors = 73:75`, OpenSMTPD's mda, getmail and fetchmail read;
/// qmail-command(8)'s 111 (soft) / 100 (hard).
fn contract_exit(mta: &str, status: &str) -> i32 {
    let sysexits = ["sysexits", "postfix", "exim", "opensmtpd", "getmail", "fetchmail"];
    match (mta, &status[..1]) {
        (_, "2") => 0,
        ("qmail", "4") => 111,
        ("qmail", "5") => 100,
        (mta, "4") if sysexits.contains(&mta) => 75,
        (mta, "5") if sysexits.contains(&mta) => 65,
        _ => panic!("the contract says nothing of --mta {mta} with status {status}: add it"),
    }
}

/// What one cell observed.
struct Cell {
    run: Run,
    /// Statuses the server answered with (none when there is no server).
    answered: Vec<u16>,
    /// Bodies the server read in full.
    bodies: Vec<Vec<u8>>,
}

type Scenario = Box<dyn Fn(&str) -> Cell + Send + Sync>;

/// What the server must have read in full.
enum Bodies {
    /// Not checked (the fault may strike before or after the body).
    Any,
    /// Nothing: the message was never sent.
    None,
    /// At least one body, each exactly these bytes (retries resend them).
    Each(Vec<u8>),
}

struct Fault {
    name: String,
    /// The RFC 3463 status code the output line must begin with.
    status: &'static str,
    /// Words the status line must contain.
    says: Vec<String>,
    /// Words no output may contain (secrets other than [`PASSWORD`]).
    never: &'static [&'static str],
    scenario: Scenario,
    bodies: Bodies,
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

/// `signal` while the request is in flight (the server has read it and
/// never answers).
fn signalled(signal: libc::c_int) -> Scenario {
    Box::new(move |mta| {
        let server = Server::start(vec![Hang]);
        let (child, writer) = to(&server, &["--mta", mta]).stdin(message()).spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.received().is_empty() {
            assert!(Instant::now() < deadline, "the request never arrived");
            thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on a child we have not reaped yet.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let run = Run::wait(child, writer);
        Cell { run, answered: server.answered(), bodies: server.bodies() }
    })
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

    let fault = |name: &str, status, says: &[&str], scenario, bodies| Fault {
        name: name.to_string(),
        status,
        says: says.iter().map(|s| s.to_string()).collect(),
        never: &[],
        scenario,
        bodies,
    };
    let http = |code: u16, status, says: &[&str]| {
        let scenario = against(common::status(code), &["--timeout", "3"], message);
        fault(&format!("HTTP {code}"), status, says, scenario, Bodies::Each(message()))
    };
    let mut faults = vec![
        // The slow ones first: the rest fill the gaps while they wait.
        http(502, "4.3.2", &["HTTP 502", "attempts"]),
        http(503, "4.3.2", &["HTTP 503", "attempts"]),
        http(504, "4.3.2", &["HTTP 504", "attempts"]),
        http(408, "4.3.2", &["HTTP 408"]),
        http(429, "4.3.2", &["HTTP 429"]),
        fault(
            "reset mid-body (after retries)",
            "4.4.2",
            &["connection to 127.0.0.1:", "lost"],
            against(Reset, &["--timeout", "3"], message),
            Bodies::None,
        ),
        fault(
            "2xx before the whole message was read (after retries)",
            "4.4.2",
            &["answered HTTP 200 after ", &format!(" of the message's {} bytes", twenty_mib().len())],
            against(Early(200, 64 * 1024), &["--timeout", "3"], twenty_mib),
            Bodies::None,
        ),
        fault(
            "refused connection (after retries)",
            "4.4.1",
            &["cannot connect to 127.0.0.1:1"],
            without_server(strings(&["--url", "http://127.0.0.1:1", "--timeout", "3"]), password(), message),
            Bodies::None,
        ),
        Fault {
            never: &["proxy-user", "proxy-secret"],
            ..fault(
                "https proxy refusing connections (after retries)",
                "4.4.1",
                &["chatwoot.example.com:443 (through proxy http://127.0.0.1:1/)"],
                without_server(
                    strings(&["--url", "https://chatwoot.example.com", "--timeout", "3"]),
                    [password(), vec![("HTTPS_PROXY", "http://proxy-user:proxy-secret@127.0.0.1:1".into())]]
                        .concat(),
                    message,
                ),
                Bodies::None,
            )
        },
        // Not taken for a server that does not speak TLS: it is the proxy.
        fault(
            "https proxy aborting the CONNECT (after retries)",
            "4.4.1",
            &["chatwoot.example.com:443 (through proxy http://127.0.0.1:"],
            Box::new(|mta| {
                let proxy = Server::start(vec![Abort]);
                // Time for every retry even on a loaded machine: the cell is
                // about what the last attempt says, not about the deadline.
                let run =
                    ingress(&["--mta", mta, "--url", "https://chatwoot.example.com", "--timeout", "15"])
                        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
                        .env("HTTPS_PROXY", proxy.url())
                        .stdin(message())
                        .run();
                Cell { run, answered: proxy.answered(), bodies: proxy.bodies() }
            }),
            Bodies::None,
        ),
        fault("hang", "4.4.7", &["within 2s"], against(Hang, &["--timeout", "2"], message), Bodies::Any),
        fault(
            "slow server",
            "4.4.7",
            &["within 1s"],
            against(SlowReader, &["--timeout", "1"], large_body),
            Bodies::None,
        ),
        fault(
            "DNS failure",
            "4.4.3",
            &["chatwoot.invalid"],
            without_server(
                strings(&["--url", "https://chatwoot.invalid", "--timeout", "3"]),
                password(),
                message,
            ),
            Bodies::None,
        ),
        fault(
            "TLS failure (https to a plain HTTP server)",
            "4.7.5",
            &["TLS with 127.0.0.1:"],
            Box::new(|mta| {
                let plain = Server::start(vec![common::status(204)]);
                let url = format!("https://127.0.0.1:{}", plain.port);
                let run = ingress(&["--mta", mta, "--url", &url, "--timeout", "3"])
                    .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
                    .stdin(message())
                    .run();
                Cell { run, answered: plain.answered(), bodies: plain.bodies() }
            }),
            Bodies::None,
        ),
        http(200, "2.0.0", &[]),
        http(201, "2.0.0", &[]),
        http(204, "2.0.0", &[]),
        fault(
            "HTTP 301 with a Location",
            "4.3.5",
            &["redirected (HTTP 301) to https://chatwoot.example.com/"],
            against(Status(301, location.clone()), &["--timeout", "3"], message),
            Bodies::Each(message()),
        ),
        fault(
            "HTTP 308 with a Location",
            "4.3.5",
            &["HTTP 308"],
            against(Status(308, location), &["--timeout", "3"], message),
            Bodies::Each(message()),
        ),
        http(302, "4.3.5", &["no Location header"]),
        http(401, "4.7.0", &["the ingress rejected the password (HTTP 401)"]),
        http(403, "4.7.0", &["the ingress rejected the password (HTTP 403)"]),
        http(404, "4.3.5", &["RAILS_INBOUND_EMAIL_SERVICE=relay"]),
        http(413, "4.3.4", &["too large (HTTP 413)"]),
        http(415, "4.3.5", &["content type (HTTP 415)"]),
        http(500, "4.3.0", &["RAILS_INBOUND_EMAIL_PASSWORD"]),
        http(507, "4.3.0", &["HTTP 507"]),
        http(400, "4.5.0", &["unexpected answer from the ingress (HTTP 400)"]),
        http(418, "4.5.0", &["HTTP 418"]),
        fault(
            "no url",
            "4.3.5",
            &["no ingress URL"],
            without_server(Vec::new(), password(), message),
            Bodies::None,
        ),
        fault(
            "no password",
            "4.3.5",
            &["no ingress password"],
            without_server(strings(&["--url", "http://127.0.0.1:1"]), Vec::new(), message),
            Bodies::None,
        ),
        fault(
            "typo'd configuration key",
            "4.3.5",
            &["typo.toml line 2", "pasword"],
            without_server(vec!["--config".into(), typo.display().to_string()], Vec::new(), message),
            Bodies::None,
        ),
        fault(
            "configuration file missing",
            "4.3.5",
            &["/nonexistent/config.toml"],
            without_server(
                Vec::new(),
                vec![("CHATWOOT_INGRESS_CONFIG", "/nonexistent/config.toml".into())],
                message,
            ),
            Bodies::None,
        ),
        fault(
            "unreadable password file",
            "4.3.5",
            &["password-is-a-directory"],
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
            Bodies::None,
        ),
        // A path that names no file may be the password itself: not echoed.
        Fault {
            never: &["/nonexistent/pw"],
            ..fault(
                "password file that does not exist",
                "4.3.5",
                &["password file given by --password-file does not exist"],
                without_server(
                    strings(&["--url", "http://127.0.0.1:1", "--password-file", "/nonexistent/pw"]),
                    Vec::new(),
                    message,
                ),
                Bodies::None,
            )
        },
        fault(
            "unknown flag",
            "4.3.5",
            &["--no-such-flag"],
            without_server(strings(&["--no-such-flag"]), password(), message),
            Bodies::None,
        ),
        fault(
            "bad flag value",
            "4.3.5",
            &["--timeout"],
            without_server(strings(&["--timeout", "soon"]), password(), message),
            Bodies::None,
        ),
        fault(
            "unexpected argument",
            "4.3.5",
            &["unexpected-positional"],
            without_server(strings(&["unexpected-positional"]), password(), message),
            Bodies::None,
        ),
        // A pipe's EOF is the only end a message has: a writer that stops
        // half way looks like a shorter message. If what arrived is still a
        // header section, it is relayed as it is (the bytes are not altered);
        // the caller saw its write fail and knows better than we can.
        fault(
            "stdin closed half way through the message",
            "2.0.0",
            &[],
            Box::new(move |mta| {
                let server = Server::start(vec![common::status(204)]);
                let run = to(&server, &["--mta", mta, "--timeout", "3"]).stdin(half.clone()).run();
                Cell { run, answered: server.answered(), bodies: server.bodies() }
            }),
            Bodies::Each(message()[..message().len() / 2].to_vec()),
        ),
        // Closed before the first byte: nothing to relay, refused as not mail.
        fault(
            "stdin closed before the first byte",
            "5.6.0",
            &[],
            against(common::status(204), &[], Vec::new),
            Bodies::None,
        ),
        fault(
            "not an email",
            "5.6.0",
            &["not an email"],
            against(common::status(204), &[], || b"{\"json\": true}\n".to_vec()),
            Bodies::None,
        ),
        fault(
            "larger than --max-size",
            "5.3.4",
            &["max_size of 1024 bytes"],
            against(common::status(204), &["--max-size", "1K"], large_body),
            Bodies::None,
        ),
        // A write past `ulimit -f` must fail as an error, not kill us with
        // SIGXFSZ: the refusal could not be kept, so the caller keeps it.
        fault(
            "file size limit while saving a refusal in reject_dir",
            "4.3.0",
            &["could not save the refused message", "file too large"],
            Box::new(|mta| {
                let server = Server::start(vec![common::status(204)]);
                let reject = tempfile::tempdir().unwrap();
                let run = to(&server, &["--mta", mta, "--max-size", "1K"])
                    .arg("--reject-dir")
                    .arg(reject.path())
                    .file_size_limit(64 * 1024)
                    .stdin(large_body())
                    .run();
                Cell { run, answered: server.answered(), bodies: server.bodies() }
            }),
            Bodies::None,
        ),
        fault(
            "panic",
            "4.3.0",
            &["internal error, please report it"],
            Box::new(|mta| {
                let server = Server::start(vec![common::status(204)]);
                let run = to(&server, &["--mta", mta])
                    .env("CHATWOOT_INGRESS_TEST_PANIC", "deliver")
                    .stdin(message())
                    .run();
                Cell { run, answered: server.answered(), bodies: server.bodies() }
            }),
            Bodies::None,
        ),
    ];
    // Every catchable signal that would end the process ends the delivery
    // as "try later", never as a signal death (Exim bounces those).
    for (name, signal) in [
        ("SIGTERM", libc::SIGTERM),
        ("SIGINT", libc::SIGINT),
        ("SIGHUP", libc::SIGHUP),
        ("SIGQUIT", libc::SIGQUIT),
        ("SIGUSR1", libc::SIGUSR1),
        ("SIGUSR2", libc::SIGUSR2),
        ("SIGALRM", libc::SIGALRM),
        ("SIGRTMIN+1", libc::SIGRTMIN() + 1),
    ] {
        faults.push(fault(
            &format!("{name} during delivery"),
            "4.3.0",
            &[&format!("interrupted by {name}")],
            signalled(signal),
            Bodies::Each(message()),
        ));
    }
    faults
}

/// Every `--mta` value, from the enum itself.
fn mtas() -> Vec<String> {
    Mta::value_variants().iter().map(|mta| mta.to_possible_value().unwrap().get_name().to_string()).collect()
}

#[test]
fn every_fault_under_every_mta() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(faults(dir.path()));
    let mtas = mtas();
    assert_eq!(mtas.len(), MTAS.len(), "a new --mta must join the matrix");

    let mut cells = Vec::new();
    for row in 0..faults.len() {
        for mta in &mtas {
            cells.push((row, mta.clone()));
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
                let Some((row, mta)) = queue.lock().unwrap().next() else { return };
                let cell = (faults[row].scenario)(&mta);
                results.lock().unwrap().push((row, mta, cell));
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
    for (row, mta, cell) in &results {
        let fault = &faults[*row];
        let expected = contract_exit(mta, fault.status);
        let run = &cell.run;
        let mut wrong = Vec::new();
        if run.code != expected {
            wrong.push(format!("exit {} instead of {expected}", run.code));
        }
        if expected == 0 {
            if !run.stderr.is_empty() {
                wrong.push("stderr is not empty on success".into());
            }
        } else if !run.stderr.starts_with(&format!("{} ", fault.status)) || run.stderr.lines().count() != 1 {
            wrong.push(format!("stderr is not one line starting with {}", fault.status));
        }
        for words in &fault.says {
            if !run.stderr.contains(words.as_str()) {
                wrong.push(format!("the status line does not say {words:?}"));
            }
        }
        // The invariant: exit 0 only after a 2xx.
        if run.code == 0 && !cell.answered.iter().any(|s| (200..300).contains(s)) {
            wrong.push(format!("exit 0 without a 2xx (answers: {:?})", cell.answered));
        }
        for secret in [PASSWORD].iter().chain(fault.never) {
            if run.stdout.contains(secret) || run.stderr.contains(secret) {
                wrong.push(format!("{secret:?} leaked"));
            }
        }
        match &fault.bodies {
            Bodies::Any => {}
            Bodies::None if !cell.bodies.is_empty() => wrong.push("the server received the message".into()),
            Bodies::Each(bytes) if cell.bodies.is_empty() || cell.bodies.iter().any(|b| b != bytes) => wrong
                .push(format!(
                    "the server did not receive exactly the bytes given ({} bodies)",
                    cell.bodies.len()
                )),
            _ => {}
        }
        if !wrong.is_empty() {
            problems.push(format!("{} × --mta {mta}: {} — {run:?}", fault.name, wrong.join("; ")));
        }
    }
    assert!(problems.is_empty(), "{} cells wrong:\n{}", problems.len(), problems.join("\n"));
    assert_eq!(results.len(), faults.len() * mtas.len());
}

/// The exit table the README and the man page render says what the contract
/// says, for every status code and every caller.
#[test]
fn the_published_exit_table_is_the_contract() {
    let mut columns_seen = Vec::new();
    for row in exit_rows() {
        for ((names, _), exit) in EXIT_COLUMNS.iter().zip(&row.exits) {
            for mta in names.split(", ") {
                columns_seen.push(mta.to_string());
                let (first, rest) = exit.split_once(' ').unwrap_or((exit, ""));
                assert_eq!(first, contract_exit(mta, row.code).to_string(), "{} for {mta}", row.code);
                // Only a refusal kept in reject_dir lets a caller that cannot
                // bounce move on.
                let saved = row.code.starts_with('5') && ["getmail", "fetchmail"].contains(&mta);
                assert_eq!(rest, if saved { "(0 once saved by --reject-dir)" } else { "" }, "{}", row.code);
            }
        }
    }
    for mta in mtas() {
        assert!(columns_seen.contains(&mta), "--mta {mta} has no column in the exit table");
    }
}
