//! `watch`: fetch mail from mailboxes and hand each message to the one
//! pipeline, transactionally: a message is flagged, moved or deleted on the
//! server only after the ingress answered 2xx for it, and what the ingress
//! answered is remembered before, so it is never sent again because a later
//! step failed.
//!
//! The engine ([`worker`]) is written against a small [`source::Source`]
//! trait, which IMAP ([`imap`]) and Microsoft Graph ([`graph`]) implement.
//! Its concurrency model is OS threads and blocking I/O with deadlines,
//! like the rest of the program (the relay is blocking to its callers; a
//! blocking call inside an async runtime is what must never happen): one
//! worker thread per connection, at most `max_connections` per mailbox
//! (Graph: 4, its requests in flight), each serving one folder in IDLE
//! or several in turn. A broken mailbox only ever stalls its own workers.
//! The main thread acts on the signals the command lifecycle ([`crate::run`])
//! hears (SIGTERM and the like: finish what is in flight, log out, exit 0;
//! a second one: exit at once; SIGHUP: reload the configuration) and tells
//! systemd how things stand. In cluster mode ([`cluster`]) a keeper thread
//! starts a mailbox's workers only while this replica holds its lease in
//! Redis, where the folders' state is kept too.

mod cluster;
mod graph;
mod imap;
mod source;
pub(crate) mod state;
mod worker;

pub use graph::{GraphCursor, GraphState};

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::cli::WatchArgs;
use crate::config::{Config, Mailbox, Overrides, Server};
use crate::log;
use crate::metrics::{self, Metrics};
use crate::outcome::{Cause, Class, Mta, Outcome};
use crate::pipeline::{Mode, Pipeline};
use crate::run::{self, Heard, Signals, Stopping};
use crate::sys;
use worker::{Context, Left, Worker};

/// What a connection of a mailbox another replica holds is doing.
const NOT_HELD: &str = "not held by this replica";

/// How often the main thread looks at its workers (status, watchdog).
const TICK: Duration = Duration::from_secs(1);

/// A request to stop, which sleeping threads hear at once, and so do
/// threads in IDLE: they wait on `wake` too, instead of waking to ask.
pub struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    woken: Condvar,
    /// An eventfd, readable once written to (and never read): one
    /// descriptor per stop, and cluster mode has one per mailbox. Without
    /// one (no descriptors left), IDLE asks every 250 ms.
    wake: Option<OwnedFd>,
}

impl Default for Stop {
    fn default() -> Stop {
        Stop {
            flag: AtomicBool::new(false),
            lock: Mutex::new(()),
            woken: Condvar::new(),
            wake: sys::eventfd(),
        }
    }
}

impl Stop {
    pub fn requested(&self) -> bool {
        self.flag.load(SeqCst)
    }

    pub fn request(&self) {
        self.flag.store(true, SeqCst);
        if let Some(fd) = &self.wake {
            sys::signal_eventfd(fd.as_fd());
        }
        let _guard = self.lock.lock();
        self.woken.notify_all();
    }

    /// Readable once a stop is requested.
    pub fn wake(&self) -> Option<BorrowedFd<'_>> {
        self.wake.as_ref().map(|fd| fd.as_fd())
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

/// What one worker is doing, for systemd's status and watchdog.
#[derive(Clone, Debug)]
pub struct Health {
    pub name: String,
    pub doing: String,
    pub failing: bool,
    pub delivered: u64,
    pub refused: u64,
}

/// What the main thread and the workers share.
pub struct Shared {
    pub stop: Arc<Stop>,
    health: Mutex<Vec<Health>>,
}

impl Shared {
    fn new() -> Shared {
        Shared { stop: Arc::new(Stop::default()), health: Mutex::new(Vec::new()) }
    }

    fn join(&self, name: String) -> usize {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.push(Health { name, doing: "starting".into(), failing: false, delivered: 0, refused: 0 });
        health.len() - 1
    }

