//! `import`: relay mbox files, Maildir folders and .eml files in bulk.
//!
//! The main thread reads the inputs one message at a time and hands them over
//! a bounded channel to `--jobs` workers that share one [`Relay`], so one
//! keep-alive connection pool. Memory holds a few messages at most, whatever
//! the size of the input. Each message goes through the same validation and
//! the same [`Relay::deliver`] as deliver mode, and ends in an [`Outcome`].

mod journal;
mod maildir;
pub mod mbox;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Url;

use crate::cli::ConfigArgs;
use crate::config::{io_reason, Config};
use crate::deliver::refuse;
use crate::message::{self, Input, Message};
use crate::outcome::{Cause, Class, Mta, Outcome};
use crate::relay::Relay;
use journal::Journal;
use mbox::Flavour;

#[derive(Debug, Args)]
#[command(next_help_heading = "Import options")]
pub struct ImportArgs {
    /// mbox files, Maildir folders (they have new/ and cur/), .eml files and
    /// folders of .eml files; - reads an mbox on standard input
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Requests in flight at once, over one pool of keep-alive connections
    #[arg(short, long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Retry a message that failed temporarily this many times, pausing 1 s,
    /// 2 s, 4 s… in between, before counting it as failed (a re-run tries it
    /// again)
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// The record of delivered messages (the SHA-256 of the bytes sent, one
    /// per line): messages in it are skipped, so running the same command
    /// again after a failure, a crash or Ctrl-C delivers only the rest.
    /// Delete it to send everything again [default: one per ingress URL in
    /// $XDG_STATE_HOME/chatwoot-ingress/, else
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

    /// The envelope recipient of every message: added as X-Original-To to
    /// messages that have none
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
    pub recipient: Option<String>,
}

/// A temporary failure with one of these causes will fail every message the
/// same way (the password, the URL, TLS): stop instead of trying them all.
fn same_for_every_message(cause: Cause) -> bool {
    matches!(
        cause,
        Cause::Dns
            | Cause::Tls
            | Cause::PasswordRejected
            | Cause::NoIngress
            | Cause::Redirected
            | Cause::MediaTypeRefused
            | Cause::InputError
    )
}

/// After this many messages in a row failed (each after its retries), the
/// ingress is taken to be down: stop, and let a later run resume.
const FAILURES_TO_HALT: u32 = 10;
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(100);

/// Import, report the summary and end in one outcome, whose class gives the
/// exit code: 0 when everything was delivered, 75 when anything failed or the
/// run was interrupted, 65 when messages were refused and nothing failed.
pub fn run(args: &ImportArgs, config: &ConfigArgs) -> ExitCode {
    let (outcome, warnings) = match Config::load(config) {
        Ok(config) => (import(args, &config), config.warnings),
        Err(e) => (Outcome::new(Cause::Config, e.to_string()), Vec::new()),
    };
    outcome.report(Mta::Sysexits, false, &warnings)
}

fn import(args: &ImportArgs, config: &Config) -> Outcome {
    let recipient = args.recipient.as_deref();
    if let Some(Err(e)) = recipient.map(message::check_recipient) {
        return Outcome::new(Cause::Usage, e);
    }
    let relay =
        match config.target().map_err(|e| Outcome::new(Cause::Config, e.to_string())).and_then(Relay::new) {
            Ok(relay) => relay,
            Err(outcome) => return outcome,
        };
    let (sources, total) = match plan(&args.paths) {
        Ok(plan) => plan,
        Err(outcome) => return outcome,
    };
    let Some(journal_path) = args.journal.clone().or_else(|| default_journal(relay.url())) else {
        return Outcome::new(Cause::Config, "no home directory for the journal: give --journal FILE");
    };
    let journal = match Journal::open(&journal_path) {
        Ok(journal) => journal,
        Err(e) => {
            let reason = format!("cannot open the journal {}: {}", journal_path.display(), io_reason(&e));
            return Outcome::new(Cause::InputError, reason);
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        // Registered first, so it sees the flag only from the second signal on.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 75, interrupted.clone());
        let _ = signal_hook::flag::register(signal, interrupted.clone());
    }
    let batch = Batch {
        config,
        relay,
        recipient,
        retries: args.retries,
        mark_seen: args.mark_seen,
        flavour: if args.mboxo { Flavour::Mboxo } else { Flavour::Mboxrd },
        journal: Mutex::new(journal),
        interrupted,
        halted: AtomicBool::new(false),
        tally: Mutex::new(Tally::default()),
        read: AtomicU64::new(0),
        total,
        tty: io::stderr().is_terminal(),
        start: Instant::now(),
    };
    batch.run(&sources, args.jobs.into());
    let synced = batch.journal.lock().unwrap_or_else(|e| e.into_inner()).sync();
    if let Err(e) = synced {
        batch.say(&format!("warning: cannot sync the journal {}: {}", journal_path.display(), io_reason(&e)));
    }
    summary(
        batch.tally.into_inner().unwrap_or_else(|e| e.into_inner()),
        batch.interrupted.load(Relaxed),
        &journal_path,
    )
}

/// Where the messages come from.
enum Source {
    Stdin,
    Mbox(PathBuf),
    Files { paths: Vec<PathBuf>, maildir: bool },
}

fn is_eml(name: &str) -> bool {
    Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case("eml"))
}

