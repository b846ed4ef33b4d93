//! Where a message goes and what Chatwoot will route it on: `[[route]]`
//! tables for several Chatwoot instances behind one mail server, the
//! recipient taken from a header, and exactly one X-Original-To.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const OTHER_PASSWORD: &str = "other+instance/pw=";

/// A configuration with a top-level ingress (unless `default` is None) and
/// one route for `second.test` and every name below `example.org`.
fn config(dir: &Path, default: Option<&Server>, routed: &Server, extra: &str) -> PathBuf {
    let password = dir.join("other-password");
    fs::write(&password, format!("{OTHER_PASSWORD}\n")).unwrap();
    let top = match default {
        Some(server) => format!("url = \"{}\"\npassword = \"{PASSWORD}\"\n", server.url()),
        None => String::new(),
    };
    let text = format!(
        "{top}{extra}\n[[route]]\ndomains = [\"second.test\", \"*.example.org\"]\nurl = \"{}\"\npassword_file = \"other-password\"\n",
        routed.url()
    );
    let path = dir.join("config.toml");
    fs::write(&path, text).unwrap();
    path
}

fn deliver(config: &Path, args: &[&str]) -> Run {
    ingress(&[&["--config", config.to_str().unwrap()], args].concat()).stdin(corpus("lf.eml")).run()
}

/// The Authorization header for `password`, computed independently (coreutils' base64).
fn basic(password: &str) -> String {
    let pair = format!("actionmailbox:{password}");
    let output = std::process::Command::new("sh")
        .args(["-c", "printf %s \"$1\" | base64 -w0", "sh", &pair])
        .output()
        .unwrap();
    format!("Basic {}", String::from_utf8(output.stdout).unwrap())
}

#[test]
fn the_recipients_domain_chooses_the_route_and_the_rest_goes_to_the_top_level_url() {
    let (default, routed) = (Server::start(vec![status(204)]), Server::start(vec![status(204)]));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), Some(&default), &routed, "");
    for recipient in ["help@second.test", "Help@SECOND.test", "a@sub.example.org", "b@deep.sub.example.org"] {
        deliver(&config, &["--recipient", recipient]).delivered();
    }
    // The wildcard is for names below example.org, not example.org itself.
    for recipient in ["x@example.org", "y@inbox.test", "z@notsecond.test"] {
        deliver(&config, &["--recipient", recipient]).delivered();
    }
    deliver(&config, &[]).delivered();
    let routed_requests = routed.received();
    assert_eq!(routed_requests.len(), 4);
    assert!(routed_requests.iter().all(|r| r.headers["authorization"] == basic(OTHER_PASSWORD)));
    let default_requests = default.received();
    assert_eq!(default_requests.len(), 4);
    assert!(default_requests.iter().all(|r| r.headers["authorization"] == basic(PASSWORD)));
    assert_eq!(basic(PASSWORD), basic_auth(), "the independent encoding agrees with the harness");
}

#[test]
fn a_recipient_no_route_covers_without_a_default_is_a_configuration_problem_that_defers() {
    let routed = Server::start(vec![status(204)]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None, &routed, "");
    for mta in MTAS {
        let run = deliver(&config, &["--mta", mta, "--recipient", "someone@unrouted.test"]);
        run.failed(temporary(mta), "4.3.5");
        assert!(run.stderr.contains("unrouted.test"), "{run:#?}");
        assert!(!run.stderr.contains(OTHER_PASSWORD), "{run:#?}");
    }
    let run = deliver(&config, &["--mta", "postfix"]);
    run.failed(75, "4.3.5");
    assert!(run.stderr.contains("no recipient to choose a [[route]] by"), "{run:#?}");
    // The routed domain still works without a top-level url.
    deliver(&config, &["--recipient", "help@second.test"]).delivered();
    assert_eq!(routed.received().len(), 1);
}

#[test]
fn bad_routes_name_the_route_and_defer() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[route]]\nurl = \"http://127.0.0.1:1\"\npassword = \"x\"\n", "route 1", "has no `domains`"),
        ("[[route]]\ndomains = [\"a.test\"]\npassword = \"x\"\n", "route 1", "has no `url`"),
        ("[[route]]\ndomains = [\"a.test\"]\nurl = \"http://127.0.0.1:1\"\n", "route 1", "has no `password_file`"),
        ("[[route]]\ndomains = [\"a b\"]\nurl = \"http://127.0.0.1:1\"\npassword = \"x\"\n", "line 2", "is not a domain name"),
        (
            "[[route]]\ndomains = [\"a.test\"]\nurl = \"http://127.0.0.1:1\"\npassword = \"x\"\n[[route]]\ndomains = [\"A.test\"]\nurl = \"http://127.0.0.1:2\"\npassword = \"y\"\n",
            "route 2",
            "a.test is already the domain of route 1",
        ),
        ("[[route]]\ndomains = \"a.test\"\nurl = \"http://127.0.0.1:1\"\npassword = \"x\"\n", "line 2", "must be a list"),
        ("[[route]]\ndomains = [\"a.test\"]\nurl = \"http://127.0.0.1:1\"\npasword = \"secret-typo\"\n", "line 4", "pasword"),
    ];
    for (text, place, what) in cases {
        let path = dir.path().join("bad.toml");
        fs::write(&path, text).unwrap();
        let run = deliver(&path, &["--mta", "exim", "--recipient", "x@a.test"]);
        run.failed(75, "4.3.5");
        assert!(run.stderr.contains(place) && run.stderr.contains(what), "{text}: {run:#?}");
        assert!(!run.stderr.contains("secret-typo"), "{run:#?}");
    }
}

#[test]
fn a_dry_run_names_the_route_and_needs_no_password() {
    let (default, routed) = (Server::start(vec![status(204)]), Server::start(vec![status(204)]));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), Some(&default), &routed, "");
    let run = deliver(&config, &["--dry-run", "--recipient", "help@second.test"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:#?}");
    let line = run.stdout.lines().find(|l| l.contains("would POST to")).unwrap_or_default();
    assert!(
        line.contains(&routed.url()) && line.contains("route 1") && line.contains("second.test"),
        "{run:#?}"
    );
    let run = deliver(&config, &["--dry-run", "--recipient", "someone@elsewhere.test"]);
    assert!(
        run.stdout
            .contains(&format!("{}/rails/action_mailbox/relay/inbound_emails (top-level url", default.url())),
        "{run:#?}"
    );
    // Without any url, a dry run still checks the message.
    let run = ingress(&["--dry-run"]).stdin(corpus("lf.eml")).run();
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("nowhere: no url is configured"), "{run:#?}");
    assert!(default.received().is_empty() && routed.received().is_empty());
}
