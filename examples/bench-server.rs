//! An instant-204 HTTP/1.1 server for scripts/bench: it reads each request
//! (Content-Length or chunked), discards the body and answers 204 at once,
//! with keep-alive and `Expect: 100-continue`. std and rustls only, a thread
//! per connection.
//!
//! Usage: bench-server [--tls CERT.pem KEY.pem] [--log FILE] [PORT]
//!   --tls   serve HTTPS with this certificate chain and key (rustls, ring)
//!   --log   append `<unix time> <body bytes>` per request, to count deliveries
//!   PORT    default 0: any free port
//! It prints the port it listens on as its first line of output.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

fn main() -> io::Result<()> {
    let (mut tls, mut log, mut port) = (None, None, 0u16);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tls" => {
                let (cert, key) =
                    (args.next().expect("--tls CERT KEY"), args.next().expect("--tls CERT KEY"));
                tls = Some(Arc::new(server_config(&cert, &key)));
            }
            "--log" => {
                let path = args.next().expect("--log FILE");
                log = Some(Arc::new(Mutex::new(OpenOptions::new().create(true).append(true).open(path)?)));
            }
            p => port = p.parse().expect("PORT must be a number"),
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("{}", listener.local_addr()?.port());
    io::stdout().flush()?;
    for stream in listener.incoming().flatten() {
        let (tls, log) = (tls.clone(), log.clone());
        thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let _ = match tls {
                Some(config) => match ServerConnection::new(config) {
                    Ok(conn) => serve(StreamOwned::new(conn, stream), log),
                    Err(_) => Ok(()),
                },
                None => serve(stream, log),
            };
        });
    }
    Ok(())
}

fn server_config(cert: &str, key: &str) -> ServerConfig {
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("readable certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("a PEM private key");
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the certificate and key match")
}

fn serve<S: Read + Write>(stream: S, log: Option<Arc<Mutex<File>>>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut length, mut chunked, mut expect, mut close) = (0u64, false, false, false);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "expect" => expect = value.eq_ignore_ascii_case("100-continue"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if expect {
            reader.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            reader.get_mut().flush()?;
        }
        let mut body = 0;
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                io::copy(&mut (&mut reader).take(size + 2), &mut io::sink())?;
                body += size;
                if size == 0 {
                    break;
                }
            }
        } else {
            body = io::copy(&mut (&mut reader).take(length), &mut io::sink())?;
        }
        if let Some(log) = &log {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
            writeln!(log.lock().unwrap_or_else(|e| e.into_inner()), "{now:.6} {body}")?;
        }
        reader.get_mut().write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
        reader.get_mut().flush()?;
        if close {
            return Ok(());
        }
    }
}
