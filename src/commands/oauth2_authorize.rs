//! `oauth2 authorize`: sign in as the mailbox's user once, and keep the
//! refresh token that lets `watch` get access tokens from then on.
//!
//! The device-code flow where the provider has one (Microsoft), else the
//! browser's own flow sent back to this machine (the token library's
//! [`SignIn`]); this command finds the mailbox, tells the user what to do,
//! and writes the refresh token. The tokens are never shown.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use reqwest::Url;

use crate::cli::{AuthorizeArgs, Oauth2Args, Oauth2Command};
use crate::config::{Auth, Config, Grant, Overrides};
use crate::mailbox::{oauth2_client, token_failure};
use crate::oauth2::{self, Issued, SignIn};
use crate::outcome::{Cause, Mta, Outcome};
use crate::run::{self, Signals};
use crate::sys::{io_reason, whoami, Account};

pub fn main(args: &Oauth2Args, overrides: &Overrides) -> ExitCode {
    let Oauth2Command::Authorize(args) = &args.command;
    // Success says so on stdout; the status line is for a failure.
    run::command(Mta::Sysexits, false, Signals::Default, |_| {
        match authorize(args, overrides, &mut io::stdout(), io::stdin()) {
            Ok(()) => Outcome::new(Cause::Delivered, "signed in").into(),
            Err(outcome) => outcome.into(),
        }
    })
}

fn authorize(
    args: &AuthorizeArgs,
    overrides: &Overrides,
    out: &mut dyn Write,
    pasted: impl Read + Send + 'static,
) -> Result<(), Outcome> {
    let config = Config::load(overrides)?;
    let mailbox = config.mailbox(&args.mailbox)?;
    let nothing = |why: &str| Outcome::new(Cause::Usage, format!("mailbox {}: {why}", mailbox.name));
    let (client, file, device_url, authorization_url) = match &mailbox.auth {
        Auth::OAuth2(_, oauth2) => match &oauth2.grant {
            Grant::RefreshToken { client, file, device_authorization_url, authorization_url } => {
                (client, file, device_authorization_url, authorization_url)
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
    let sign_in = SignIn::new(oauth2_client(client)).map_err(|e| token_failure(mailbox, &e))?;
    let issued = match (device_url, authorization_url) {
        (Some(url), _) => device(&sign_in, (&mailbox.name, &mailbox.user), url, out),
        (None, Some(url)) => browser(&sign_in, (&mailbox.name, &mailbox.user), url, out, pasted),
        (None, None) => {
            return Err(nothing(
                "oauth2 authorize needs device_authorization_url or authorization_url in [mailbox.oauth2] (or a provider that has them)",
            ))
        }
    }
    .map_err(|e| token_failure(mailbox, &e))?;
    let refresh = issued.refresh.ok_or_else(|| {
        Outcome::new(Cause::TokenRefused, "the provider signed the user in but issued no refresh token")
            .with_fix("ask for one in scope: offline_access (Microsoft)")
    })?;
    oauth2::write_secret(file, refresh.expose()).map_err(|e| {
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

/// RFC 8628: show the code, then wait until the user has signed in (or
/// declined, or the code expired).
fn device(
    sign_in: &SignIn,
    (name, user): (&str, &str),
    url: &Url,
    out: &mut dyn Write,
) -> Result<Issued, oauth2::Error> {
    let code = sign_in.device_code(url)?;
    let _ = writeln!(
        out,
        "To let chatwoot-ingress read the mail of {user} (mailbox {name}), open\n\n    {address}\n\nin a browser on any device, enter the code {user_code}, and sign in as {user}.\nWaiting for the sign-in (the code expires in {minutes} minutes)…",
        address = code.address,
        user_code = code.user_code,
        minutes = code.expires_in.as_secs().div_ceil(60),
    );
    let _ = out.flush();
    sign_in.device_token(&code)
}

/// The browser's flow: show the address, then wait for the browser to
/// come back (or for the address it failed to load, pasted).
fn browser(
    sign_in: &SignIn,
    (name, user): (&str, &str),
    url: &Url,
    out: &mut dyn Write,
    pasted: impl Read + Send + 'static,
) -> Result<Issued, oauth2::Error> {
    let browser = sign_in.browser(url, user)?;
    let _ = writeln!(
        out,
        "To let chatwoot-ingress read the mail of {user} (mailbox {name}), open this address in a browser and sign in as {user}:\n\n    {address}\n\nThe browser is then sent to {redirect}. If it runs on another machine, that address fails to load there: copy it from the address bar and paste it here.\nWaiting for the sign-in…",
        address = browser.address,
        redirect = browser.redirect,
    );
    let _ = out.flush();
    sign_in.browser_token(browser, pasted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::BufReader;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

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
            let body = crate::oauth2::read_request_body(&mut BufReader::new(stream.try_clone().unwrap()));
            // A form body is a URL's query.
            let body = Url::parse(&format!("http://form/?{}", String::from_utf8(body).unwrap())).unwrap();
            let form: HashMap<String, String> = body.query_pairs().into_owned().collect();
            let verified = URL_SAFE_NO_PAD.encode(Sha256::digest(form["code_verifier"].as_bytes()))
                == challenge.recv().unwrap();
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
        let client = oauth2::Client {
            client_id: "desktop-app".into(),
            client_secret: None,
            token_url,
            scope: Some("https://mail.google.com/".into()),
        };
        let sign_in = SignIn::new(client).unwrap();
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
        let who = ("gmail", "a@example.org");
        let issued = browser(&sign_in, who, &authorization, &mut Screen(screen_tx), io::empty()).unwrap();
        assert_eq!(issued.refresh.unwrap().expose(), "rt-from-code");
        let form = endpoint.join().unwrap();
        assert_eq!(form["grant_type"], "authorization_code");
        assert!(form["redirect_uri"].starts_with("http://127.0.0.1:"));
        let shown = user.join().unwrap();
        assert!(!shown.contains("rt-from-code") && !shown.contains("the-code"), "{shown}");
    }
}
