//! The command line: argument structs only. Doc comments here are the
//! `--help` text and the man pages.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{error::ErrorKind, Args, Parser, Subcommand, ValueEnum};

use crate::config::Overrides;
use crate::metrics::probe::DEFAULT_LISTEN;
use crate::outcome::{Cause, Mta, Outcome};

/// Relay an email from your mail server to Chatwoot's Action Mailbox relay ingress.
///
/// Reads one raw RFC 822 message on standard input, checks that it is an email,
/// and POSTs it byte for byte to
/// <URL>/rails/action_mailbox/relay/inbound_emails. The exit code and a status
/// line that begins with an RFC 3463 code tell the caller: delivered, try again
/// later, or never retry.
#[derive(Debug, Parser)]
#[command(name = "chatwoot-ingress", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: ConfigArgs,

    #[command(flatten)]
    pub deliver: DeliverArgs,
}

/// Commands other than delivery (one message from standard input), the default.
#[derive(Debug, Subcommand)]
pub enum Command {
    // No doc comment: CheckArgs' own is the help text.
    Check(CheckArgs),
    /// Relay mbox files, Maildir folders and .eml files in bulk: concurrent,
    /// resumable, with progress and a summary
    Import(ImportArgs),
    // No doc comment: WatchArgs' own is the help text.
    Watch(WatchArgs),
    /// OAuth2 for [[mailbox]] tables: sign in once, so that watch logs in
    /// with tokens from then on
    Oauth2(Oauth2Args),
    // No doc comment: HealthArgs' own is the help text.
    Health(HealthArgs),
}

/// Where the ingress is and how to reach it; every option overrides the
/// environment and the configuration file. Global, so that every command
/// reads the same configuration.
#[derive(Debug, Default, Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then
    /// the user config dir, then /etc/chatwoot-ingress/config.toml]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Chatwoot's base URL, or the full relay ingress URL [env:
    /// CHATWOOT_INGRESS_URL above the file; URL, the rake task's name, below it]
    #[arg(long, value_name = "URL", global = true)]
    pub url: Option<String>,

    /// File whose first line is the ingress password (there is no --password:
    /// command lines are visible to every user). The environment may instead
    /// carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file),
    /// or INGRESS_PASSWORD (below it)
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,

    /// Give up after this many seconds in all, retries included [default: 30]
    #[arg(long, value_name = "SECONDS", global = true)]
    pub timeout: Option<u64>,

    /// Refuse larger messages permanently (bytes; K, M, G suffixes are
    /// binary) [default: 64M]
    #[arg(long, value_name = "SIZE", global = true)]
    pub max_size: Option<String>,

    /// Trust the PEM certificates in this file in addition to the system's:
    /// as authorities, or as the server's own (self-signed) certificate
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Keep a copy of every permanently refused message here (fsync'd, with
    /// its reason beside it)
    #[arg(long, value_name = "DIR", global = true)]
    pub reject_dir: Option<PathBuf>,

    /// Take the envelope recipient from the topmost (newest) instance of
    /// this header, e.g. Delivered-To, when no --recipient is given: for
    /// catch-all mailboxes fetched by getmail, fetchmail or import
    #[arg(long, value_name = "NAME", global = true)]
    pub recipient_header: Option<String>,
}

impl From<&ConfigArgs> for Overrides {
    fn from(args: &ConfigArgs) -> Overrides {
        Overrides {
            config: args.config.clone(),
            url: args.url.clone(),
            password_file: args.password_file.clone(),
            timeout: args.timeout,
            max_size: args.max_size.clone(),
            ca_file: args.ca_file.clone(),
            reject_dir: args.reject_dir.clone(),
            recipient_header: args.recipient_header.clone(),
        }
    }
}

#[derive(Debug, Default, Args)]
pub struct DeliverArgs {
    /// The program that runs this one; it decides the exit codes (for check:
    /// which user's access to test and which of its limits to check)
    #[arg(long, value_enum, value_name = "NAME", default_value_t = Mta::Sysexits, global = true)]
    pub mta: Mta,

    /// The envelope recipient: the message is given exactly one
    /// X-Original-To, this address, so Chatwoot can route mail that reached
    /// the inbox by BCC or forwarding (earlier ones are kept as
    /// X-Previous-Original-To)
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
    pub recipient: Option<String>,

    /// Check the message and show what would be sent; send nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Also report success on stdout, as a line beginning with 2.0.0, and
    /// where the URL and the password came from
    #[arg(short, long)]
    pub verbose: bool,
}