    /// Record what worker `id` does now.
    pub fn update(&self, id: usize, change: impl FnOnce(&mut Health)) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = health.get_mut(id) {
            change(h);
        }
    }

    fn snapshot(&self) -> Vec<Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What reaches the main thread.
enum Event {
    Signal(Heard),
    /// A worker ended (with --once: it did what it could).
    Ended,
}

pub fn main(args: &WatchArgs, overrides: &Overrides) -> ExitCode {
    if args.status {
        // Asks Redis and prints; no signal policy needed, but a panic is
        // still the one internal-error outcome.
        return run::catch(|| status(args, overrides))
            .unwrap_or_else(|bug| bug.report(Mta::Sysexits, false, &[]));
    }
    // The flag's format at once; the file's once it is read.
    if let Some(format) = args.log_format {
        log::set_format(format);
    }
    // SIGTERM and the like: finish what is in flight, log out, exit; a
    // second one: exit at once. Nothing is lost then: what was answered and
    // not settled is in the state files, the rest is still on the server.
    // SIGHUP reloads a service; it stops --once like the others.
    let signals = Signals::Finish {
        left: "what the ingress answered is settled at the next start, the rest stays on the server",
        reload: !args.once,
    };
    // A clean stop after SIGTERM is a success; --once reports what is left.
    run::command(Mta::Sysexits, false, signals, |stopping| watch(args, overrides, stopping).into())
}

/// `watch --status`: the replicas and the mailboxes each holds, from
/// Redis. 0: every mailbox is held; 1: some is not; 75: Redis cannot be
/// asked (or the configuration is wrong).
fn status(args: &WatchArgs, overrides: &Overrides) -> ExitCode {
    let (config, mailboxes) = match load(args, overrides) {
        Ok(loaded) => loaded,
        Err(outcome) => return outcome.report(Mta::Sysexits, false, &[]),
    };
    let Some(cluster) = &config.cluster else {
        let file = config.file.as_ref().map_or("the configuration file".into(), |f| f.display().to_string());
        return Outcome::new(
            Cause::Config,
            format!("no [cluster] in {file}: watch runs alone, without replicas"),
        )
        .report(Mta::Sysexits, false, &[]);
    };
    let names: Vec<String> = mailboxes.iter().map(|m| m.name.clone()).collect();
    let ca_file = config.ca_file.as_ref().map(|c| c.value.as_path());
    match cluster::status(cluster, ca_file, &names) {
        Ok(report) => {
            let _ = std::io::stdout().write_all(report.text.as_bytes());
            ExitCode::from(u8::from(!report.unheld.is_empty()))
        }
        Err(outcome) => outcome.report(Mta::Sysexits, false, &[]),
    }
}

fn watch(args: &WatchArgs, overrides: &Overrides, stopping: &Stopping) -> Outcome {
    let (events, heard) = mpsc::channel();
    if let Some(signals) = stopping.heard() {
        let to_main = events.clone();
        thread::spawn(move || {
            for signal in signals {
                if to_main.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        });
    }
    supervise(args, overrides, &events, &heard)
}

fn supervise(
    args: &WatchArgs,
    overrides: &Overrides,
    events: &Sender<Event>,
    heard: &mpsc::Receiver<Event>,
) -> Outcome {
    let mut config = match load(args, overrides) {
        Ok(loaded) => loaded,
        Err(outcome) => return outcome,
    };
    if args.once && config.0.cluster.is_some() {
        return Outcome::new(
            Cause::Usage,
            "watch --once does not take part in a cluster: the replicas deliver what waits",
        )
        .with_fix(
            "leave --once out, or run it with a configuration without [cluster] where no replica runs",
        );
    }
    let state = state_dir(&config.0);
    // Kept across reloads: the counters go on, the server keeps its port.
    log::set_format(config.0.log_format.as_ref().map(|f| f.value).unwrap_or_default());
    let listen = args.metrics_listen.or(config.0.metrics.listen.as_ref().map(|l| l.value));
    let shown = match Shown::start(listen, config.0.metrics.allow_remote) {
        Ok(shown) => shown,
        Err(outcome) => return outcome,
    };
    let (metrics, health) = (&shown.metrics, &shown.health);
    let _lock = match state::Lock::take(&state) {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Outcome::new(Cause::Busy, e.to_string())
                .with_fix("stop the other watch (systemctl stop chatwoot-ingress-watch), or give this one another state_dir")
        }
        Err(e) => {
            return Outcome::new(
                Cause::StateFailed,
                format!("cannot lock {}: {}", state.display(), sys::io_reason(&e)),
            )
        }
    };
    loop {
        let (loaded, mailboxes) = &config;
        for warning in &loaded.warnings {
            log::warning("configuration", format!("warning: {warning}")).emit();
        }
        let run = match Run::start(loaded, mailboxes, &state, args.once, events, &shown) {
            Ok(run) => run,
            Err(outcome) => return outcome,
        };
        if !args.once {
            let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&run.status())]);
        }
        let watchdog = sd_notify::watchdog_enabled();
        let mut last_ping = Instant::now();
        let mut ended = 0;
        let reload = loop {
            match heard.recv_timeout(TICK) {
                Ok(Event::Ended) => {
                    ended += 1;
                    if args.once && ended == run.workers.len() {
                        return run.finish(false);
                    }
                }
                Ok(Event::Signal(Heard::Reload)) => break true,
                Ok(Event::Signal(Heard::Stop(signal))) => {
                    log::info(
                        "stopping",
                        format!("stopping on {}: finishing the messages in flight", sys::signal_name(signal)),
                    )
                    .emit();
                    break false;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break false,
            }
            if args.once {
                continue;
            }
            let _ = sd_notify::notify(&[NotifyState::Status(&run.status())]);
            if let Some(period) = watchdog {
                if last_ping.elapsed() >= period / 2 && health.live().is_ok() {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                    last_ping = Instant::now();
                }
            }
        };
        if !reload {
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
            let left = run.finish(true);
            // --once stopped by a signal says what is left; a service stops cleanly.
            return if args.once && left.class() != Class::Success {
                left
            } else {
                Outcome::new(Cause::Delivered, "stopped")
            };
        }
        let _ = sd_notify::notify(&[NotifyState::Reloading]);
        log::info("reloading", "reloading the configuration (SIGHUP)").emit();
        // The new configuration must load before the old one is let go of.
        let new = load(args, overrides);
        run.finish(true);
        // What the old workers said as they ended is of no interest now.
        while heard.try_recv().is_ok_and(|e| matches!(e, Event::Ended)) {}
        match new {
            Ok(new) if state_dir(&new.0) == state => {
                for gone in config.1.iter().filter(|m| !new.1.iter().any(|n| n.name == m.name)) {
                    metrics.forget(&gone.name);
                }
                config = new;
            }
            Ok(_) => log::warning(
                "reloading",
                "warning: state_dir cannot change on reload (restart instead); the old configuration is kept",
            )
            .emit(),
            Err(outcome) => {
                log::warning("reloading", format!("warning: the new configuration is not used: {outcome}"))
                    .emit()
            }
        }
    }
}

