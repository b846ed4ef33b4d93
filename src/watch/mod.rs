//! `watch`: fetch mail from IMAP mailboxes and hand each message to the one
//! pipeline, transactionally: a message is flagged, moved or deleted on the
//! server only after the ingress answered 2xx for it.
//!
//! One thread per folder of each mailbox, blocking I/O with deadlines, like
//! the rest of the program (the relay is blocking to its callers): a broken
//! mailbox only ever stalls its own threads. The main thread handles signals
//! (SIGTERM and the like: finish what is in flight, log out, exit 0; SIGHUP:
//! reload the configuration) and tells systemd how things stand.

mod folder;
pub mod state;

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::cli::WatchArgs;
use crate::config::{Config, Mailbox, Overrides};
use crate::outcome::{Cause, Class, Mta, Outcome};
use crate::pipeline::{Mode, Pipeline};
use crate::sys;
use folder::{Folder, Left};

/// How often the main thread looks at its workers (status, watchdog).
const TICK: Duration = Duration::from_secs(1);

/// A request to stop, which sleeping threads hear at once, and so do
/// threads in IDLE: they wait on `wake` too, instead of waking to ask.
pub struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    woken: Condvar,
    /// A socket pair: one byte written to the second end makes the first
    /// readable. Without one (no descriptors left), IDLE asks every 250 ms.
    wake: Option<(UnixStream, UnixStream)>,
}

impl Default for Stop {
    fn default() -> Stop {
        Stop {
            flag: AtomicBool::new(false),
            lock: Mutex::new(()),
            woken: Condvar::new(),
            wake: UnixStream::pair().ok(),
        }
    }
}

impl Stop {
    pub fn requested(&self) -> bool {
        self.flag.load(SeqCst)
    }

    pub fn request(&self) {
        self.flag.store(true, SeqCst);
        if let Some((_, sender)) = &self.wake {
            let _ = (&*sender).write_all(b"!");
        }
        let _guard = self.lock.lock();
        self.woken.notify_all();
    }

