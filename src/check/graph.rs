//! Each `[[mailbox]]` with `source = "graph"` as `watch` will use it: the
//! token request, the permissions the token carries, the mailbox and its
//! folders, and the messages waiting. Nothing in the mailbox is changed:
//! no folder is created, no message marked.

use std::io;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use super::report::{FolderFigures, MailboxSteps, Report, Steps};
use crate::config::{After, Auth, Config, Grant, Graph, Mailbox};
use crate::graph::{self, Client, FolderPath, Options};
use crate::mailbox::{self, graph_failure};
use crate::secret::Password;
use crate::sys::io_reason;
use crate::watch::state::{StateFile, Store};
use crate::watch::{self, GraphState};

/// The longest wait for an answer: a dead service must not keep `check`
/// for minutes.
const LONGEST_WAIT: Duration = Duration::from_secs(10);
/// What watch needs of the token: to read, mark and move mail.
const PERMISSION: &str = "Mail.ReadWrite";

/// Every step of `mailbox`, whatever became of the ingress or of the other
/// mailboxes: each fails on its own.
pub fn mailbox(mailbox: &Mailbox, graph: &Graph, config: &Config, r: &mut Report) {
    let mut s = r.mailbox("graph", &mailbox.name);
    let Some(token) = token(mailbox, &mut s) else { return };
    let can_write = permissions(&token, &mut s);
    let options = Options { timeout: config.timeout.value.min(LONGEST_WAIT), ..Options::default() };
    let client = match Client::new(graph.endpoint.clone(), options, mailbox.ca_file.as_deref()) {
        Ok(client) => client,
        Err(e) => return s.fail("mailbox", e.to_string(), "correct ca_file of the [[mailbox]]"),
    };
    let user = mailbox.user.as_str();
    let service = graph.endpoint.as_str().trim_end_matches('/');
    match client.children(&token, user, None) {
        Ok(top) => s.ok("mailbox", format!("{user} at {service}: {} folder(s) at its top", top.len())),
        Err(e @ graph::Error::Forbidden { .. }) if e.has_code("ErrorAccessDenied") => {
            return s.fail("mailbox", e.to_string(), mailbox::access_denied_fix(mailbox, can_write));
        }
        Err(e) => return fail(&mut s, "mailbox", mailbox, &e),
    }
    let state_dir = watch::state_dir(config);
    for name in &mailbox.folders {
        let Some(path) = FolderPath::parse(name) else { continue };
        match client.folder(&token, user, &path) {
            Ok(Some(folder)) => {
                s.ok("folder", format!("{name:?} (watched) is there"));
                messages(mailbox, name, &folder, &state_dir, &mut s);
            }
            Ok(None) => s.fail(
                "folder",
                format!("{name:?} (watched) is not in the mailbox"),
                "create it, or correct folders in the [[mailbox]]: well-known names (Inbox, Archive…) or display names as Outlook shows them, \"Parent/Child\" for a folder in another",
            ),
            Err(e) => return fail(&mut s, "folder", mailbox, &e),
        }
    }
    // What watch creates when it starts, which check does not.
    let move_to = mailbox.move_to.as_ref().filter(|_| mailbox.after == After::Move).map(|f| (f, "move_to"));
    for (name, key) in move_to.into_iter().chain([(&mailbox.refused_folder, "refused_folder")]) {
        let Some(path) = FolderPath::parse(name) else { continue };
        match client.folder(&token, user, &path) {
            Ok(Some(_)) => s.ok("folder", format!("{name:?} ({key}) is there")),
            Ok(None) if can_write != Some(false) => s.warn(
                "folder",
                format!("{name:?} ({key}) is not there: watch creates it when it starts"),
                format!("nothing to do; or create it yourself, or set {key} to a folder that exists"),
            ),
            Ok(None) => s.fail(
                "folder",
                format!("{name:?} ({key}) is not there, and without {PERMISSION} watch cannot create it"),
                format!("grant {PERMISSION} (see the permissions step), or create it yourself"),
            ),
            Err(e) => return fail(&mut s, "folder", mailbox, &e),
        }
    }
}

