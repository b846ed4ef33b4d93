//! `check` on `[[mailbox]]` tables with source = "graph", against the Graph
//! service of tests/interop/graph (one per test) and the recording server
//! as the ingress: the token, its permissions, the mailbox, its folders and
//! what waits, each ✓ ! or ✗ with its fix; never a secret, and nothing
//! changed in the mailbox (the service's request log says what was asked).

use crate::common;

use std::path::Path;

use common::graph::{Service, APP_SECRET, TENANT};
use common::{check_config as config, ingress, private, status, Run, Server, PASSWORD};
use serde_json::{json, Value};

const UPN: &str = "support@contoso.com";

/// A Graph [[mailbox]] for `user`, with the application `app` and `secret`.
fn mailbox(
    name: &str,
    user: &str,
    service: &Service,
    dir: &Path,
    app: &str,
    secret: &str,
    extra: &str,
) -> String {
    let secret_file = dir.join(format!("{name}.secret"));
    private(&secret_file, &format!("{secret}\n"));
    format!(
        "\n[[mailbox]]\nname = \"{name}\"\nsource = \"graph\"\nuser = \"{user}\"\ngraph_url = \"{}\"\n{extra}\n[mailbox.oauth2]\nprovider = \"microsoft\"\ntenant = \"{TENANT}\"\nclient_id = \"{app}\"\nclient_secret_file = \"{}\"\ntoken_url = \"{}\"\n",
        service.url,
        secret_file.display(),
        service.token_url()
    )
}

fn check(config: &Path, args: &[&str]) -> Run {
    let run = ingress(&[&["check", "--config", config.to_str().unwrap()], args].concat()).run();
    assert_eq!(run.stderr, "", "{run:#?}");
    for secret in [PASSWORD, APP_SECRET, "wrong-secret"] {
        assert!(!run.stdout.contains(secret), "{secret:?} shown: {run:#?}");
    }
    assert!(!run.stdout.contains("eyJ"), "a token shown: {run:#?}");
    run
}

/// The line `MARK graph MAILBOX: STEP: ...` that contains `text`.
#[track_caller]
fn line<'a>(run: &'a Run, mark: &str, mailbox: &str, step: &str, text: &str) -> &'a str {
    let prefix = format!("{mark} graph {mailbox}: {step}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(text))
        .unwrap_or_else(|| panic!("no `{prefix}…{text}…` line: {}", run.stdout))
}

fn message(n: u32) -> Vec<u8> {
    format!("From: a@sender.test\r\nTo: b@example.com\r\nSubject: {n}\r\nMessage-ID: <{n}@sender.test>\r\n\r\nbody {n}\r\n")
        .into_bytes()
}

/// What the service was asked that could change the mailbox (a token
/// request is a POST too).
fn writes(service: &Service) -> Vec<Value> {
    let writes =
        service.all_requests().into_iter().filter(|r| r["method"] == "POST" || r["method"] == "PATCH");
    writes.filter(|r| r["endpoint"] != "token").collect()
}

