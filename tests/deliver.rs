//! Deliver mode, run the way mail systems run it: stdin in, exit code and
//! first output bytes out, and the exact bytes the server received.

mod common;

use std::fs;

use common::*;

#[test]
fn relays_every_corpus_message_byte_for_byte_under_every_mta() {
    let server = Server::start(vec![status(204)]);
    let mut expected = Vec::new();
    for entry in fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let raw = fs::read(&path).unwrap();
        // Only a leading mbox From_ line is removed.
        let sent = if raw.starts_with(b"From ") {
            raw[raw.iter().position(|&b| b == b'\n').unwrap() + 1..].to_vec()
        } else {
            raw.clone()
        };
        for mta in MTAS {
            let run = to(&server, &["--mta", mta]).stdin(raw.clone()).run();
            run.delivered();
            assert_eq!(run.stdout, "", "{path:?} {mta}");
            expected.push(sent.clone());
        }
    }
    let received = server.received();
    assert_eq!(received.iter().map(|r| r.body.clone()).collect::<Vec<_>>(), expected);
    for request in received {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/rails/action_mailbox/relay/inbound_emails");
        assert_eq!(request.headers["content-type"], "message/rfc822");
        assert_eq!(request.headers["authorization"], basic_auth());
        assert_eq!(request.headers["user-agent"], format!("chatwoot-ingress/{}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn refuses_what_is_not_an_email_permanently_and_sends_nothing() {
    let server = Server::start(vec![status(204)]);
    for entry in fs::read_dir(corpus_dir().join("invalid")).unwrap() {
        let path = entry.unwrap().path();
        for mta in MTAS {
            to(&server, &["--mta", mta])
                .stdin(fs::read(&path).unwrap())
                .run()
                .failed(permanent(mta), "5.6.0");
        }
    }
    assert!(server.received().is_empty());
}

#[test]
fn a_30_mib_message_with_attachments_arrives_intact() {
    let server = Server::start(vec![status(204)]);
    let message = large_message();
    assert!(message.len() >= 30 << 20);
    to(&server, &["--mta", "postfix"]).stdin(message.clone()).run().delivered();
    assert!(server.bodies() == vec![message]);
}

#[test]
fn every_http_answer_maps_to_its_outcome_under_every_mta() {
    let location = vec![(
        "Location",
        "https://chatwoot.example.com/rails/action_mailbox/relay/inbound_emails".to_string(),
    )];
    // (answer, status code, class, text the line must contain)
    let table: Vec<(Behaviour, &str, &str)> = vec![
        (status(200), "2.0.0", ""),
        (status(201), "2.0.0", ""),
        (status(204), "2.0.0", ""),
        (Status(301, location.clone()), "4.3.5", "redirected (HTTP 301) to https://chatwoot.example.com/"),
        (Status(308, location), "4.3.5", "HTTP 308"),
        (status(302), "4.3.5", "no Location header"),
        (status(401), "4.7.0", "the ingress rejected the password (HTTP 401)"),
        (status(403), "4.7.0", "the ingress rejected the password (HTTP 403)"),
        (status(404), "4.3.5", "RAILS_INBOUND_EMAIL_SERVICE=relay"),
        (status(408), "4.3.2", "HTTP 408"),
        (status(413), "4.3.4", "too large (HTTP 413)"),
        (status(415), "4.3.5", "content type (HTTP 415)"),
        (status(429), "4.3.2", "HTTP 429"),
        (status(500), "4.3.0", "RAILS_INBOUND_EMAIL_PASSWORD"),
        (status(502), "4.3.2", "HTTP 502"),
        (status(503), "4.3.2", "HTTP 503"),
        (status(504), "4.3.2", "HTTP 504"),
        (status(507), "4.3.0", "HTTP 507"),
        (status(400), "4.5.0", "unexpected answer from the ingress (HTTP 400)"),
        (status(418), "4.5.0", "HTTP 418"),
    ];
    let message = corpus("lf.eml");
    for (answer, code, text) in table {
        for mta in ["sysexits", "postfix", "qmail", "getmail"] {
            let server = Server::start(vec![answer.clone()]);
            let run = to(&server, &["--mta", mta, "--timeout", "3"]).stdin(message.clone()).run();
            match &code[..1] {
                "2" => run.delivered(),
                "4" => run.failed(temporary(mta), code),
                _ => run.failed(permanent(mta), code),
            };
            assert!(run.stderr.contains(text), "{answer:?}: {run:#?}");
            assert_eq!(server.bodies()[0], message, "{answer:?}");
        }
    }
}

#[test]
fn redirects_are_never_followed() {
    let target = Server::start(vec![status(204)]);
    let redirect = Server::start(vec![Status(307, vec![("Location", target.url())])]);
    to(&redirect, &[]).stdin(corpus("lf.eml")).run().failed(75, "4.3.5");
    assert!(target.received().is_empty(), "the password went to the redirect target");
}

#[test]
fn retries_502_503_504_and_resets_with_the_same_bytes() {
    for first in [status(502), status(503), status(504), Reset] {
        let server = Server::start(vec![first.clone(), status(204)]);
        to(&server, &["--mta", "postfix"]).stdin(corpus("crlf.eml")).run().delivered();
        let bodies = server.bodies();
        assert!(bodies.iter().all(|b| *b == corpus("crlf.eml")), "{first:?}");
        assert!(!bodies.is_empty());
    }
    // Still failing after the retries: temporary, and it says how often it tried.
    let server = Server::start(vec![status(503)]);
    let run = to(&server, &[]).stdin(corpus("lf.eml")).run();
    run.failed(75, "4.3.2");
    assert!(run.stderr.contains("after 5 attempts"), "{run:#?}");
}

#[test]
fn network_faults_are_temporary() {
    // Port 1 (tcpmux) is closed everywhere we run; a freed ephemeral port
    // could be taken by another test's server meanwhile.
    let closed = 1;
    let message = corpus("lf.eml");
    let refused =
        ingress(&["--url", &format!("http://127.0.0.1:{closed}")]).env("CHATWOOT_INGRESS_PASSWORD", PASSWORD);
    refused.stdin(message.clone()).run().failed(75, "4.4.1");

    let dns = ingress(&["--mta", "qmail", "--url", "https://chatwoot.invalid"])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD);
    dns.stdin(message.clone()).run().failed(111, "4.4.3");

    // TLS to a server that speaks plain HTTP.
    let plain = Server::start(vec![status(204)]);
    let tls = ingress(&["--url", &format!("https://127.0.0.1:{}", plain.port)])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD);
    tls.stdin(message.clone()).run().failed(75, "4.7.5");

    let hang = Server::start(vec![Hang]);
    let run = to(&hang, &["--timeout", "2", "--mta", "exim"]).stdin(message.clone()).run();
    run.failed(75, "4.4.7");
    assert!(run.stderr.contains("within 2s"), "{run:#?}");

    let slow = Server::start(vec![SlowReader]);
    to(&slow, &["--timeout", "1"]).stdin(large_body()).run().failed(75, "4.4.7");
}

