//! The command line. Doc comments here are the `--help` text and the man page.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{error::ErrorKind, Args, Parser, Subcommand, ValueEnum};

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
    Check(crate::check::CheckArgs),
    /// Relay mbox files, Maildir folders and .eml files in bulk: concurrent,
    /// resumable, with progress and a summary
    Import(crate::import::ImportArgs),
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
    /// CHATWOOT_INGRESS_URL, URL]
    #[arg(long, value_name = "URL", global = true)]
    pub url: Option<String>,

    /// File whose first line is the ingress password (there is no --password:
    /// command lines are visible to every user). The environment may instead
    /// carry the password itself: CHATWOOT_INGRESS_PASSWORD or
    /// INGRESS_PASSWORD
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,

    /// Give up after this many seconds in all, retries included [default: 30]
    #[arg(long, value_name = "SECONDS", global = true)]
    pub timeout: Option<u64>,

    /// Refuse larger messages permanently (bytes; K, M, G suffixes are
    /// binary) [default: 64M]
    #[arg(long, value_name = "SIZE", global = true)]
    pub max_size: Option<String>,

    /// Trust this PEM certificate authority in addition to the system's
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Keep a copy of every permanently refused message here (fsync'd, with
    /// its reason beside it)
    #[arg(long, value_name = "DIR", global = true)]
    pub reject_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Args)]
pub struct DeliverArgs {
    /// The program that runs this one; it decides the exit codes (and, for
    /// check, which user's access to test)
    #[arg(long, value_enum, value_name = "NAME", default_value_t = Mta::Sysexits, global = true)]
    pub mta: Mta,

    /// The envelope recipient; added as X-Original-To when the message has
    /// none, so Chatwoot can route mail that reached the inbox by BCC or
    /// forwarding
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
    pub recipient: Option<String>,

    /// Check the message and show what would be sent; send nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Also report success on stdout, as a line beginning with 2.0.0
    #[arg(short, long)]
    pub verbose: bool,
}

/// What to do when the command line is not one to run.
pub enum Early {
    /// --help or --version: print it and exit 0.
    Print(clap::Error),
    /// A bad command line: the caller must keep the message, so it is a
    /// temporary outcome in the caller's own exit codes, never clap's 2.
    Usage(Mta, Outcome),
}

impl Early {
    pub fn exit(self) -> ExitCode {
        match self {
            Early::Print(help) => {
                let _ = help.print();
                ExitCode::SUCCESS
            }
            Early::Usage(mta, outcome) => outcome.report(mta, false, &[]),
        }
    }
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
        Cli::try_parse_from(&args).map_err(|error| match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Early::Print(error),
            _ => {
                // clap's first paragraph, e.g. "required arguments were not
                // provided:" and the next line naming them, on one line.
                let text = error.to_string();
                let paragraph = text.split("\n\n").next().unwrap_or("").trim_start_matches("error: ");
                let first_line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
                let outcome = Outcome::new(
                    Cause::Usage,
                    format!("bad command line: {first_line} (see chatwoot-ingress --help)"),
                );
                Early::Usage(mta_named_in(&args), outcome)
            }
        })
    }
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
}
