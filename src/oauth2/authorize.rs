//! `oauth2 authorize`: sign in as the mailbox's user once, and keep the
//! refresh token that lets `watch` get access tokens from then on.
//!
//! The device-code flow (RFC 8628) where the provider has one (Microsoft):
//! an address and a code to enter in a browser on any device. Otherwise
//! (Google, whose device flow does not allow the mail scope) the browser's
//! own flow with PKCE (RFC 7636), sent back to a port on this machine's
//! loopback (RFC 8252); from a browser on another machine, the address it
//! then fails to load is pasted here instead. The tokens are never shown.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::http::{self, Failure, Http};
use super::{advice, client_secret, explain, issued, store, Issued, Kind, TokenError};
use crate::cli::{AuthorizeArgs, Oauth2Args, Oauth2Command};
use crate::config::{Auth, Client, Config, Grant, Overrides, Password, Provider};
use crate::outcome::{Cause, Mta, Outcome};
use crate::sys::{self, io_reason, whoami, Account};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a browser sign-in may take.
const SIGN_IN_TIME: Duration = Duration::from_secs(10 * 60);
/// RFC 8628 3.5: polling slows down by this much when asked to.
const SLOW_DOWN: Duration = Duration::from_secs(5);

pub fn main(args: &Oauth2Args, overrides: &Overrides) -> ExitCode {
    let Oauth2Command::Authorize(args) = &args.command;
    let ran = sys::catch_panic(|| authorize(args, overrides, &mut io::stdout(), io::stdin()));
    let outcome = match ran {
        Ok(Ok(())) => return ExitCode::SUCCESS,
        Ok(Err(outcome)) => outcome,
        Err(panic) => Outcome::new(Cause::Bug, format!("internal error, please report it: {panic}")),
    };
    outcome.report(Mta::Sysexits, false, &[])
}

fn authorize(
    args: &AuthorizeArgs,
    overrides: &Overrides,
    out: &mut dyn Write,
    pasted: impl Read + Send + 'static,
) -> Result<(), Outcome> {
    let config = Config::load(overrides).map_err(|e| Outcome::new(Cause::Config, e.to_string()))?;
    let mailbox = config.mailboxes.iter().find(|m| m.name == args.mailbox).ok_or_else(|| {
        let known: Vec<&str> = config.mailboxes.iter().map(|m| m.name.as_str()).collect();
        Outcome::new(
            Cause::Usage,
            format!("no mailbox named {:?} (there are: {})", args.mailbox, known.join(", ")),
        )
    })?;
    let nothing = |why: &str| Outcome::new(Cause::Usage, format!("mailbox {}: {why}", mailbox.name));
    let (oauth2, client, file, device_url, authorization_url) = match &mailbox.auth {
        Auth::OAuth2(_, oauth2) => match &oauth2.grant {
            Grant::RefreshToken { client, file, device_authorization_url, authorization_url } => {
                (oauth2, client, file, device_authorization_url, authorization_url)
            }
            Grant::ClientCredentials(_) => {
                return Err(nothing(
                    "it uses the application's own access (client credentials), for which no one signs in; chatwoot-ingress check tests it",
                ))
            }
            Grant::Command(_) => return Err(nothing("its tokens come from token_command: there is nothing to authorize")),
        },
        Auth::Password(_) => {
            return Err(nothing(
                "it logs in with a password; set auth = \"xoauth2\" (or \"oauthbearer\") and a [mailbox.oauth2] table with refresh_token_file first",
            ))
        }
    };
    let flow = Flow {
        http: Http::new()?,
        client,
        provider: oauth2.provider,
        mailbox: &mailbox.name,
        user: &mailbox.user,
    };
    let issued = match (device_url, authorization_url) {
        (Some(url), _) => flow.device(url, out)?,
        (None, Some(url)) => flow.browser(url, out, pasted)?,
        (None, None) => {
            return Err(nothing(
                "oauth2 authorize needs device_authorization_url or authorization_url in [mailbox.oauth2] (or a provider that has them)",
            ))
        }
    };
    let refresh = issued.refresh.ok_or_else(|| {
        Outcome::new(Cause::TokenRefused, "the provider signed the user in but issued no refresh token")
            .with_fix("ask for one in scope: offline_access (Microsoft)")
    })?;
    store::write_secret(file, refresh.expose()).map_err(|e| {
        Outcome::new(
            Cause::StateFailed,
            format!("cannot write refresh_token_file {}: {} ({})", file.display(), io_reason(&e), whoami()),
        )
        .with_fix("run it as the user watch runs as, or as root, with the file's directory writable")
    })?;
    let _ = writeln!(
        out,
        "mailbox {}: signed in; the refresh token is in {} ({}). A running watch uses it at its next login; chatwoot-ingress check tests it.",
        mailbox.name,
        file.display(),
        described(file)
    );
    Ok(())
}

/// "mode 0600, owner chatwoot-ingress": who can read the file written.
fn described(file: &Path) -> String {
    match fs::metadata(file) {
        Ok(meta) => {
            let owner = Account::name_of(meta.uid()).unwrap_or_else(|| format!("uid {}", meta.uid()));
            format!("mode {:04o}, owner {owner}", meta.mode() & 0o7777)
        }
        Err(e) => io_reason(&e),
    }
}

