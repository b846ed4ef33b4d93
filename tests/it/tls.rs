//! TLS is verified: a certificate from an unknown CA is refused (4.7.5) and
//! nothing is sent; trusting that CA with --ca-file delivers, and `check`
//! reports the certificate. A self-signed certificate in --ca-file is
//! trusted as that server's own. The peer is a real HTTPS server (Python's
//! http.server over ssl) with certificates made by openssl.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{corpus, ingress, status, to, Run, Server, PASSWORD};

/// An HTTPS server that answers every POST with 204 and appends the body
/// it received to `received`.
const SERVER: &str = r#"
import http.server, ssl, sys
cert, key, received = sys.argv[1:4]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(received, "ab") as f:
            f.write(body)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct Https(Child, u16);

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl").args(args).current_dir(dir).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "openssl {args:?}");
}

/// A private CA and a leaf for 127.0.0.1 signed by it, valid for 20 days.
fn private_ca(dir: &Path) {
    openssl(
        dir,
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"]
            .iter()
            .chain(&["-days", "30", "-subj", "/CN=test CA", "-addext", "basicConstraints=critical,CA:TRUE"])
            .chain(&["-addext", "keyUsage=critical,keyCertSign"])
            .copied()
            .collect::<Vec<_>>(),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
            .iter()
            .chain(&["-out", "leaf.pem", "-days", "20", "-extfile", "ext.cnf"])
            .copied()
            .collect::<Vec<_>>(),
    );
}

/// A self-signed certificate for 127.0.0.1, as `openssl req -x509` makes
/// one for an internal host: `<name>.pem` and `<name>.key`.
fn self_signed(dir: &Path, name: &str) {
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &cert, "-days", "30"]
            .iter()
            .chain(&["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .copied()
            .collect::<Vec<_>>(),
    );
}

/// An HTTPS server presenting `<name>.pem`.
fn https(dir: &Path, name: &str) -> Https {
    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .args([dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")), dir.join("received")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let port = port.trim().parse().unwrap();
    Https(child, port)
}

#[test]
fn tls_is_verified_and_a_private_ca_can_be_trusted() {
    let dir = tempfile::tempdir().unwrap();
    private_ca(dir.path());
    let server = https(dir.path(), "leaf");
    let url = format!("https://127.0.0.1:{}", server.1);
    let received = || std::fs::read(dir.path().join("received")).unwrap_or_default();
    let ca = dir.path().join("ca.pem");

    // Unknown issuer: refused, temporary, and the password never left.
    let run =
        ingress(&["--url", &url]).env("CHATWOOT_INGRESS_PASSWORD", PASSWORD).stdin(corpus("lf.eml")).run();
    run.failed(75, "4.7.5");
    assert!(run.stderr.contains("UnknownIssuer"), "{run:#?}");
    assert!(received().is_empty());

    // Trusting the private CA: delivered byte for byte.
    let trusted = ingress(&["--url", &url, "--ca-file", ca.to_str().unwrap()]);
    trusted.env("CHATWOOT_INGRESS_PASSWORD", PASSWORD).stdin(corpus("lf.eml")).run().delivered();
    assert_eq!(received(), corpus("lf.eml"));

    // check shows the verified certificate and how long it has left.
    let run = ingress(&["check", "--url", &url, "--ca-file", ca.to_str().unwrap()])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run();
    let tls = run.stdout.lines().find(|l| l.contains(" tls: ")).unwrap_or_default().to_string();
    assert!(tls.starts_with("✓ tls:") && (tls.contains("19 days") || tls.contains("20 days")), "{run:#?}");
}

#[test]
fn a_self_signed_certificate_in_ca_file_is_trusted_as_the_servers_own() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "self");
    self_signed(dir.path(), "unrelated");
    let server = https(dir.path(), "self");
    let url = format!("https://127.0.0.1:{}", server.1);
    let received = || std::fs::read(dir.path().join("received")).unwrap_or_default();
    let deliver = |ca: &str| {
        ingress(&["--url", &url, "--ca-file", dir.path().join(ca).to_str().unwrap()])
            .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
            .stdin(corpus("lf.eml"))
            .run()
    };

    // Another self-signed certificate, even for the same name: refused.
    deliver("unrelated.pem").failed(75, "4.7.5");
    assert!(received().is_empty());

    deliver("self.pem").delivered();
    assert_eq!(received(), corpus("lf.eml"));
}

#[test]
fn a_ca_file_without_a_certificate_is_a_configuration_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("not-a-certificate.pem");
    std::fs::write(&ca, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let run = ingress(&["--url", "https://127.0.0.1:1", "--ca-file", ca.to_str().unwrap()])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .stdin(corpus("lf.eml"))
        .run();
    run.failed(75, "4.3.5");
    assert!(
        run.stderr.contains(ca.to_str().unwrap()) && run.stderr.contains("no PEM certificate"),
        "{run:#?}"
    );
}

#[test]
fn plain_http_never_reads_the_system_trust_store() {
    // A FIFO nobody writes to: reading it would block for ever.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("bundle.pem");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);

    let server = Server::start(vec![status(204)]);
    let (child, writer) = to(&server, &[])
        .env("SSL_CERT_FILE", &fifo)
        .env("SSL_CERT_DIR", dir.path())
        .stdin(corpus("lf.eml"))
        .spawn();
    // Should it block after all, end it rather than hang the suite.
    let (pid, finished) = (child.id() as libc::pid_t, Arc::new(AtomicBool::new(false)));
    let watchdog = {
        let finished = finished.clone();
        thread::spawn(move || {
            for _ in 0..300 {
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
            // SAFETY: kill(2) on our child, not reaped while this runs.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
    };
    let run = Run::wait(child, writer);
    finished.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    run.delivered();
    assert_eq!(server.bodies(), vec![corpus("lf.eml")]);
}
