//! `import`: relay mbox files, Maildir folders and .eml files in bulk.
//!
//! The main thread reads the inputs one message at a time and hands them over
//! a bounded channel to `--jobs` workers that share one [`Pipeline`], so one
//! keep-alive connection pool. Memory holds a few messages at most, whatever
//! the size of the input. Each message goes through the same steps as deliver
//! mode and ends in an [`Outcome`]; the journal and the progress are import's.

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

use reqwest::Url;

use crate::cli::ImportArgs;
use crate::config::{Config, Overrides};
use crate::message::Input;
use crate::outcome::{Cause, Class, Mta, Outcome, Scope};
use crate::pipeline::{Mode, Pipeline, Prepared};
use crate::sys::{self, io_reason};
use journal::Journal;
use mbox::Flavour;

/// After this many messages in a row failed, each for a reason of its own,
/// the ingress is taken to be failing: stop, and let a later run resume.
const FAILURES_TO_HALT: u32 = 10;
const TICK: Duration = Duration::from_millis(100);

/// Import, report the summary and end in one outcome, whose class gives the
/// exit code in `mta`'s terms: 0 when everything was delivered, temporary
/// when anything failed or the run was interrupted, permanent when messages
/// were refused and nothing failed.
pub fn main(args: &ImportArgs, overrides: &Overrides, mta: Mta) -> ExitCode {
    let ran = sys::catch_panic(|| match Config::load(overrides) {
        Ok(config) => (import(args, &config, mta), config.warnings),
        Err(e) => (Outcome::new(Cause::Config, e.to_string()), Vec::new()),
    });
    let (outcome, warnings) = ran.unwrap_or_else(|panic| {
        (Outcome::new(Cause::Bug, format!("internal error, please report it: {panic}")), Vec::new())
    });
    outcome.report(mta, false, &warnings)
}

