//! Requests to the provider: form POSTs answered with JSON (RFC 6749 5.1
//! and 5.2; RFC 8628 for the device code), through the one HTTP client
//! (redirects never followed: they would carry the client secret elsewhere).

use std::time::Duration;

use reqwest::header::{ACCEPT, LOCATION};
use reqwest::Url;
use serde_json::{Map, Value};

use super::{BadAnswer, Error, Refusal, Request};
use crate::http::{self, host};
use crate::secret::scrub;

/// A whole request, answer included.
const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A token service's answer is a few kilobytes; anything longer is not one.
const MAX_ANSWER: usize = 64 * 1024;

pub(super) struct Endpoint {
    client: http::Client,
}

impl Endpoint {
    pub(super) fn new() -> Result<Endpoint, Error> {
        let options = http::Options {
            connect_timeout: CONNECT_TIMEOUT,
            // A token is asked for once an hour or so: a pooled connection
            // would be long dead by then.
            idle_per_host: 0,
            tls: http::Tls::Verified { ca_file: None },
            keep_certificate: false,
        };
        Ok(Endpoint { client: http::Client::new(&options).map_err(Error::Setup)? })
    }

    /// POST `form` to `url`: the JSON object of a 2xx answer, or why not.
    /// `secrets` (the form's) are replaced by `****` in any text kept;
    /// `request` says what a refusal refused.
    pub(super) fn post(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        secrets: &[&str],
        request: Request,
    ) -> Result<Map<String, Value>, Error> {
        let exchange = async {
            let mut response =
                self.client.post(url.clone()).header(ACCEPT, "application/json").form(form).send().await?;
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
        let unreachable = |failure| Error::Unreachable { host: host(url), failure, waited: TIMEOUT };
        let (status, location, body) = match self.client.run(TIMEOUT, exchange) {
            None => {
                return Err(unreachable(http::Failure { kind: http::Kind::Timeout, detail: String::new() }))
            }
            Some(Err(e)) => return Err(unreachable(self.client.failure(url, &e))),
            Some(Ok(answer)) => answer,
        };
        let json = serde_json::from_slice::<Value>(&body).ok();
        let object = match json {
            Some(Value::Object(object)) => Some(object),
            _ => None,
        };
        let bad = |answer| Err(Error::BadAnswer { host: host(url), answer });
        match (status, object) {
            (200..=299, Some(object)) => Ok(object),
            (200..=299, None) => bad(BadAnswer::NotJson { status }),
            (300..=399, _) => {
                // Where to, without a query (which could carry anything).
                let to = location
                    .and_then(|l| url.join(&l).ok())
                    .map(|mut l| {
                        l.set_query(None);
                        l.to_string()
                    })
                    .unwrap_or_else(|| "nowhere (no Location)".into());
                bad(BadAnswer::Redirected { status, to })
            }
            (_, Some(object)) if object.get("error").is_some_and(Value::is_string) => {
                let code = object["error"].as_str().unwrap_or_default();
                let description = object.get("error_description").and_then(Value::as_str).unwrap_or_default();
                Err(Error::Refused(Refusal {
                    request,
                    code: scrub(code, secrets),
                    description: scrub(&one_line(description), secrets),
                    by: Some((host(url), status)),
                }))
            }
            (500..=599, _) => bad(BadAnswer::Failing { status }),
            _ => bad(BadAnswer::NotOAuth2 { status }),
        }
    }
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
    /// (status line and headers, body), after reading it whole; it stops
    /// listening when the thread returned ends.
    fn server(answers: Vec<(&'static str, &'static str)>) -> (Url, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/token", listener.local_addr().unwrap())).unwrap();
        let served = std::thread::spawn(move || {
            for ((head, body), stream) in answers.into_iter().zip(listener.incoming()) {
                let mut stream = stream.unwrap();
                read_request_body(&mut BufReader::new(stream.try_clone().unwrap()));
                let answer =
                    format!("{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        (url, served)
    }

    #[test]
    fn redirects_are_not_followed_and_other_answers_are_named() {
        let (url, served) = server(vec![
            ("HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/token?code=x", ""),
            ("HTTP/1.1 200 OK", "<html>a portal</html>"),
            ("HTTP/1.1 503 Service Unavailable", "busy"),
            (
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json",
                r#"{"error":"invalid_grant","error_description":"token tok-9 is dead."}"#,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Type: application/json", r#"{"access_token":"at"}"#),
        ]);
        let endpoint = Endpoint::new().unwrap();
        let post = || {
            let form = [("grant_type", "refresh_token"), ("refresh_token", "tok-9")];
            endpoint.post(&url, &form, &["tok-9"], Request::RefreshToken)
        };
        let other = |result: Result<Map<String, Value>, Error>| result.unwrap_err().to_string();
        let e = other(post());
        assert!(e.contains("redirected (HTTP 302) to https://elsewhere.example/token;"), "{e}");
        assert!(other(post()).contains("HTTP 200 without a JSON object"));
        assert!(other(post()).contains("failed (HTTP 503)"));
        match post() {
            Err(Error::Refused(Refusal { by: Some((_, 400)), code, description, .. })) => {
                assert_eq!((code.as_str(), description.as_str()), ("invalid_grant", "token **** is dead"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(post().unwrap()["access_token"], "at");
        // Nobody listens any more (not even a listener about to be dropped).
        served.join().unwrap();
        match post() {
            Err(Error::Unreachable { failure, .. }) => assert_eq!(failure.kind, http::Kind::Refused),
            other => panic!("{other:?}"),
        }
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
