//! Man pages and shell completions, generated from the clap definition and
//! from the constants the program itself reads (environment variable names,
//! file locations, defaults, the exit table), so that none of them restates
//! the code by hand. `tests/it/docs.rs` keeps the checked-in copies current;
//! the program itself does not carry this code (nor clap_mangen).

use std::io::Write;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use chatwoot_ingress::cli::Cli;
use chatwoot_ingress::config::{
    DEFAULT_MAX_SIZE, DEFAULT_TIMEOUT, ENV_CONFIG, ENV_PASSWORD, ENV_URL, RAKE_PASSWORD, RAKE_URL,
    RELAY_PATH, SYSTEM_CONFIG,
};
use chatwoot_ingress::outcome::{exit_rows, EXIT_COLUMNS};

/// The program's name, as installed.
pub const BIN: &str = "chatwoot-ingress";

/// Where the Debian and RPM packages put the caller configs of packaging/.
pub const EXAMPLES_DIR: &str = "/usr/share/doc/chatwoot-ingress/examples";

/// Whether `key` of [`config_keys`] is a table: its sample is `[[key]]` (an
/// array of tables) or `[key]` (a table in one), not a list value.
pub fn is_table(key: &str, sample: &str) -> bool {
    sample.trim_start_matches('[').trim_end_matches(']') == key
}