/// A valid message whose body takes the slow reader far longer than a second.
fn large_body() -> Vec<u8> {
    let mut message = b"From: a@example.com\n\n".to_vec();
    message.resize(2 << 20, b'y');
    message
}

#[test]
fn x_original_to_is_added_once_from_the_envelope_recipient() {
    let server = Server::start(vec![status(204)]);
    let recipient = "reply+7b1c6e2a@inbox.example.com";
    to(&server, &["--recipient", recipient]).stdin(corpus("crlf.eml")).run().delivered();
    to(&server, &["--recipient", recipient]).stdin(corpus("x-original-to.eml")).run().delivered();
    to(&server, &["--recipient", recipient]).stdin(corpus("from-line.eml")).run().delivered();
    let bodies = server.bodies();
    assert_eq!(
        bodies[0],
        [format!("X-Original-To: {recipient}\r\n").as_bytes(), &corpus("crlf.eml")].concat()
    );
    // Exactly one X-Original-To, the envelope's; the message's own is kept under another name.
    let own = String::from_utf8(corpus("x-original-to.eml")).unwrap();
    assert!(own.starts_with("X-Original-To: ") && own.matches("X-Original-To").count() == 1);
    let renamed = own.replacen("X-Original-To: ", "X-Previous-Original-To: ", 1);
    assert_eq!(bodies[1], [format!("X-Original-To: {recipient}\n"), renamed].concat().into_bytes());
    assert_eq!(bodies[2], [format!("X-Original-To: {recipient}\n").as_bytes(), &corpus("lf.eml")].concat());

    // Exim passes a local part that begins with "-" as its own argument.
    to(&server, &["--recipient", "-dash@inbox.example.com"]).stdin(corpus("lf.eml")).run().delivered();
    assert!(server.bodies()[3].starts_with(b"X-Original-To: -dash@inbox.example.com\n"));

    // A recipient that would inject a header is a caller mistake: temporary.
    to(&server, &["--recipient", "a@b\nBcc: x@y"]).stdin(corpus("lf.eml")).run().failed(75, "4.3.5");
    assert_eq!(server.received().len(), 4);
}