/// Sort the inputs out before sending anything, so that a typo fails at
/// once, and add up their sizes for the ETA (unknown with standard input).
fn plan(paths: &[PathBuf]) -> Result<(Vec<Source>, Option<u64>), Outcome> {
    let unreadable = |path: &Path, e: io::Error| {
        Outcome::new(Cause::Usage, format!("cannot read {}: {}", path.display(), io_reason(&e)))
    };
    let mut sources = Vec::new();
    let mut total = Some(0);
    for path in paths {
        if path.as_os_str() == "-" {
            sources.push(Source::Stdin);
            total = None;
            continue;
        }
        let meta = fs::metadata(path).map_err(|e| unreadable(path, e))?;
        let source = if meta.is_dir() {
            let maildir = maildir::is_maildir(path);
            let listed = if maildir { maildir::messages(path) } else { maildir::files(path, is_eml) };
            Source::Files { paths: listed.map_err(|e| unreadable(path, e))?, maildir }
        } else if !is_eml(&path.to_string_lossy()) && is_mbox(path).map_err(|e| unreadable(path, e))? {
            Source::Mbox(path.clone())
        } else {
            Source::Files { paths: vec![path.clone()], maildir: false }
        };
        let size = match &source {
            Source::Files { paths, .. } => paths.iter().map(|p| fs::metadata(p).map_or(0, |m| m.len())).sum(),
            _ => meta.len(),
        };
        total = total.map(|t| t + size);
        sources.push(source);
    }
    Ok((sources, total))
}

/// An mbox begins with a `From ` line, or is empty (a mail spool after the
/// mail was read); a single message does not, unless its name ends in .eml,
/// which is then read as one message whatever it holds.
fn is_mbox(path: &Path) -> io::Result<bool> {
    let mut start = [0; 5];
    let n = File::open(path)?.take(5).read(&mut start)?;
    Ok(n == 0 || &start[..n] == b"From ")
}

/// One journal per ingress: the same mail imported into another Chatwoot is
/// a new delivery.
fn default_journal(url: &Url) -> Option<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "chatwoot-ingress")?;
    let dir = dirs.state_dir().unwrap_or(dirs.data_local_dir());
    let key = &journal::hex(&journal::hash(url.as_str().as_bytes()))[..12];
    Some(dir.join(format!("{}-{key}.journal", url.host_str().unwrap_or("ingress"))))
}

/// One message on its way from the reader to a worker.
struct Job {
    place: Place,
    input: Input,
}

/// Where a message is.
struct Place {
    /// For the administrator: a file, or an mbox and a position in it.
    origin: String,
    stored: Stored,
}

/// Where to read a message again.
enum Stored {
    /// A file that holds exactly this message.
    File {
        path: PathBuf,
        maildir: bool,
    },
    InMbox {
        path: PathBuf,
        at: mbox::Span,
    },
    /// Gone once read.
    Stdin,
}

enum Done {
    Delivered,
    /// In the journal: delivered by an earlier run.
    Skipped,
    NotDelivered(Outcome),
}

#[derive(Default)]
struct Tally {
    delivered: u64,
    skipped: u64,
    refused: u64,
    failed: u64,
    first_refusal: Option<Outcome>,
    last_failure: Option<Outcome>,
    /// Why the run stopped before the end of its input, if it did.
    halt: Option<Outcome>,
    failures_in_a_row: u32,
}

