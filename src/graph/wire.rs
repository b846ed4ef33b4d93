//! The transport: the one HTTP client of the process (`crate::http`).

use std::path::Path;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method as Verb;

use super::client::{Answer, Method, Request, Transport};
use super::limit::MAX_IN_FLIGHT;
use super::Error;
use crate::http::{self, Kind, SetupError};
use crate::secret::Password;

/// Connecting, TLS included, takes at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of an error answer's body read (its code and message are at the start).
const ERROR_BODY_MAX: u64 = 64 << 10;

pub(crate) struct Wire {
    http: http::Client,
}

impl Wire {
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Wire, SetupError> {
        let options = http::Options {
            connect_timeout: CONNECT_TIMEOUT,
            idle_per_host: MAX_IN_FLIGHT,
            tls: http::Tls::Verified { ca_file },
            keep_certificate: false,
        };
        Ok(Wire { http: http::Client::new(&options)? })
    }
}

impl Transport for Wire {
    fn exchange(&self, r: &Request, token: &Password, cap: u64, timeout: Duration) -> Result<Answer, Error> {
        let verb = match r.method {
            Method::Get => Verb::GET,
            Method::Post => Verb::POST,
            Method::Patch => Verb::PATCH,
        };
        // bearer_auth marks the header sensitive: never in reqwest's Debug
        let mut builder =
            self.http.request(verb, r.url.clone()).bearer_auth(token.expose()).header("Prefer", &r.prefer);
        if let Some(json) = &r.json {
            builder = builder.header(CONTENT_TYPE, "application/json").body(json.clone());
        }
        let exchange = async move {
            let mut response = builder.send().await?;
            let status = response.status();
            let retry_after =
                response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
            let limit = if status.is_success() { cap } else { ERROR_BODY_MAX.min(cap) };
            if status.is_success() && response.content_length().is_some_and(|n| n > cap) {
                return Ok(Err(Error::TooLarge { limit: cap }));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = usize::try_from(limit).unwrap_or(usize::MAX) - body.len();
                if chunk.len() > room {
                    if status.is_success() {
                        return Ok(Err(Error::TooLarge { limit: cap }));
                    }
                    body.extend_from_slice(&chunk[..room]);
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(Answer { status: status.as_u16(), retry_after, body }))
        };
        match self.http.run(timeout, exchange) {
            Some(Ok(answer)) => answer,
            Some(Err(e)) => {
                let failure = self.http.failure(&r.url, &e);
                Err(Error::Transport { kind: failure.kind, detail: failure.detail })
            }
            None => Err(Error::Transport {
                kind: Kind::Timeout,
                detail: format!("no whole answer within {} s", timeout.as_secs_f32()),
            }),
        }
    }
}
