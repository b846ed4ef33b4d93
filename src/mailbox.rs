//! What a `[[mailbox]]` needs beyond its configuration, shared by `watch`
//! and `check`: the server it names, and the one place where the protocol
//! clients' errors (which know nothing of outcomes) become an [`Outcome`]:
//! a cause, the client's words, and the fix for that kind of failure.

use std::time::Duration;

use crate::config::{Mailbox, Tls};
use crate::imap::{Endpoint, ImapError, Security};
use crate::outcome::{Cause, Outcome};

/// The server of a `[[mailbox]]`, as `watch` and `check` reach it.
pub fn endpoint(mailbox: &Mailbox, timeout: Duration) -> Endpoint {
    let security = match mailbox.tls {
        Tls::Implicit => Security::Implicit,
        Tls::StartTls => Security::StartTls,
        Tls::None => Security::None,
    };
    Endpoint {
        host: mailbox.host.clone(),
        port: mailbox.port,
        security,
        ca_file: mailbox.ca_file.clone(),
        timeout,
    }
}

/// An IMAP failure as the outcome it is for a mailbox.
pub fn imap_failure(e: &ImapError) -> Outcome {
    Outcome::new(imap_cause(e), e.to_string()).with_fix(imap_fix(e))
}

fn imap_cause(e: &ImapError) -> Cause {
    match e {
        _ if e.code() == Some("LIMIT") => Cause::MailboxLimit,
        ImapError::Dns(_) => Cause::Dns,
        ImapError::Refused(_) => Cause::Refused,
        ImapError::Tls(_) | ImapError::Cleartext(_) => Cause::Tls,
        ImapError::Timeout(_) => Cause::Timeout,
        ImapError::Lost(_) => Cause::ConnectionLost,
        ImapError::LoginRefused { .. } => Cause::MailboxLogin,
        ImapError::No { .. } | ImapError::Bad { .. } | ImapError::Protocol(_) => Cause::MailboxFailed,
    }
}

/// What to do about it: the transport causes' own advice speaks of the
/// ingress, this of the IMAP server; a NO's response code (RFC 5530) says
/// more than its command.
pub fn imap_fix(e: &ImapError) -> &'static str {
    match e.code() {
        Some("LIMIT") => return Cause::MailboxLimit.advice().unwrap_or_default(),
        Some("OVERQUOTA") => {
            return "the mailbox (or the folder messages are moved to) is over its quota: make room or raise it; messages already delivered are moved or flagged once it works, never sent again"
        }
        Some("EXPUNGEISSUED") => {
            return "another client removed messages meanwhile; it is tried again"
        }
        Some("NONEXISTENT" | "TRYCREATE") => {
            return "a folder named in the [[mailbox]] (folders, move_to, refused_folder) does not exist: chatwoot-ingress check lists the folders"
        }
        Some("NOPERM") => {
            return "the account may not do this in that folder: check its rights (ACL) on the server"
        }
        Some("INUSE" | "UNAVAILABLE" | "SERVERBUG") => {
            return "the IMAP server is busy or failing; it is tried again (see its log if it goes on)"
        }
        // The login's codes (AUTHENTICATIONFAILED…) say what its kind says.
        _ => {}
    }
    match e {
        ImapError::Dns(_) => "check host in the [[mailbox]], and this machine's DNS",
        ImapError::Refused(_) => {
            "check host, port and tls of the [[mailbox]] (993 is implicit TLS, 143 plain or STARTTLS), and that no firewall is in between"
        }
        ImapError::Tls(_) => {
            "the IMAP server's certificate must be valid for host and issued by a CA this machine trusts (set ca_file in the [[mailbox]] for a private CA); check tls and port"
        }
        ImapError::Cleartext(_) => {
            "the password would cross the network in clear: use tls = \"implicit\" (port 993) or a server that offers STARTTLS; cleartext is only for a server on this machine"
        }
        ImapError::Timeout(_) => "the IMAP server stopped answering; it is tried again",
        ImapError::Lost(_) => {
            "the IMAP server closed the connection (a restart, an idle limit, a kick); it is tried again"
        }
        ImapError::LoginRefused { .. } => Cause::MailboxLogin.advice().unwrap_or_default(),
        ImapError::No { .. } | ImapError::Bad { .. } | ImapError::Protocol(_) => {
            Cause::MailboxFailed.advice().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(code: &str) -> ImapError {
        ImapError::No { command: "UID MOVE".into(), code: Some(code.into()), text: "x".into() }
    }

    #[test]
    fn each_kind_gets_its_own_fix_not_another_kinds() {
        assert!(imap_fix(&no("OVERQUOTA")).contains("quota"));
        assert!(!imap_fix(&no("OVERQUOTA")).contains("folder names"));
        assert!(imap_fix(&no("EXPUNGEISSUED")).contains("another client"));
        let limit = ImapError::LoginRefused { code: Some("LIMIT".into()), text: "too many".into() };
        assert_eq!(imap_failure(&limit).cause, Cause::MailboxLimit);
        assert!(imap_fix(&limit).contains("max_connections"), "{}", imap_fix(&limit));
        assert!(!imap_fix(&limit).contains("password"));
        let cleartext = ImapError::Cleartext("no STARTTLS".into());
        assert!(!imap_fix(&cleartext).contains("certificate"), "{}", imap_fix(&cleartext));
        let login = ImapError::LoginRefused { code: Some("AUTHENTICATIONFAILED".into()), text: "no".into() };
        assert_eq!(imap_failure(&login).cause, Cause::MailboxLogin);
        for (e, cause) in [
            (ImapError::Tls("certificate".into()), Cause::Tls),
            (ImapError::Dns("x".into()), Cause::Dns),
            (ImapError::Refused("x".into()), Cause::Refused),
            (ImapError::Lost("x".into()), Cause::ConnectionLost),
            (ImapError::Timeout("x".into()), Cause::Timeout),
        ] {
            assert_eq!(imap_failure(&e).cause, cause, "{e:?}");
        }
    }
}
