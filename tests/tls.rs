//! TLS is verified: a certificate from an unknown CA is refused (4.7.5) and
//! nothing is sent; trusting that CA with --ca-file delivers, and `check`
//! reports the certificate. The peer is a real HTTPS server (Python's
//! http.server over ssl) with a private CA and a leaf made by openssl.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{corpus, ingress, PASSWORD};

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

fn https(dir: &Path) -> Https {
    let mut child = Command::new("python3")
        .args(["-c", SERVER])
        .args([dir.join("leaf.pem"), dir.join("leaf.key"), dir.join("received")])
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
    let server = https(dir.path());
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