    /// Readable once a stop is requested.
    pub fn wake(&self) -> Option<BorrowedFd<'_>> {
        self.wake.as_ref().map(|(receiver, _)| receiver.as_fd())
    }

    /// Sleep for `pause`, or less if a stop is requested; true if it was.
    pub fn sleep(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.requested() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self.woken.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

/// What one folder's thread is doing, for systemd's status and watchdog.
#[derive(Clone, Debug)]
pub struct Health {
    pub name: String,
    pub doing: String,
    pub failing: bool,
    /// When the thread last showed it is alive.
    pub beat: Instant,
    pub delivered: u64,
    pub refused: u64,
}

/// What the main thread and the folder threads share.
pub struct Shared {
    pub stop: Stop,
    health: Mutex<Vec<Health>>,
}

impl Shared {
    fn new() -> Shared {
        Shared { stop: Stop::default(), health: Mutex::new(Vec::new()) }
    }

    fn join(&self, name: String) -> usize {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let beat = Instant::now();
        health.push(Health {
            name,
            doing: "starting".into(),
            failing: false,
            beat,
            delivered: 0,
            refused: 0,
        });
        health.len() - 1
    }

    /// Record what thread `id` does now, which also shows it is alive.
    pub fn update(&self, id: usize, change: impl FnOnce(&mut Health)) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = health.get_mut(id) {
            h.beat = Instant::now();
            change(h);
        }
    }

    fn snapshot(&self) -> Vec<Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One line on stdout (the journal, under systemd): a message's outcome or
/// a connection event. Write errors are ignored: a closed stdout must not
/// stop the watcher.
pub fn log(line: &str) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

pub fn main(args: &WatchArgs, overrides: &Overrides) -> ExitCode {
    let ran = sys::catch_panic(|| watch(args, overrides));
    let outcome = ran.unwrap_or_else(|panic| {
        Outcome::new(Cause::Bug, format!("internal error, please report it: {panic}"))
    });
    // A clean stop after SIGTERM is a success; --once reports what is left.
    outcome.report(Mta::Sysexits, false, &[])
}

fn watch(args: &WatchArgs, overrides: &Overrides) -> Outcome {
    let signals = match sys::catch_terminating_signals() {
        Ok(signals) => signals,
        Err(e) => return Outcome::new(Cause::Bug, format!("cannot catch signals: {}", sys::io_reason(&e))),
    };
    let (tx, signalled) = mpsc::channel();
    let handle = signals.handle();
    thread::spawn(move || {
        let mut signals = signals;
        for signal in signals.forever() {
            if tx.send(signal).is_err() {
                return;
            }
        }
    });
    let mut config = match load(args, overrides) {
        Ok(loaded) => loaded,
        Err(outcome) => return outcome,
    };
    let state = state_dir(&config.0);
    let _lock = match state::Lock::take(&state) {
        Ok(lock) => lock,
        Err(e) => {
            return Outcome::new(
                Cause::StateFailed,
                format!("cannot lock {}: {}", state.display(), sys::io_reason(&e)),
            )
        }
    };
    let mut stops = 0;
    let result = loop {
        let (loaded, mailboxes) = &config;
        let run = Run::start(loaded, mailboxes, &state, args.once);
        let run = match run {
            Ok(run) => run,
            Err(outcome) => break outcome,
        };
        if args.once {
            break run.finish(false);
        }
        let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&run.status())]);
        let watchdog = sd_notify::watchdog_enabled();
        let mut last_ping = Instant::now();
        let reload = loop {
            match signalled.recv_timeout(TICK) {
                Ok(libc::SIGHUP) => break true,
                Ok(signal) => {
                    stops += 1;
                    if stops > 1 {
                        // A second request: stop now. Nothing is lost, only
                        // posted again later (flags come after the 2xx).
                        let outcome = Outcome::new(
                            Cause::Interrupted,
                            format!("stopped at once by a second {}", sys::signal_name(signal)),
                        );
                        let _ = outcome.report(Mta::Sysexits, false, &[]);
                        std::process::exit(outcome.exit_code(Mta::Sysexits).into());
                    }
                    log(&format!(
                        "stopping on {}: finishing the messages in flight",
                        sys::signal_name(signal)
                    ));
                    break false;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break false,
            }
            let _ = sd_notify::notify(&[NotifyState::Status(&run.status())]);
            if let Some(period) = watchdog {
                if last_ping.elapsed() >= period / 2 && run.alive(period) {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                    last_ping = Instant::now();
                }
            }
        };
        if !reload {
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
            run.finish(true);
            break Outcome::new(Cause::Delivered, "stopped");
        }
        let _ = sd_notify::notify(&[NotifyState::Reloading]);
        log("reloading the configuration (SIGHUP)");
        // The new configuration must load before the old one is let go of.
        let new = load(args, overrides);
        run.finish(true);
        match new {
            Ok(new) if state_dir(&new.0) == state => config = new,
            Ok(_) => log(
                "warning: state_dir cannot change on reload (restart instead); the old configuration is kept",
            ),
            Err(outcome) => log(&format!("warning: the new configuration is not used: {outcome}")),
        }
    };
    handle.close();
    result
}

type Loaded = (Config, Vec<Mailbox>);

/// The configuration and the mailboxes to watch (all, or those --mailbox names).
fn load(args: &WatchArgs, overrides: &Overrides) -> Result<Loaded, Outcome> {
    let config = Config::load(overrides).map_err(|e| Outcome::new(Cause::Config, e.to_string()))?;
    if config.mailboxes.is_empty() {
        let file = config.file.as_ref().map_or("the configuration file".into(), |f| f.display().to_string());
        return Err(Outcome::new(Cause::Config, format!("no [[mailbox]] in {file}: nothing to watch")));
    }
    let mut chosen = Vec::new();
    for name in &args.mailbox {
        match config.mailboxes.iter().find(|m| &m.name == name) {
            Some(mailbox) => chosen.push(mailbox.clone()),
            None => {
                let known: Vec<&str> = config.mailboxes.iter().map(|m| m.name.as_str()).collect();
                return Err(Outcome::new(
                    Cause::Usage,
                    format!("no mailbox named {name:?} (there are: {})", known.join(", ")),
                ));
            }
        }
    }
    if chosen.is_empty() {
        chosen = config.mailboxes.clone();
    }
    Ok((config, chosen))
}

