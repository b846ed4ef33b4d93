//! `import`: relay mbox files, Maildir folders and .eml files in bulk.
//!
//! The main thread reads the inputs one message at a time and hands them over
//! a bounded channel to `--jobs` workers that share one [`Pipeline`], so one
//! keep-alive connection pool. Memory holds a few messages, and the names in
//! the one folder being read, whatever the size of the input. Each message
//! goes through the same steps as deliver mode and ends in an [`Outcome`];
//! the journal, the progress and what is skipped are import's.

mod from_line;
mod journal;
mod maildir;
pub mod mbox;

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Url;

use crate::cli::ImportArgs;
use crate::config::{Config, Overrides};
use crate::message::Input;
use crate::outcome::{Cause, Class, Mta, Outcome, Scope};
use crate::pipeline::{Mode, Pipeline, Prepared};
use crate::run::{self, Ended, Signals, Stopping};
use crate::sys::io_reason;
use journal::{Entry, Journal};
use maildir::{Listing, Skip};
use mbox::Flavour;

/// After this many messages in a row were sent and failed, each for a
/// reason of its own, the ingress is taken to be failing: stop, and let a
/// later run resume. Messages that could not be read say nothing about it.
const FAILURES_TO_HALT: u32 = 10;
const TICK: Duration = Duration::from_millis(100);
const RESUME: &str = "run the same command again to resume";

/// Import, report the summary and end in one outcome, whose class gives the
/// exit code in `mta`'s terms: 0 when everything was delivered, temporary
/// when anything failed or the run was interrupted, permanent when messages
/// were refused and nothing failed.
pub fn main(args: &ImportArgs, overrides: &Overrides, mta: Mta) -> ExitCode {
    // A signal lets the requests in flight finish and be recorded in the
    // journal, and the run ends as interrupted; a second ends it at once.
    let signals = Signals::Finish { left: RESUME, reload: false };
    run::command(mta, false, signals, |stopping| match Config::load(overrides) {
        Ok(config) => {
            Ended { outcome: import(args, &config, stopping), warnings: config.warnings, verbose: Vec::new() }
        }
        Err(e) => Outcome::from(e).into(),
    })
}

fn import(args: &ImportArgs, config: &Config, stopping: &Stopping) -> Outcome {
    let recipient = match Pipeline::recipient(args.recipient.as_deref()) {
        Ok(recipient) => recipient,
        Err(outcome) => return outcome,
    };
    let mode = if args.dry_run { Mode::DryRun } else { Mode::Send };
    let pipeline = match Pipeline::new(config, mode) {
        Ok(pipeline) => pipeline,
        Err(outcome) => return outcome,
    };
    let (sources, total) = match plan(&args.paths, args.subfolders) {
        Ok(plan) => plan,
        Err(outcome) => return outcome,
    };
    let path =
        args.journal.clone().or_else(|| config.url.as_ref().and_then(|url| default_journal(&url.value)));
    // A dry run reads the journal, to tell what a real run would skip, and writes nothing.
    let journal = match (&path, mode) {
        (None, Mode::DryRun) => Ok(Journal::default()),
        (None, Mode::Send) => {
            return Outcome::new(Cause::Config, "no home directory for the journal: give --journal FILE")
        }
        (Some(path), Mode::DryRun) => Journal::read(path),
        (Some(path), Mode::Send) => Journal::open(path),
    };
    let journal = match journal {
        Ok(journal) => journal,
        Err(e) => {
            let path = path.unwrap_or_default();
            let reason = format!("cannot open the journal {}: {}", path.display(), io_reason(&e));
            return Outcome::new(Cause::StateFailed, reason);
        }
    };
    let batch = Batch {
        pipeline,
        recipient: recipient.as_deref(),
        mark_seen: args.mark_seen,
        subfolders: args.subfolders,
        flavour: if args.mboxo { Flavour::Mboxo } else { Flavour::Mboxrd },
        journal: Mutex::new(journal),
        stopping,
        halted: AtomicBool::new(false),
        tally: Mutex::new(Tally::default()),
        read: AtomicU64::new(0),
        total,
        reading: Mutex::new(String::new()),
        tty: io::stderr().is_terminal(),
        start: Instant::now(),
    };
    batch.run(&sources, args.jobs.into());
    if let (Mode::Send, Some(path)) = (mode, &path) {
        if let Err(e) = batch.journal().sync() {
            batch.say(&format!("warning: cannot sync the journal {}: {}", path.display(), io_reason(&e)));
        }
    }
    let interrupted = batch.stopping.requested();
    let tally = batch.tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let journal = match mode {
        Mode::Send => path.as_deref(),
        Mode::DryRun => None,
    };
    summary(tally, interrupted, journal, &args.paths)
}

