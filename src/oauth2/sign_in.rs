//! Sign in as a mailbox's user once, for the refresh token that lets token
//! requests go on from then (the caller keeps it: [`super::write_secret`]).
//!
//! The device-code flow (RFC 8628) where the provider has one (Microsoft):
//! an address and a code to enter in a browser on any device. Otherwise
//! (Google, whose device flow does not allow the mail scope) the browser's
//! own flow with PKCE (RFC 7636), sent back to a port on this machine's
//! loopback (RFC 8252); from a browser on another machine, the address it
//! then fails to load is pasted instead. What to show the user is the
//! caller's: these give it the codes and addresses.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::endpoint::Endpoint;
use super::{issued, BadAnswer, Client, Error, Issued, NotSignedIn, Refusal, Request};
use crate::http::host;
use crate::secret::Password;
use crate::sys::io_reason;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a browser sign-in may take.
const SIGN_IN_TIME: Duration = Duration::from_secs(10 * 60);
/// RFC 8628 3.5: polling slows down by this much when asked to.
const SLOW_DOWN: Duration = Duration::from_secs(5);

/// One sign-in, with one application.
pub struct SignIn {
    endpoint: Endpoint,
    client: Client,
}

/// A device code (RFC 8628 3.2): what the user enters, and where.
pub struct DeviceCode {
    pub user_code: String,
    pub address: String,
    /// How long the code is valid.
    pub expires_in: Duration,
    expires: Instant,
    interval: Duration,
    device_code: String,
}

/// A browser sign-in under way: the address the user opens, and the one
/// (on this machine's loopback) the browser is sent back to.
pub struct Browser {
    pub address: Url,
    pub redirect: String,
    listener: TcpListener,
    verifier: String,
    state: String,
}

impl SignIn {
    pub fn new(client: Client) -> Result<SignIn, Error> {
        Ok(SignIn { endpoint: Endpoint::new()?, client })
    }

    /// The form fields that name the application: its ID and, if it has
    /// one, its secret.
    fn client_form<'s>(&'s self, secret: &'s Option<Password>) -> Vec<(&'s str, &'s str)> {
        let mut form = vec![("client_id", self.client.client_id.as_str())];
        form.extend(secret.as_ref().map(|s| ("client_secret", s.expose())));
        form
    }

    /// RFC 8628 3.1: a code for the user to enter.
    pub fn device_code(&self, url: &Url) -> Result<DeviceCode, Error> {
        let secret = self.client.secret()?;
        let secret_text = secret.as_ref().map_or("", Password::expose);
        let mut form = self.client_form(&secret);
        form.extend(self.client.scope.as_deref().map(|scope| ("scope", scope)));
        let answer = self.endpoint.post(url, &form, &[secret_text], Request::SignIn)?;
        let text = |key: &str| answer.get(key).and_then(Value::as_str);
        let seconds = |key: &str, default: u64| answer.get(key).and_then(Value::as_u64).unwrap_or(default);
        let (Some(device_code), Some(user_code), Some(address)) =
            (text("device_code"), text("user_code"), text("verification_uri").or(text("verification_url")))
        else {
            return Err(Error::BadAnswer { host: host(url), answer: BadAnswer::NoDeviceCode });
        };
        // At most a day: a provider's garbage must not overflow a deadline.
        let expires_in = Duration::from_secs(seconds("expires_in", 900).min(24 * 3600));
        Ok(DeviceCode {
            user_code: user_code.to_string(),
            address: address.to_string(),
            expires_in,
            expires: Instant::now() + expires_in,
            interval: Duration::from_secs(seconds("interval", 5).clamp(1, 3600)),
            device_code: device_code.to_string(),
        })
    }

    /// RFC 8628 3.4 and 3.5: ask the token endpoint, at the pace the
    /// provider set, until the user has signed in (or declined, or the code
    /// expired).
    pub fn device_token(&self, code: &DeviceCode) -> Result<Issued, Error> {
        let secret = self.client.secret()?;
        let secret_text = secret.as_ref().map_or("", Password::expose);
        let token_url = &self.client.token_url;
        let mut form = self.client_form(&secret);
        form.extend([("grant_type", DEVICE_GRANT), ("device_code", code.device_code.as_str())]);
        let mut interval = code.interval;
        loop {
            thread::sleep(interval);
            if Instant::now() >= code.expires {
                return Err(Error::NotSignedIn(NotSignedIn::CodeExpired));
            }
            let secrets = [secret_text, code.device_code.as_str()];
            match self.endpoint.post(token_url, &form, &secrets, Request::SignIn) {
                Ok(answer) => return issued(&answer, token_url),
                Err(Error::Refused(refusal)) if refusal.code == "authorization_pending" => {}
                Err(Error::Refused(refusal)) if refusal.code == "slow_down" => interval += SLOW_DOWN,
                Err(e) => return Err(e),
            }
        }
    }

    /// The browser's flow with PKCE: the address to open, which sends the
    /// browser back to a port on this machine's loopback.
    pub fn browser(&self, url: &Url, login_hint: &str) -> Result<Browser, Error> {
        let local = |e: io::Error| Error::Browser(io_reason(&e));
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(local)?;
        let redirect = format!("http://127.0.0.1:{}/", listener.local_addr().map_err(local)?.port());
        let verifier = URL_SAFE_NO_PAD.encode(random::<32>()?);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = URL_SAFE_NO_PAD.encode(random::<16>()?);
        let mut address = url.clone();
        {
            let mut query = address.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client.client_id)
                .append_pair("redirect_uri", &redirect);
            if let Some(scope) = &self.client.scope {
                query.append_pair("scope", scope);
            }
            query
                .append_pair("state", &state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256")
                // Google: a refresh token, and a new one at each sign-in.
                .append_pair("access_type", "offline")
                .append_pair("prompt", "consent")
                .append_pair("login_hint", login_hint);
        }
        Ok(Browser { address, redirect, listener, verifier, state })
    }

    /// Wait for the browser to come back (or for the address it was sent
    /// to, `pasted`), then trade its code for the tokens.
    pub fn browser_token(
        &self,
        browser: Browser,
        pasted: impl Read + Send + 'static,
    ) -> Result<Issued, Error> {
        let Browser { redirect, listener, verifier, state, .. } = browser;
        let base = Url::parse(&redirect).expect("a loopback URL parses");
        let (tx, rx) = mpsc::channel::<String>();
        let (served, expected) = (tx.clone(), state.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(target) = answer_browser(stream, &expected) {
                    if served.send(target).is_err() {
                        return;
                    }
                }
            }
        });
        thread::spawn(move || {
            for line in BufReader::new(pasted).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + SIGN_IN_TIME;
        let code = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(target) = rx.recv_timeout(left) else {
                return Err(Error::NotSignedIn(NotSignedIn::NoSignIn(SIGN_IN_TIME)));
            };
            match redirected(&base, &target, &state) {
                Some(Ok(code)) => break code,
                Some(Err((code, description))) => {
                    return Err(Error::Refused(Refusal {
                        request: Request::SignIn,
                        code,
                        description,
                        by: None,
                    }))
                }
                None => {}
            }
        };
        let secret = self.client.secret()?;
        let mut form = self.client_form(&secret);
        form.extend([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier.as_str()),
        ]);
        let secrets = [secret.as_ref().map_or("", Password::expose), code.as_str(), verifier.as_str()];
        let token_url = &self.client.token_url;
        issued(&self.endpoint.post(token_url, &form, &secrets, Request::SignIn)?, token_url)
    }
}