/// state_dir, else systemd's StateDirectory (read by the configuration),
/// else the user's state directory, else the system's (`check` reads it too).
pub fn state_dir(config: &Config) -> PathBuf {
    if let Some(dir) = &config.state_dir {
        return dir.value.join("watch");
    }
    let user = directories::ProjectDirs::from("", "", "chatwoot-ingress")
        .and_then(|dirs| dirs.state_dir().map(|d| d.to_path_buf()))
        .filter(|_| std::env::var_os("HOME").is_some());
    user.unwrap_or_else(|| PathBuf::from("/var/lib/chatwoot-ingress")).join("watch")
}

/// The folder threads of one configuration.
struct Run {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<Left>>,
}

impl Run {
    fn start(
        config: &Config,
        mailboxes: &[Mailbox],
        state_dir: &std::path::Path,
        once: bool,
    ) -> Result<Run, Outcome> {
        let pipeline = Arc::new(Pipeline::new(config, Mode::Send)?);
        let shared = Arc::new(Shared::new());
        let mut threads = Vec::new();
        for mailbox in mailboxes {
            // One token cache for the folders of a mailbox.
            let tokens = crate::mailbox::tokens(mailbox)?.map(Arc::new);
            for name in &mailbox.folders {
                let id = shared.join(format!("{}/{name}", mailbox.name));
                let folder = Folder::new(
                    mailbox.clone(),
                    name.clone(),
                    pipeline.clone(),
                    shared.clone(),
                    id,
                    state_dir,
                    config.recipient_header.as_ref().map(|h| h.value.clone()),
                    once,
                    tokens.clone(),
                );
                let thread = thread::Builder::new()
                    .name(format!("{}/{name}", mailbox.name))
                    .spawn(move || folder.run())
                    .map_err(|e| {
                        Outcome::new(Cause::Bug, format!("cannot start a thread: {}", sys::io_reason(&e)))
                    })?;
                threads.push(thread);
            }
        }
        log(&format!(
            "watching {} folder(s) of {} mailbox(es); state in {}",
            threads.len(),
            mailboxes.len(),
            state_dir.display()
        ));
        Ok(Run { shared, threads })
    }

    /// Wait for every thread, after asking them to stop (each finishes its
    /// message in flight and logs out) unless they end by themselves
    /// (--once); what is left for later decides --once's exit.
    fn finish(self, stop: bool) -> Outcome {
        if stop {
            self.shared.stop.request();
        }
        let mut left = Vec::new();
        for thread in self.threads {
            match thread.join() {
                Ok(Left::Nothing) => {}
                Ok(Left::Something(outcome)) => left.push(outcome),
                Err(_) => left.push(Outcome::new(Cause::Bug, "a folder's thread panicked, please report it")),
            }
        }
        match left.into_iter().max_by_key(|o| o.class() == Class::Temporary) {
            Some(outcome) => outcome,
            None => Outcome::new(Cause::Delivered, "nothing left to deliver"),
        }
    }

    /// One line for systemd's status.
    fn status(&self) -> String {
        let health = self.shared.snapshot();
        let failing: Vec<String> =
            health.iter().filter(|h| h.failing).map(|h| format!("{}: {}", h.name, h.doing)).collect();
        let delivered: u64 = health.iter().map(|h| h.delivered).sum();
        let refused: u64 = health.iter().map(|h| h.refused).sum();
        let mut line = format!("{} folder(s), {delivered} delivered, {refused} refused", health.len());
        if !failing.is_empty() {
            line.push_str(&format!("; failing: {}", failing.join("; ")));
        }
        line
    }

    /// Every folder thread showed life recently enough; a delivery may
    /// take the relay's whole timeout, so that much more is allowed.
    fn alive(&self, period: Duration) -> bool {
        self.shared.snapshot().iter().all(|h| h.beat.elapsed() < period + folder::LONGEST_STEP)
    }
}