/// Probe the ingress until it answers as the ingress does (with backoff),
/// for readiness; then each delivery says how it stands.
fn probe(pipeline: &Pipeline, health: &metrics::Health, stop: &Stop) {
    let mut again = crate::backoff::Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
    loop {
        match pipeline.probe_ingress() {
            Ok(()) => return health.set_ready(Ok(())),
            Err(outcome) => {
                health.set_ready(Err(format!("the ingress does not answer as it should: {outcome}")))
            }
        }
        if stop.sleep(again.next_pause()) {
            return;
        }
    }
}

/// What a running watch shows: its metrics and health, and the server
/// that serves them (when --metrics-listen asks for one).
struct Shown {
    metrics: Arc<Metrics>,
    health: Arc<metrics::Health>,
    server: Option<metrics::ServerHandle>,
}

impl Shown {
    fn start(listen: Option<std::net::SocketAddr>, allow_remote: bool) -> Result<Shown, Outcome> {
        let metrics = Metrics::new(env!("CARGO_PKG_VERSION"));
        let health = metrics::Health::new();
        let Some(addr) = listen else { return Ok(Shown { metrics, health, server: None }) };
        metrics::check_listen(addr, allow_remote).map_err(|e| Outcome::new(Cause::Config, e))?;
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            Outcome::new(
                Cause::Config,
                format!("cannot listen on {addr} for metrics: {}", sys::io_reason(&e)),
            )
        })?;
        let server = metrics::serve(listener, metrics.clone(), health.clone())
            .map_err(|e| Outcome::new(Cause::Bug, format!("cannot serve metrics: {}", sys::io_reason(&e))))?;
        log::info("metrics", format!("metrics and health on http://{}/metrics", server.local_addr())).emit();
        Ok(Shown { metrics, health, server: Some(server) })
    }
}