/// Every key of the configuration file, with a sample value and what it does.
/// A test checks this list against the keys the parser accepts.
pub fn config_keys() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "url",
            "\"https://chatwoot.example.com\"",
            format!(
                "Chatwoot's base URL (then {RELAY_PATH} is appended), or the full relay ingress URL. \
                 http:// or https://, without a user or password."
            ),
        ),
        (
            "password",
            "\"...\"",
            "The ingress password (Chatwoot's RAILS_INBOUND_EMAIL_PASSWORD). Prefer password_file; \
             a file that holds the password must not be readable by every user (a warning says so)."
                .into(),
        ),
        (
            "password_file",
            "\"/etc/chatwoot-ingress/password\"",
            "File whose first line is the ingress password. Not together with password.".into(),
        ),
        (
            "timeout",
            "30",
            format!(
                "Give up after this many seconds in all, retries included (1 to 3600; default {}).",
                DEFAULT_TIMEOUT.as_secs()
            ),
        ),
        (
            "max_size",
            "\"64M\"",
            format!(
                "Refuse larger messages permanently: a number of bytes, or a string with a K, M or G \
                 suffix (binary; default {}M).",
                DEFAULT_MAX_SIZE >> 20
            ),
        ),
        (
            "ca_file",
            "\"/etc/chatwoot-ingress/ca.pem\"",
            "A PEM certificate authority to trust in addition to the system's.".into(),
        ),
        (
            "reject_dir",
            "\"/var/lib/chatwoot-ingress/rejected\"",
            "Keep a copy of every permanently refused message here, with its reason beside it. \
             It must be writable by the user the mail system runs chatwoot-ingress as."
                .into(),
        ),
        (
            "recipient_header",
            "\"Delivered-To\"",
            "Take the envelope recipient from the topmost (newest) instance of this header when \
             the caller gives none (--recipient wins): for a catch-all mailbox fetched by getmail, \
             fetchmail or import, where only the header tells which address a message was for."
                .into(),
        ),
        (
            "state_dir",
            "\"/var/lib/chatwoot-ingress\"",
            "Where watch keeps its place in each folder (in watch/ below it) [default: systemd's \
             $STATE_DIRECTORY, else the user's state directory, else /var/lib/chatwoot-ingress]."
                .into(),
        ),
        (
            "route",
            "[[route]]",
            "Another Chatwoot instance for some recipient domains (a host serving production and \
             staging, or several customers). The recipient's domain selects the route whose \
             domains match it best (an exact name beats a wildcard); the top-level url and \
             password take everything else. A recipient that no route covers when there is no \
             top-level url defers the message (4.3.5) with a reason that names the domain. \
             Repeat the table for each instance."
                .into(),
        ),
        (
            "route.domains",
            "[\"support.example.org\", \"*.example.net\"]",
            "Exact domain names, or *. and a domain for every name below it (not the domain itself).".into(),
        ),
        ("route.url", "\"https://chatwoot.example.org\"", "That instance's URL, as url.".into()),
        ("route.password", "\"...\"", "That instance's ingress password, as password.".into()),
        (
            "route.password_file",
            "\"/etc/chatwoot-ingress/password-example-org\"",
            "Or a file whose first line is it, as password_file.".into(),
        ),
        (
            "mailbox",
            "[[mailbox]]",
            "An IMAP mailbox that watch fetches from (repeat the table for each). Each message is \
             delivered through the same steps as any other; it is flagged, moved or deleted on the \
             server only after the ingress answered 2xx for it."
                .into(),
        ),
        ("mailbox.name", "\"support\"", "Its name, in logs, the state directory and --mailbox.".into()),
        ("mailbox.host", "\"imap.example.com\"", "The IMAP server.".into()),
        ("mailbox.port", "993", "Its port [default: 993 with tls = implicit, else 143].".into()),
        (
            "mailbox.tls",
            "\"implicit\"",
            "implicit (TLS from the start, the default), starttls (never falls back to cleartext), or \
             none (only for a server on this machine). Certificates are verified."
                .into(),
        ),
        ("mailbox.user", "\"catchall@example.com\"", "The login name.".into()),
        ("mailbox.password", "\"...\"", "The login password; prefer password_file.".into()),
        (
            "mailbox.password_file",
            "\"/etc/chatwoot-ingress/imap-support\"",
            "A file whose first line is the password, read again at each login: fixing it needs no restart."
                .into(),
        ),
        ("mailbox.folders", "[\"INBOX\"]", "The folders to fetch from [default: INBOX].".into()),
        (
            "mailbox.after",
            "\"seen\"",
            "What to do with a message once the ingress answered 2xx: seen (flag it \\Seen, the \
             default), move (to move_to) or delete (UID EXPUNGE of that message only)."
                .into(),
        ),
        (
            "mailbox.move_to",
            "\"Delivered\"",
            "Where after = \"move\" puts messages; created if missing.".into(),
        ),
        (
            "mailbox.refused_folder",
            "\"Refused\"",
            "Where messages refused for good (not an email, larger than max_size) go, never to be \
             fetched again; created if missing [default: Refused]."
                .into(),
        ),
        (
            "mailbox.recipient_header",
            "\"Delivered-To\"",
            "As recipient_header, for this mailbox (a catch-all's envelope recipient).".into(),
        ),
        (
            "mailbox.ca_file",
            "\"/etc/chatwoot-ingress/imap-ca.pem\"",
            "As ca_file, for this IMAP server.".into(),
        ),
        (
            "mailbox.poll_interval",
            "60",
            "Seconds between looks for new mail on a server without IDLE (5 to 3600) [default: 60].".into(),
        ),
        (
            "mailbox.auth",
            "\"password\"",
            "How to log in: password (with password or password_file, the default), or xoauth2 or \
             oauthbearer (SASL with an OAuth2 access token from the [mailbox.oauth2] table, for \
             Microsoft 365 and Gmail, which take either)."
                .into(),
        ),
        (
            "mailbox.oauth2",
            "[mailbox.oauth2]",
            "Where the access tokens of a mailbox with auth = xoauth2 or oauthbearer come from: \
             token_command; else a user's refresh token in refresh_token_file (written by \
             chatwoot-ingress oauth2 authorize); else the application's own access (client \
             credentials, with client_secret_file: Microsoft 365 app-only, which shared mailboxes \
             allow). A token is shared by the mailbox's folders and renewed before it expires; one \
             the server no longer takes is replaced at the next login. A provider's refusal is logged \
             with what to do, and asked again with backoff."
                .into(),
        ),
        (
            "mailbox.oauth2.provider",
            "\"microsoft\"",
            "microsoft or google: fills in token_url, scope, device_authorization_url and \
             authorization_url (Google has no client credentials for Gmail)."
                .into(),
        ),
        (
            "mailbox.oauth2.tenant",
            "\"contoso.onmicrosoft.com\"",
            "Microsoft: the Directory (tenant) ID, or a domain, of the app registration; needed for \
             client credentials [default for a user's sign-in: common]."
                .into(),
        ),
        (
            "mailbox.oauth2.client_id",
            "\"00000000-0000-0000-0000-000000000000\"",
            "The application (client) ID the provider gave the app registration or OAuth client.".into(),
        ),
        (
            "mailbox.oauth2.client_secret_file",
            "\"/etc/chatwoot-ingress/oauth2-support.secret\"",
            "A file whose first line is the client secret (its value), read again at each token request: \
             fixing it needs no restart. Needed for client credentials; with a refresh token, when the \
             client has a secret (Google's do)."
                .into(),
        ),
        (
            "mailbox.oauth2.refresh_token_file",
            "\"/var/lib/chatwoot-ingress/support.refresh-token\"",
            "A file whose first line is the user's refresh token. chatwoot-ingress oauth2 authorize \
             writes it; watch replaces it when the provider sends a new one (atomically, mode 0600), so \
             its directory must be writable by the user watch runs as (the state directory is)."
                .into(),
        ),
        (
            "mailbox.oauth2.token_command",
            "[\"/usr/local/bin/imap-token\", \"support\"]",
            "A program and its arguments (no shell) that prints an access token on its first line, or a \
             JSON object with access_token (and expires_in, which lets the token be reused). Run for a \
             login, without input, within 30 seconds, with PATH, HOME, USER, LOGNAME, LANG, LC_ALL and \
             TZ from the environment and CHATWOOT_INGRESS_MAILBOX and CHATWOOT_INGRESS_USER set; what \
             it writes on standard error is not shown. Not together with the other keys."
                .into(),
        ),
        (
            "mailbox.oauth2.token_url",
            "\"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token\"",
            "The token endpoint [default: the provider's]: https://, or http:// to this machine only.".into(),
        ),
        (
            "mailbox.oauth2.scope",
            "\"https://outlook.office365.com/.default\"",
            "The scopes to ask for, separated by spaces [default: with provider = microsoft, \
             https://outlook.office365.com/.default for client credentials, else \
             https://outlook.office.com/IMAP.AccessAsUser.All offline_access; with google, \
             https://mail.google.com/]."
                .into(),
        ),
        (
            "mailbox.oauth2.device_authorization_url",
            "\"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode\"",
            "For oauth2 authorize: the device authorization endpoint, whose code is entered in a browser \
             on any device [default: Microsoft's]."
                .into(),
        ),
        (
            "mailbox.oauth2.authorization_url",
            "\"https://accounts.google.com/o/oauth2/v2/auth\"",
            "For oauth2 authorize, when there is no device authorization endpoint: the authorization \
             endpoint of a browser's sign-in, sent back to this machine [default: Google's]."
                .into(),
        ),
    ]
}

