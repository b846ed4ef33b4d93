//! `check`, run as an administrator runs it: against the recording server,
//! asserting the exit code, the lines, and that the probe stores nothing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

/// `check` aimed at `server` with the right password.
fn check(server: &Server, args: &[&str]) -> Run {
    to(server, &[&["check"], args].concat()).run()
}

/// The line of `step` whose mark is `mark`, or a failure showing the run.
#[track_caller]
fn line<'a>(run: &'a Run, mark: &str, step: &str) -> &'a str {
    let prefix = format!("{mark} {step}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line: {run:#?}"))
}

/// Every request was the probe: credentials, text/plain, an empty body.
#[track_caller]
fn only_probes(server: &Server, count: usize) {
    let received = server.received();
    assert_eq!(received.len(), count, "{received:#?}");
    for request in received {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/rails/action_mailbox/relay/inbound_emails");
        assert_eq!(request.headers["content-type"], "text/plain");
        assert_eq!(request.headers["authorization"], basic_auth());
        assert!(request.body.is_empty());
    }
}

#[test]
fn a_good_setup_is_all_ticks_and_stores_nothing() {
    let server = Server::start(vec![status(415)]);
    let run = check(&server, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    run.no_secrets();
    assert_eq!(run.stderr, "");
    assert!(!run.stdout.contains('✗') && !run.stdout.contains("\n! "), "{run:#?}");
    line(&run, "✓", "configuration");
    assert!(line(&run, "✓", "url")
        .contains(&format!("{}/rails/action_mailbox/relay/inbound_emails (from flag --url)", server.url())));
    let password = line(&run, "✓", "password");
    assert!(password.contains(&format!(
        "**** ({} characters, from environment CHATWOOT_INGRESS_PASSWORD",
        PASSWORD.len()
    )));
    assert!(line(&run, "✓", "timeout").contains("30s (default)"));
    assert!(line(&run, "✓", "dns").contains("127.0.0.1 is an address"));
    assert!(line(&run, "✓", "tcp").contains(&format!("connected to 127.0.0.1:{}", server.port)));
    assert!(line(&run, "✓", "http").contains("HTTP 415"), "{run:#?}");
    assert!(run.stdout.ends_with("all checks passed\n"), "{run:#?}");
    only_probes(&server, 1);
}

#[test]
fn each_wrong_answer_names_the_fault_and_the_fix() {
    let location = "https://chatwoot.example.com/rails/action_mailbox/relay/inbound_emails";
    let table: Vec<(Behaviour, &str, &str)> = vec![
        (status(404), "HTTP 404", "RAILS_INBOUND_EMAIL_SERVICE=relay"),
        (status(401), "rejected the password (HTTP 401)", "exactly RAILS_INBOUND_EMAIL_PASSWORD"),
        (status(403), "rejected the password (HTTP 403)", "exactly RAILS_INBOUND_EMAIL_PASSWORD"),
        (status(500), "HTTP 500", "set RAILS_INBOUND_EMAIL_PASSWORD on the Chatwoot server"),
        (
            Status(301, vec![("Location", location.to_string())]),
            "redirected (HTTP 301)",
            "fix: set url to https://chatwoot.example.com/",
        ),
        (status(308), "no Location header", "fix: set url to the address"),
        (status(503), "HTTP 503", "down or overloaded"),
        (status(400), "unexpected answer from the ingress (HTTP 400)", "never gives this answer"),
    ];
    for (answer, detail, fix) in table {
        let server = Server::start(vec![answer.clone()]);
        let run = check(&server, &[]);
        assert_eq!(run.code, 1, "{answer:?}: {run:#?}");
        run.no_secrets();
        let http = line(&run, "✗", "http");
        assert!(http.contains(detail) && http.contains(fix), "{answer:?}: {http}");
        line(&run, "✓", "tcp");
        assert!(run.stdout.ends_with("1 check(s) failed\n"), "{run:#?}");
        // Never retried, never followed.
        only_probes(&server, 1);
    }
}

#[test]
fn a_2xx_to_the_probe_means_this_is_not_the_ingress_and_fails() {
    // Every message sent to an endpoint that says 2xx to anything would be lost.
    let server = Server::start(vec![status(204)]);
    let run = check(&server, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let http = line(&run, "✗", "http");
    assert!(http.contains("HTTP 204") && http.contains("not an Action Mailbox relay ingress"), "{http}");
    assert!(run.stdout.ends_with("1 check(s) failed\n"), "{run:#?}");
    // And --send-test does not claim a delivery there.
    let run = check(&server, &["--send-test", "support@inbox.example.com"]);
    assert!(line(&run, "✗", "send-test").contains("not sent"), "{run:#?}");
    assert_eq!(server.received().iter().filter(|r| !r.body.is_empty()).count(), 0);
    only_probes(&server, 2);
}

#[test]
fn network_faults_stop_at_the_step_that_failed() {
    let refused =
        ingress(&["check", "--url", "http://127.0.0.1:1"]).env("CHATWOOT_INGRESS_PASSWORD", PASSWORD).run();
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(line(&refused, "✗", "tcp").contains("127.0.0.1:1: connection refused"), "{refused:#?}");
    assert!(!refused.stdout.contains(" http: "), "{refused:#?}");

    let dns = ingress(&["check", "--url", "https://chatwoot.invalid"])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run();
    assert_eq!(dns.code, 1, "{dns:#?}");
    assert!(line(&dns, "✗", "dns").contains("cannot resolve chatwoot.invalid"), "{dns:#?}");
    assert!(!dns.stdout.contains("tcp:"), "{dns:#?}");
    assert!(!dns.stdout.contains("! url:"), "https: no warning: {dns:#?}");
    assert!(!refused.stdout.contains("! url:"), "plain http to loopback: no warning: {refused:#?}");

    // Plain http beyond this machine: the password travels in clear.
    let clear = ingress(&["check", "--url", "http://chatwoot.invalid"])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run();
    let warning = line(&clear, "!", "url");
    assert!(warning.contains("plain http to chatwoot.invalid: the password and every email travel in clear"));
    assert!(warning.contains("use https://"), "{clear:#?}");

    // https to a server that speaks plain HTTP: the TLS step fails, not the HTTP one.
    let plain = Server::start(vec![status(415)]);
    let url = format!("https://127.0.0.1:{}", plain.port);
    let tls = ingress(&["check", "--url", &url]).env("CHATWOOT_INGRESS_PASSWORD", PASSWORD).run();
    assert_eq!(tls.code, 1, "{tls:#?}");
    line(&tls, "✓", "tcp");
    assert!(line(&tls, "✗", "tls").contains("set ca_file for a private CA"), "{tls:#?}");
    assert!(plain.received().is_empty());

    let hang = Server::start(vec![Hang]);
    let run = check(&hang, &["--timeout", "1"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(line(&run, "✗", "http").contains("no answer from 127.0.0.1"), "{run:#?}");
}

#[test]
fn missing_values_fail_and_nothing_is_sent() {
    let server = Server::start(vec![status(415)]);
    let run = ingress(&["check", "--url", &server.url()]).run();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(line(&run, "✗", "password").contains("not set — fix: set `password_file`"), "{run:#?}");
    let run = ingress(&["check"]).env("CHATWOOT_INGRESS_PASSWORD", PASSWORD).run();
    assert!(line(&run, "✗", "url").contains("CHATWOOT_INGRESS_URL"), "{run:#?}");
    let run = ingress(&["check", "--config", "/nonexistent/config.toml"]).run();
    assert!(line(&run, "✗", "configuration").contains("cannot read /nonexistent/config.toml"), "{run:#?}");
    assert_eq!(run.code, 1);
    assert!(server.received().is_empty());
}

#[test]
fn a_world_readable_password_file_is_a_warning() {
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let run = ingress(&["check", "--url", &server.url(), "--password-file", file.to_str().unwrap()]).run();
    assert_eq!(run.code, 0, "{run:#?}");
    run.no_secrets();
    assert!(
        line(&run, "✓", "password").contains(&format!("from flag --password-file, file {}", file.display()))
    );
    assert!(line(&run, "!", "password").contains("readable by every user: chmod o-r it"), "{run:#?}");
    only_probes(&server, 1);

    // A pasted password with a trailing space is sent as is: worth a word.
    fs::write(&file, format!("{PASSWORD} \n")).unwrap();
    let run = ingress(&["check", "--url", &server.url(), "--password-file", file.to_str().unwrap()]).run();
    assert!(run.stdout.contains("! password: begins or ends with white space"), "{run:#?}");
}

#[test]
fn json_has_every_step_and_never_the_password() {
    let server = Server::start(vec![status(401)]);
    let run = check(&server, &["--json"]);
    assert_eq!(run.code, 1);
    run.no_secrets();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["http_status"], 401);
    assert!(report["round_trip_ms"].is_u64());
    let steps = report["steps"].as_array().unwrap();
    let http = steps.iter().find(|s| s["step"] == "http").unwrap();
    assert_eq!(http["status"], "fail");
    assert!(http["fix"].as_str().unwrap().contains("RAILS_INBOUND_EMAIL_PASSWORD"));
    assert!(steps.iter().any(|s| s["step"] == "password" && s["status"] == "ok"));

    let server = Server::start(vec![status(415)]);
    let report: serde_json::Value = serde_json::from_str(&check(&server, &["--json"]).stdout).unwrap();
    assert_eq!(report["ok"], true);
}

#[test]
fn mta_checks_what_its_user_can_read() {
    let server = Server::start(vec![status(415)]);
    // A root-only config file in a root-only directory: unreadable for `nobody`.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, format!("url = \"{}\"\n", server.url())).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let run =
        ingress(&["check", "--mta", "postfix", "--user", "nobody", "--config", config.to_str().unwrap()])
            .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
            .run();
    assert_eq!(run.code, 1, "{run:#?}");
    let access = line(&run, "✗", "access");
    assert!(access.contains("nobody cannot read the configuration file: cannot enter directory"), "{access}");
    assert!(line(&run, "✓", "access").contains("nobody can run this program"), "{run:#?}");
    // Postfix would not see a password from the environment.
    assert!(line(&run, "!", "environment").contains("CHATWOOT_INGRESS_PASSWORD"), "{run:#?}");

    // Readable by all (the harness's empty config in the temp dir): fine.
    let run = check(&server, &["--user", "nobody"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(line(&run, "✓", "access").contains("nobody can read the configuration file"), "{run:#?}");

    // getmail runs us as chatwoot-ingress in our packaging; a missing user is a fault.
    let run = check(&server, &["--mta", "getmail"]);
    assert!(
        run.stdout.contains("access: chatwoot-ingress can")
            || run.stdout.contains("no user chatwoot-ingress")
    );
    let run = check(&server, &["--mta", "postfix", "--user", "no-such-user"]);
    let missing = line(&run, "✗", "access");
    assert!(missing.contains("no user no-such-user on this system — fix: create it"), "{missing}");
    assert_eq!(run.code, 1);
}

#[test]
fn send_test_delivers_one_marked_message_after_the_probe() {
    let server = Server::start(vec![status(415), status(204)]);
    let run = check(&server, &["--send-test", "inbox@example.com"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(line(&run, "✓", "send-test").contains("delivered <chatwoot-ingress-check."), "{run:#?}");
    let received = server.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(received[0].headers["content-type"], "text/plain");
    assert_eq!(received[1].headers["content-type"], "message/rfc822");
    assert_eq!(received[1].headers["authorization"], basic_auth());
    let message = String::from_utf8(received[1].body.clone()).unwrap();
    assert!(message.starts_with("X-Original-To: inbox@example.com\r\n"), "{message}");
    for header in [
        "To: <inbox@example.com>",
        "Subject: chatwoot-ingress test message",
        "Message-ID: <chatwoot-ingress-check.",
    ] {
        assert!(message.contains(&format!("\r\n{header}")), "{header}: {message}");
    }

    // Not sent when the setup is wrong.
    let server = Server::start(vec![status(401)]);
    let run = check(&server, &["--send-test", "inbox@example.com"]);
    assert_eq!(run.code, 1);
    assert!(line(&run, "✗", "send-test").contains("not sent"), "{run:#?}");
    only_probes(&server, 1);
}

#[test]
fn bad_flags_are_reported_like_delivery_never_as_clap_exit_2() {
    let run = ingress(&["check", "--mta", "postfix", "--bogus"]).run();
    assert_eq!(run.code, 75, "{run:#?}");
    assert!(run.stderr.starts_with("4.3.5 bad command line: unexpected argument '--bogus'"), "{run:#?}");
}