/// N random bytes, from the system.
fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::Browser(e.to_string()))?;
    Ok(bytes)
}

/// Answer one request to the loopback port: the browser sent back after
/// the sign-in, or anything else it asks for (an icon). The request's
/// target, when it is the sign-in's end (its state is ours).
fn answer_browser(mut stream: TcpStream, state: &str) -> Option<String> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    BufReader::new((&stream).take(8192)).read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_string();
    let ours = target.contains(&format!("state={state}"));
    let (status, text) = if ours {
        (
            "200 OK",
            "chatwoot-ingress: the sign-in is over. You may close this window and go back to the terminal.",
        )
    } else {
        ("404 Not Found", "chatwoot-ingress: nothing here.")
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    ours.then_some(target)
}

/// The authorization code in a redirect (a request's target, or the whole
/// address pasted), or the provider's error; None when it is not the
/// answer to our request (its state is not ours).
fn redirected(base: &Url, target: &str, state: &str) -> Option<Result<String, (String, String)>> {
    let url = base.join(target.trim()).ok()?;
    let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if pairs.get("state").map(String::as_str) != Some(state) {
        return None;
    }
    if let Some(code) = pairs.get("code").filter(|code| !code.is_empty()) {
        return Some(Ok(code.clone()));
    }
    let error = pairs.get("error")?.clone();
    Some(Err((error, pairs.get("error_description").cloned().unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_as_rfc_7636_computes_it() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let base64url = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            base64url(&Sha256::digest(verifier.as_bytes())),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn only_a_redirect_with_our_state_counts() {
        let base = Url::parse("http://127.0.0.1:4242/").unwrap();
        assert_eq!(redirected(&base, "/?code=c1&state=s1", "s1"), Some(Ok("c1".into())));
        let pasted = " http://127.0.0.1:4242/?state=s1&code=c%2F2 ";
        assert_eq!(redirected(&base, pasted, "s1"), Some(Ok("c/2".into())));
        assert_eq!(redirected(&base, "/?code=c1&state=other", "s1"), None);
        assert_eq!(redirected(&base, "/favicon.ico", "s1"), None);
        assert_eq!(redirected(&base, "not a url at all", "s1"), None);
        assert_eq!(
            redirected(&base, "/?error=access_denied&state=s1", "s1"),
            Some(Err(("access_denied".into(), String::new())))
        );
    }
}