/// One sign-in for one mailbox.
struct Flow<'a> {
    http: Http,
    client: &'a Client,
    provider: Option<Provider>,
    mailbox: &'a str,
    user: &'a str,
}

impl Flow<'_> {
    fn explain(&self, failure: Failure, url: &Url) -> TokenError {
        explain(failure, url, Kind::SignIn, self.provider, self.mailbox)
    }

    /// The form fields that name the application: its ID and, if it has
    /// one, its secret.
    fn client_form<'s>(&'s self, secret: &'s Option<Password>) -> Vec<(&'s str, &'s str)> {
        let mut form = vec![("client_id", self.client.client_id.as_str())];
        form.extend(secret.as_ref().map(|s| ("client_secret", s.expose())));
        form
    }

    /// RFC 8628: show the code, then ask the token endpoint until the user
    /// has signed in (or declined, or the code expired).
    fn device(&self, url: &Url, out: &mut dyn Write) -> Result<Issued, TokenError> {
        let secret = client_secret(self.client)?;
        let secret_text = secret.as_ref().map_or("", Password::expose);
        let mut form = self.client_form(&secret);
        form.extend(self.client.scope.as_deref().map(|scope| ("scope", scope)));
        let answer = self.http.post(url, &form, &[secret_text]).map_err(|f| self.explain(f, url))?;
        let text = |key: &str| answer.get(key).and_then(Value::as_str);
        let seconds = |key: &str, default: u64| answer.get(key).and_then(Value::as_u64).unwrap_or(default);
        let (Some(device_code), Some(user_code), Some(address)) =
            (text("device_code"), text("user_code"), text("verification_uri").or(text("verification_url")))
        else {
            return Err(TokenError::new(
                Cause::TokenRefused,
                format!(
                    "the device authorization endpoint at {} answered without a code to enter",
                    http::host(url)
                ),
                "check device_authorization_url: it must be the provider's device authorization endpoint",
            ));
        };
        let expires_in = Duration::from_secs(seconds("expires_in", 900));
        let mut interval = Duration::from_secs(seconds("interval", 5).max(1));
        let _ = writeln!(
            out,
            "To let chatwoot-ingress read the mail of {user} (mailbox {mailbox}), open\n\n    {address}\n\nin a browser on any device, enter the code {user_code}, and sign in as {user}.\nWaiting for the sign-in (the code expires in {minutes} minutes)…",
            user = self.user,
            mailbox = self.mailbox,
            minutes = expires_in.as_secs().div_ceil(60),
        );
        let _ = out.flush();
        let deadline = Instant::now() + expires_in;
        let token_url = &self.client.token_url;
        let mut form = self.client_form(&secret);
        form.extend([("grant_type", DEVICE_GRANT), ("device_code", device_code)]);
        loop {
            thread::sleep(interval);
            if Instant::now() >= deadline {
                return Err(TokenError::new(
                    Cause::TokenRefused,
                    "the code expired before the sign-in",
                    "run chatwoot-ingress oauth2 authorize again, and sign in sooner",
                ));
            }
            match self.http.post(token_url, &form, &[secret_text, device_code]) {
                Ok(answer) => return issued(&answer, token_url),
                Err(Failure::Refused { error, .. }) if error == "authorization_pending" => {}
                Err(Failure::Refused { error, .. }) if error == "slow_down" => interval += SLOW_DOWN,
                Err(failure) => return Err(self.explain(failure, token_url)),
            }
        }
    }

    /// The browser's flow with PKCE, sent back to this machine's loopback.
    fn browser(
        &self,
        url: &Url,
        out: &mut dyn Write,
        pasted: impl Read + Send + 'static,
    ) -> Result<Issued, TokenError> {
        let local = |e: io::Error| {
            TokenError::new(
                Cause::Bug,
                format!("cannot wait for the browser: {}", io_reason(&e)),
                "please report it",
            )
        };
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(local)?;
        let redirect = format!("http://127.0.0.1:{}/", listener.local_addr().map_err(local)?.port());
        let verifier = base64url(&random(32).map_err(local)?);
        let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
        let state = base64url(&random(16).map_err(local)?);
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
                .append_pair("login_hint", self.user);
        }
        let _ = writeln!(
            out,
            "To let chatwoot-ingress read the mail of {user} (mailbox {mailbox}), open this address in a browser and sign in as {user}:\n\n    {address}\n\nThe browser is then sent to {redirect}. If it runs on another machine, that address fails to load there: copy it from the address bar and paste it here.\nWaiting for the sign-in…",
            user = self.user,
            mailbox = self.mailbox,
        );
        let _ = out.flush();
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
                return Err(TokenError::new(
                    Cause::Timeout,
                    format!("no sign-in within {} minutes", SIGN_IN_TIME.as_secs() / 60),
                    "run chatwoot-ingress oauth2 authorize again",
                ));
            };
            match redirected(&base, &target, &state) {
                Some(Ok(code)) => break code,
                Some(Err((error, description))) => {
                    let said = if description.is_empty() {
                        error.clone()
                    } else {
                        format!("{error}: {description}")
                    };
                    return Err(TokenError {
                        cause: Cause::TokenRefused,
                        reason: format!("the sign-in failed: {said}"),
                        fix: advice(&error, &description, Kind::SignIn, self.provider, self.mailbox),
                        error: Some(error),
                    });
                }
                None => {}
            }
        };
        let secret = client_secret(self.client)?;
        let mut form = self.client_form(&secret);
        form.extend([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier.as_str()),
        ]);
        let secrets = [secret.as_ref().map_or("", Password::expose), code.as_str(), verifier.as_str()];
        let token_url = &self.client.token_url;
        let answer = self.http.post(token_url, &form, &secrets).map_err(|f| self.explain(f, token_url))?;
        issued(&answer, token_url)
    }
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