/// Every man page, as (file name, roff): the program's, then one for each
/// subcommand (chatwoot-ingress-check.1, ...), found by walking the clap
/// definition, so new subcommands get a page without touching this file.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    pages_for(Cli::command())
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut buf);
    buf
}

/// The completion scripts as (file name, script), named as the shells look them up.
pub fn completion_files() -> Vec<(String, Vec<u8>)> {
    [
        (Shell::Bash, format!("{BIN}.bash")),
        (Shell::Zsh, format!("_{BIN}")),
        (Shell::Fish, format!("{BIN}.fish")),
    ]
    .into_iter()
    .map(|(shell, name)| (name, completions(shell)))
    .collect()
}

fn pages_for(root: Command) -> Vec<(String, Vec<u8>)> {
    // `help` as a subcommand is not worth a page of its own.
    let mut root = root.disable_help_subcommand(true);
    root.build();
    let mut subcommands = Vec::new();
    collect_subcommands(&root, &mut subcommands);
    let see_also: Vec<String> = subcommands.iter().map(page_name).collect();

    let mut pages = vec![(file_name(&root), root_page(&root, &see_also))];
    for sub in &subcommands {
        pages.push((file_name(sub), subcommand_page(sub, &root)));
    }
    pages
}

fn collect_subcommands(cmd: &Command, into: &mut Vec<Command>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        into.push(sub.clone());
        collect_subcommands(sub, into);
    }
}

