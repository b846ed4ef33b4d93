//! The metrics and health server as Prometheus, Kubernetes, a container's
//! HEALTHCHECK and a hostile client meet it: over TCP, with the text read
//! back by a real Prometheus parser, and the `health` command run as a
//! container runs it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatwoot_ingress::metrics::{serve, Health, MessageOutcome, Metrics, ServerHandle, LIMITS};

use crate::common;

/// Long enough for any machine, however loaded; the server's own
/// deadlines are 5 s.
const GENEROUS: Duration = Duration::from_secs(20);

struct Server {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    handle: ServerHandle,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (metrics, health) = (Metrics::new("9.9.9"), Health::new());
        let handle = serve(listener, metrics.clone(), health.clone()).unwrap();
        Server { metrics, health, handle }
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Send `request` as is and read the whole answer (the server closes).
    fn exchange(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.addr()).unwrap();
        stream.set_read_timeout(Some(GENEROUS)).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        String::from_utf8(answer).unwrap()
    }

    fn get(&self, path: &str) -> String {
        self.exchange(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
    }
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[test]
fn endpoints_answer_as_documented() {
    let server = Server::start();
    server.metrics.message("support", "INBOX", MessageOutcome::Delivered, Some(Duration::from_millis(80)));
    let answer = server.get("/metrics");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{answer}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert_eq!(body(&answer), server.metrics.render());
    assert!(body(&answer).contains(
        "chatwoot_ingress_messages_total{mailbox=\"support\",folder=\"INBOX\",outcome=\"delivered\"} 1\n"
    ));
    let length = format!("Content-Length: {}\r\n", body(&answer).len());
    assert!(answer.contains(&length), "{answer}");
    // A query string changes nothing; HEAD has the same head and no body.
    assert_eq!(body(&server.get("/metrics?name[]=x")), body(&answer));
    let head = server.exchange(b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains(&length), "{head}");
    assert_eq!(body(&head), "");

    assert_eq!(server.get("/healthz/live"), ok_answer());
    let ready = server.get("/healthz/ready");
    assert!(ready.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{ready}");
    assert_eq!(body(&ready), "starting: the configuration is not loaded yet\n");
    server.health.set_ready(Ok(()));
    assert_eq!(server.get("/healthz/ready"), ok_answer());

    let missing = server.get("/healthz");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"), "{missing}");
    let post = server.exchange(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
    assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
    // HTTP/1.0 clients are answered too.
    assert_eq!(server.exchange(b"GET /healthz/live HTTP/1.0\r\n\r\n"), ok_answer());
}

fn ok_answer() -> String {
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
     Cache-Control: no-store\r\nConnection: close\r\n\r\nok\n"
        .to_string()
}

#[test]
fn liveness_follows_each_workers_own_deadline() {
    let server = Server::start();
    let _idle = server.health.register("support/INBOX", Duration::from_secs(600));
    let busy = server.health.register("sales/Archive", Duration::from_millis(100));
    thread::sleep(Duration::from_millis(300));
    let answer = server.get("/healthz/live");
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    let said = body(&answer);
    assert!(said.starts_with("stuck: sales/Archive has not come back to its loop"), "{said}");
    assert!(!said.contains("support"), "{said}");
    busy.beat(Duration::from_secs(600));
    assert_eq!(server.get("/healthz/live"), ok_answer());
    // A worker that hangs and is then ended (a reload) is no longer asked for.
    let hung = server.health.register("gone/INBOX", Duration::ZERO);
    thread::sleep(Duration::from_millis(10));
    assert!(server.get("/healthz/live").contains("gone/INBOX"));
    drop(hung);
    assert_eq!(server.get("/healthz/live"), ok_answer());
}

#[test]
fn garbage_gets_an_error_and_the_server_goes_on() {
    let server = Server::start();
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.resize(LIMITS.head_size + 100, b'a');
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\x00\xff\xfe\x16\x03\x01 not http\r\n\r\n".to_vec(), "400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), "400"), // a TLS ClientHello
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), "400"),
        (b"GET /metrics HTTP/9.9\r\n\r\n".to_vec(), "400"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(), "400"),
        (b"GET /\xff\xfe HTTP/1.1\r\n\r\n".to_vec(), "4"),
        (b"get /metrics HTTP/1.1\r\n\r\n".to_vec(), "405"),
        (format!("GET /metrics HTTP/1.1\r\n{many}\r\n").into_bytes(), "431"),
        (huge, "431"),
    ];
    for (request, status) in cases {
        let answer = server.exchange(&request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{:?}: {answer}",
            String::from_utf8_lossy(&request)
        );
    }
    // A client that goes away half-way, or says nothing and closes.
    for request in [&b"GET /metr"[..], b""] {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.write_all(request).unwrap();
    }
    assert!(server.get("/metrics").starts_with("HTTP/1.1 200 OK\r\n"));
}