/// Where the messages come from.
enum Source {
    Stdin,
    Mbox(PathBuf),
    /// A file that holds one message.
    File(PathBuf),
    Maildir(PathBuf),
    /// A folder of .eml files.
    Folder(PathBuf),
}

/// Sort the inputs out before sending anything, so that a path that cannot
/// be read (a typo) fails at once, and add up their sizes for the ETA
/// (unknown with standard input).
fn plan(paths: &[PathBuf], subfolders: bool) -> Result<(Vec<Source>, Option<u64>), Outcome> {
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
        let source = if meta.is_dir() && maildir::is_maildir(path) {
            Source::Maildir(path.clone())
        } else if meta.is_dir() {
            Source::Folder(path.clone())
        } else if !maildir::is_eml(path.as_os_str()) && is_mbox(path).map_err(|e| unreadable(path, e))? {
            Source::Mbox(path.clone())
        } else {
            Source::File(path.clone())
        };
        let size = source.size(subfolders).map_err(|e| unreadable(path, e))?;
        total = total.map(|t| t + size);
        sources.push(source);
    }
    Ok((sources, total))
}

impl Source {
    /// The bytes it holds. A folder is listed for it, which also finds at
    /// once one that cannot be read; it is listed again when it is read, so
    /// that mail that came meanwhile is in, and only one folder's names are
    /// held at a time. Subfolders found broken now fail when they are read.
    fn size(&self, subfolders: bool) -> io::Result<u64> {
        let sum = |listing: Listing| -> u64 {
            listing.messages.iter().map(|p| fs::metadata(p).map_or(0, |m| m.len())).sum()
        };
        let maildir = |path: &Path| -> io::Result<u64> {
            Ok(sum(maildir::messages(&path.join("new"))?) + sum(maildir::messages(&path.join("cur"))?))
        };
        Ok(match self {
            Source::Stdin => 0,
            Source::Mbox(path) | Source::File(path) => fs::metadata(path)?.len(),
            Source::Folder(path) => sum(maildir::emls(path)?),
            Source::Maildir(path) => {
                let folders = maildir::beside(path, subfolders)?.subfolders;
                maildir(path)? + folders.iter().map(|f| maildir(f).unwrap_or(0)).sum::<u64>()
            }
        })
    }
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
    let key = &hex::encode(journal::hash(url.as_str().as_bytes()))[..12];
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
    /// Or, in a dry run, valid and not in the journal.
    Delivered,
    /// In the journal: delivered by an earlier run.
    AlreadyDelivered,
    /// Refused again, and saved by an earlier run: not saved twice.
    AlreadyRefused(Outcome),
    /// Refused for good, or to be tried again. `sent` when the ingress was
    /// asked, so that a failure tells of its health.
    NotDelivered { outcome: Outcome, sent: bool },
}

#[derive(Default)]
struct Tally {
    delivered: u64,
    already: u64,
    refused: u64,
    failed: u64,
    already_refused: u64,
    /// Paths named as not imported.
    skipped: u64,
    /// Of those, the ones found where messages are read (new/, cur/, a
    /// folder of .eml files), not beside them (tmp/, subfolders).
    skipped_among_messages: u64,
    first_refusal: Option<Outcome>,
    last_failure: Option<Outcome>,
    /// Why the run stopped before the end of its input, if it did.
    halt: Option<Outcome>,
    failures_in_a_row: u32,
}