#[test]
fn too_large_is_permanent_and_never_sent() {
    let server = Server::start(vec![status(204)]);
    for mta in MTAS {
        let run = to(&server, &["--mta", mta, "--max-size", "1K"]).stdin(large_body()).run();
        run.failed(permanent(mta), "5.3.4");
        assert!(run.stderr.contains("max_size of 1024 bytes"), "{run:#?}");
    }
    assert!(server.received().is_empty());
}

#[test]
fn a_saved_refusal_lets_getmail_and_fetchmail_move_on_and_keeps_the_bytes() {
    let server = Server::start(vec![status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let reject = dir.path().join("rejected");
    let reject_arg = reject.to_str().unwrap();
    for mta in ["getmail", "fetchmail"] {
        let run = to(&server, &["--mta", mta, "--reject-dir", reject_arg]).stdin("not an email at all").run();
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:#?}");
        assert!(
            run.stdout.starts_with("5.6.0 not an email") && run.stdout.contains("(saved as "),
            "{run:#?}"
        );
    }
    // Callers that bounce still bounce, with the copy kept.
    let run = to(&server, &["--mta", "postfix", "--reject-dir", reject_arg, "--max-size", "1K"])
        .stdin(large_body())
        .run();
    run.failed(65, "5.3.4");
    let mut saved: Vec<_> = fs::read_dir(&reject).unwrap().map(|e| e.unwrap().path()).collect();
    saved.sort();
    assert_eq!(saved.len(), 6, "{saved:?}");
    let emls: Vec<_> = saved.iter().filter(|p| p.extension().unwrap() == "eml").collect();
    let contents: Vec<Vec<u8>> = emls.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(contents.contains(&b"not an email at all".to_vec()));
    assert!(contents.contains(&large_body()), "the oversized message was saved whole");
    let reason = fs::read_to_string(emls[0].with_extension("reason")).unwrap();
    assert!(reason.starts_with("5."), "{reason}");
    assert!(server.received().is_empty());

    // Without a reject dir, getmail hears a failure: it keeps the message.
    to(&server, &["--mta", "getmail"]).stdin("not an email at all").run().failed(65, "5.6.0");
    // And a reject dir that cannot be written defers rather than lose it.
    let blocked = dir.path().join("file");
    fs::write(&blocked, "").unwrap();
    let run = to(&server, &["--mta", "getmail", "--reject-dir", blocked.join("sub").to_str().unwrap()])
        .stdin("x")
        .run();
    run.failed(75, "4.3.0");
    assert!(run.stderr.contains("could not save the refused message"), "{run:#?}");
}

#[test]
fn configuration_problems_defer_and_say_what_to_fix() {
    let server = Server::start(vec![status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let message = corpus("lf.eml");

    ingress(&["--mta", "postfix"]).stdin(message.clone()).run().failed(75, "4.3.5");
    let run = ingress(&["--mta", "qmail", "--url", &server.url()]).stdin(message.clone()).run();
    run.failed(111, "4.3.5");
    assert!(run.stderr.contains("no ingress password"), "{run:#?}");

    let typo = dir.path().join("typo.toml");
    fs::write(&typo, format!("url = \"{}\"\npasword = \"{PASSWORD}\"\n", server.url())).unwrap();
    let run = ingress(&["--config", typo.to_str().unwrap()]).stdin(message.clone()).run();
    run.failed(75, "4.3.5");
    assert!(run.stderr.contains("typo.toml line 2") && run.stderr.contains("pasword"), "{run:#?}");

    let missing = ingress(&["--password-file", "/nonexistent/pw", "--url", &server.url()]);
    let run = missing.stdin(message.clone()).run();
    run.failed(75, "4.3.5");
    // A path that names no file may be the password itself: not echoed.
    assert!(run.stderr.contains("password file given by --password-file does not exist"), "{run:#?}");
    assert!(!run.stderr.contains("/nonexistent/pw"), "{run:#?}");

    let missing_config = ingress(&[]).env("CHATWOOT_INGRESS_CONFIG", "/nonexistent/config.toml");
    missing_config.stdin(message.clone()).run().failed(75, "4.3.5");
    assert!(server.received().is_empty());
}

#[test]
fn a_config_file_alone_is_enough() {
    let server = Server::start(vec![status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let config = dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "url = \"{}\"\npassword_file = \"password\"\ntimeout = 10\nmax_size = \"50M\"\n",
            server.url()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&password, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let run = ingress(&["--config", config.to_str().unwrap()]).stdin(corpus("lf.eml")).run();
    run.delivered();
    // A warning on success goes to stdout, never stderr (getmail).
    assert!(run.stdout.starts_with("warning: ") && run.stdout.contains("readable by every user"), "{run:#?}");
    assert_eq!(server.bodies(), vec![corpus("lf.eml")]);
}

#[test]
fn the_rake_tasks_environment_works_as_a_drop_in() {
    let server = Server::start(vec![status(204)]);
    let url = format!("{}/rails/action_mailbox/relay/inbound_emails", server.url());
    ingress(&[]).env("URL", url).env("INGRESS_PASSWORD", PASSWORD).stdin(corpus("lf.eml")).run().delivered();
    assert_eq!(server.received()[0].headers["authorization"], basic_auth());
}

#[test]
fn bad_command_lines_never_bounce_and_never_exit_2() {
    for mta in MTAS {
        let run = ingress(&["--mta", mta, "--no-such-flag"]).stdin(corpus("lf.eml")).run();
        run.failed(temporary(mta), "4.3.5");
        assert!(run.stderr.contains("--no-such-flag"), "{run:#?}");
    }
    ingress(&["--timeout", "soon"]).stdin(corpus("lf.eml")).run().failed(75, "4.3.5");
    ingress(&["--mta", "postfx"]).stdin(corpus("lf.eml")).run().failed(75, "4.3.5");
    ingress(&["unexpected-positional"]).stdin(corpus("lf.eml")).run().failed(75, "4.3.5");
}

#[test]
fn help_and_version_exit_0() {
    let run = ingress(&["--version"]).run();
    assert_eq!((run.code, run.stdout.trim()), (0, concat!("chatwoot-ingress ", env!("CARGO_PKG_VERSION"))));
    let run = ingress(&["--help"]).run();
    assert!(run.code == 0 && run.stdout.contains("--password-file"), "{run:#?}");
}

#[test]
fn dry_run_shows_and_sends_nothing() {
    let server = Server::start(vec![status(204)]);
    let run = to(&server, &["--dry-run", "--recipient", "bcc@inbox.example.com"])
        .stdin(corpus("from-line.eml"))
        .run();
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:#?}");
    for expected in [
        "size: 770 bytes",
        "Message-ID: <CAF1234567890@mail.example.org>",
        "From: customer@example.org",
        "To: reply+7b1c6e2a-1f4d-4a8e-9c3b-2d5e6f7a8b9c@inbox.example.com",
        "From_ line: stripped",
        "X-Original-To: bcc@inbox.example.com (added)",
        "conversation: reply to conversation 7b1c6e2a-1f4d-4a8e-9c3b-2d5e6f7a8b9c",
        "would POST to: http://127.0.0.1",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {run:#?}");
    }
    // No URL or password is needed, and invalid input still fails.
    let run = ingress(&["--dry-run"]).stdin(corpus("lf.eml")).run();
    assert_eq!(run.code, 0, "{run:#?}");
    ingress(&["--dry-run"]).stdin("{}").run().failed(65, "5.6.0");
    assert!(server.received().is_empty());
}

#[test]
fn verbose_reports_success_on_stdout_only() {
    let server = Server::start(vec![status(204)]);
    let run = to(&server, &["-v", "--mta", "getmail"]).stdin(corpus("lf.eml")).run();
    run.delivered();
    assert!(run.stdout.starts_with("2.0.0 delivered to http://127.0.0.1:"), "{run:#?}");
    // And which source won, for the URL and the password.
    assert!(run.stdout.contains("(from flag --url)\n"), "{run:#?}");
    assert!(run.stdout.contains("password **** (from environment CHATWOOT_INGRESS_PASSWORD)"), "{run:#?}");
}

#[test]
fn sigterm_during_delivery_is_temporary_not_a_signal_death() {
    for (mta, code) in [("postfix", 75), ("qmail", 111)] {
        let server = Server::start(vec![Hang]);
        let (child, writer) = to(&server, &["--mta", mta]).stdin(corpus("lf.eml")).spawn();
        // Wait until the request is in flight, then stop the process.
        while server.received().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let status =
            std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert!(stderr.starts_with("4.3.0 interrupted by SIGTERM"), "{stderr}");
    }
}

#[test]
fn a_panic_is_temporary_and_reported_as_a_bug() {
    let server = Server::start(vec![status(204)]);
    for mta in MTAS {
        let run = to(&server, &["--mta", mta])
            .env("CHATWOOT_INGRESS_TEST_PANIC", "1")
            .stdin(corpus("lf.eml"))
            .run();
        run.failed(temporary(mta), "4.3.0");
        assert!(run.stderr.contains("internal error, please report it"), "{run:#?}");
    }
    assert!(server.received().is_empty());
}

#[test]
fn the_shipped_qmail_line_works_as_qmail_local_runs_it() {
    // qmail-local runs a |command line with /bin/sh -c and this environment;
    // with virtualdomains "inbox.example.com:chatwoot-ingress", RECIPIENT
    // carries the prefix, DEFAULT and HOST the original address.
    let line = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/qmail/dot-qmail-default"),
    )
    .unwrap();
    let command = line.trim().strip_prefix('|').expect("a |command line");
    let command = command
        .replace("/usr/bin/chatwoot-ingress", BIN)
        .replace(" --config /etc/chatwoot-ingress/config.toml", "");
    let qmail_local = |server: &Server, password: &str, message: &[u8]| {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &command])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("CHATWOOT_INGRESS_URL", server.url())
            .env("CHATWOOT_INGRESS_PASSWORD", password)
            .env("CHATWOOT_INGRESS_CONFIG", "/dev/null")
            .env("RECIPIENT", "chatwoot-ingress-reply+7@inbox.example.com")
            .env("DEFAULT", "reply+7")
            .env("HOST", "inbox.example.com")
            .env("SENDER", "customer@example.org")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(message).unwrap();
        let output = child.wait_with_output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let server = Server::start(vec![status(204)]);
    assert_eq!(qmail_local(&server, PASSWORD, &corpus("lf.eml")), (Some(0), String::new()));
    let expected = [b"X-Original-To: reply+7@inbox.example.com\n".as_slice(), &corpus("lf.eml")].concat();
    assert_eq!(server.bodies(), vec![expected]);
    // qmail: 111 is soft (queued, retried), 100 hard.
    let rejecting = Server::start(vec![status(401)]);
    let (code, stderr) = qmail_local(&rejecting, "wrong", &corpus("lf.eml"));
    assert_eq!(code, Some(111), "{stderr}");
    assert!(stderr.starts_with("4.7.0 "), "{stderr}");
    let (code, stderr) = qmail_local(&server, PASSWORD, b"not an email at all");
    assert_eq!(code, Some(100), "{stderr}");
    assert!(stderr.starts_with("5.6.0 "), "{stderr}");
}

#[test]
fn on_a_terminal_it_says_how_to_use_it_instead_of_waiting() {
    // util-linux's script(1) gives the program a real terminal as stdin.
    let output = std::process::Command::new("script")
        .args(["-qec", &format!("{BIN} --config /dev/null; echo exit=$?"), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    assert!(text.starts_with("4.3.5 reads one email on standard input"), "{text}");
    assert!(text.contains("exit=75"), "{text}");
}
