//! Deliver mode, run the way mail systems run it: stdin in, exit code and
//! first output bytes out, and the exact bytes the server received.

use crate::common;

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
        // Each caller's exit code for it is the fault matrix's business.
        to(&server, &[]).stdin(fs::read(entry.unwrap().path()).unwrap()).run().failed(65, "5.6.0");
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
    // Still failing after the retries: temporary, the same bytes each of
    // the 5 times, and the line says how often it tried.
    let server = Server::start(vec![status(503)]);
    let run = to(&server, &[]).stdin(corpus("lf.eml")).run();
    run.failed(75, "4.3.2");
    assert!(run.stderr.contains("after 5 attempts"), "{run:#?}");
    assert_eq!(server.bodies(), vec![corpus("lf.eml"); 5]);
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
fn an_unknown_caller_is_told_to_try_later_in_sysexits() {
    // Every other bad command line is a row of the fault matrix; this one
    // has no --mta to be crossed with.
    let run = ingress(&["--mta", "postfx"]).stdin(corpus("lf.eml")).run();
    run.failed(75, "4.3.5");
    assert!(run.stderr.contains("postfx"), "{run:#?}");
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
    // The Subject as Chatwoot shows it, decoded; nothing in it drives a terminal.
    let encoded =
        "From: a@example.org\nSubject: =?UTF-8?Q?caf=C3=A9_=1B[2J?= =?ISO-8859-1?B?6Q==?=\n\nbody\n";
    let run = ingress(&["--dry-run"]).stdin(encoded).run();
    assert!(run.stdout.contains("Subject: caf\u{e9} \\u{1b}[2J\u{e9}\n"), "{run:#?}");
    // No URL or password is needed, and invalid input still fails.
    let run = ingress(&["--dry-run"]).stdin(corpus("lf.eml")).run();
    assert_eq!(run.code, 0, "{run:#?}");
    ingress(&["--dry-run"]).stdin("{}").run().failed(65, "5.6.0");
    assert!(server.received().is_empty());
    // Nor does it write anything: a refusal is not saved in reject_dir.
    let dir = tempfile::tempdir().unwrap();
    let reject = dir.path().join("rejected");
    let run =
        to(&server, &["--dry-run", "--mta", "getmail"]).arg("--reject-dir").arg(&reject).stdin("{}").run();
    run.failed(65, "5.6.0");
    assert!(!reject.exists(), "{run:#?}");
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

#[test]
fn a_2xx_before_the_whole_message_was_read_is_not_a_delivery() {
    // The matrix has this fault under every caller; here, what the line says.
    let message = twenty_mib();
    // A proxy that reads 64 KiB, answers 200 and closes: the rest is lost.
    let early = Server::start(vec![Early(200, 64 * 1024)]);
    let run = to(&early, &["--timeout", "4"]).stdin(message.clone()).run();
    run.failed(75, "4.4.2");
    // The line says how much had left when the answer came: far from all.
    let sent: usize = run
        .stderr
        .split("answered HTTP 200 after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count: {run:#?}"));
    assert!((64 * 1024..message.len()).contains(&sent), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(" of the message's {} bytes, then closed", message.len())),
        "{run:#?}"
    );

    // Answered only once everything was read: delivered, byte for byte.
    let whole = Server::start(vec![status(200)]);
    to(&whole, &[]).stdin(message.clone()).run().delivered();
    assert!(whole.bodies() == vec![message]);
}