impl Tally {
    /// Messages found, whatever became of them.
    fn found(&self) -> u64 {
        self.delivered + self.already + self.refused + self.already_refused + self.failed
    }
}

struct Batch<'a> {
    pipeline: Pipeline,
    recipient: Option<&'a str>,
    mark_seen: bool,
    subfolders: bool,
    flavour: Flavour,
    /// Only read in a dry run.
    journal: Mutex<Journal>,
    stopping: &'a Stopping,
    halted: AtomicBool,
    tally: Mutex<Tally>,
    /// Input bytes read so far, and in all when known.
    read: AtomicU64,
    total: Option<u64>,
    /// The file or folder being read, for the progress line.
    reading: Mutex<String>,
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

    fn dry_run(&self) -> bool {
        self.pipeline.mode() == Mode::DryRun
    }

    /// Stop reading: on a signal, or on a failure every message would have.
    fn stopping(&self) -> bool {
        self.stopping.requested() || self.halted.load(Relaxed)
    }

    fn read_all(&self, sources: &[Source], queue: &SyncSender<Job>) {
        for source in sources {
            if self.stopping() {
                return;
            }
            match source {
                Source::Stdin => {
                    self.now_reading("standard input");
                    if let Err(e) = self.read_mbox(None, io::stdin().lock(), queue) {
                        self.unread("standard input", "cannot read it", &e);
                    }
                }
                Source::Mbox(path) => {
                    self.now_reading(path.display());
                    let read = File::open(path).and_then(|file| {
                        self.read_mbox(Some(path), BufReader::with_capacity(1 << 16, file), queue)
                    });
                    if let Err(e) = read {
                        self.unread(path.display(), "cannot read it", &e);
                    }
                }
                Source::File(path) => self.read_file(path, false, queue),
                Source::Folder(path) => {
                    self.now_reading(path.display());
                    match maildir::emls(path) {
                        Ok(listing) => self.read_files(listing, false, queue),
                        Err(e) => self.unread(path.display(), "cannot list it", &e),
                    }
                }
                Source::Maildir(path) => self.read_maildir(path, true, queue),
            }
        }
    }

    /// A Maildir, then its subfolders when asked (`top`: it is not one).
    /// new/ and cur/ are listed together, so a message that a mail reader
    /// moves from one to the other meanwhile is found once.
    fn read_maildir(&self, path: &Path, top: bool, queue: &SyncSender<Job>) {
        self.now_reading(path.display());
        let subfolders = match maildir::beside(path, top && self.subfolders) {
            Ok(beside) => {
                self.skip(beside.skipped, false);
                beside.subfolders
            }
            Err(e) => {
                self.unread(path.display(), "cannot list it", &e);
                Vec::new()
            }
        };
        let mut all = Listing::default();
        for sub in ["new", "cur"] {
            let dir = path.join(sub);
            match maildir::messages(&dir) {
                Ok(listing) => {
                    all.messages.extend(listing.messages);
                    all.skipped.extend(listing.skipped);
                }
                Err(e) => self.unread(dir.display(), "cannot list it", &e),
            }
        }
        self.read_files(all, true, queue);
        for subfolder in subfolders {
            if self.stopping() {
                return;
            }
            self.read_maildir(&subfolder, false, queue);
        }
    }

    fn read_files(&self, listing: Listing, maildir: bool, queue: &SyncSender<Job>) {
        self.skip(listing.skipped, true);
        for path in listing.messages {
            if self.stopping() {
                return;
            }
            self.read_file(&path, maildir, queue);
        }
    }

    /// Name what is not imported. `among_messages`: where messages are read.
    fn skip(&self, skipped: Vec<(PathBuf, Skip)>, among_messages: bool) {
        for (path, skip) in skipped {
            self.say(&format!("skipped: {}: {}", path.display(), skip.why()));
            let mut tally = self.tally();
            tally.skipped += 1;
            tally.skipped_among_messages += u64::from(among_messages);
        }
    }

    fn now_reading(&self, what: impl Display) {
        *self.reading.lock().unwrap_or_else(|e| e.into_inner()) = what.to_string();
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

    /// One message in a file. A Maildir message gone since it was listed is
    /// looked for where a mail reader moves it; one that cannot be read is a
    /// failure of its own, and the run goes on.
    fn read_file(&self, path: &Path, maildir: bool, queue: &SyncSender<Job>) {
        let opened = match File::open(path) {
            Err(e) if maildir && e.kind() == io::ErrorKind::NotFound => match maildir::moved(path) {
                Some(moved) => File::open(&moved).map(|file| (file, moved)),
                None => Err(e),
            },
            opened => opened.map(|file| (file, path.to_path_buf())),
        };
        let read = opened.and_then(|(mut file, path)| {
            self.read.fetch_add(file.metadata()?.len(), Relaxed);
            Ok((self.pipeline.read(&mut file, self.recipient)?, path))
        });
        match read {
            Ok((input, path)) => {
                let origin = path.display().to_string();
                let stored = Stored::File { path, maildir };
                self.send(queue, Job { place: Place { origin, stored }, input });
            }
            Err(e) => self.unread(path.display(), "cannot read it", &e),
        }
    }

    fn unread(&self, origin: impl Display, what: &str, e: &io::Error) {
        let outcome = Outcome::new(Cause::Unreadable, format!("{what}: {}", io_reason(e)));
        self.settle(&origin.to_string(), Done::NotDelivered { outcome, sent: false });
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
            Prepared::Stopped(outcome, head) => return self.refuse(place, outcome, head.input()),
        };
        let delivered = Entry::Delivered(journal::hash(&ready.message.bytes));
        if self.journal().contains(&delivered) {
            self.seen(place);
            return Done::AlreadyDelivered;
        }
        if self.dry_run() {
            let (size, route) = (ready.message.size(), self.pipeline.route_of(&ready));
            self.say(&format!("would deliver: {}: {size} bytes, to {route}", place.origin));
            return Done::Delivered;
        }
        let outcome = self.pipeline.send(&ready);
        if outcome.class() != Class::Success {
            let outcome = self.pipeline.settle(outcome, &ready.message.bytes, &mut io::empty());
            return Done::NotDelivered { outcome, sent: true };
        }
        self.record(delivered);
        self.seen(place);
        Done::Delivered
    }

    /// A refusal, saved with the whole message, and recorded once saved so
    /// that a re-run does not save it again. It is looked up only once the
    /// message is refused again: a message refused for its size goes through
    /// when max_size is raised.
    fn refuse(&self, place: &Place, outcome: Outcome, head: &[u8]) -> Done {
        let refused = Entry::Refused(journal::hash(head));
        if self.journal().contains(&refused) {
            return Done::AlreadyRefused(outcome);
        }
        if self.dry_run() {
            return Done::NotDelivered { outcome, sent: false };
        }
        let outcome = self.save(place, outcome, head);
        if outcome.saved_to.is_some() {
            self.record(refused);
        }
        Done::NotDelivered { outcome, sent: false }
    }

    /// Save a refusal to the reject folder, if there is one. A message too
    /// large to hold was only read up to its head: it is read again from
    /// where it is stored, after checking that its head has not changed.
    fn save(&self, place: &Place, outcome: Outcome, head: &[u8]) -> Outcome {
        if outcome.cause != Cause::TooLarge || !self.pipeline.keeps_refusals() {
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

    /// Append to the journal; if it cannot be written, nothing more is sent.
    fn record(&self, entry: Entry) {
        if let Err(e) = self.journal().record(entry) {
            let reason = format!("cannot write to the journal: {}", io_reason(&e));
            self.halt(&mut self.tally(), Outcome::new(Cause::StateFailed, reason));
        }
    }

    fn seen(&self, place: &Place) {
        if let (true, false, Stored::File { path, maildir: true }) =
            (self.mark_seen, self.dry_run(), &place.stored)
        {
            if let Err(e) = maildir::mark_seen(path) {
                self.say(&format!(
                    "warning: {}: delivered, but cannot mark it seen: {}",
                    place.origin,
                    io_reason(&e)
                ));
            }
        }
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, origin: &str, done: Done) {
        let mut tally = self.tally();
        match done {
            Done::Delivered => {
                tally.delivered += 1;
                tally.failures_in_a_row = 0;
            }
            Done::AlreadyDelivered => tally.already += 1,
            Done::AlreadyRefused(outcome) => {
                self.say(&format!("already refused: {origin}: {outcome}"));
                tally.already_refused += 1;
                tally.first_refusal.get_or_insert(outcome);
            }
            Done::NotDelivered { outcome, .. } if outcome.class() == Class::Permanent => {
                let refused = if self.dry_run() { "would refuse" } else { "refused" };
                self.say(&format!("{refused}: {origin}: {outcome}"));
                tally.refused += 1;
                tally.first_refusal.get_or_insert(outcome);
            }
            Done::NotDelivered { outcome, sent } => {
                self.say(&format!("failed: {origin}: {outcome}"));
                tally.failed += 1;
                tally.failures_in_a_row += u32::from(sent);
                if !self.stopping.requested()
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
            if !told && self.stopping.requested() {
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
            let counts = format!(
                "{} delivered, {} already, {} refused, {} failed",
                t.delivered,
                t.already + t.already_refused,
                t.refused,
                t.failed
            );
            (t.found(), counts)
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
        let reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if !reading.is_empty() {
            line.push_str(&format!(", reading {reading}"));
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

/// The counts on stdout, and the outcome that decides the exit code. No
/// journal means a dry run.
fn summary(tally: Tally, interrupted: bool, journal: Option<&Path>, paths: &[PathBuf]) -> Outcome {
    let Tally { delivered, already, refused, failed, already_refused, skipped, .. } = tally;
    let (would, end) = match journal {
        Some(journal) => ("", format!("journal: {}", journal.display())),
        None => ("would be ", "dry run: nothing was sent".to_string()),
    };
    // A closed stdout must not turn a finished run into a failure.
    let _ = writeln!(
        io::stdout(),
        "{delivered} {would}delivered, {already} already delivered, {refused} {would}refused, {failed} failed, \
         {already_refused} already refused, {skipped} skipped ({end})"
    );
    if interrupted {
        let kept = if journal.is_some() { "what was delivered is in the journal: " } else { "" };
        Outcome::new(Cause::Interrupted, format!("interrupted; {kept}{RESUME}"))
    } else if let Some(halt) = tally.halt {
        Outcome::new(halt.cause, format!("stopped before the end: {}; {RESUME}", halt.reason()))
    } else if let Some(last) = tally.last_failure {
        Outcome::new(last.cause, format!("{failed} not delivered (last: {}); {RESUME}", last.reason()))
    } else if let Some(first) = tally.first_refusal {
        let earlier = match already_refused {
            0 => String::new(),
            n => format!(" ({n} already, by an earlier run)"),
        };
        let all = refused + already_refused;
        Outcome::new(
            first.cause,
            format!("{all} {would}refused{earlier}, listed above (first: {})", first.reason()),
        )
    } else if tally.found() == 0 && tally.skipped_among_messages > 0 {
        let paths: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        let (n, s) = (skipped, if skipped == 1 { "" } else { "s" });
        Outcome::new(
            Cause::Usage,
            format!("nothing to import in {}: {n} path{s} skipped, listed above", paths.join(", ")),
        )
    } else if journal.is_none() {
        Outcome::new(Cause::DryRun, format!("dry run: {delivered} valid; nothing was sent"))
    } else {
        Outcome::new(Cause::Delivered, format!("{delivered} delivered"))
    }
}