#[test]
fn a_good_graph_mailbox_is_all_ticks_and_nothing_changes_in_it() {
    let service = Service::start_with(&[("app", &["Mail.ReadWrite"])], &[(UPN, None)], json!({}));
    for n in 0..3 {
        service.add(UPN, "Inbox", &message(n), n == 0);
    }
    service.add(UPN, "Support/Done", &message(9), true);
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let boxes = [
        mailbox("support", UPN, &service, dir.path(), "app", APP_SECRET, ""),
        mailbox(
            "done",
            UPN,
            &service,
            dir.path(),
            "app",
            APP_SECRET,
            "folders = [\"support/DONE\"]\nafter = \"move\"\nmove_to = \"Chatwoot\"\nrefused_folder = \"Refused-done\"",
        ),
    ]
    .concat();
    let config = config(dir.path(), &server, "", &boxes);
    let run = check(&config, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!run.stdout.contains('✗'), "{}", run.stdout);
    line(
        &run,
        "✓",
        "support",
        "token",
        &format!("an access token from {} (client credentials)", service.token_url()),
    );
    line(&run, "✓", "support", "permissions", "application permissions (roles): Mail.ReadWrite");
    line(&run, "✓", "support", "mailbox", &format!("{UPN} at {}: ", service.url));
    line(&run, "✓", "support", "folder", "\"Inbox\" (watched) is there");
    line(
        &run,
        "✓",
        "support",
        "messages",
        "\"Inbox\": 3 message(s), 2 unread; watch will take 2, the unread ones",
    );
    line(&run, "!", "support", "folder", "\"Refused\" (refused_folder) is not there: watch creates it");
    // Display names in any case, "Parent/Child"; every message with after = move.
    line(&run, "✓", "done", "folder", "\"support/DONE\" (watched) is there");
    line(&run, "✓", "done", "messages", "1 message(s), 0 unread; watch will take 1, all of them");
    line(&run, "!", "done", "folder", "\"Chatwoot\" (move_to) is not there: watch creates it");
    assert_eq!(writes(&service), Vec::<Value>::new());

    let report: Value = serde_json::from_str(&check(&config, &["--json"]).stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["mailboxes"][0],
        json!({"name": "support", "folders": [{"folder": "Inbox", "messages": 3, "unseen": 2, "waiting": 2}]})
    );
}

#[test]
fn each_fault_of_a_graph_mailbox_is_named_with_its_fix() {
    let service = Service::start_with(
        &[("app", &["Mail.ReadWrite"]), ("reader", &["Mail.Read"])],
        &[(UPN, None)],
        json!({}),
    );
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let boxes = [
        mailbox("secret", UPN, &service, dir.path(), "app", "wrong-secret", ""),
        mailbox("reader", UPN, &service, dir.path(), "reader", APP_SECRET, "folders = [\"Archive\"]"),
        mailbox("nobody", "nobody@contoso.com", &service, dir.path(), "app", APP_SECRET, ""),
        mailbox("folder", UPN, &service, dir.path(), "app", APP_SECRET, "folders = [\"Support/Missing\"]"),
        mailbox("imap-scope", UPN, &service, dir.path(), "app", APP_SECRET, "folders = [\"Other\"]").replace(
            "[mailbox.oauth2]\n",
            "[mailbox.oauth2]\nscope = \"https://outlook.office365.com/.default\"\n",
        ),
    ]
    .concat();
    let config = config(dir.path(), &server, "", &boxes);
    let run = check(&config, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let secret = line(&run, "✗", "secret", "token", "AADSTS7000215");
    assert!(secret.contains("— fix: client_secret_file must hold the client secret's Value"), "{secret}");
    // Mail.ReadWrite may come from Exchange's RBAC for Applications, which
    // puts no role in the token: a warning, and the next steps tell.
    let reader = line(&run, "!", "reader", "permissions", "roles): Mail.Read; not Mail.ReadWrite");
    assert!(
        reader.contains("Application Mail.ReadWrite") && reader.contains("grant admin consent"),
        "{reader}"
    );
    line(&run, "!", "reader", "folder", "\"Refused\" (refused_folder) is not there: watch creates it");
    let nobody = line(&run, "✗", "nobody", "mailbox", "404 ErrorInvalidUser");
    assert!(nobody.contains("— fix: check user in the [[mailbox]]"), "{nobody}");
    let folder = line(&run, "✗", "folder", "folder", "\"Support/Missing\" (watched) is not in the mailbox");
    assert!(folder.contains("\"Parent/Child\""), "{folder}");
    let scope = line(&run, "✗", "imap-scope", "token", "AADSTS500011");
    assert!(
        scope.contains("— fix: check scope: for Microsoft Graph https://graph.microsoft.com/.default"),
        "{scope}"
    );
    assert_eq!(writes(&service), Vec::<Value>::new());
}
