//! Requests to the provider: form POSTs answered with JSON (RFC 6749 5.1
//! and 5.2; RFC 8628 for the device code). Like the relay, reqwest's async
//! client on a current-thread runtime of its own, which callers (plain
//! threads) block on; TLS verified with our own configuration, redirects
//! never followed (they would carry the client secret elsewhere), the
//! proxy from HTTPS_PROXY as for the ingress.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, LOCATION};
use reqwest::{redirect, Client, Proxy, Url};
use serde_json::{Map, Value};

use super::TokenError;
use crate::http::{chain, Proxies, USER_AGENT};
use crate::outcome::Cause;
use crate::secret::scrub;
use crate::sys::io_reason;
use crate::tls;

/// A whole request, answer included.
const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A token service's answer is a few kilobytes; anything longer is not one.
const MAX_ANSWER: usize = 64 * 1024;

pub(super) struct Http {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

/// Why a request produced no answer to use.
#[derive(Debug)]
pub(super) enum Failure {
    /// The provider's OAuth2 error answer: its code and its description
    /// (one line, secrets replaced by `****`).
    Refused { status: u16, error: String, description: String },
    /// Anything else, already explained.
    Other(TokenError),
}

impl Http {
    pub(super) fn new() -> Result<Http, TokenError> {
        let proxies = Arc::new(Proxies::from_env());
        let config =
            tls::client_config(None).map_err(|e| TokenError::new(Cause::Config, e.to_string(), ""))?;
        let client = Client::builder()
            .user_agent(USER_AGENT)
            .redirect(redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A token is asked for once an hour or so: a pooled connection
            // would be long dead by then.
            .pool_max_idle_per_host(0)
            .http1_only()
            .no_proxy()
            .proxy(Proxy::custom(move |url| proxies.for_url(url).cloned()))
            .use_preconfigured_tls(config)
            .build()
            .map_err(|e| {
                TokenError::new(
                    Cause::Bug,
                    format!("cannot set up the HTTP client: {}", chain(&e)),
                    "please report it",
                )
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            TokenError::new(
                Cause::Bug,
                format!("cannot start the HTTP client: {}", io_reason(&e)),
                "please report it",
            )
        })?;
        Ok(Http { runtime, client })
    }

    /// POST `form` to `url`: the JSON object of a 2xx answer, or why not.
    /// `secrets` (the form's) are replaced by `****` in any text kept.
    pub(super) fn post(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        secrets: &[&str],
    ) -> Result<Map<String, Value>, Failure> {
        let place = format!("the token service at {}", host(url));
        let request = self.client.post(url.clone()).header(ACCEPT, "application/json").form(form);
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_ANSWER {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, location, body))
        };
        let (status, location, body) =
            self.runtime.block_on(exchange).map_err(|e| Failure::Other(transport(&place, &e)))?;
        let json = serde_json::from_slice::<Value>(&body).ok();
        let object = match json {
            Some(Value::Object(object)) => Some(object),
            _ => None,
        };
        let other = |cause, reason: String, fix: &str| Failure::Other(TokenError::new(cause, reason, fix));
        match (status, object) {
            (200..=299, Some(object)) => Ok(object),
            (200..=299, None) => Err(other(
                Cause::TokenRefused,
                format!("{place} answered HTTP {status} without a JSON object"),
                "check the URL in the [mailbox.oauth2] table: it must be the provider's endpoint itself",
            )),
            (300..=399, _) => {
                // Where to, without a query (which could carry anything).
                let to = location
                    .and_then(|l| url.join(&l).ok())
                    .map(|mut l| {
                        l.set_query(None);
                        l.to_string()
                    })
                    .unwrap_or_else(|| "nowhere (no Location)".into());
                Err(other(
                    Cause::TokenRefused,
                    format!("{place} redirected (HTTP {status}) to {to}; redirects are never followed"),
                    "set the URL in the [mailbox.oauth2] table to the endpoint itself",
                ))
            }
            (_, Some(object)) if object.get("error").is_some_and(Value::is_string) => {
                let error = object["error"].as_str().unwrap_or_default();
                let description = object.get("error_description").and_then(Value::as_str).unwrap_or_default();
                Err(Failure::Refused {
                    status,
                    error: scrub(error, secrets),
                    description: scrub(&one_line(description), secrets),
                })
            }
            (500..=599, _) => Err(other(
                Cause::TokenRefused,
                format!("{place} failed (HTTP {status})"),
                "the provider is failing: it is tried again (see its status page if it lasts)",
            )),
            _ => Err(other(
                Cause::TokenRefused,
                format!("{place} answered HTTP {status}, not an OAuth2 answer"),
                "check the URL in the [mailbox.oauth2] table: it must be the provider's endpoint itself",
            )),
        }
    }
}

