//! Each `[[mailbox]]` as `watch` will use it: DNS, TCP, TLS, the login,
//! what the server can do, the folders, and the messages waiting. Nothing
//! on the server is changed: no folder is created, no flag is set.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::network::{self, Fixes};
use super::report::{FolderFigures, MailboxSteps, Report, Steps};
use crate::config::{After, Auth, Config, Grant, Imap, Mailbox, Tls};
use crate::imap::{Capabilities, ImapError, Session};
use crate::mailbox::{self, endpoint, imap_fix, LoginError, Tokens};
use crate::sys::io_reason;
use crate::watch::{
    self,
    state::{ImapState, StateFile, Store},
};

/// The longest wait for a connection or an answer: a dead server must not
/// keep `check` for minutes.
const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// Every step of `mailbox`, whatever became of the ingress or of the other
/// mailboxes: each fails on its own.
pub fn mailbox(mailbox: &Mailbox, imap: &Imap, config: &Config, r: &mut Report) {
    let timeout = config.timeout.value.min(LONGEST_WAIT);
    let state_dir = watch::state_dir(config);
    let mut s = r.mailbox("imap", &mailbox.name);
    let Some(mut session) = connect(mailbox, imap, timeout, &mut s) else { return };
    if login(mailbox, &mut session, &mut s) {
        if let Err((step, e)) = inspect(mailbox, imap, &mut session, &state_dir, &mut s) {
            let fix = match e {
                // Its own fix says watch tries again, which check does not.
                ImapError::Timeout(_) | ImapError::Lost(_) => {
                    "run the check again; if it keeps happening, see the IMAP server's log"
                }
                _ => imap_fix(&e),
            };
            s.fail(step, e.to_string(), fix);
        }
    }
    session.logout();
}

/// DNS, TCP, then the session (TLS, the greeting), each its own step.
fn connect(m: &Mailbox, imap: &Imap, timeout: Duration, s: &mut MailboxSteps) -> Option<Session> {
    let host = imap.host.as_str();
    // The fixes for those kinds of failure, in the [[mailbox]]'s words.
    let fixes = Fixes {
        dns: imap_fix(&ImapError::Dns(String::new())),
        tcp: imap_fix(&ImapError::Refused(String::new())),
    };
    if !network::reach(s, (host, imap.port), "", timeout, fixes) {
        return None;
    }

    match Session::connect(&endpoint(m, imap, timeout)) {
        Ok(session) => {
            let verified = match &m.ca_file {
                Some(ca_file) => format!("issued by a CA in ca_file {}", ca_file.display()),
                None => "issued by a CA this machine trusts".into(),
            };
            let detail = match imap.tls {
                Tls::Implicit => format!("implicit TLS: the certificate is valid for {host} and {verified}"),
                Tls::StartTls => format!("STARTTLS: the certificate is valid for {host} and {verified}"),
                Tls::None => format!(
                    "tls = \"none\": cleartext, allowed because {host} is this machine (loopback), so the password does not leave it"
                ),
            };
            s.ok("tls", detail);
            Some(session)
        }
        Err(e @ ImapError::Dns(_)) => fail(s, "dns", e),
        Err(e @ (ImapError::Timeout(_) | ImapError::Lost(_) | ImapError::Protocol(_))) => {
            // TCP is right, what is spoken on it is not: mostly a port of
            // the other kind of TLS.
            s.fail(
                "tls",
                e.to_string(),
                "check port and tls of the [[mailbox]]: 993 is tls = \"implicit\", 143 tls = \"starttls\"; the server must speak IMAP there",
            );
            None
        }
        Err(e) => fail(s, "tls", e),
    }
}

fn fail<T>(s: &mut MailboxSteps, step: &'static str, e: ImapError) -> Option<T> {
    s.fail(step, e.to_string(), imap_fix(&e));
    None
}