/// Idle connections by the hundred and a client that sends a byte a second
/// neither stop a scrape nor make the engine's updates wait.
#[test]
fn hostile_clients_stall_neither_scrapes_nor_delivery() {
    let server = Server::start();
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(server.addr()).unwrap()).collect();
    let slow_closed = Arc::new(AtomicBool::new(false));
    let slow = {
        let (addr, closed) = (server.addr(), slow_closed.clone());
        thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            for byte in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1234567890\r\n\r\n" {
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_secs(1));
            }
            closed.store(true, SeqCst);
        })
    };
    // The engine: a worker counting messages as fast as it can.
    let (done, finished) = mpsc::channel();
    let engine = {
        let metrics = server.metrics.clone();
        thread::spawn(move || {
            for i in 0..50_000 {
                metrics.message(
                    "support",
                    "INBOX",
                    MessageOutcome::Delivered,
                    Some(Duration::from_millis(i % 900)),
                );
                metrics.mailbox_up("support", "INBOX", true);
            }
            done.send(()).unwrap();
        })
    };
    for _ in 0..5 {
        let started = Instant::now();
        let answer = server.get("/metrics");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(started.elapsed() < GENEROUS);
        assert_eq!(server.get("/healthz/live"), ok_answer());
    }
    finished.recv_timeout(GENEROUS).expect("the engine's updates were held up");
    engine.join().unwrap();
    let text = body(&server.get("/metrics")).to_string();
    assert!(text.contains("outcome=\"delivered\"} 50000\n"), "{text}");
    assert!(text.contains("chatwoot_ingress_delivery_duration_seconds_count{mailbox=\"support\"} 50000\n"));
    // The trickling client was cut off (made room for others, or past the
    // head deadline) long before it finished its 60-byte head.
    let started = Instant::now();
    while !slow_closed.load(SeqCst) && started.elapsed() < GENEROUS {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(slow_closed.load(SeqCst), "a one-byte-a-second client kept its connection");
    slow.join().unwrap();
    drop(idle);
}

#[test]
fn stopping_is_prompt_and_closes_the_port() {
    let server = Server::start();
    let addr = server.addr();
    let _idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    assert!(server.get("/metrics").starts_with("HTTP/1.1 200 OK\r\n"));
    let started = Instant::now();
    server.handle.stop();
    // Far less than the 5 s head deadline the idle connections have.
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(TcpStream::connect(addr).is_err(), "the port still accepts connections");
}

