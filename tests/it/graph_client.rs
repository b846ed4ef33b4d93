//! The Graph client (src/graph) against the Graph service of
//! tests/interop/graph (graph-service.py, one instance per test): folders,
//! delta rounds, the exact bytes of messages, mark read, moves that keep
//! the id, throttling and faults. What is expected comes from the
//! service's side (its admin API and request log), not from the client.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatwoot_ingress::graph::{Client, DeltaLink, Endpoint, Error, FolderPath, Options};
use chatwoot_ingress::http::Kind as Transport;
use chatwoot_ingress::secret::Password;
use serde_json::{json, Value};

use crate::common::graph::{Service, APP_SECRET};

const UPN: &str = "support@contoso.com";
const OTHER: &str = "sales@contoso.com";

fn start() -> Service {
    let apps: [(&str, &[&str]); 2] = [("app", &["Mail.ReadWrite"]), ("reader", &["Mail.Read"])];
    Service::start_with(&apps, &[(UPN, None), (OTHER, Some(&["reader"]))], json!({}))
}

fn client(service: &Service, options: Options) -> Client {
    Client::new(Endpoint::parse(&service.url).unwrap(), options, None).unwrap()
}

fn ids(values: &[Value], key: &str) -> Vec<String> {
    let mut ids: Vec<String> = values.iter().map(|v| v[key].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

fn path(p: &str) -> FolderPath {
    FolderPath::parse(p).unwrap()
}

#[test]
fn folders_are_found_by_path_and_created_once() {
    let service = start();
    let client = client(&service, Options::default());
    let token = service.token("app");
    for i in 0..12 {
        service.post("folder", json!({"mailbox": UPN, "path": format!("Extra {i:02}")}));
    }
    // more folders than one page of the service's (10)
    let top = client.children(&token, UPN, None).unwrap();
    assert_eq!(top.len(), 8 + 12, "{top:?}");
    let inbox = client.folder(&token, UPN, &path("Inbox")).unwrap().unwrap();
    assert_eq!(inbox.name, "Inbox");
    assert_eq!(client.folder(&token, UPN, &path("Chatwoot/Refused")).unwrap(), None);

    let refused = client.ensure_folder(&token, UPN, &path("Chatwoot/Refused")).unwrap();
    let folders = service.get(&format!("folders?mailbox={UPN}"));
    let made = folders.as_array().unwrap().iter().find(|f| f["path"] == "Chatwoot/Refused").unwrap();
    assert_eq!(made["id"], refused.id.as_str());
    // again: found, not created
    let again = client.ensure_folder(&token, UPN, &path("chatwoot/REFUSED")).unwrap();
    assert_eq!(again.id, refused.id);
    let posts = service.log(UPN).iter().filter(|e| e["endpoint"] == "create_folder").count();
    assert_eq!(posts, 2, "Chatwoot and Refused, once each");
    // under a well-known folder
    let sub = client.ensure_folder(&token, UPN, &path("Inbox/Sub")).unwrap();
    assert_eq!(sub.parent_id.as_deref(), Some(inbox.id.as_str()));
}

#[test]
fn delta_rounds_bring_arrivals_changes_and_departures() {
    let service = start();
    let client = client(&service, Options { page_size: 2, ..Options::default() });
    let token = service.token("app");
    let added: Vec<Value> = (0..5)
        .map(|i| service.add(UPN, "inbox", format!("Subject: {i}\r\n\r\n{i}\r\n").as_bytes(), i == 1))
        .collect();

    let mut round = client.round(UPN, "inbox", None).unwrap();
    let first = client.delta(&token, UPN, &mut round).unwrap();
    assert!(first.full && !first.reset);
    assert_eq!(first.pages, 3, "5 messages, 2 a page");
    let got: Vec<Value> = first.messages.iter().map(|m| json!({"id": m.id})).collect();
    assert_eq!(ids(&got, "id"), ids(&added, "immutable_id"), "immutable ids");
    let read: Vec<_> = first.messages.iter().filter(|m| m.is_read == Some(true)).map(|m| &m.id).collect();
    assert_eq!(read, [added[1]["immutable_id"].as_str().unwrap()]);
    // every request asked for immutable ids and the page size
    assert!(service.log(UPN).iter().all(|e| e["immutable"] == true && e["maxpagesize"] == "2"));

    // nothing new: an empty round
    let mut round = client.round(UPN, "inbox", Some(&first.next)).unwrap();
    let quiet = client.delta(&token, UPN, &mut round).unwrap();
    assert!(quiet.messages.is_empty() && quiet.removed.is_empty() && !quiet.full);

    // someone reads one, deletes one, we move one away, one arrives
    service.post("update", json!({"mailbox": UPN, "id": added[0]["id"], "is_read": true}));
    service.post("delete", json!({"mailbox": UPN, "id": added[2]["id"]}));
    let moved =
        client.move_message(&token, UPN, added[3]["immutable_id"].as_str().unwrap(), "archive").unwrap();
    assert_eq!(moved.id, added[3]["immutable_id"].as_str().unwrap(), "an immutable id survives the move");
    let new = service.add(UPN, "Inbox", b"Subject: new\r\n\r\nnew\r\n", false);
    let saved = DeltaLink::saved(quiet.next.as_str());
    let mut round = client.round(UPN, "inbox", Some(&saved)).unwrap();
    let changes = client.delta(&token, UPN, &mut round).unwrap();
    let present: Vec<&str> = changes.messages.iter().map(|m| m.id.as_str()).collect();
    let mut expected =
        vec![added[0]["immutable_id"].as_str().unwrap(), new["immutable_id"].as_str().unwrap()];
    let mut present_sorted = present.clone();
    present_sorted.sort();
    expected.sort();
    assert_eq!(present_sorted, expected);
    let mut removed = changes.removed.clone();
    removed.sort();
    let mut gone = vec![added[2]["immutable_id"].as_str().unwrap().to_string(), moved.id.clone()];
    gone.sort();
    assert_eq!(removed, gone);
    let read_now =
        changes.messages.iter().find(|m| m.id == added[0]["immutable_id"].as_str().unwrap()).unwrap();
    assert_eq!(read_now.is_read, Some(true));

    // the same change twice in a round counts once
    service.post("config", json!({"duplicates": "within"}));
    let twice = service.add(UPN, "inbox", b"Subject: twice\r\n\r\n2\r\n", false);
    let mut round = client.round(UPN, "inbox", Some(&changes.next)).unwrap();
    let dup = client.delta(&token, UPN, &mut round).unwrap();
    assert_eq!(dup.messages.len(), 1);
    assert_eq!(dup.messages[0].id, twice["immutable_id"].as_str().unwrap());
    service.post("config", json!({"duplicates": "none"}));

    // a lost state: a full round, within the same call
    service.post("delta/invalidate", json!({"mailbox": UPN, "folder": "inbox"}));
    let mut round = client.round(UPN, "inbox", Some(&dup.next)).unwrap();
    let full = client.delta(&token, UPN, &mut round).unwrap();
    assert!(full.full && full.reset);
    assert_eq!(
        ids(&full.messages.iter().map(|m| json!({"id": m.id})).collect::<Vec<_>>(), "id"),
        ids(&service.messages(UPN, "inbox"), "immutable_id")
    );
    let log = service.log(UPN);
    let at = log.iter().position(|e| e["status"] == 410).unwrap();
    assert_eq!(log[at]["code"], "SyncStateNotFound");
    assert_eq!(
        (&log[at + 1]["delta"], &log[at + 1]["status"]),
        (&json!("initial"), &json!(200)),
        "started over at once"
    );
}

#[test]
fn a_failed_page_keeps_the_rounds_place() {
    let service = start();
    let client = client(&service, Options { page_size: 1, ..Options::default() });
    let token = service.token("app");
    for i in 0..3 {
        service.add(UPN, "inbox", format!("Subject: {i}\r\n\r\n").as_bytes(), false);
    }
    let mut round = client.round(UPN, "inbox", None).unwrap();
    // the second page fails: 503 without Retry-After
    service.post("fault", json!({"kind": "unavailable", "delta": "skiptoken"}));
    let mut pages = 0;
    let changes = loop {
        match client.delta(&token, UPN, &mut round) {
            Ok(changes) => break changes,
            Err(Error::Server { retry_after: None, detail }) => {
                assert_eq!(detail.status, 503);
                pages += 1;
                assert!(pages < 3);
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(changes.messages.len(), 3);
    let delta_requests = service.log(UPN).iter().filter(|e| e["endpoint"] == "delta").count();
    assert_eq!(delta_requests, 4, "3 pages and the one that failed, nothing started over");
}

#[test]
fn the_mime_bytes_come_whole_and_exact_or_not_at_all() {
    let service = start();
    let client = client(&service, Options::default());
    let token = service.token("app");
    let mut big = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    big.extend((0..3_000_000u32).map(|i| b"abcdefghij\r\n\x00\xff"[(i % 14) as usize]));
    for mime in [
        &b"From: a@example.org\r\nSubject: crlf\r\n\r\nbody\r\n"[..],
        b"From: b@example.org\nSubject: =?utf-8?q?caf=C3=A9?=\n\n8-bit \xe9 and NUL \x00\n",
        b"\x00\x01not an email\xff",
        &big,
    ] {
        let m = service.add(UPN, "inbox", mime, false);
        let got = client.fetch(&token, UPN, m["immutable_id"].as_str().unwrap(), 10_000_000).unwrap();
        assert!(got == mime, "{} bytes, not the {} put in", got.len(), mime.len());
    }
    let m = service.add(UPN, "inbox", &big, false);
    let id = m["immutable_id"].as_str().unwrap();
    assert_eq!(client.fetch(&token, UPN, id, 1_000_000), Err(Error::TooLarge { limit: 1_000_000 }));
    // a reset in the middle of the body: no bytes handed out
    service.post("fault", json!({"kind": "reset", "after_bytes": 100_000}));
    let e = client.fetch(&token, UPN, id, 10_000_000).unwrap_err();
    assert!(matches!(e, Error::Transport { kind: Transport::Lost, .. }), "{e:?}");
    assert_eq!(client.fetch(&token, UPN, id, 10_000_000).unwrap(), big);
    let e = client.fetch(&token, UPN, "AAMkAGAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1000).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }) && e.has_code("ErrorItemNotFound"), "{e:?}");
}

#[test]
fn settling_marks_read_and_moves_keeping_the_id() {
    let service = start();
    let client = client(&service, Options::default());
    let token = service.token("app");
    let m = service.add(UPN, "inbox", b"Subject: s\r\n\r\n", false);
    let id = m["immutable_id"].as_str().unwrap();
    client.mark_read(&token, UPN, id).unwrap();
    assert_eq!(service.messages(UPN, "inbox")[0]["is_read"], true);
    let target = client.ensure_folder(&token, UPN, &path("Chatwoot")).unwrap();
    let moved = client.move_message(&token, UPN, id, &target.id).unwrap();
    assert_eq!((moved.id.as_str(), moved.folder_id.as_deref()), (id, Some(target.id.as_str())));
    assert_eq!(ids(&service.messages(UPN, "Chatwoot"), "immutable_id"), [id]);
    let deleted = client.move_message(&token, UPN, id, "deleteditems").unwrap();
    assert_eq!(deleted.id, id);
    assert_eq!(service.messages(UPN, "deleteditems").len(), 1);
    // a message that is gone
    service.post("delete", json!({"mailbox": UPN, "id": id}));
    assert!(matches!(client.mark_read(&token, UPN, id), Err(Error::NotFound { .. })));
}

#[test]
fn never_more_than_four_requests_to_a_mailbox_at_once() {
    let service = start();
    service.post("config", json!({"latency": 0.2}));
    let client = Arc::new(client(&service, Options::default()));
    let token = service.token("app");
    let m = service.add(UPN, "inbox", b"Subject: s\r\n\r\n", false);
    let id = m["immutable_id"].as_str().unwrap().to_string();
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let (client, token, id) = (client.clone(), token.clone(), id.clone());
            thread::spawn(move || client.fetch(&token, UPN, &id, 1000).map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let log = service.log(UPN);
    assert_eq!(log.len(), 10);
    let most = log.iter().map(|e| e["concurrency"].as_u64().unwrap()).max().unwrap();
    assert_eq!(most, 4, "{log:?}");
    assert!(log.iter().all(|e| e["status"] == 200));
}

#[test]
fn a_retry_after_keeps_every_request_away_from_the_mailbox() {
    let service = start();
    let client = client(&service, Options::default());
    let token = service.token("app");
    let m = service.add(UPN, "inbox", b"Subject: s\r\n\r\n", false);
    let id = m["immutable_id"].as_str().unwrap();
    service.post("fault", json!({"kind": "throttle", "retry_after": 2, "mailbox": UPN}));
    let started = Instant::now();
    let e = client.fetch(&token, UPN, id, 1000).unwrap_err();
    assert!(e.has_code("ApplicationThrottled"), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    // asked again at once: the same answer, nothing sent
    let again = client.mark_read(&token, UPN, id).unwrap_err();
    assert!(
        matches!(again, Error::Throttled { retry_after: Some(left), .. } if left <= Duration::from_secs(2))
    );
    while client.fetch(&token, UPN, id, 1000).is_err() {
        assert!(started.elapsed() < Duration::from_secs(4));
        thread::sleep(Duration::from_millis(100));
    }
    let log = service.log(UPN);
    assert_eq!(log.len(), 2, "the 429 and the first request after it: {log:?}");
    let gap = log[1]["time"].as_f64().unwrap() - log[0]["time"].as_f64().unwrap();
    assert!(gap >= 2.0, "the next request {gap} s after the 429");
    // another mailbox was never held
    let reader = service.token("reader");
    assert!(client.children(&reader, OTHER, None).is_ok());
}

#[test]
fn refusals_are_told_by_status_and_code() {
    let service = start();
    let client = client(&service, Options::default());
    let token = service.token("app");
    let e = client.children(&token, OTHER, None).unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }) && e.has_code("ErrorAccessDenied"), "{e:?}");
    let e = client.children(&token, "nobody@contoso.com", None).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }) && e.has_code("ErrorInvalidUser"), "{e:?}");
    service.post("fault", json!({"kind": "expired"}));
    let e = client.children(&token, UPN, None).unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    service.post("expire", json!({"all": true}));
    assert!(matches!(client.children(&token, UPN, None), Err(Error::Unauthorized { .. })));
    let fresh = service.token("app");
    assert!(client.children(&fresh, UPN, None).is_ok());
    let reader = service.token("reader");
    let m = service.add(UPN, "inbox", b"Subject: s\r\n\r\n", false);
    let e = client.mark_read(&reader, UPN, m["id"].as_str().unwrap()).unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e:?}");
    service.post("fault", json!({"kind": "unavailable", "retry_after": 5}));
    let e = client.children(&fresh, UPN, None).unwrap_err();
    assert!(matches!(e, Error::Server { retry_after: Some(d), .. } if d == Duration::from_secs(5)), "{e:?}");
    // no token or secret in what an error says
    let text = format!("{e} {e:?}");
    assert!(!text.contains(fresh.expose()) && !text.contains(APP_SECRET));
}

#[test]
fn no_answer_is_a_transport_failure() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nowhere =
        Client::new(Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(), Options::default(), None)
            .unwrap();
    let e = nowhere.children(&Password::new("t"), UPN, None).unwrap_err();
    assert!(matches!(e, Error::Transport { kind: Transport::Refused, .. }), "{e:?}");
    let service = start();
    let options = Options { timeout: Duration::from_millis(500), ..Options::default() };
    let client = client(&service, options);
    service.post("fault", json!({"kind": "delay", "seconds": 2}));
    let e = client.children(&service.token("app"), UPN, None).unwrap_err();
    assert!(matches!(e, Error::Transport { kind: Transport::Timeout, .. }), "{e:?}");
}

#[test]
fn the_service_passes_its_self_test() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/graph/selftest.py");
    let run = Command::new("python3").arg(script).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
    assert!(text.ends_with("s\n") && text.contains("0 checks failed"), "{text}");
}