/// chatwoot-ingress, or chatwoot-ingress-check for a subcommand (clap sets
/// the display name when the root is built).
fn page_name(cmd: &Command) -> String {
    cmd.get_display_name().unwrap_or(cmd.get_name()).to_string()
}

fn file_name(cmd: &Command) -> String {
    format!("{}.1", page_name(cmd))
}

/// The page of `cmd`, whose footer names `root` and its version (subcommands have none of their own).
fn man(cmd: &Command, root: &Command) -> Man {
    let source = format!("{} {}", root.get_name(), root.get_version().unwrap_or_default());
    // No date: the page must not change unless the program does.
    Man::new(cmd.clone())
        .title(page_name(cmd).to_uppercase())
        .source(source.trim_end())
        .manual("User Commands")
}

/// What `Roff::to_writer` puts before the first line, which must appear
/// only once in a page assembled from several renderings.
fn preamble() -> Vec<u8> {
    let mut buf = Vec::new();
    Roff::new().to_writer(&mut buf).expect("writing to a Vec");
    buf
}

/// Assembles a page from clap_mangen's sections and our own.
struct Page {
    out: Vec<u8>,
    preamble: Vec<u8>,
}

impl Page {
    fn new(man: &Man) -> Page {
        let mut out = Vec::new();
        man.render_title(&mut out).expect("writing to a Vec");
        Page { out, preamble: preamble() }
    }

    fn add(&mut self, render: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
        let mut buf = Vec::new();
        render(&mut buf).expect("writing to a Vec");
        let body = buf.strip_prefix(self.preamble.as_slice()).unwrap_or(&buf);
        self.out.extend_from_slice(body);
    }

    fn roff(&mut self, roff: &Roff) {
        self.add(|w| roff.to_writer(w));
    }
}

/// The sections clap_mangen renders from the command itself.
fn clap_sections(page: &mut Page, man: &Man, cmd: &Command) {
    page.add(|w| man.render_name_section(w));
    page.add(|w| man.render_synopsis_section(w));
    page.add(|w| man.render_description_section(w));
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        page.add(|w| man.render_options_section(w));
    }
    if cmd.has_subcommands() {
        page.add(|w| man.render_subcommands_section(w));
    }
}

fn root_page(cmd: &Command, see_also: &[String]) -> Vec<u8> {
    let man = man(cmd, cmd);
    let mut page = Page::new(&man);
    clap_sections(&mut page, &man, cmd);
    page.roff(&environment());
    page.roff(&configuration_file());
    page.roff(&files());
    page.roff(&exit_status());
    page.roff(&examples());
    page.roff(&see_also_section(see_also));
    page.add(|w| man.render_version_section(w));
    page.out
}

fn subcommand_page(cmd: &Command, root: &Command) -> Vec<u8> {
    let man = man(cmd, root);
    let mut page = Page::new(&man);
    clap_sections(&mut page, &man, cmd);
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]).text([
        bold(root.get_name()),
        roman("(1), for the environment, the configuration file, the files read and the exit status."),
    ]);
    page.roff(&roff);
    if cmd.get_version().or(cmd.get_long_version()).is_some() {
        page.add(|w| man.render_version_section(w));
    }
    page.out
}

/// A tagged paragraph: `.TP`, the tag line, then the body.
fn tagged(roff: &mut Roff, tag: impl Into<Vec<Inline>>, body: impl Into<Vec<Inline>>) {
    roff.control("TP", []).text(tag).text(body);
}