/// The text, parsed by the Python Prometheus client's parser: every label
/// value comes back exactly, however awkward.
#[test]
#[ignore = "needs python3-prometheus-client"]
fn a_real_prometheus_parser_reads_back_every_value() {
    let python = || {
        let mut command = Command::new("python3");
        command.env_clear().env("PATH", "/usr/bin:/bin").args(["-c", PARSE]);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    };
    common::require("python3-prometheus-client", || {
        python().stdin(Stdio::null()).output().is_ok_and(|o| o.status.success())
    });
    let awkward = [
        ("C:\\new \"box\"", "line one\nline two"),
        ("Posteingang ✉", "Entwürfe/草稿"),
        ("back\\slash\\", "\\n is not a newline"),
        ("{mailbox=\"x\"}", "a,b=c} 1"),
    ];
    let metrics = Metrics::new("1.0.0-rc.1+build \"q\"");
    for (mailbox, folder) in awkward {
        metrics.message(mailbox, folder, MessageOutcome::Delivered, Some(Duration::from_millis(120)));
        metrics.message(mailbox, folder, MessageOutcome::Deferred, None);
        metrics.mailbox_up(mailbox, folder, true);
        metrics.token_expiry(mailbox, UNIX_EPOCH + Duration::from_secs(1_900_000_000));
        metrics.lease_held(mailbox, false);
    }
    let text = metrics.render();
    let mut child = python().spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}\n{text}", String::from_utf8_lossy(&output.stderr));
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let family = |name: &str| -> &serde_json::Value {
        parsed.as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no {name}"))
    };
    let samples =
        |family: &serde_json::Value| -> Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> {
            family["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (s[0].as_str().unwrap().into(), s[1].as_object().unwrap().clone(), s[2].as_f64().unwrap())
                })
                .collect()
        };
    let labels = |pairs: &[(&str, &str)]| -> serde_json::Map<String, serde_json::Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect()
    };

    let build = family("chatwoot_ingress_build_info");
    assert_eq!(build["type"], "gauge");
    assert_eq!(
        samples(build),
        [("chatwoot_ingress_build_info".into(), labels(&[("version", "1.0.0-rc.1+build \"q\"")]), 1.0)]
    );

    // The parser names a counter's family without _total.
    let messages = family("chatwoot_ingress_messages");
    assert_eq!(messages["type"], "counter");
    let got = samples(messages);
    assert_eq!(got.len(), awkward.len() * 3);
    for (mailbox, folder) in awkward {
        for (outcome, count) in [("delivered", 1.0), ("refused", 0.0), ("deferred", 1.0)] {
            let want = labels(&[("mailbox", mailbox), ("folder", folder), ("outcome", outcome)]);
            assert!(
                got.contains(&("chatwoot_ingress_messages_total".into(), want.clone(), count)),
                "{want:?} {count} not in {got:?}"
            );
        }
    }

    let durations = family("chatwoot_ingress_delivery_duration_seconds");
    assert_eq!(durations["type"], "histogram");
    let got = samples(durations);
    for (mailbox, _) in awkward {
        let bucket = |le: &str| labels(&[("mailbox", mailbox), ("le", le)]);
        for (le, count) in [("0.1", 0.0), ("0.25", 1.0), ("60", 1.0), ("+Inf", 1.0)] {
            assert!(got.contains(&(
                "chatwoot_ingress_delivery_duration_seconds_bucket".into(),
                bucket(le),
                count
            )));
        }
        let only = labels(&[("mailbox", mailbox)]);
        assert!(got.contains(&(
            "chatwoot_ingress_delivery_duration_seconds_count".into(),
            only.clone(),
            1.0
        )));
        assert!(got.contains(&("chatwoot_ingress_delivery_duration_seconds_sum".into(), only, 0.12)));
    }
    assert_eq!(got.len(), awkward.len() * (11 + 2));

    for (name, value) in [
        ("chatwoot_ingress_mailbox_up", 1.0),
        ("chatwoot_ingress_oauth2_token_expiry_timestamp_seconds", 1_900_000_000.0),
        ("chatwoot_ingress_lease_held", 0.0),
    ] {
        let family = family(name);
        assert_eq!(family["type"], "gauge");
        let got = samples(family);
        assert_eq!(got.len(), awkward.len());
        for (mailbox, folder) in awkward {
            let want = match name {
                "chatwoot_ingress_mailbox_up" => labels(&[("mailbox", mailbox), ("folder", folder)]),
                _ => labels(&[("mailbox", mailbox)]),
            };
            assert!(got.contains(&(name.into(), want.clone(), value)), "{want:?} not in {got:?}");
        }
    }
    let last = samples(family("chatwoot_ingress_last_delivery_timestamp_seconds"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(last.iter().all(|(_, _, at)| (now - at).abs() < 600.0), "{last:?}");
    assert_eq!(parsed.as_array().unwrap().len(), 7);
}

/// Every family from standard input as JSON: name, type, help, samples.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = [
    {"name": f.name, "type": f.type, "help": f.documentation,
     "samples": [[s.name, s.labels, s.value] for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
"#;

/// `chatwoot-ingress health`, run as a HEALTHCHECK runs it.
mod health_command {
    use super::*;
    use common::ingress;

    #[test]
    fn healthy_is_0_and_one_line() {
        let server = Server::start();
        let port = server.addr().port();
        let run = ingress(&["health", "--metrics-listen", &format!("127.0.0.1:{port}")]).run();
        assert_eq!(run.code, 0, "{run:#?}");
        assert_eq!(run.stdout, format!("healthy: http://127.0.0.1:{port}/healthz/live answered 200 ok\n"));
        assert_eq!(run.stderr, "");
        // A server on every address is asked on loopback.
        let run = ingress(&["health", "--metrics-listen", &format!("0.0.0.0:{port}")]).run();
        assert_eq!(run.code, 0, "{run:#?}");
    }

    #[test]
    fn a_stuck_worker_is_1_and_named() {
        let server = Server::start();
        let _stuck = server.health.register("support/INBOX", Duration::ZERO);
        thread::sleep(Duration::from_millis(10));
        let port = server.addr().port();
        let run = ingress(&["health", "--metrics-listen", &format!("127.0.0.1:{port}")]).run();
        assert_eq!(run.code, 1, "{run:#?}");
        assert_eq!(run.stdout, "");
        let line = format!(
            "unhealthy: http://127.0.0.1:{port}/healthz/live answered 503: stuck: support/INBOX has not come back"
        );
        assert!(run.stderr.starts_with(&line), "{run:#?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
        // Readiness, by URL.
        let url = format!("http://localhost:{port}/healthz/ready");
        let run = ingress(&["health", "--metrics-url", &url]).run();
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(run.stderr.starts_with(&format!("unhealthy: {url} answered 503: starting")), "{run:#?}");
    }

    #[test]
    fn no_server_or_a_wrong_one_is_1() {
        // Nothing listening.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let run = ingress(&["health", "--metrics-listen", &format!("127.0.0.1:{port}")]).run();
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(run.stderr.contains("cannot connect to 127.0.0.1:"), "{run:#?}");
        assert!(run.stderr.ends_with("connection refused\n"), "{run:#?}");

        // Something that answers nonsense, and something that never answers.
        for (behaviour, said) in
            [(&b"SSH-2.0-OpenSSH_9.2\r\n"[..], "not an HTTP answer"), (b"", "no answer in time")]
        {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let peer = thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let _ = stream.write_all(behaviour);
                let mut sink = [0; 1024];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                while stream.read(&mut sink).is_ok_and(|n| n > 0) {}
            });
            let started = Instant::now();
            let run = ingress(&["health", "--metrics-listen", &format!("127.0.0.1:{port}")]).run();
            assert_eq!(run.code, 1, "{run:#?}");
            assert!(run.stderr.ends_with(&format!("{said}\n")), "{run:#?}");
            assert!(started.elapsed() < GENEROUS);
            peer.join().unwrap();
        }
    }
}