/// Log in as watch does, with a new token (its request a step of its
/// own: the provider's answer when it fails); whether it worked.
fn login(m: &Mailbox, session: &mut Session, s: &mut MailboxSteps) -> bool {
    let tokens = match mailbox::tokens(m) {
        Ok(tokens) => tokens,
        Err(e) => {
            s.fail("token", e.reason(), e.fix().unwrap_or_default());
            return false;
        }
    };
    let how = match &m.auth {
        Auth::OAuth2(..) => " with an OAuth2 token".to_string(),
        Auth::Password(secret) => {
            secret.path().map(|path| format!(" (password from {})", path.display())).unwrap_or_default()
        }
    };
    let mut token_failed = false;
    let token = |tokens: &Tokens| {
        let token = tokens.fetch_now().inspect_err(|_| token_failed = true)?;
        let expires = token
            .expires
            .map(|at| format!(", valid for {}s", at.saturating_duration_since(Instant::now()).as_secs()))
            .unwrap_or_default();
        s.ok("token", format!("an access token from {}{expires}", token_from(m)));
        Ok(token)
    };
    let Err(e) = mailbox::log_in(session, m, tokens.as_ref(), token) else {
        s.ok("login", format!("logged in as {}{how}", m.user));
        return true;
    };
    match e {
        LoginError::Credentials(e) if token_failed => {
            s.fail("token", e.reason(), e.fix().unwrap_or_default())
        }
        LoginError::Credentials(e) => s.fail("login", e.reason(), "correct password_file of the [[mailbox]]"),
        // The server's text, without the secret (the client removes it).
        LoginError::Refused(e) => {
            s.fail("login", format!("{} (as {})", e.reason(), m.user), e.fix().unwrap_or_default())
        }
        LoginError::Failed { outcome: e, .. } => s.fail("login", e.reason(), e.fix().unwrap_or_default()),
    }
    false
}

/// Where a mailbox's tokens come from, for the token step.
fn token_from(m: &Mailbox) -> String {
    let Auth::OAuth2(_, oauth2) = &m.auth else { return String::new() };
    match &oauth2.grant {
        Grant::Command(argv) => format!("token_command {}", argv.first().map_or("", String::as_str)),
        Grant::ClientCredentials(client) => format!("{} (client credentials)", client.token_url),
        Grant::RefreshToken { client, file, .. } => {
            format!("{} (the refresh token in {})", client.token_url, file.display())
        }
    }
}

/// After the login: capabilities, folders, messages. A command's failure
/// ends the mailbox's check, with the step it was for.
fn inspect(
    m: &Mailbox,
    imap: &Imap,
    session: &mut Session,
    state_dir: &Path,
    s: &mut MailboxSteps,
) -> Result<(), (&'static str, ImapError)> {
    let (detail, warnings) = capabilities(session.capabilities(), m, imap);
    s.ok("capabilities", detail);
    for (detail, fix) in warnings {
        s.warn("capabilities", detail, fix);
    }

    let mut present = Vec::new();
    for folder in &m.folders {
        if session.folder_exists(folder).map_err(|e| ("folder", e))? {
            s.ok("folder", format!("{folder:?} (watched) is there"));
            present.push(folder);
        } else {
            s.fail(
                "folder",
                format!("{folder:?} (watched) does not exist, or cannot be selected"),
                "create it, or correct folders in the [[mailbox]]: names as the server lists them, with its separator (\"INBOX/Support\" or \"INBOX.Support\")",
            );
        }
    }
    // What watch creates at each login. Only CREATE could tell whether the
    // server allows it, and check creates nothing.
    let move_to = m.move_to.as_ref().filter(|_| m.after == After::Move).map(|f| (f, "move_to"));
    for (folder, key) in move_to.into_iter().chain([(&m.refused_folder, "refused_folder")]) {
        if session.folder_exists(folder).map_err(|e| ("folder", e))? {
            s.ok("folder", format!("{folder:?} ({key}) is there"));
        } else {
            s.warn(
                "folder",
                format!("{folder:?} ({key}) is not there: watch creates it when it logs in"),
                format!("nothing to do, unless the server refuses to create it: then watch cannot start, so create it yourself or set {key} to a folder that exists"),
            );
        }
    }

    for folder in present {
        let (messages, unseen) = session.status(folder).map_err(|e| ("messages", e))?;
        let mut figures = FolderFigures { folder: folder.clone(), messages, unseen, waiting: None };
        let counted = format!("{folder:?}: {messages} message(s), {unseen} unseen");
        let file = StateFile::new(state_dir, &m.name, folder);
        let path = file.path().display().to_string();
        match Store::new(Box::new(file)).load::<ImapState>() {
            Ok(saved) => {
                // SELECT (the client has no EXAMINE) changes nothing but
                // \Recent, which watch does without.
                let selected = session.select(folder).map_err(|e| ("messages", e))?;
                let search = |session: &mut Session, criteria: &str| {
                    session.uid_search(criteria).map_err(|e| ("messages", e))
                };
                let (waiting, which) = match saved {
                    Some(state) if state.cursor.uidvalidity == selected.uidvalidity => {
                        let after = state.cursor.cursor.saturating_add(1);
                        // `n:*` includes the highest UID even when it is below n.
                        let above = search(session, &format!("UID {after}:* NOT DELETED"))?;
                        let waiting = above.into_iter().filter(|&uid| state.cursor.pending(uid)).count();
                        (waiting, format!("those after its place, saved in {path}"))
                    }
                    Some(_) => (
                        search(session, "ALL NOT DELETED")?.len(),
                        format!("all of them: the folder was made anew since it saved its place in {path} (UIDVALIDITY changed); those it delivered before are posted again, and the ingress drops them"),
                    ),
                    None if m.after == After::Seen => (
                        search(session, "UNSEEN NOT DELETED")?.len(),
                        format!("the unseen ones: it has not run on this folder yet ({path} does not exist)"),
                    ),
                    None => (
                        search(session, "ALL NOT DELETED")?.len(),
                        format!("all of them: it has not run on this folder yet ({path} does not exist)"),
                    ),
                };
                let waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
                figures.waiting = Some(waiting);
                s.ok("messages", format!("{counted}; watch will take {waiting}, {which}"));
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => s.fail(
                "messages",
                format!("{counted}; the state file is damaged: {e}"),
                format!(
                    "watch stops on it too: restore {path}, or remove it to start afresh ({})",
                    afresh(m.after)
                ),
            ),
            Err(e) => s.warn(
                "messages",
                format!("{counted}; what watch will take is unknown: cannot read {path}: {}", io_reason(&e)),
                "run check as the user watch runs as, with the same state_dir",
            ),
        }
        s.folder(figures);
    }
    Ok(())
}

/// What watch takes from a folder it has no state for.
fn afresh(after: After) -> &'static str {
    match after {
        After::Seen => "watch then takes the unseen messages",
        After::Move | After::Delete => "watch then takes every message",
    }
}