fn random(n: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; n];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Base64 with the URL's alphabet and no padding (RFC 7636's BASE64URL).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_as_rfc_7636_computes_it() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
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

    /// Lines written by the flow, to the test playing the user.
    struct Screen(mpsc::Sender<String>);

    impl Write for Screen {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(String::from_utf8_lossy(bytes).into_owned());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A token endpoint that issues a refresh token for the right code and
    /// a code_verifier that matches `challenge` (once it is known).
    fn token_endpoint(
        challenge: mpsc::Receiver<String>,
    ) -> (Url, thread::JoinHandle<HashMap<String, String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/token", listener.local_addr().unwrap())).unwrap();
        let served = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let body =
                crate::oauth2::http::read_request_body(&mut BufReader::new(stream.try_clone().unwrap()));
            // A form body is a URL's query.
            let body = Url::parse(&format!("http://form/?{}", String::from_utf8(body).unwrap())).unwrap();
            let form: HashMap<String, String> = body.query_pairs().into_owned().collect();
            let verified =
                base64url(&Sha256::digest(form["code_verifier"].as_bytes())) == challenge.recv().unwrap();
            let answer = if verified && form["code"] == "the-code" {
                r#"{"access_token":"at-1","expires_in":3600,"refresh_token":"rt-from-code"}"#
            } else {
                r#"{"error":"invalid_grant"}"#
            };
            let status = if answer.contains("error") { "400 Bad Request" } else { "200 OK" };
            write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len()).unwrap();
            form
        });
        (url, served)
    }

    #[test]
    fn the_browser_flow_sends_the_code_back_with_its_pkce_verifier() {
        let (challenge_tx, challenge_rx) = mpsc::channel();
        let (token_url, endpoint) = token_endpoint(challenge_rx);
        let client = Client {
            client_id: "desktop-app".into(),
            client_secret_file: None,
            token_url,
            scope: Some("https://mail.google.com/".into()),
        };
        let flow = Flow {
            http: Http::new().unwrap(),
            client: &client,
            provider: None,
            mailbox: "gmail",
            user: "a@example.org",
        };
        let (screen_tx, screen) = mpsc::channel::<String>();
        // The user: reads the address, signs in; the provider sends the browser back.
        let user = thread::spawn(move || {
            let mut shown = String::new();
            while !shown.contains("Waiting") {
                shown.push_str(&screen.recv().unwrap());
            }
            let address =
                shown.split_whitespace().find(|word| word.starts_with("https://accounts.example/")).unwrap();
            let address = Url::parse(address).unwrap();
            let query: HashMap<String, String> = address.query_pairs().into_owned().collect();
            assert_eq!(
                (query["client_id"].as_str(), query["code_challenge_method"].as_str()),
                ("desktop-app", "S256")
            );
            challenge_tx.send(query["code_challenge"].clone()).unwrap();
            let redirect = Url::parse(&query["redirect_uri"]).unwrap();
            let mut browser =
                TcpStream::connect((redirect.host_str().unwrap(), redirect.port().unwrap())).unwrap();
            // A stray request first: not the sign-in's end.
            write!(browser, "GET /favicon.ico HTTP/1.1\r\n\r\n").unwrap();
            let mut browser =
                TcpStream::connect((redirect.host_str().unwrap(), redirect.port().unwrap())).unwrap();
            write!(browser, "GET /?code=the-code&state={} HTTP/1.1\r\nHost: x\r\n\r\n", query["state"])
                .unwrap();
            let mut page = String::new();
            browser.read_to_string(&mut page).unwrap();
            assert!(page.starts_with("HTTP/1.1 200") && page.contains("close this window"), "{page}");
            shown
        });
        let authorization = Url::parse("https://accounts.example/auth").unwrap();
        let issued = flow.browser(&authorization, &mut Screen(screen_tx), io::empty()).unwrap();
        assert_eq!(issued.refresh.unwrap().expose(), "rt-from-code");
        let form = endpoint.join().unwrap();
        assert_eq!(form["grant_type"], "authorization_code");
        assert!(form["redirect_uri"].starts_with("http://127.0.0.1:"));
        let shown = user.join().unwrap();
        assert!(!shown.contains("rt-from-code") && !shown.contains("the-code"), "{shown}");
    }
}