fn import(args: &ImportArgs, config: &Config, mta: Mta) -> Outcome {
    let recipient = match Pipeline::recipient(args.recipient.as_deref()) {
        Ok(recipient) => recipient,
        Err(outcome) => return outcome,
    };
    let mode = if args.dry_run { Mode::DryRun } else { Mode::Send };
    let pipeline = match Pipeline::new(config, mode) {
        Ok(pipeline) => pipeline,
        Err(outcome) => return outcome,
    };
    let (sources, total) = match plan(&args.paths) {
        Ok(plan) => plan,
        Err(outcome) => return outcome,
    };
    // A dry run writes nothing, the journal included.
    let journal = match pipeline.target() {
        None => None,
        Some(target) => {
            let Some(path) = args.journal.clone().or_else(|| default_journal(&target.url)) else {
                return Outcome::new(Cause::Config, "no home directory for the journal: give --journal FILE");
            };
            match Journal::open(&path) {
                Ok(journal) => Some((journal, path)),
                Err(e) => {
                    let reason = format!("cannot open the journal {}: {}", path.display(), io_reason(&e));
                    return Outcome::new(Cause::StateFailed, reason);
                }
            }
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let temporary = Outcome::new(Cause::Interrupted, "").exit_code(mta).into();
    for signal in sys::terminating_signals() {
        // Registered first, so it sees the flag only from the second signal on.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, temporary, interrupted.clone());
        let _ = signal_hook::flag::register(signal, interrupted.clone());
    }
    let (journal, journal_path) = match journal {
        Some((journal, path)) => (Some(Mutex::new(journal)), Some(path)),
        None => (None, None),
    };
    let batch = Batch {
        pipeline,
        recipient: recipient.as_deref(),
        mark_seen: args.mark_seen,
        flavour: if args.mboxo { Flavour::Mboxo } else { Flavour::Mboxrd },
        journal,
        interrupted,
        halted: AtomicBool::new(false),
        tally: Mutex::new(Tally::default()),
        read: AtomicU64::new(0),
        total,
        tty: io::stderr().is_terminal(),
        start: Instant::now(),
    };
    batch.run(&sources, args.jobs.into());
    if let (Some(journal), Some(path)) = (&batch.journal, &journal_path) {
        if let Err(e) = journal.lock().unwrap_or_else(|e| e.into_inner()).sync() {
            batch.say(&format!("warning: cannot sync the journal {}: {}", path.display(), io_reason(&e)));
        }
    }
    summary(
        batch.tally.into_inner().unwrap_or_else(|e| e.into_inner()),
        batch.interrupted.load(Relaxed),
        journal_path.as_deref(),
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
    pipeline: Pipeline,
    recipient: Option<&'a str>,
    mark_seen: bool,
    flavour: Flavour,
    /// None in a dry run.
    journal: Option<Mutex<Journal>>,
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
        let limit = self.pipeline.max_size();
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
        let input = self.pipeline.read(&mut file, self.recipient)?;
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
        let ready = match self.pipeline.prepare(input, self.recipient) {
            Prepared::Ready(ready) => ready,
            Prepared::Stopped(outcome, head) => {
                return Done::NotDelivered(self.refuse(place, outcome, head.input()))
            }
        };
        let Some(journal) = &self.journal else {
            let (size, route) = (ready.message.len(), self.pipeline.route_of(&ready));
            self.say(&format!("would deliver: {}: {size} bytes, to {route}", place.origin));
            return Done::Delivered;
        };
        let hash = journal::hash(&ready.message.bytes);
        if journal.lock().unwrap_or_else(|e| e.into_inner()).contains(&hash) {
            self.seen(place);
            return Done::Skipped;
        }
        let outcome = self.pipeline.send(&ready);
        if outcome.class() != Class::Success {
            return Done::NotDelivered(self.pipeline.settle(outcome, &ready.message.bytes, &mut io::empty()));
        }
        if let Err(e) = journal.lock().unwrap_or_else(|e| e.into_inner()).record(hash) {
            let reason = format!("cannot write to the journal: {}", io_reason(&e));
            self.halt(&mut self.tally(), Outcome::new(Cause::StateFailed, reason));
        }
        self.seen(place);
        Done::Delivered
    }

    /// A refusal, saved with the whole message. A message too large to
    /// hold was only read up to its head: with a reject folder, it is read
    /// again from where it is stored, after checking that its head has not
    /// changed meanwhile.
    fn refuse(&self, place: &Place, outcome: Outcome, head: &[u8]) -> Outcome {
        if outcome.cause != Cause::TooLarge {
            return self.pipeline.settle(outcome, head, &mut io::empty());
        }
        let again = match &place.stored {
            Stored::Stdin => {
                return outcome.context("(read from standard input: not copied to the reject folder)")
            }
            Stored::File { path, .. } => File::open(path).map(|f| Box::new(f) as Box<dyn Read>),
            Stored::InMbox { path, at } => mbox::reread(path, *at, self.flavour).map(|r| Box::new(r) as _),
        };
        match again.and_then(|mut again| Ok(starts_with(&mut again, head)?.then_some(again))) {
            Ok(Some(mut rest)) => self.pipeline.settle(outcome, head, &mut rest),
            Ok(None) => Outcome::new(Cause::Unreadable, format!("it changed while it was read ({outcome})")),
            Err(e) => Outcome::new(
                Cause::Unreadable,
                format!("cannot read it again: {} ({outcome})", io_reason(&e)),
            ),
        }
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
                    && (outcome.cause.scope() == Scope::Run || tally.failures_in_a_row >= FAILURES_TO_HALT)
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
    Done::NotDelivered(Outcome::new(Cause::Unreadable, format!("cannot read: {}", io_reason(e))))
}

/// The counts on stdout, and the outcome that decides the exit code. No
/// journal means a dry run.
fn summary(tally: Tally, interrupted: bool, journal: Option<&Path>) -> Outcome {
    let Tally { delivered, skipped, refused, failed, .. } = tally;
    // A closed stdout must not turn a finished run into a failure.
    let _ = match journal {
        Some(journal) => writeln!(
            io::stdout(),
            "{delivered} delivered, {skipped} already delivered, {refused} refused, {failed} failed (journal: {})",
            journal.display()
        ),
        None => writeln!(io::stdout(), "{delivered} would be delivered, {refused} refused, {failed} failed (dry run: nothing was sent)"),
    };
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
    } else if journal.is_none() {
        Outcome::new(Cause::DryRun, format!("dry run: {delivered} valid; nothing was sent"))
    } else {
        Outcome::new(Cause::Delivered, format!("{delivered} delivered"))
    }
}
