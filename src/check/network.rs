//! The way to the ingress: the proxy, DNS, TCP, and the HTTP probes, whose
//! answers are read through the one HTTP table ([`relay::explain`]).

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Url;

use super::report::{from, Report, Steps};
use super::tls;
use crate::config::{Sourced, Target};
use crate::http::{without_credentials, Proxies};
use crate::outcome::Cause;
use crate::pipeline::Pipeline;
use crate::relay::{self, Answer};
use crate::sys::io_reason;

/// The only answer that proves the ingress right: Action Mailbox refuses
/// a text/plain body with it, after the password, without storing it.
pub use crate::pipeline::INGRESS_REFUSES;

/// One line of a base64 attachment, what a large message mostly is.
const LINE: &[u8] = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";

/// Whether a proxy from the environment carries requests to `url`.
pub fn route(url: &Url, proxies: &Proxies, r: &mut Report) {
    if let Some(proxy) = proxies.for_url(url) {
        return r.ok(
            "url",
            format!(
                "through the proxy {} (from HTTPS_PROXY or ALL_PROXY; NO_PROXY does not exclude this host)",
                without_credentials(proxy)
            ),
        );
    }
    let mut https = url.clone();
    if url.scheme() == "http" && https.set_scheme("https").is_ok() && proxies.for_url(&https).is_some() {
        r.ok(
            "url",
            "not through the proxy in HTTPS_PROXY or ALL_PROXY: cleartext http:// is never proxied, it would hand the proxy the password; connecting directly",
        );
    }
}

/// DNS, TCP, TLS and the empty probe: the probe's HTTP status, if one came.
/// Through a proxy, DNS and TCP are the proxy's, as for the request itself.
pub fn probe(pipeline: &Pipeline, target: &Target, timeout: Duration, r: &mut Report) -> Option<u16> {
    let url = &target.url;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let proxies = Proxies::from_env();
    let proxy = proxies.for_url(url);
    let (peer, port, role) = match proxy {
        Some(proxy) => (
            proxy.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']'),
            proxy.port_or_known_default().unwrap_or(80),
            " (the proxy)",
        ),
        None => (host, url.port_or_known_default().unwrap_or(443), ""),
    };

    let fixes = match proxy {
        Some(_) => Fixes {
            dns: "check the proxy's host name in HTTPS_PROXY or ALL_PROXY, and this machine's DNS (/etc/resolv.conf, /etc/hosts)",
            tcp: &format!("make sure the proxy listens on port {port} and no firewall is in between"),
        },
        None => Fixes {
            dns: "check the host name in url, and this machine's DNS (/etc/resolv.conf, /etc/hosts)",
            tcp: &format!("make sure Chatwoot or its proxy listens on port {port} and no firewall is in between"),
        },
    };
    if !reach(r, (peer, port), role, timeout.min(Duration::from_secs(10)), fixes) {
        return None;
    }

    let probe = pipeline.probe(target, Bytes::new())?;
    match probe.answer {
        Answer::Failed { outcome, .. } => {
            let step = if outcome.cause == Cause::Tls { "tls" } else { "http" };
            r.fail(step, outcome.reason(), outcome.fix().unwrap_or("see Chatwoot's or its proxy's log"));
            None
        }
        Answer::Status(status, location) => {
            if url.scheme() == "https" {
                tls::expiry(probe.certificate.as_deref(), host, r);
            }
            r.http_status = Some(status);
            r.round_trip_ms = Some(probe.took.as_millis());
            let took = probe.took.as_millis();
            match answer(target, status, location.as_deref(), "the empty probe") {
                None => r.ok(
                    "http",
                    format!("HTTP {status} to the empty probe in {took} ms: the URL, Chatwoot's ingress mode and the password are right (nothing was stored)"),
                ),
                Some((reason, fix)) => r.fail("http", reason, fix),
            }
            Some(status)
        }
    }
}

/// What to do when a step of [`reach`] fails.
pub struct Fixes<'a> {
    pub dns: &'a str,
    pub tcp: &'a str,
}