/// Text with `code` spans (as the exit table's Markdown has them) in bold.
fn with_code(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, s)| if i % 2 == 1 { bold(s) } else { roman(s) })
        .collect()
}

fn environment() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]).text([roman(
        "Options override the environment. Our own variables override the configuration \
         file; the generic names the Rails action_mailbox:ingress tasks read (URL, \
         INGRESS_PASSWORD) are only used for what the file does not set, so a stray variable \
         never redirects an explicitly configured relay. Empty values count as unset. Mail \
         systems often run commands with an empty or minimal environment (Postfix's pipe(8) \
         does): use the configuration file there. Proxies: HTTPS_PROXY (or ALL_PROXY) and \
         NO_PROXY apply to https:// URLs only; loopback and http:// URLs are never proxied, \
         so a password never crosses a proxy in clear.",
    )]);
    let settings = [
        (ENV_CONFIG, "The configuration file to read, as --config."),
        (ENV_URL, "Chatwoot's base URL, or the full relay ingress URL, as --url; overrides url in the configuration file."),
        (ENV_PASSWORD, "The ingress password itself. It overrides password and password_file in the configuration file, but not --password-file."),
        (RAKE_URL, "The same as CHATWOOT_INGRESS_URL, read only when neither it, --url nor the configuration file sets the URL."),
        (RAKE_PASSWORD, "The same as CHATWOOT_INGRESS_PASSWORD, read only when nothing else sets the password."),
    ];
    for (name, what) in settings {
        tagged(&mut roff, [bold(name)], [roman(what)]);
    }
    roff
}

fn configuration_file() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["CONFIGURATION FILE"]).text([roman(
        "A TOML file. Every key is optional and is overridden by the option of the same name \
         (with - for _) and by the environment. Unknown keys are an error. Relative paths are \
         relative to the directory of the file.",
    )]);
    // Tables open an indented block for their keys (and tables in them).
    let mut open = 0;
    for (key, sample, what) in config_keys() {
        let depth = key.matches('.').count();
        while open > depth {
            roff.control("RE", []);
            open -= 1;
        }
        if is_table(key, sample) {
            tagged(&mut roff, [bold(sample)], [roman(what)]);
            roff.control("RS", ["4"]);
            open += 1;
        } else {
            let name = key.rsplit('.').next().unwrap_or(key);
            tagged(&mut roff, [bold(name), roman(" = "), italic(sample)], [roman(what)]);
        }
    }
    for _ in 0..open {
        roff.control("RE", []);
    }
    roff
}

fn files() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["FILES"]).text([
        roman("The configuration file is the one named by --config, else by "),
        bold(ENV_CONFIG),
        roman(" (which must exist), else the first of these that exists:"),
    ]);
    tagged(
        &mut roff,
        [italic("$XDG_CONFIG_HOME"), roman("/chatwoot-ingress/config.toml")],
        [roman("The user's configuration (~/.config/chatwoot-ingress/config.toml when XDG_CONFIG_HOME is unset).")],
    );
    tagged(
        &mut roff,
        [roman(SYSTEM_CONFIG)],
        [roman(
            "The system's configuration. It holds the ingress password: make it readable by the \
             user the mail system runs chatwoot-ingress as, and by nobody else (the Debian \
             package installs it as root:chatwoot-ingress, mode 0640).",
        )],
    );
    tagged(
        &mut roff,
        [roman(EXAMPLES_DIR), roman("/")],
        [roman("Ready configurations for Postfix, Exim, qmail, OpenSMTPD, getmail and fetchmail.")],
    );
    roff
}