/// Check the setup step by step and say what to fix; deliver nothing
///
/// Checks the configuration (and where each value came from), DNS, TCP, TLS
/// and the relay ingress itself, and prints one line per step: ✓ right, ! a
/// warning, ✗ wrong (with the fix). Through a proxy from HTTPS_PROXY, DNS and
/// TCP are the proxy's. The ingress is probed with the password and an empty
/// text/plain body, which Chatwoot answers with 415 exactly when the URL, its
/// ingress mode and the password are right, and stores nothing; any other
/// answer is ✗. Every [[route]] is checked the same way, and every [[mailbox]]
/// too: DNS, TCP, TLS, the login, IDLE/MOVE/UIDPLUS, the folders, and how many
/// messages watch would take; nothing on the IMAP server is created or
/// flagged. With --mta, the check is made for that caller: the access of
/// the user it runs us as (see --user), whether values from the environment
/// reach us (Postfix, Exim and OpenSMTPD pass almost none), and its own limits
/// (Postfix's command_time_limit). Exits 0 when no step is ✗ (warnings do not
/// fail the check), 1 otherwise.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also check that this user can read the configuration file, the
    /// password file and ca_file, and run this program [default with any
    /// --mta but sysexits: chatwoot-ingress, the account our packaged caller
    /// configs run it as]
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Print the steps as one JSON document, for scripts and monitoring (the
    /// password is never included)
    #[arg(long)]
    pub json: bool,

    /// Also find whether a proxy in front of Chatwoot refuses messages of
    /// max_size: after a right probe, a text/plain body of exactly that size
    /// is sent, which the ingress refuses (415) without storing it if it gets
    /// through, and a proxy's lower limit answers 413
    #[arg(long)]
    pub size_limit: bool,

    /// When every step is right, also deliver a generated test message to
    /// ADDR, an address that reaches a Chatwoot inbox, to prove routing end
    /// to end. Unlike the probe, it is stored: it appears in the inbox
    #[arg(long, value_name = "ADDR")]
    pub send_test: Option<String>,

    /// Also check Chatwoot's side from its environment: FILE is Chatwoot's
    /// .env, KEY=value lines exported from its Kubernetes Secret, or a
    /// process's /proc/PID/environ. ✗ when RAILS_INBOUND_EMAIL_SERVICE is not
    /// relay (the relay ingress answers 404), MAILER_INBOUND_EMAIL_DOMAIN is
    /// unset (addresses end in @false) or RAILS_INBOUND_EMAIL_PASSWORD is not
    /// ours (neither is printed); it also compares FRONTEND_URL with our url,
    /// and warns that Google ends the refresh tokens of a consent screen left
    /// in Testing after 7 days
    #[arg(long, value_name = "FILE")]
    pub chatwoot_env: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Import options")]
pub struct ImportArgs {
    /// mbox files, Maildir folders (they have new/ and cur/; tmp/ is never
    /// read), .eml files and folders of .eml files; - reads an mbox on
    /// standard input. Whatever else a folder holds (other files, hidden
    /// files, symbolic links, which are not followed, folders, MH folders) is
    /// named on stderr as skipped, with why
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Requests in flight at once, over one pool of keep-alive connections
    #[arg(short, long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// The record of what was delivered, and of what was refused and saved
    /// in the reject folder (the SHA-256 of the bytes, one per line):
    /// messages in it are skipped, so running the same command again after a
    /// failure, a crash or Ctrl-C delivers only the rest, and saves no
    /// refusal twice. Delete it to send everything again [default: one per ingress URL
    /// in $XDG_STATE_HOME/chatwoot-ingress/, else
    /// ~/.local/state/chatwoot-ingress/, named HOST-HASH.journal]
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,

    /// Read mbox files as mboxo: unquote only ">From " lines. The default,
    /// mboxrd, turns ">From " into "From " and ">>From " into ">From "
    #[arg(long)]
    pub mboxo: bool,

    /// Maildir: move each delivered message to cur/ and flag it seen (S),
    /// so that new/ holds only mail still to import
    #[arg(long)]
    pub mark_seen: bool,

    /// Maildir: also import the Maildir++ subfolders (.Sent/, .Archive/…),
    /// which are otherwise skipped and named
    #[arg(long)]
    pub subfolders: bool,

    /// The envelope recipient of every message: each gets exactly one
    /// X-Original-To, this address
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
    pub recipient: Option<String>,

    /// Read, split and check everything and say on stderr what would be
    /// sent, and what refused; send nothing, write no journal, save no
    /// refusal and mark nothing seen. The journal is read: what it holds is
    /// skipped, as a real run would
    #[arg(long)]
    pub dry_run: bool,
}

/// Fetch mail from IMAP mailboxes and relay it, as a service
///
/// Watches the folders of every [[mailbox]] in the configuration file (IDLE
/// where the server offers it, polling otherwise) and hands each message to
/// the ingress. A message is flagged \Seen, moved or deleted on the server
/// (as `after` says) only after the ingress answered 2xx for it; a message
/// refused for good goes to `refused_folder`; one that fails for now stays
/// untouched and is tried again with backoff. Mailboxes log in with a
/// password, or with OAuth2 access tokens (auth = "xoauth2" or
/// "oauthbearer", and [mailbox.oauth2]; a user signs in once with
/// chatwoot-ingress oauth2 authorize). Its place in each folder is
/// kept in the state directory. SIGTERM or SIGINT: the message in flight is
/// finished, the sessions log out, exit 0. SIGHUP: the configuration is read
/// again. Under systemd (Type=notify) it reports readiness, status and
/// watchdog pings.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Deliver what is waiting now, then exit: 0 when nothing is left for
    /// later, 75 when something is (for cron)
    #[arg(long)]
    pub once: bool,

    /// Watch only this mailbox (its `name`); may be given more than once
    #[arg(long, value_name = "NAME")]
    pub mailbox: Vec<String>,

    /// Cluster mode ([cluster]): print the replicas and the mailboxes each
    /// holds, from Redis, and exit: 0 when every mailbox is held, 1 when
    /// some is not, 75 when Redis cannot be asked
    #[arg(long, conflicts_with = "once")]
    pub status: bool,

    /// How each line of the log is written: text, or one JSON object per
    /// line (time, level, event, mailbox, folder, uid, message_id, bytes,
    /// status, ms, error, fix, message) for container log pipelines
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<crate::log::Format>,

    /// Serve Prometheus metrics (GET /metrics) and health (GET
    /// /healthz/live, /healthz/ready) over plain HTTP on this address, e.g.
    /// 127.0.0.1:9898. An address that is not loopback is refused unless
    /// [metrics] says allow_remote = true
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Ask a running watch whether it is alive, for a container's HEALTHCHECK
///
/// GETs /healthz/live from the metrics server of watch (see watch
/// --metrics-listen) over plain HTTP, with a deadline of 5 seconds, and
/// prints one line. Exits 0 when it answers 200: every folder's worker came
/// back to its loop within its own deadline. Exits 1 otherwise, naming the
/// stuck mailbox when watch did (Docker's convention: 0 healthy, 1
/// unhealthy). Needs no shell and no curl.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The address watch serves its metrics on, as given to watch
    /// --metrics-listen; one on every address (0.0.0.0, [::]) is asked on
    /// loopback
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// Ask this http:// URL instead, e.g.
    /// http://127.0.0.1:9898/healthz/ready for readiness
    #[arg(long, value_name = "URL", conflicts_with = "metrics_listen")]
    pub metrics_url: Option<url::Url>,
}