type Loaded = (Config, Vec<Mailbox>);

/// The configuration and the mailboxes to watch (all, or those --mailbox names).
fn load(args: &WatchArgs, overrides: &Overrides) -> Result<Loaded, Outcome> {
    let config = Config::load(overrides)?;
    if config.mailboxes.is_empty() {
        let file = config.file.as_ref().map_or("the configuration file".into(), |f| f.display().to_string());
        return Err(Outcome::new(Cause::Config, format!("no [[mailbox]] in {file}: nothing to watch")));
    }
    let mut chosen = Vec::new();
    for name in &args.mailbox {
        chosen.push(config.mailbox(name)?.clone());
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

/// The folders of `mailbox`, dealt to at most `max` connections in turn.
fn shares(folders: &[String], max: usize) -> Vec<Vec<String>> {
    let n = folders.len().min(max.max(1));
    let mut shares = vec![Vec::new(); n];
    for (i, folder) in folders.iter().enumerate() {
        shares[i % n].push(folder.clone());
    }
    shares
}

/// The workers of one configuration; in cluster mode, the keeper that
/// starts a mailbox's workers when it takes its lease.
struct Run {
    shared: Arc<Shared>,
    workers: Vec<thread::JoinHandle<Left>>,
    keeper: Option<cluster::Keeper>,
    folders: usize,
}

/// One mailbox, ready to be watched: its token cache (shared by its
/// connections and kept across leases) and its folders dealt to
/// connections, each with its line in the status.
struct Watched {
    mailbox: Mailbox,
    tokens: Option<Arc<crate::mailbox::Tokens>>,
    /// Graph: the client of its service, shared with the other mailboxes
    /// there.
    client: Option<Arc<crate::graph::Client>>,
    shares: Vec<(Vec<String>, usize)>,
}

/// What starting a mailbox's workers takes.
struct Starter {
    pipeline: Arc<Pipeline>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    health: Arc<metrics::Health>,
    once: bool,
    recipient_header: Option<String>,
    watched: Vec<Watched>,
}

impl Starter {
    /// A thread per connection of `watched`, each running `then` on what
    /// its worker left.
    fn start<T: Send + 'static>(
        &self,
        watched: &Watched,
        stop: Arc<Stop>,
        lease: Option<cluster::Lease>,
        places: Arc<dyn state::Places>,
        then: impl Fn(Left, usize) -> T + Clone + Send + 'static,
    ) -> Result<Vec<thread::JoinHandle<T>>, Outcome> {
        let mailbox = &watched.mailbox;
        let ctx = Arc::new(Context {
            pipeline: self.pipeline.clone(),
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            places,
            stop,
            lease,
            once: self.once,
            recipient_header: mailbox.recipient_header.clone().or_else(|| self.recipient_header.clone()),
            poll_interval: mailbox.poll_interval,
        });
        let mut threads = Vec::new();
        for (share, id) in &watched.shares {
            let name = format!("{}/{}", mailbox.name, share.join(","));
            let (then, id) = (then.clone(), *id);
            let thread = match (&mailbox.server, &watched.client, &watched.tokens) {
                (Server::Graph(_), Some(client), Some(tokens)) => {
                    let source = graph::GraphSource::new(mailbox.clone(), client.clone(), tokens.clone());
                    spawn(Worker::new(source, &mailbox.name, share, ctx.clone(), id), name, id, then)?
                }
                (Server::Imap(imap), _, _) => {
                    let source = imap::ImapSource::new(mailbox.clone(), imap.clone(), watched.tokens.clone());
                    spawn(Worker::new(source, &mailbox.name, share, ctx.clone(), id), name, id, then)?
                }
                _ => return Err(run::bug("a Graph mailbox without its client or tokens")),
            };
            threads.push(thread);
        }
        Ok(threads)
    }
}

/// A worker on a thread of its own, which runs `then` on what it left.
fn spawn<S: source::Source + 'static, T: Send + 'static>(
    worker: Worker<S>,
    name: String,
    id: usize,
    then: impl FnOnce(Left, usize) -> T + Send + 'static,
) -> Result<thread::JoinHandle<T>, Outcome> {
    thread::Builder::new()
        .name(name)
        .spawn(move || then(worker.run(), id))
        .map_err(|e| Outcome::new(Cause::Bug, format!("cannot start a thread: {}", sys::io_reason(&e))))
}

impl Run {
    fn start(
        config: &Config,
        mailboxes: &[Mailbox],
        state_dir: &Path,
        once: bool,
        events: &Sender<Event>,
        shown: &Shown,
    ) -> Result<Run, Outcome> {
        let (metrics, health) = (&shown.metrics, &shown.health);
        let pipeline = Arc::new(Pipeline::new(config, Mode::Send)?);
        let shared = Arc::new(Shared::new());
        // Ready once the ingress answers: a probe now (when something may
        // ask: the metrics server), then each delivery.
        health.set_ready(Err("waiting for the ingress's first answer".into()));
        if !once && shown.server.is_some() {
            let (pipeline, health, shared) = (pipeline.clone(), health.clone(), shared.clone());
            thread::spawn(move || probe(&pipeline, &health, &shared.stop));
        }
        let mut watched = Vec::new();
        let mut folders = 0;
        // One Graph client per service: its limits (4 requests in flight,
        // a Retry-After) hold for each mailbox, however many tables name it.
        let mut clients: Vec<(&crate::config::Graph, &Option<PathBuf>, Arc<crate::graph::Client>)> =
            Vec::new();
        for mailbox in mailboxes {
            let tokens = crate::mailbox::tokens(mailbox)?.map(Arc::new);
            // Graph: as many connections as requests may be in flight.
            let (connections, client) = match &mailbox.server {
                Server::Imap(imap) => (imap.max_connections.get(), None),
                Server::Graph(graph) => {
                    let known = clients
                        .iter()
                        .find(|(g, ca, _)| g.endpoint == graph.endpoint && **ca == mailbox.ca_file);
                    let client = match known {
                        Some((_, _, client)) => client.clone(),
                        None => {
                            let client = Arc::new(graph::client(mailbox, graph, pipeline.max_size())?);
                            clients.push((graph, &mailbox.ca_file, client.clone()));
                            client
                        }
                    };
                    (crate::graph::MAX_IN_FLIGHT, Some(client))
                }
            };
            let shares = shares(&mailbox.folders, connections)
                .into_iter()
                .map(|share| {
                    folders += share.len();
                    let id = shared.join(format!("{}/{}", mailbox.name, share.join(",")));
                    (share, id)
                })
                .collect();
            watched.push(Watched { mailbox: mailbox.clone(), tokens, client, shares });
        }
        let connections: usize = watched.iter().map(|w| w.shares.len()).sum();
        let starter = Starter {
            pipeline,
            shared: shared.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            once,
            recipient_header: config.recipient_header.as_ref().map(|h| h.value.clone()),
            watched,
        };
        let Some(cluster) = &config.cluster else {
            let places: Arc<dyn state::Places> = Arc::new(state::Dir(state_dir.to_path_buf()));
            let mut workers = Vec::new();
            for watched in &starter.watched {
                let done = events.clone();
                let then = move |left, _| {
                    let _ = done.send(Event::Ended);
                    left
                };
                workers.extend(starter.start(watched, shared.stop.clone(), None, places.clone(), then)?);
            }
            log::info(
                "started",
                format!(
                    "watching {folders} folder(s) of {} mailbox(es) over {connections} connection(s); state in {}",
                    mailboxes.len(),
                    state_dir.display()
                ),
            )
            .emit();
            return Ok(Run { shared, workers, keeper: None, folders });
        };
        for w in &starter.watched {
            for (_, id) in &w.shares {
                shared.update(*id, |h| h.doing = NOT_HELD.into());
            }
        }
        let names: Vec<String> = mailboxes.iter().map(|m| m.name.clone()).collect();
        let start: cluster::Start = Box::new(move |name, lease, places| {
            let watched = starter.watched.iter().find(|w| w.mailbox.name == name).expect("a mailbox of ours");
            let (ending, shared) = (lease.clone(), starter.shared.clone());
            let then = move |_, id| {
                shared.update(id, |h| {
                    h.doing = NOT_HELD.into();
                    h.failing = false;
                });
                ending.ended();
            };
            starter.start(watched, lease.stop(), Some(lease.clone()), places, then)
        });
        let ca_file = config.ca_file.as_ref().map(|c| c.value.as_path());
        let keeper = cluster::Keeper::start(cluster, ca_file, names, start, metrics.clone(), health)?;
        log::info(
            "started",
            format!(
                "cluster mode as {}: sharing {} mailbox(es) ({folders} folder(s)) with the other replicas through Redis at {}, lease {} s; their state is kept there",
                cluster.node,
                mailboxes.len(),
                cluster.describe(),
                cluster.lease.as_secs()
            ),
        )
        .emit();
        Ok(Run { shared, workers: Vec::new(), keeper: Some(keeper), folders })
    }

    /// Wait for every worker, after asking them to stop (each finishes its
    /// message in flight and logs out) unless they end by themselves
    /// (--once); what is left for later decides --once's exit.
    fn finish(self, stop: bool) -> Outcome {
        if stop {
            self.shared.stop.request();
        }
        // In cluster mode: its workers stop, its leases are let go.
        drop(self.keeper);
        let mut left = Vec::new();
        for worker in self.workers {
            match worker.join() {
                Ok(Left::Nothing) => {}
                Ok(Left::Something(outcome)) => left.push(outcome),
                Err(_) => left.push(run::bug("a worker thread panicked")),
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
        let mut line = format!(
            "{} folder(s) over {} connection(s), {delivered} delivered, {refused} refused",
            self.folders,
            health.len()
        );
        if let Some(keeper) = &self.keeper {
            let standing = keeper.standing();
            line.push_str(&format!(
                "; cluster: holding {} mailbox(es) (at most {} each, {} replica(s))",
                standing.held, standing.share, standing.replicas
            ));
            if standing.redis_failing {
                line.push_str("; Redis is failing");
            }
        }
        if !failing.is_empty() {
            line.push_str(&format!("; failing: {}", failing.join("; ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_beyond_the_connections_share_them_and_each_is_served() {
        let folders: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
        let dealt = shares(&folders, 15);
        assert_eq!(dealt.len(), 15);
        let mut all: Vec<&String> = dealt.iter().flatten().collect();
        all.sort();
        let mut expected: Vec<&String> = folders.iter().collect();
        expected.sort();
        assert_eq!(all, expected);
        assert!(dealt.iter().all(|s| (3..=4).contains(&s.len())));
        assert_eq!(shares(&folders[..2], 10).len(), 2);
    }
}
