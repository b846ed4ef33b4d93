//! `check`, run as an administrator runs it: against the recording server,
//! asserting the exit code, the lines, and that the probe stores nothing.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

/// `check` aimed at `server` with the right password.
fn check(server: &Server, args: &[&str]) -> Run {
    to(server, &[&["check"], args].concat()).run()
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

    // The caller's limits and the size probe are steps like the others.
    let args = [
        "--json",
        "--size-limit",
        "--max-size",
        "4K",
        "--mta",
        "postfix",
        "--user",
        "root",
        "--timeout",
        "1000",
    ];
    let run = check(&server, &args);
    run.no_secrets();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["ok"], true, "{run:#?}");
    let steps = report["steps"].as_array().unwrap();
    let find = |name: &str, status: &str| steps.iter().any(|s| s["step"] == name && s["status"] == status);
    assert!(
        find("size-limit", "ok") && find("timeout", "warning") && find("environment", "warning"),
        "{run:#?}"
    );
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

    // A route's password file is read by the same user.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (config, secret) = (dir.path().join("config.toml"), dir.path().join("route-password"));
    fs::write(&secret, "route-secret\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let route = format!(
        "[[route]]\ndomains = [\"b.test\"]\nurl = \"{}\"\npassword_file = \"route-password\"\n",
        server.url()
    );
    fs::write(&config, format!("url = \"{}\"\n{route}", server.url())).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let run = ingress(&["check", "--user", "nobody", "--config", config.to_str().unwrap()])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run();
    assert!(
        line(&run, "✗", "access").contains("nobody cannot read the password file of route 1"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("route-secret"), "{run:#?}");

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
    // An RFC 5322 date of now, as GNU date reads it.
    let date = message.lines().find_map(|l| l.strip_prefix("Date: ")).unwrap().trim_end();
    let seconds = shell("date", &["-u", "-d", date, "+%s"]).parse::<i64>().unwrap();
    assert!((now() - seconds).abs() < 60, "{date}");
    assert!(date.ends_with(" +0000"), "{date}");

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

/// The output of a command that must succeed.
fn shell(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn a_probe_without_an_answer_gets_its_causes_advice() {
    // The same advice a delivery's status line gives for that cause.
    let hang = Server::start(vec![Hang]);
    let run = check(&hang, &["--timeout", "1"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let http = line(&run, "✗", "http");
    assert!(
        http.contains("no answer from 127.0.0.1")
            && http
                .contains("fix: Chatwoot or its proxy answered too slowly: see their logs, or raise timeout"),
        "{http}"
    );

    let reset = Server::start(vec![Reset]);
    let run = check(&reset, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let http = line(&run, "✗", "http");
    assert!(http.contains("fix: a proxy or firewall in front of Chatwoot may be cutting requests"), "{http}");
}

#[test]
fn size_limit_sends_exactly_max_size_and_names_a_proxys_lower_limit() {
    // A proxy that refuses bodies over 512 KiB in front of an ingress.
    let limited = || Server::start(vec![StatusIfLarger(512 * 1024, 413, 415)]);
    let server = limited();
    let run = check(&server, &["--size-limit", "--max-size", "1M"]);
    assert_eq!(run.code, 1, "{run:#?}");
    run.no_secrets();
    line(&run, "✓", "http");
    let size = line(&run, "✗", "size-limit");
    assert!(
        size.contains("HTTP 413") && size.contains("max_size (1048576 bytes, from flag --max-size)"),
        "{size}"
    );
    assert!(
        size.contains("fix: raise the request size limit of the proxy in front of Chatwoot to max_size (nginx: client_max_body_size), or lower max_size; max_size is 1048576 bytes"),
        "{size}"
    );
    assert!(run.stdout.ends_with("1 check(s) failed\n"), "{run:#?}");
    let received = server.received();
    assert_eq!(received.len(), 2, "the probe, then the size probe");
    let big = &received[1];
    assert_eq!(
        (big.method.as_str(), big.path.as_str()),
        ("POST", "/rails/action_mailbox/relay/inbound_emails")
    );
    assert_eq!(big.headers["content-type"], "text/plain");
    assert_eq!(big.headers["authorization"], basic_auth());
    assert_eq!(big.body.len(), 1024 * 1024);
    assert!(big.body.iter().all(|&b| b.is_ascii_graphic() || b == b'\r' || b == b'\n'), "text");

    // Within the proxy's limit, the ingress refuses it (415) and stores nothing.
    let server = limited();
    let run = check(&server, &["--size-limit", "--max-size", "256K"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(line(&run, "✓", "size-limit").contains("HTTP 415"), "{run:#?}");
    assert_eq!(server.bodies().iter().map(Vec::len).collect::<Vec<_>>(), [0, 256 * 1024]);

    // Other answers go through the same table.
    let server = Server::start(vec![status(415), status(502)]);
    let run = check(&server, &["--size-limit", "--max-size", "1K"]);
    assert!(
        line(&run, "✗", "size-limit").contains("HTTP 502") && run.stdout.contains("down or overloaded"),
        "{run:#?}"
    );

    // Only after a right probe.
    let server = Server::start(vec![status(401)]);
    let run = check(&server, &["--size-limit"]);
    assert_eq!(run.code, 1);
    assert!(line(&run, "✗", "size-limit").contains("not tested"), "{run:#?}");
    only_probes(&server, 1);
}

#[test]
fn a_timeout_that_reaches_postfixs_command_time_limit_warns() {
    // Postfix kills a pipe command at command_time_limit (1000 s by
    // default) and bounces the message.
    let server = Server::start(vec![status(415)]);
    let run = check(&server, &["--mta", "postfix", "--user", "root", "--timeout", "1000"]);
    assert_eq!(run.code, 0, "a warning: {run:#?}");
    let warning = line(&run, "!", "timeout");
    assert!(warning.contains("1000s reaches Postfix's command_time_limit"), "{warning}");
    assert!(warning.contains("chatwoot_time_limit") && warning.contains("lower timeout"), "{warning}");
    for args in [
        &["--mta", "postfix", "--user", "root", "--timeout", "999"][..],
        &["--mta", "exim", "--user", "root", "--timeout", "3600"],
        &["--timeout", "3600"],
    ] {
        let run = check(&server, args);
        assert_eq!(run.code, 0, "{args:?}: {run:#?}");
        assert!(!run.stdout.contains("! timeout"), "{args:?}: {run:#?}");
    }
}

#[test]
fn a_ca_file_without_a_certificate_fails_even_for_http() {
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    fs::write(&bad, "not a certificate\n").unwrap();
    let bad = bad.to_str().unwrap();
    let run = check(&server, &["--ca-file", bad]);
    assert_eq!(run.code, 1, "{run:#?}");
    let ca_file = line(&run, "✗", "ca_file");
    assert!(ca_file.contains(&format!("ca_file {bad} holds no PEM certificate")), "{ca_file}");
    line(&run, "✓", "http"); // http:// itself works
    let missing = dir.path().join("missing.pem");
    let run = check(&server, &["--ca-file", missing.to_str().unwrap()]);
    assert!(line(&run, "✗", "ca_file").contains(&format!("cannot read ca_file {}", missing.display())));

    // With https it is said once, and nothing is sent.
    let https = format!("https://127.0.0.1:{}", server.port);
    let run = ingress(&["check", "--url", &https, "--ca-file", bad])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run();
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stdout.matches("✗").count(), 1, "{run:#?}");
    line(&run, "✗", "ca_file");
    // Delivery refuses it as a configuration error: try later, never bounce.
    let run = ingress(&["--url", &https, "--ca-file", bad])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .stdin(corpus("lf.eml"))
        .run();
    run.failed(75, "4.3.5");
    assert!(run.stderr.contains(bad), "{run:#?}");
    assert_eq!(server.received().len(), 2, "only the two http:// probes: {:#?}", server.received());

    // A PEM certificate: counted.
    let pem = dir.path().join("good.pem");
    let der = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/certs/not-after-2026.der");
    shell(
        "openssl",
        &["x509", "-inform", "der", "-in", der.to_str().unwrap(), "-out", pem.to_str().unwrap()],
    );
    let run = check(&server, &["--ca-file", pem.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(line(&run, "✓", "ca_file").contains("(from flag --ca-file): 1 PEM certificate(s)"), "{run:#?}");
}

#[test]
fn a_proxy_from_the_environment_is_named_and_dns_and_tcp_are_its_own() {
    // The recording server as the proxy: it refuses the tunnel.
    let proxy = Server::start(vec![status(403)]);
    let proxy_url = format!("http://user:proxy-secret@127.0.0.1:{}", proxy.port);
    let run = ingress(&["check", "--url", "https://chatwoot.invalid"])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .env("HTTPS_PROXY", &proxy_url)
        .run();
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(!run.stdout.contains("proxy-secret"), "{run:#?}");
    let shown = format!("http://127.0.0.1:{}/", proxy.port);
    assert!(run.stdout.contains(&format!("\n✓ url: through the proxy {shown} (")), "{run:#?}");
    assert!(line(&run, "✓", "dns").contains("127.0.0.1 (the proxy) is an address"), "{run:#?}");
    assert!(line(&run, "✓", "tcp").contains(&format!("127.0.0.1:{} (the proxy)", proxy.port)), "{run:#?}");
    assert!(line(&run, "✗", "http").contains(&format!("through proxy {shown}")), "{run:#?}");
    let received = proxy.received();
    assert_eq!((received[0].method.as_str(), received[0].path.as_str()), ("CONNECT", "chatwoot.invalid:443"));

    // NO_PROXY: direct, so the host's own DNS.
    let run = ingress(&["check", "--url", "https://chatwoot.invalid"])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .env("HTTPS_PROXY", &proxy_url)
        .env("NO_PROXY", "chatwoot.invalid")
        .run();
    assert!(!run.stdout.contains("proxy"), "{run:#?}");
    line(&run, "✗", "dns");

    // Cleartext never goes through it, which is said.
    let run = ingress(&["check", "--url", "http://chatwoot.invalid"])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .env("HTTPS_PROXY", &proxy_url)
        .run();
    assert!(
        run.stdout.contains(
            "\n✓ url: not through the proxy in HTTPS_PROXY or ALL_PROXY: cleartext http:// is never proxied"
        ),
        "{run:#?}"
    );
    assert!(line(&run, "✗", "dns").contains("cannot resolve chatwoot.invalid"), "{run:#?}");

    // Postfix would not pass it on.
    let run = ingress(&["check", "--url", "https://chatwoot.invalid", "--mta", "postfix", "--user", "root"])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .env("HTTPS_PROXY", &proxy_url)
        .run();
    let warning = run
        .stdout
        .lines()
        .find(|l| l.starts_with("! environment: the proxy"))
        .unwrap_or_else(|| panic!("{run:#?}"));
    assert!(warning.contains(&shown) && warning.contains("export_environment"), "{warning}");
    assert!(!run.stdout.contains("proxy-secret"), "{run:#?}");
}

/// An HTTPS server answering 415 to every POST, with `cert` and `key`.
const HTTPS: &str = r#"
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(415)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct Https(Child);

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_certificates_expiry_is_its_not_after() {
    // A self-signed certificate for 127.0.0.1 with 5 days left, trusted as itself.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    shell(
        "openssl",
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "5"]
            .iter()
            .chain(&["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .copied()
            .collect::<Vec<_>>(),
    );
    // notAfter as openssl and GNU date read it, not as the code under test does.
    let end = shell("openssl", &["x509", "-in", cert, "-noout", "-enddate"]);
    let end = end.strip_prefix("notAfter=").unwrap();
    let expected = shell("date", &["-u", "-d", end, "+%Y-%m-%dT%H:%M:%SZ"]);
    // Less than 5 whole days left: not within the second the certificate was made.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let mut child =
        Command::new("python3").args(["-c", HTTPS, cert, key]).stdout(Stdio::piped()).spawn().unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let _server = Https(child);
    let url = format!("https://127.0.0.1:{}", port.trim());
    let run = ingress(&["check", "--url", &url, "--ca-file", cert])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run();
    assert_eq!(run.code, 0, "{run:#?}");
    let tls = line(&run, "!", "tls");
    assert!(
        tls.contains(&format!("certificate valid for 127.0.0.1, expires in 4 days ({expected})")),
        "{tls}"
    );
    assert!(tls.contains("fix: renew it"), "{tls}");
    line(&run, "✓", "http");

    let run = ingress(&["check", "--json", "--url", &url, "--ca-file", cert])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["certificate_days_left"], 4);
}
