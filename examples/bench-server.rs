//! An instant-204 HTTP/1.1 server for scripts/bench: it reads each request
//! (Content-Length or chunked), discards the body and answers 204 at once,
//! with keep-alive and `Expect: 100-continue`. std only, a thread per
//! connection.
//!
//! Usage: cargo run --release --example bench-server [PORT]   (default 0: any free port)
//! It prints the port it listens on as its first line of output.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

fn main() -> io::Result<()> {
    let port: u16 = std::env::args().nth(1).map_or(0, |p| p.parse().expect("PORT must be a number"));
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("{}", listener.local_addr()?.port());
    io::stdout().flush()?;
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = serve(stream);
        });
    }
    Ok(())
}

fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
    let mut writer = stream;
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
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                io::copy(&mut (&mut reader).take(size + 2), &mut io::sink())?;
                if size == 0 {
                    break;
                }
            }
        } else {
            io::copy(&mut (&mut reader).take(length), &mut io::sink())?;
        }
        writer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
        if close {
            return Ok(());
        }
    }
}