/// DNS, then TCP to each address in turn until one connects, each a step
/// of its own; `role` says what the host is (" (the proxy)"). Whether a
/// connection was made (and closed: it only proves the way).
pub fn reach(
    s: &mut impl Steps,
    (host, port): (&str, u16),
    role: &str,
    timeout: Duration,
    fixes: Fixes,
) -> bool {
    let started = Instant::now();
    let addresses: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(addresses) => addresses.collect(),
        Err(e) => {
            s.fail("dns", format!("cannot resolve {host}{role}: {}", io_reason(&e)), fixes.dns);
            return false;
        }
    };
    if addresses.is_empty() {
        s.fail("dns", format!("cannot resolve {host}{role}: no address"), fixes.dns);
        return false;
    }
    if host.parse::<IpAddr>().is_ok() {
        s.ok("dns", format!("{host}{role} is an address, nothing to resolve"));
    } else {
        let list = addresses.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
        s.ok("dns", format!("{host}{role} is {list} ({} ms)", started.elapsed().as_millis()));
    }
    let mut errors = Vec::new();
    for address in &addresses {
        let started = Instant::now();
        match TcpStream::connect_timeout(address, timeout) {
            Ok(_) => {
                s.ok("tcp", format!("connected to {address}{role} in {} ms", started.elapsed().as_millis()));
                return true;
            }
            Err(e) => errors.push(format!("{address}: {}", io_reason(&e))),
        }
    }
    s.fail("tcp", format!("cannot connect to port {port}{role}: {}", errors.join("; ")), fixes.tcp);
    false
}

/// What an answer to a probe says is wrong (reason, fix), read through
/// the same table as a delivery's answer; nothing when it is the 415
/// that only the ingress gives.
fn answer(target: &Target, status: u16, location: Option<&str>, probe: &str) -> Option<(String, String)> {
    if status == INGRESS_REFUSES {
        return None;
    }
    let outcome = relay::explain(target, status, location);
    if outcome.cause == Cause::Delivered {
        return Some((
            format!("HTTP {status} to {probe}: this is not an Action Mailbox relay ingress, which refuses a text/plain body with 415; every message sent here would be lost (and the probe may have been stored)"),
            "make sure url reaches Chatwoot itself, not another application or a proxy that answers for it".into(),
        ));
    }
    Some((outcome.reason().to_string(), outcome.fix().unwrap_or("see Chatwoot's log").to_string()))
}

/// After a right probe: whether a body of max_size gets through every
/// proxy to the ingress, which refuses it (415) without storing it.
pub fn size_limit(pipeline: &Pipeline, target: &Target, max_size: &Sourced<u64>, r: &mut Report) {
    let size = max_size.value;
    let Some(body) = body_of(size) else {
        return r.fail(
            "size-limit",
            format!("cannot hold a body of max_size, {size} bytes ({}), in memory", from(&max_size.source)),
            "lower max_size to what this machine can hold: a message that large could not be delivered either",
        );
    };
    let Some(probe) = pipeline.probe(target, body) else { return };
    let took = probe.took.as_millis();
    let what = format!("a {size}-byte probe");
    match probe.answer {
        Answer::Status(status, location) => match answer(target, status, location.as_deref(), &what) {
            None => r.ok(
                "size-limit",
                format!("HTTP {status} to {what} in {took} ms: no proxy refuses bodies of max_size ({}), and nothing was stored", from(&max_size.source)),
            ),
            Some((reason, fix)) if Cause::of_http(status) == Cause::ProxyLimit => r.fail(
                "size-limit",
                format!("{reason}: a proxy in front of Chatwoot refuses bodies of max_size ({size} bytes, {}); messages that large would not be delivered", from(&max_size.source)),
                format!("{fix}; max_size is {size} bytes"),
            ),
            Some((reason, fix)) => r.fail("size-limit", format!("{reason} (to {what})"), fix),
        },
        Answer::Failed { outcome, .. } => r.fail(
            "size-limit",
            format!("{} (sending {what})", outcome.reason()),
            outcome.fix().unwrap_or("see Chatwoot's or its proxy's log"),
        ),
    }
}

/// A text/plain body of exactly `size` bytes, built in place: the one copy
/// in memory is the one that is sent. None if this machine cannot hold it.
fn body_of(size: u64) -> Option<Bytes> {
    let size = usize::try_from(size).ok()?;
    let mut body = Vec::new();
    body.try_reserve_exact(size).ok()?;
    while body.len() < size {
        let n = LINE.len().min(size - body.len());
        body.extend_from_slice(&LINE[..n]);
    }
    Some(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_probe_is_exactly_max_size_in_lines() {
        for size in [0, 1, LINE.len() as u64, 1_000_003] {
            let body = body_of(size).unwrap();
            assert_eq!(body.len() as u64, size);
            assert!(body.chunks(LINE.len()).all(|line| LINE.starts_with(line)));
        }
    }
}