#[derive(Debug, Args)]
pub struct Oauth2Args {
    #[command(subcommand)]
    pub command: Oauth2Command,
}

#[derive(Debug, Subcommand)]
pub enum Oauth2Command {
    // No doc comment: AuthorizeArgs' own is the help text.
    Authorize(AuthorizeArgs),
}

/// Sign in as a mailbox's user and write its refresh_token_file
///
/// For a [[mailbox]] with auth = "xoauth2" or "oauthbearer" whose
/// [mailbox.oauth2] table names a refresh_token_file. Where the provider
/// has a device-code flow (Microsoft), prints an address and a code to enter
/// in a browser on any device; otherwise (Google), prints an address to open
/// in a browser, which is then sent back to a port on this machine's
/// loopback (with a browser on another machine, paste the address it fails
/// to load). Then writes the refresh token to refresh_token_file,
/// atomically and with mode 0600 (a new file written by root goes to the
/// owner of its directory). The tokens are never shown. Run it as the user
/// watch runs as (sudo -u chatwoot-ingress), or as root.
#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// The mailbox: its `name` in the configuration file
    #[arg(long, value_name = "NAME")]
    pub mailbox: String,
}

/// What to do when the command line is not one to run.
pub enum Early {
    /// --help or --version: print it and exit 0.
    Print(clap::Error),
    /// A bad command line: the caller must keep the message, so it is a
    /// temporary outcome in the caller's own exit codes, never clap's 2.
    Usage(Mta, Outcome),
}