/// The capabilities watch uses that the server has, and what each missing
/// one means for this mailbox: (detail, [(warning, fix)]).
fn capabilities(caps: &Capabilities, m: &Mailbox, imap: &Imap) -> (String, Vec<(String, String)>) {
    let named = [("IDLE", caps.idle), ("MOVE", caps.move_), ("UIDPLUS", caps.uidplus)];
    let have: Vec<&str> = named.iter().filter(|(_, has)| *has).map(|(name, _)| *name).collect();
    let lacks: Vec<&str> = named.iter().filter(|(_, has)| !*has).map(|(name, _)| *name).collect();
    let mut detail = match (have.is_empty(), lacks.is_empty()) {
        (_, true) => have.join(", "),
        (true, false) => format!("none of {}", lacks.join(", ")),
        (false, false) => format!("{}; not {}", have.join(", "), lacks.join(", ")),
    };
    let mut warnings = Vec::new();
    let (folders, connections) = (m.folders.len(), imap.max_connections.get());
    if folders > connections {
        warnings.push((
            format!(
                "{folders} folders over at most {connections} connections (max_connections): watch visits the folders that share one in turn, every {}s (poll_interval), instead of waiting in IDLE",
                m.poll_interval.as_secs()
            ),
            "nothing to do if that delay is right; otherwise raise max_connections, as far as the server allows connections per account (Gmail: 15 in all)".into(),
        ));
    }
    if !caps.idle {
        warnings.push((
            format!(
                "no IDLE: watch looks for new mail every {}s (poll_interval), not the moment it arrives",
                m.poll_interval.as_secs()
            ),
            "nothing to do if that delay is right; otherwise lower poll_interval (5 seconds at least)".into(),
        ));
    }
    // Refused mail is always moved; delivered mail as `after` says.
    let moved = match m.after {
        After::Move => format!(
            "delivered messages moved to {:?} and refused ones moved to {:?}",
            m.move_to.as_deref().unwrap_or_default(),
            m.refused_folder
        ),
        _ => format!("refused messages moved to {:?}", m.refused_folder),
    };
    let left = match (caps.move_, caps.uidplus, m.after) {
        (_, true, _) => None,
        (false, false, After::Delete) => Some(format!("deleted messages, and the originals of {moved}")),
        (true, false, After::Delete) => Some("deleted messages".to_string()),
        (false, false, _) => Some(format!("the originals of {moved}")),
        (true, false, _) => None,
    };
    if !caps.move_ && caps.uidplus {
        detail.push_str(": moves are COPY, then \\Deleted and UID EXPUNGE of exactly those messages");
    }
    if let Some(left) = left {
        warnings.push((
            format!(
                "without UIDPLUS{}, {left} are only flagged \\Deleted in the watched folders, never expunged (a plain EXPUNGE would also remove what other clients flagged): they pile up",
                if caps.move_ { "" } else { " and MOVE" }
            ),
            "expunge those folders now and then (a mail client's Compact or Purge), or use a server with UIDPLUS".into(),
        ));
    }
    (detail, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Password, Secret, Server};

    fn mailbox(after: After) -> Mailbox {
        Mailbox {
            name: "support".into(),
            server: Server::Imap(imap()),
            user: "u".into(),
            auth: Auth::Password(Secret::Inline(Password::new("p"))),
            folders: vec!["INBOX".into()],
            after,
            move_to: (after == After::Move).then(|| "Done".into()),
            refused_folder: "Refused".into(),
            recipient_header: None,
            ca_file: None,
            poll_interval: Duration::from_secs(60),
            place: "mailbox support".into(),
        }
    }

    fn imap() -> Imap {
        Imap {
            host: "imap.example.com".into(),
            port: 993,
            tls: Tls::Implicit,
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
        }
    }

    fn caps(idle: bool, move_: bool, uidplus: bool) -> Capabilities {
        Capabilities { idle, move_, uidplus, ..Capabilities::default() }
    }

    #[test]
    fn a_missing_capability_is_a_warning_only_where_watch_needs_it() {
        let (detail, warnings) = capabilities(&caps(true, true, true), &mailbox(After::Delete), &imap());
        assert_eq!((detail.as_str(), warnings.len()), ("IDLE, MOVE, UIDPLUS", 0));

        let (detail, warnings) = capabilities(&caps(false, true, true), &mailbox(After::Seen), &imap());
        assert_eq!(detail, "MOVE, UIDPLUS; not IDLE");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].0.contains("every 60s (poll_interval)"), "{warnings:?}");

        // Moves without MOVE are exact with UIDPLUS; deletes need only UIDPLUS.
        let (detail, warnings) = capabilities(&caps(true, false, true), &mailbox(After::Move), &imap());
        assert!(detail.ends_with("moves are COPY, then \\Deleted and UID EXPUNGE of exactly those messages"));
        assert!(warnings.is_empty());
        let (_, warnings) = capabilities(&caps(true, true, false), &mailbox(After::Seen), &imap());
        assert!(warnings.is_empty(), "MOVE moves; seen deletes nothing: {warnings:?}");
        let (_, warnings) = capabilities(&caps(true, true, false), &mailbox(After::Delete), &imap());
        assert!(warnings[0].0.starts_with("without UIDPLUS, deleted messages are only flagged \\Deleted"));

        // Neither: every move and delete leaves the original behind.
        let (detail, warnings) = capabilities(&caps(false, false, false), &mailbox(After::Move), &imap());
        assert_eq!(detail, "none of IDLE, MOVE, UIDPLUS");
        assert_eq!(warnings.len(), 2);
        assert!(warnings[1].0.starts_with("without UIDPLUS and MOVE, the originals of delivered messages moved to \"Done\" and refused ones moved to \"Refused\""), "{warnings:?}");
        let (_, warnings) = capabilities(&caps(true, false, false), &mailbox(After::Seen), &imap());
        assert!(
            warnings[0].0.contains("the originals of refused messages moved to \"Refused\""),
            "{warnings:?}"
        );

        // More folders than connections: they share, and poll.
        let mut many = mailbox(After::Seen);
        many.folders = (0..12).map(|i| format!("f{i}")).collect();
        let (_, warnings) = capabilities(&caps(true, true, true), &many, &imap());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].0.starts_with("12 folders over at most 10 connections"), "{warnings:?}");
    }
}