fn exit_status() -> Roff {
    let columns: Vec<String> =
        EXIT_COLUMNS.iter().enumerate().map(|(i, (names, _))| format!("{}) for {names}", i + 1)).collect();
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]).text([roman(format!(
        "A failure prints one line on standard error that begins with an RFC 3463 status code; \
         a success prints nothing there (with --verbose, a 2.0.0 line on standard output). \
         The class of the code (2, 4 or 5: delivered, try again later, never retry) decides \
         the exit status, in the codes of the program named by --mta. Each status below gives \
         its exit status 1) for {}.",
        columns.join(", ").trim_start_matches("1) for ")
    ))]);
    for row in exit_rows() {
        let exits = if row.exits.iter().all(|e| *e == row.exits[0]) {
            format!("Exit status {} for every caller.", row.exits[0])
        } else {
            format!("Exit status {}.", row.exits.join(", "))
        };
        let mut body = with_code(row.meaning);
        if !row.meaning.ends_with(['.', '…']) {
            body.push(roman("."));
        }
        roff.control("TP", []).text([bold(row.code)]).text(body).control("br", []).text([roman(exits)]);
    }
    roff
}

fn examples() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    let examples = [
        (
            "Check a message and the configuration without sending anything:",
            vec![format!("{BIN} --dry-run < message.eml")],
        ),
        (
            "Relay a message as Postfix's pipe(8) does (see the examples directory for master.cf):",
            vec![
                format!("{BIN} --mta postfix --config {SYSTEM_CONFIG} \\"),
                "    --recipient support@inbox.example.com < message.eml".into(),
            ],
        ),
    ];
    for (what, lines) in examples {
        roff.control("PP", []).text([roman(what)]);
        roff.control("RS", ["4"]).control("nf", []);
        for line in lines {
            roff.text([bold(line)]);
        }
        roff.control("fi", []).control("RE", []);
    }
    roff
}

fn see_also_section(pages: &[String]) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<Inline> = Vec::new();
    for page in pages {
        refs.extend([bold(page.as_str()), roman("(1), ")]);
    }
    for (page, section) in
        [("pipe", "8"), ("exim", "8"), ("qmail-command", "8"), ("smtpd.conf", "5"), ("getmail", "1")]
    {
        refs.extend([bold(page), roman(format!("({section}), "))]);
    }
    refs.extend([bold("fetchmail"), roman("(1), and the examples in "), roman(EXAMPLES_DIR), roman(".")]);
    roff.text(refs);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_gets_a_page_and_a_see_also() {
        let root = Command::new("toy")
            .version("1.0")
            .about("A toy")
            .arg(clap::arg!(--flag "A flag"))
            .subcommand(Command::new("check").about("Check it").arg(clap::arg!(--deep "Go deep")))
            .subcommand(Command::new("hidden").hide(true));
        let pages = pages_for(root);
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["toy.1", "toy-check.1"]);
        let main = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(main.contains("\\fBtoy\\-check\\fR(1)"), "{main}");
        assert_eq!(main.matches(".ie \\n(.g").count(), 1, "one preamble: {main}");
        let check = String::from_utf8(pages[1].1.clone()).unwrap();
        assert!(check.contains(".TH TOY-CHECK 1  \"toy 1.0\"") && check.contains("\\-\\-deep"), "{check}");
    }

    #[test]
    fn the_main_page_has_every_section_option_and_variable() {
        let (name, page) = &man_pages()[0];
        assert_eq!(name, "chatwoot-ingress.1");
        let page = String::from_utf8(page.clone()).unwrap();
        for section in
            ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "FILES", "EXAMPLES", "VERSION"]
        {
            assert!(page.contains(&format!(".SH {section}\n")), "no {section}");
        }
        for section in ["EXIT STATUS", "CONFIGURATION FILE", "SEE ALSO"] {
            assert!(page.contains(&format!(".SH \"{section}\"\n")), "no {section}");
        }
        for arg in Cli::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))), "no --{long}");
            }
        }
        for name in [ENV_URL, ENV_PASSWORD, ENV_CONFIG, RAKE_URL, RAKE_PASSWORD] {
            assert!(page.contains(&format!("\\fB{}\\fR", name)), "no {name}");
        }
    }
}