impl Cli {
    /// Parse like clap, but turn every error into an outcome the caller
    /// understands, using whatever `--mta` the command line names.
    pub fn parse_for_mail<I, T>(args: I) -> Result<Cli, Early>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let cli = Cli::try_parse_from(&args).map_err(|error| match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Early::Print(error),
            _ => {
                // clap's first paragraph, e.g. "required arguments were not
                // provided:" and the next line naming them, on one line.
                let text = error.to_string();
                let paragraph = text.split("\n\n").next().unwrap_or("").trim_start_matches("error: ");
                let first_line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
                Early::Usage(mta_named_in(&args), usage(format!("bad command line: {first_line}")))
            }
        })?;
        // Delivery's own flags mean nothing to another command, and would be
        // silently ignored by it (`--dry-run import` would send everything).
        if let Some(command) = &cli.command {
            let d = &cli.deliver;
            let stray =
                [("--dry-run", d.dry_run), ("--recipient", d.recipient.is_some()), ("--verbose", d.verbose)];
            if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                let name = command.name();
                return Err(Early::Usage(
                    cli.deliver.mta,
                    usage(format!(
                        "bad command line: {flag} before `{name}` belongs to delivery; put the {name} options after `{name}`"
                    )),
                ));
            }
        }
        Ok(cli)
    }
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Check(_) => "check",
            Command::Import(_) => "import",
            Command::Watch(_) => "watch",
            Command::Oauth2(_) => "oauth2",
            Command::Health(_) => "health",
        }
    }
}

fn usage(reason: String) -> Outcome {
    Outcome::new(Cause::Usage, reason)
}

/// The `--mta` of a command line that clap could not parse, if it is readable.
fn mta_named_in(args: &[OsString]) -> Mta {
    let mut args = args.iter().filter_map(|arg| arg.to_str());
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--mta") {
            Some("") => args.next(),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(mta) = value.and_then(|v| Mta::from_str(v, true).ok()) {
            return mta;
        }
    }
    Mta::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(args: &[&str]) -> (Mta, Outcome) {
        match Cli::parse_for_mail(args.iter().copied()) {
            Err(Early::Usage(mta, outcome)) => (mta, outcome),
            _ => panic!("{args:?} should be a usage error"),
        }
    }

    #[test]
    fn bad_flags_are_temporary_in_the_callers_own_codes() {
        let (mta, outcome) = usage(&["ci", "--mta", "qmail", "--bogus"]);
        assert_eq!(mta, Mta::Qmail);
        assert_eq!(outcome.exit_code(mta), 111);
        assert!(outcome.to_string().starts_with("4.3.5 bad command line: unexpected argument '--bogus'"));
        let (mta, _) = usage(&["ci", "--timeout", "soon", "--mta=postfix"]);
        assert_eq!(mta, Mta::Postfix);
        let (mta, outcome) = usage(&["ci", "--mta", "postfx"]);
        assert_eq!((mta, outcome.exit_code(mta)), (Mta::Sysexits, 75));
    }

    #[test]
    fn help_is_printed_not_reported() {
        assert!(matches!(Cli::parse_for_mail(["ci", "--help"]), Err(Early::Print(_))));
    }

    #[test]
    fn a_missing_argument_is_named() {
        let (_, outcome) = usage(&["ci", "import"]);
        assert!(outcome.reason().contains("not provided: <PATH>..."), "{outcome}");
    }

    #[test]
    fn delivery_flags_before_a_command_are_refused() {
        for flag in ["--dry-run", "-v", "--recipient=a@b"] {
            let (mta, outcome) = usage(&["ci", "--mta", "exim", flag, "import", "box.mbox"]);
            assert_eq!((mta, outcome.exit_code(mta)), (Mta::Exim, 75));
            assert!(outcome.reason().contains("belongs to delivery"), "{outcome}");
        }
        let cli = Cli::parse_for_mail(["ci", "import", "--dry-run", "box.mbox"]).ok().unwrap();
        assert!(matches!(cli.command, Some(Command::Import(ImportArgs { dry_run: true, .. }))));
    }

    #[test]
    fn metrics_addresses_are_socket_addresses() {
        let cli = Cli::parse_for_mail(["ci", "watch", "--metrics-listen", "[::]:9898"]).ok().unwrap();
        let Some(Command::Watch(watch)) = cli.command else { panic!("not watch") };
        assert_eq!(watch.metrics_listen, Some("[::]:9898".parse().unwrap()));
        let (_, outcome) = usage(&["ci", "watch", "--metrics-listen", "localhost:9898"]);
        assert!(outcome.reason().contains("--metrics-listen"), "{outcome}");
        let cli = Cli::parse_for_mail(["ci", "health"]).ok().unwrap();
        let Some(Command::Health(health)) = cli.command else { panic!("not health") };
        assert_eq!((health.metrics_listen, health.metrics_url), (DEFAULT_LISTEN, None));
        let (_, outcome) =
            usage(&["ci", "health", "--metrics-listen", "0.0.0.0:1", "--metrics-url", "http://a/"]);
        assert!(outcome.reason().contains("cannot be used with"), "{outcome}");
    }
}