/// A new token, as watch would get one; None when there is none.
fn token(m: &Mailbox, s: &mut MailboxSteps) -> Option<Password> {
    let Auth::OAuth2(_, oauth2) = &m.auth else { return None };
    let fetched = mailbox::tokens(m).and_then(|tokens| match tokens {
        Some(tokens) => tokens.fetch_now(),
        None => Err(crate::outcome::Outcome::new(crate::outcome::Cause::Bug, "no token source")),
    });
    match fetched {
        Ok(token) => {
            let expires = token
                .expires
                .map(|at| format!(", valid for {}s", at.saturating_duration_since(Instant::now()).as_secs()))
                .unwrap_or_default();
            let from = match &oauth2.grant {
                Grant::Command(argv) => format!("token_command {}", argv.first().map_or("", String::as_str)),
                Grant::ClientCredentials(client) => format!("{} (client credentials)", client.token_url),
                Grant::RefreshToken { client, file, .. } => {
                    format!("{} (the refresh token in {})", client.token_url, file.display())
                }
            };
            s.ok("token", format!("an access token from {from}{expires}"));
            Some(token.access)
        }
        Err(e) => {
            s.fail("token", e.reason(), e.fix().unwrap_or_default());
            None
        }
    }
}

/// The claims of an access token that say what it may do.
#[derive(Default, Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Option<String>,
    /// An application's permissions (client credentials).
    #[serde(default)]
    roles: Vec<String>,
    /// A user's delegated permissions, separated by spaces.
    #[serde(default)]
    scp: Option<String>,
}

/// The claims of a JWT, read without checking its signature (Graph does
/// that): what it says it may do, to tell a missing permission from the rest.
fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes = engine.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The permissions the token carries: Some(whether it may write mail), or
/// None when it cannot be read (not a JWT).
fn permissions(token: &Password, s: &mut MailboxSteps) -> Option<bool> {
    let Some(claims) = claims(token.expose()) else {
        s.warn(
            "permissions",
            "the token is not a JWT: what it may do shows in the next steps only",
            "nothing to do if they pass",
        );
        return None;
    };
    let graph = claims.aud.as_deref().is_some_and(|aud| {
        aud == "00000003-0000-0000-c000-000000000000"
            || aud.starts_with("https://graph.")
            || aud.starts_with("https://microsoftgraph.")
            || aud.starts_with("https://dod-graph.")
    });
    if !graph {
        s.fail(
            "permissions",
            format!("the token is for {}, not for Microsoft Graph", claims.aud.as_deref().unwrap_or("no audience")),
            "set scope in [mailbox.oauth2] to https://graph.microsoft.com/.default (or leave it out with provider = \"microsoft\"): an IMAP token is not for Graph",
        );
        return Some(false);
    }
    let delegated: Vec<String> =
        claims.scp.as_deref().unwrap_or_default().split_whitespace().map(str::to_string).collect();
    let has = |granted: &[String]| granted.iter().any(|p| p.eq_ignore_ascii_case(PERMISSION));
    let shown = |granted: &[String]| if granted.is_empty() { "none".to_string() } else { granted.join(", ") };
    if claims.roles.is_empty() && !delegated.is_empty() {
        // A user's token: what the user consented to is all it may do.
        if has(&delegated) {
            s.ok(
                "permissions",
                format!("the token carries delegated permissions (scp): {}", shown(&delegated)),
            );
            return Some(true);
        }
        s.fail(
            "permissions",
            format!("the token carries delegated permissions (scp): {}; {PERMISSION} is missing", shown(&delegated)),
            format!("add the delegated permission {PERMISSION} (Microsoft Graph) to the app registration, and sign in again (chatwoot-ingress oauth2 authorize --mailbox NAME)"),
        );
        return Some(false);
    }
    let roles = shown(&claims.roles);
    if has(&claims.roles) {
        s.ok(
            "permissions",
            format!("the token carries application permissions (roles): {roles}, granted with admin consent in Microsoft Entra ID: for every mailbox of the tenant (Exchange's RBAC scopes do not narrow it)"),
        );
        return Some(true);
    }
    // Exchange's RBAC for Applications grants it without a role in the token.
    s.warn(
        "permissions",
        format!("the token carries application permissions (roles): {roles}; not {PERMISSION}, which must then come from Exchange RBAC for Applications (the role \"Application {PERMISSION}\" in a scope that holds this mailbox): the next steps show whether Graph lets the application in"),
        format!("if they fail: assign that role (README, Microsoft 365 through Graph), or grant admin consent to the application permission {PERMISSION} (Microsoft Graph), which reaches every mailbox of the tenant"),
    );
    None
}