struct Batch<'a> {
    config: &'a Config,
    relay: Relay,
    recipient: Option<&'a str>,
    retries: u32,
    mark_seen: bool,
    flavour: Flavour,
    journal: Mutex<Journal>,
    interrupted: Arc<AtomicBool>,
    halted: AtomicBool,
    tally: Mutex<Tally>,
    /// Input bytes read so far, and in all when known.
    read: AtomicU64,
    total: Option<u64>,
    tty: bool,
    start: Instant,
}

impl Batch<'_> {
    fn run(&self, sources: &[Source], jobs: usize) {
        // Room for one waiting message per worker: enough to keep them busy.
        let (queue, jobs_rx) = mpsc::sync_channel(jobs);
        let jobs_rx = Mutex::new(jobs_rx);
        // Dropped when reading ends, even by a panic, which ends the progress thread.
        let (running, stopped) = mpsc::channel::<()>();
        thread::scope(|s| {
            let workers: Vec<_> = (0..jobs).map(|_| s.spawn(|| self.work(&jobs_rx))).collect();
            s.spawn(move || self.show_progress(&stopped));
            self.read_all(sources, &queue);
            drop(queue);
            let panicked = workers.into_iter().map(|w| w.join()).find_map(Result::err);
            drop(running);
            if let Some(panic) = panicked {
                std::panic::resume_unwind(panic);
            }
        });
    }

    /// Stop reading: on a signal, or on a failure every message would have.
    fn stopping(&self) -> bool {
        self.interrupted.load(Relaxed) || self.halted.load(Relaxed)
    }

    fn read_all(&self, sources: &[Source], queue: &SyncSender<Job>) {
        for source in sources {
            let (name, result) = match source {
                Source::Stdin => ("standard input".into(), self.read_mbox(None, io::stdin().lock(), queue)),
                Source::Mbox(path) => {
                    let result = File::open(path).and_then(|file| {
                        self.read_mbox(Some(path), BufReader::with_capacity(1 << 16, file), queue)
                    });
                    (path.display().to_string(), result)
                }
                Source::Files { paths, maildir } => {
                    for path in paths {
                        if let Err(e) = self.read_file(path, *maildir, queue) {
                            self.settle(&path.display().to_string(), read_error(&e));
                        }
                    }
                    continue;
                }
            };
            if let Err(e) = result {
                self.settle(&name, read_error(&e));
            }
        }
    }

    fn send(&self, queue: &SyncSender<Job>, job: Job) -> bool {
        !self.stopping() && queue.send(job).is_ok()
    }

    /// An mbox file, or standard input when `path` is None.
    fn read_mbox(
        &self,
        path: Option<&Path>,
        reader: impl BufRead,
        queue: &SyncSender<Job>,
    ) -> io::Result<()> {
        let limit = self.config.max_size.value;
        let name = path.map_or("standard input".into(), |p| p.display().to_string());
        mbox::split(reader, self.flavour, limit, self.recipient, |piece| {
            self.read.fetch_add(piece.at.len, Relaxed);
            let origin = format!("{name} message {} (line {})", piece.number, piece.line);
            let stored = match path {
                Some(path) => Stored::InMbox { path: path.to_path_buf(), at: piece.at },
                None => Stored::Stdin,
            };
            self.send(queue, Job { place: Place { origin, stored }, input: piece.input })
        })
    }

    fn read_file(&self, path: &Path, maildir: bool, queue: &SyncSender<Job>) -> io::Result<()> {
        if self.stopping() {
            return Ok(());
        }
        let mut file = File::open(path)?;
        self.read.fetch_add(file.metadata()?.len(), Relaxed);
        let input = message::read_limited(&mut file, self.config.max_size.value, self.recipient)?;
        let origin = path.display().to_string();
        let stored = Stored::File { path: path.to_path_buf(), maildir };
        self.send(queue, Job { place: Place { origin, stored }, input });
        Ok(())
    }

    fn work(&self, jobs: &Mutex<Receiver<Job>>) {
        loop {
            let Ok(job) = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() else { return };
            // Read but not started: it is not in the journal, so a re-run sends it.
            if self.stopping() {
                continue;
            }
            let done = self.deliver(&job.place, job.input);
            self.settle(&job.place.origin, done);
        }
    }

    fn deliver(&self, place: &Place, input: Input) -> Done {
        let raw = match input {
            Input::Complete(raw) => raw,
            Input::TooLarge(head) => return Done::NotDelivered(self.too_large(place, head.input())),
        };
        let message = match Message::prepare(raw, self.recipient) {
            Ok(message) => message,
            Err((invalid, raw)) => {
                let outcome = Outcome::new(Cause::Invalid, invalid.to_string());
                return Done::NotDelivered(refuse(self.config, outcome, raw.input(), &mut io::empty()));
            }
        };
        let hash = journal::hash(&message.bytes);
        if self.journal.lock().unwrap_or_else(|e| e.into_inner()).contains(&hash) {
            self.seen(place);
            return Done::Skipped;
        }
        let mut pause = FIRST_PAUSE;
        let mut retries = 0;
        loop {
            let outcome = self.relay.deliver(&message);
            match outcome.class() {
                Class::Success => {
                    if let Err(e) = self.journal.lock().unwrap_or_else(|e| e.into_inner()).record(hash) {
                        let reason = format!("cannot write to the journal: {}", io_reason(&e));
                        self.halt(&mut self.tally(), Outcome::new(Cause::InputError, reason));
                    }
                    self.seen(place);
                    return Done::Delivered;
                }
                Class::Permanent => {
                    return Done::NotDelivered(refuse(self.config, outcome, &message.bytes, &mut io::empty()))
                }
                Class::Temporary => {
                    if retries == self.retries || same_for_every_message(outcome.cause) || !self.pause(pause)
                    {
                        return Done::NotDelivered(match retries {
                            0 => outcome,
                            n => Outcome::new(
                                outcome.cause,
                                format!("{} (retried {n} times)", outcome.reason()),
                            ),
                        });
                    }
                    retries += 1;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// Too large to send, and to hold: only its head was read. With a reject
    /// folder, the message is read again from where it is stored, after
    /// checking that its head has not changed meanwhile.
    fn too_large(&self, place: &Place, head: &[u8]) -> Outcome {
        let max_size = &self.config.max_size;
        let reason =
            format!("message too large: over max_size of {} bytes ({})", max_size.value, max_size.source);
        let outcome = Outcome::new(Cause::TooLarge, reason);
        if self.config.reject_dir.is_none() {
            return outcome;
        }
        let again = match &place.stored {
            Stored::Stdin => {
                let reason = format!(
                    "{} (read from standard input: not copied to the reject folder)",
                    outcome.reason()
                );
                return Outcome::new(outcome.cause, reason);
            }
            Stored::File { path, .. } => File::open(path).map(|f| Box::new(f) as Box<dyn Read>),
            Stored::InMbox { path, at } => mbox::reread(path, *at, self.flavour).map(|r| Box::new(r) as _),
        };
        match again.and_then(|mut again| Ok(starts_with(&mut again, head)?.then_some(again))) {
            Ok(Some(mut rest)) => refuse(self.config, outcome, head, &mut rest),
            Ok(None) => Outcome::new(Cause::InputError, format!("it changed while it was read ({outcome})")),
            Err(e) => Outcome::new(
                Cause::InputError,
                format!("cannot read it again: {} ({outcome})", io_reason(&e)),
            ),
        }
    }

    /// Sleep before a retry; false if the run is stopping meanwhile.
    fn pause(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if self.stopping() {
                return false;
            }
            thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
        }
        !self.stopping()
    }

    fn seen(&self, place: &Place) {
        if let (true, Stored::File { path, maildir: true }) = (self.mark_seen, &place.stored) {
            if let Err(e) = maildir::mark_seen(path) {
                self.say(&format!(
                    "warning: {}: delivered, but cannot mark it seen: {}",
                    place.origin,
                    io_reason(&e)
                ));
            }
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, origin: &str, done: Done) {
        let mut tally = self.tally();
        match done {
            Done::Delivered => {
                tally.delivered += 1;
                tally.failures_in_a_row = 0;
            }
            Done::Skipped => tally.skipped += 1,
            Done::NotDelivered(outcome) if outcome.class() == Class::Permanent => {
                self.say(&format!("refused: {origin}: {outcome}"));
                tally.refused += 1;
                tally.first_refusal.get_or_insert(outcome);
            }
            Done::NotDelivered(outcome) => {
                self.say(&format!("failed: {origin}: {outcome}"));
                tally.failed += 1;
                tally.failures_in_a_row += 1;
                if !self.interrupted.load(Relaxed)
                    && (same_for_every_message(outcome.cause) || tally.failures_in_a_row >= FAILURES_TO_HALT)
                {
                    self.halt(&mut tally, outcome.clone());
                }
                tally.last_failure = Some(outcome);
            }
        }
    }

    fn halt(&self, tally: &mut Tally, outcome: Outcome) {
        if tally.halt.is_none() {
            self.say(&format!("stopping: {outcome}"));
            tally.halt = Some(outcome);
            self.halted.store(true, Relaxed);
        }
    }

    /// A line on stderr, over the progress line on a terminal.
    fn say(&self, line: &str) {
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        let _ = writeln!(io::stderr().lock(), "{clear}{line}");
    }

    /// On a terminal, one line redrawn in place; otherwise a line every 5 s.
    fn show_progress(&self, stopped: &Receiver<()>) {
        let every = if self.tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
        let mut last = Instant::now();
        let mut told = false;
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
            if !told && self.interrupted.load(Relaxed) {
                told = true;
                self.say("interrupted: finishing the requests in flight (again to quit at once)");
            }
            if last.elapsed() >= every {
                last = Instant::now();
                let line = self.progress();
                let mut err = io::stderr().lock();
                let _ = if self.tty { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
            }
        }
        if self.tty {
            let _ = write!(io::stderr().lock(), "\r\x1b[K");
        }
    }

    fn progress(&self) -> String {
        let (done, counts) = {
            let t = self.tally();
            let done = t.delivered + t.skipped + t.refused + t.failed;
            (
                done,
                format!(
                    "{} delivered, {} already, {} refused, {} failed",
                    t.delivered, t.skipped, t.refused, t.failed
                ),
            )
        };
        let seconds = self.start.elapsed().as_secs_f64().max(0.001);
        let read = self.read.load(Relaxed);
        let mut line = format!("{done} messages ({counts}), {}", mib(read));
        if let Some(total) = self.total {
            line.push_str(&format!(" of {}", mib(total)));
        }
        line.push_str(&format!(", {:.0} msg/s", done as f64 / seconds));
        if let Some(total) = self.total.filter(|_| read > 0) {
            let left = total.saturating_sub(read) as f64 / (read as f64 / seconds);
            let left = left as u64;
            line.push_str(&format!(", ETA {}:{:02}:{:02}", left / 3600, left / 60 % 60, left % 60));
        }
        line
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Whether `reader` begins with `head`, which it has then consumed.
fn starts_with(reader: &mut dyn Read, head: &[u8]) -> io::Result<bool> {
    let mut buf = vec![0; head.len().min(1 << 16)];
    for expected in head.chunks(buf.len().max(1)) {
        let got = &mut buf[..expected.len()];
        match reader.read_exact(got) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            read => read?,
        }
        if got != expected {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_error(e: &io::Error) -> Done {
    Done::NotDelivered(Outcome::new(Cause::InputError, format!("cannot read: {}", io_reason(e))))
}

/// The counts on stdout, and the outcome that decides the exit code.
fn summary(tally: Tally, interrupted: bool, journal: &Path) -> Outcome {
    let Tally { delivered, skipped, refused, failed, .. } = tally;
    println!(
        "{delivered} delivered, {skipped} already delivered, {refused} refused, {failed} failed (journal: {})",
        journal.display()
    );
    let resume = "run the same command again to resume";
    if interrupted {
        Outcome::new(
            Cause::Interrupted,
            format!("interrupted; what was delivered is in the journal: {resume}"),
        )
    } else if let Some(halt) = tally.halt {
        Outcome::new(halt.cause, format!("stopped before the end: {}; {resume}", halt.reason()))
    } else if let Some(last) = tally.last_failure {
        Outcome::new(last.cause, format!("{failed} not delivered (last: {}); {resume}", last.reason()))
    } else if let Some(first) = tally.first_refusal {
        Outcome::new(first.cause, format!("{refused} refused, listed above (first: {})", first.reason()))
    } else {
        Outcome::new(Cause::Delivered, format!("{delivered} delivered"))
    }
}