/// host:port of a URL, for messages.
pub(super) fn host(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

/// A provider's description on one line, without Microsoft's trace and
/// correlation IDs and timestamp, which make it long and say nothing to an
/// administrator.
fn one_line(description: &str) -> String {
    let text = description.split_whitespace().collect::<Vec<_>>().join(" ");
    // The fix follows after a colon.
    let text = text.split(" Trace ID:").next().unwrap_or_default().trim_end_matches('.');
    match text.char_indices().nth(400) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A request that got no answer, classified by the types in its cause chain.
fn transport(place: &str, e: &reqwest::Error) -> TokenError {
    let text = chain(e);
    let mut tls_failed = false;
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        tls_failed |= err.is::<rustls::Error>()
            || err
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>());
        source = err.source();
    }
    let reach =
        "it is tried again; if it lasts, check that this machine reaches it (DNS, firewall, HTTPS_PROXY)";
    if e.is_timeout() {
        TokenError::new(
            Cause::Timeout,
            format!("no answer from {place} within {}s", TIMEOUT.as_secs()),
            reach,
        )
    } else if tls_failed {
        TokenError::new(
            Cause::Tls,
            format!("TLS with {place} failed: {text}"),
            "its certificate must be valid and issued by a CA in this machine's store (a TLS-inspecting proxy's CA too)",
        )
    } else if e.is_connect() {
        TokenError::new(Cause::Refused, format!("cannot connect to {place}: {text}"), reach)
    } else {
        TokenError::new(Cause::ConnectionLost, format!("the connection to {place} was lost: {text}"), reach)
    }
}

/// A request's body as a test server reads it: the head up to its empty
/// line (Content-Length noted), then exactly that many bytes.
#[cfg(test)]
pub(crate) fn read_request_body(reader: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Write};
    use std::net::TcpListener;

    /// A server that answers each request with the next of `answers`
    /// (status line and headers, body), after reading it whole.
    fn server(answers: Vec<(&'static str, &'static str)>) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/token", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            for ((head, body), stream) in answers.into_iter().zip(listener.incoming()) {
                let mut stream = stream.unwrap();
                read_request_body(&mut BufReader::new(stream.try_clone().unwrap()));
                let answer =
                    format!("{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        url
    }

    #[test]
    fn redirects_are_not_followed_and_other_answers_are_named() {
        let url = server(vec![
            ("HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/token?code=x", ""),
            ("HTTP/1.1 200 OK", "<html>a portal</html>"),
            ("HTTP/1.1 503 Service Unavailable", "busy"),
            (
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json",
                r#"{"error":"invalid_grant","error_description":"token tok-9 is dead."}"#,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Type: application/json", r#"{"access_token":"at"}"#),
        ]);
        let http = Http::new().unwrap();
        let post =
            || http.post(&url, &[("grant_type", "refresh_token"), ("refresh_token", "tok-9")], &["tok-9"]);
        let other = |result: Result<Map<String, Value>, Failure>| match result {
            Err(Failure::Other(e)) => e,
            other => panic!("{other:?}"),
        };
        let e = other(post());
        assert!(e.reason.contains("redirected (HTTP 302) to https://elsewhere.example/token;"), "{e}");
        assert!(other(post()).reason.contains("HTTP 200 without a JSON object"));
        assert!(other(post()).reason.contains("failed (HTTP 503)"));
        match post() {
            Err(Failure::Refused { status: 400, error, description }) => {
                assert_eq!((error.as_str(), description.as_str()), ("invalid_grant", "token **** is dead"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(post().unwrap()["access_token"], "at");
        // Nobody listens any more.
        assert_eq!(other(post()).cause, Cause::Refused);
    }

    #[test]
    fn descriptions_lose_microsofts_trace_and_any_secret() {
        let description =
            "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1 Correlation ID: 2 Timestamp: 3";
        assert_eq!(one_line(description), "AADSTS7000215: Invalid client secret provided");
        assert_eq!(scrub("bad token tok-123 here", &["tok-123", ""]), "bad token **** here");
        assert!(one_line(&"x ".repeat(1000)).ends_with('…'));
    }
}