/// A Graph failure: its words, and the one fix for its kind.
fn fail(s: &mut MailboxSteps, step: &'static str, mailbox: &Mailbox, e: &graph::Error) {
    let outcome = graph_failure(mailbox, e);
    s.fail(step, outcome.reason(), outcome.fix().unwrap_or_default());
}

/// A watched folder's messages, and what watch would take of them now.
fn messages(
    m: &Mailbox,
    name: &str,
    folder: &graph::Folder,
    state_dir: &std::path::Path,
    s: &mut MailboxSteps,
) {
    let (total, unread) = (folder.total, folder.unread);
    let mut figures =
        FolderFigures { folder: name.to_string(), messages: total, unseen: unread, waiting: None };
    let counted = format!("{name:?}: {total} message(s), {unread} unread");
    let file = StateFile::new(state_dir, &m.name, name);
    let path = file.path().display().to_string();
    match Store::new(Box::new(file)).load::<GraphState>() {
        Ok(Some(state)) if state.cursor.folder_id == folder.id => {
            let waiting = u32::try_from(state.cursor.waiting.len()).unwrap_or(u32::MAX);
            figures.waiting = Some(waiting);
            s.ok(
                "messages",
                format!("{counted}; {waiting} named by the last delta query wait, and whatever arrived since (its place is saved in {path})"),
            );
        }
        Ok(saved) => {
            let (waiting, which) = match (saved.is_some(), m.after) {
                (true, _) => (total, "all of them: the folder was made anew since its place was saved; those delivered before are dropped by the ingress"),
                (false, After::Seen) => (unread, "the unread ones: it has not run on this folder yet"),
                (false, _) => (total, "all of them: it has not run on this folder yet"),
            };
            figures.waiting = Some(waiting);
            s.ok("messages", format!("{counted}; watch will take {waiting}, {which} ({path})"));
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => s.fail(
            "messages",
            format!("{counted}; the state file is damaged: {e}"),
            format!("watch stops on it too: restore {path}, or remove it to start afresh"),
        ),
        Err(e) => s.warn(
            "messages",
            format!("{counted}; what watch will take is unknown: cannot read {path}: {}", io_reason(&e)),
            "run check as the user watch runs as, with the same state_dir",
        ),
    }
    s.folder(figures);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", engine.encode(r#"{"alg":"HS256"}"#), engine.encode(claims))
    }

    #[test]
    fn the_permissions_a_token_carries_are_read_from_its_claims() {
        let c = claims(&jwt(r#"{"aud":"https://graph.microsoft.com","roles":["Mail.ReadWrite"]}"#)).unwrap();
        assert_eq!(c.roles, ["Mail.ReadWrite"]);
        let c = claims(&jwt(
            r#"{"aud":"00000003-0000-0000-c000-000000000000","scp":"Mail.ReadWrite User.Read"}"#,
        ))
        .unwrap();
        assert_eq!(c.scp.as_deref(), Some("Mail.ReadWrite User.Read"));
        assert!(claims("opaque-token").is_none());
        assert!(claims("a.!!!.c").is_none());
    }
}