#[test]
fn the_rake_tasks_variables_never_override_an_explicit_configuration() {
    let configured = Server::start(vec![status(204)]);
    let other = Server::start(vec![status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let prod = dir.path().join("prod.toml");
    fs::write(&prod, format!("url = \"{}\"\npassword = \"{PASSWORD}\"\n", configured.url())).unwrap();

    // getmail, fetchmail or a shell may carry URL and INGRESS_PASSWORD for
    // something else: the file named on the command line wins.
    ingress(&["--config", prod.to_str().unwrap()])
        .env("URL", other.url())
        .env("INGRESS_PASSWORD", "x")
        .stdin(corpus("lf.eml"))
        .run()
        .delivered();
    assert_eq!(configured.received().len(), 1);
    assert_eq!(configured.received()[0].headers["authorization"], basic_auth());
    assert!(other.received().is_empty(), "URL overrode the configuration file");

    // Our own variable still overrides the file; the password is the file's.
    ingress(&["--config", prod.to_str().unwrap()])
        .env("CHATWOOT_INGRESS_URL", other.url())
        .env("INGRESS_PASSWORD", "x")
        .stdin(corpus("lf.eml"))
        .run()
        .delivered();
    assert_eq!(other.received().len(), 1);
    assert_eq!(other.received()[0].headers["authorization"], basic_auth());
    assert_eq!(configured.received().len(), 1);
}

/// Every variable a proxy may be set in, all pointing at `proxy`.
fn through_proxy(invocation: Invocation, proxy: &Server) -> Invocation {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .fold(invocation, |invocation, name| invocation.env(name, proxy.url()))
}

#[test]
fn cleartext_and_loopback_never_go_through_a_proxy() {
    let proxy = Server::start(vec![status(204)]);
    let server = Server::start(vec![status(204)]);
    through_proxy(to(&server, &[]), &proxy).stdin(corpus("lf.eml")).run().delivered();
    // 0.0.0.0 is not a loopback address to the proxy rules, and reaches this
    // host: an http:// URL beyond loopback. Through a proxy, the password
    // would cross it in clear.
    let beyond_loopback = format!("http://0.0.0.0:{}", server.port);
    through_proxy(ingress(&["--url", &beyond_loopback]), &proxy)
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .stdin(corpus("lf.eml"))
        .run()
        .delivered();
    assert_eq!(server.bodies(), vec![corpus("lf.eml"); 2]);
    assert!(proxy.received().is_empty(), "{:?}", proxy.received());

    // The same address with https:// is proxied: the proxy was in reach.
    let https = format!("https://0.0.0.0:{}", server.port);
    let run = through_proxy(ingress(&["--url", &https, "--timeout", "2"]), &proxy)
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .stdin(corpus("lf.eml"))
        .run();
    assert_eq!(run.code, 75, "{run:#?}");
    let connect = &proxy.received()[0];
    assert_eq!(
        (connect.method.as_str(), connect.path.as_str()),
        ("CONNECT", &*format!("0.0.0.0:{}", server.port))
    );
    assert!(run.stderr.contains("through proxy http://127.0.0.1:"), "{run:#?}");
    assert_eq!(server.bodies().len(), 2);
}

#[test]
fn a_password_written_wrongly_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    // (line in the file, the secret it holds)
    let cases = [
        ("'password' = 12345678", "12345678"),
        ("password = s3cret-unquoted", "s3cret-unquoted"),
        ("password = [\"s3cret-in-a-list\"]", "s3cret-in-a-list"),
        ("password_file = \"s3cret-where-the-path-goes\"", "s3cret-where-the-path-goes"),
        ("timeout = \"s3cret-as-timeout\"", "s3cret-as-timeout"),
        ("passwrod = \"s3cret-misspelled\"", "s3cret-misspelled"),
        ("Password = \"s3cret-capitalised\"", "s3cret-capitalised"),
    ];
    for (i, (line, secret)) in cases.into_iter().enumerate() {
        let config = dir.path().join(format!("config-{i}.toml"));
        fs::write(&config, format!("url = \"http://127.0.0.1:1\"\n{line}\n")).unwrap();
        let config = config.to_str().unwrap();
        let run = ingress(&["--config", config]).stdin(corpus("lf.eml")).run();
        run.failed(75, "4.3.5");
        assert!(!run.stderr.contains(secret), "{line}: {run:#?}");
        for args in [&["-v", "--config", config][..], &["check", "--config", config]] {
            let run = ingress(args).stdin(corpus("lf.eml")).run();
            assert_ne!(run.code, 0, "{line} {args:?}: {run:#?}");
            assert!(
                !run.stderr.contains(secret) && !run.stdout.contains(secret),
                "{line} {args:?}: {run:#?}"
            );
        }
    }
}

/// The files in `dir`, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<_> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn two_refusals_at_once_are_both_kept_whole() {
    let server = Server::start(vec![status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let reject = dir.path().join("rejected");
    let refusal =
        |body: &str| to(&server, &["--mta", "getmail"]).arg("--reject-dir").arg(&reject).stdin(body).spawn();
    let (first, second) = (refusal("first: not an email"), refusal("second: not an email"));
    for run in [Run::wait(first.0, first.1), Run::wait(second.0, second.1)] {
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:#?}");
        assert!(run.stdout.contains("(saved as "), "{run:#?}");
    }
    let names = files(&reject);
    assert_eq!(names.len(), 4, "{names:?}");
    let mut kept: Vec<_> = names
        .iter()
        .filter(|n| n.ends_with(".eml"))
        .map(|n| {
            let reason = fs::read_to_string(reject.join(n.replace(".eml", ".reason"))).unwrap();
            assert!(reason.starts_with("5.6.0 "), "{reason}");
            fs::read_to_string(reject.join(n)).unwrap()
        })
        .collect();
    kept.sort();
    assert_eq!(kept, ["first: not an email", "second: not an email"]);
    assert!(server.received().is_empty());
}

#[test]
fn a_refusal_that_cannot_be_saved_whole_leaves_nothing_behind() {
    let server = Server::start(vec![status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let reject = dir.path().join("rejected");
    // `ulimit -f` of 16 bytes: the 1-byte copy fits, its reason does not.
    let run = to(&server, &["--mta", "getmail"])
        .arg("--reject-dir")
        .arg(&reject)
        .file_size_limit(16)
        .stdin("x")
        .run();
    run.failed(75, "4.3.0");
    assert!(run.stderr.contains("could not save the refused message"), "{run:#?}");
    assert_eq!(files(&reject), Vec::<String>::new(), "a copy without its reason, or a temporary file");

    // Larger than the limit: an error (no SIGXFSZ death) and no half copy.
    let run = to(&server, &["--mta", "getmail", "--max-size", "1K"])
        .arg("--reject-dir")
        .arg(&reject)
        .file_size_limit(64 * 1024)
        .stdin(twenty_mib())
        .run();
    run.failed(75, "4.3.0");
    assert!(run.stderr.contains("file too large"), "{run:#?}");
    assert_eq!(files(&reject), Vec::<String>::new());
    assert!(server.received().is_empty());
}

#[test]
fn a_base_url_with_a_path_keeps_it_and_a_full_relay_url_is_not_doubled() {
    let server = Server::start(vec![status(204)]);
    let relay = "/chatwoot/rails/action_mailbox/relay/inbound_emails";
    for url in [
        format!("{}/chatwoot", server.url()),
        format!("{}/chatwoot/", server.url()),
        format!("{}{relay}", server.url()),
    ] {
        ingress(&["--url", &url])
            .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
            .stdin(corpus("lf.eml"))
            .run()
            .delivered();
    }
    let paths: Vec<_> = server.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [relay; 3]);
}
