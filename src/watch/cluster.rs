//! Cluster mode: several `watch` replicas share the mailboxes through Redis
//! (Chatwoot's own, found directly or through its Sentinels), so that no
//! host is a single point of failure.
//!
//! Keys, under `key_prefix` (P):
//! - `P:lease:<mailbox>`: the mailbox's lease, the holder's token
//!   (`node run`, the run a random number, so that two processes given one
//!   node name never share a lease), taken with `SET NX PX`, renewed and
//!   let go by scripts that touch it only while it is the holder's own.
//! - `P:members`: the live replicas, a sorted set of tokens scored by when
//!   each stops counting (Redis's own clock), renewed with the leases; each
//!   replica holds at most ⌈mailboxes ÷ live replicas⌉ and lets the others
//!   go after the message in flight.
//! - `P:holders`: lease key → the token that last took it (gone when it is
//!   let go), so that a replica can tell a free mailbox from one it takes
//!   over from a replica whose lease ran out.
//! - `P:state:<mailbox>`: folder → the folder's state (the same JSON as a
//!   state file), written only by a script that checks the lease.
//!
//! The keeper thread renews, takes and lets go every `tick`; a lease renewed
//! by a request sent at t is surely held until t + lease − margin by this
//! process's monotonic clock, whatever Redis does meanwhile, and the
//! workers ask [`Lease::held`] before each fetch and each settle. The guard
//! thread, which waits on nothing but the clock, asks a mailbox's workers to
//! stop (and log out) `lead` before that, when no renewal came.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{
    Client, Connection, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    RedisResult, Script, TlsCertificates,
};
use sha2::{Digest, Sha256};

use super::state::{Place, Places};
use super::Stop;
use crate::backoff::Backoff;
use crate::config::{Cluster, Password};
use crate::log;
use crate::metrics::{self, Metrics};
use crate::outcome::{Cause, Outcome};
use crate::{run, secret, sys};

/// Every delay of cluster mode, from the lease.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease: Duration,
    /// How often leases are renewed and free mailboxes looked for: a dead
    /// replica's mailboxes are taken within lease + tick.
    pub tick: Duration,
    /// The longest a connection to Redis, or an answer, may take.
    pub io: Duration,
    /// A lease renewed by a request sent at t is surely held until
    /// t + lease − margin (clocks that run at slightly other rates).
    pub margin: Duration,
    /// A mailbox's workers are asked to stop this long before the lease
    /// can have ended, so that their sessions end before another begins.
    pub lead: Duration,
}

impl Timing {
    pub fn of(lease: Duration) -> Timing {
        let two = Duration::from_secs(2);
        Timing {
            lease,
            tick: (lease / 4).min(two),
            io: (lease / 8).clamp(Duration::from_millis(250), two),
            margin: lease / 10,
            lead: lease / 5,
        }
    }
}

/// Our keys in Redis.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn members(&self) -> String {
        format!("{}:members", self.prefix)
    }

    fn holders(&self) -> String {
        format!("{}:holders", self.prefix)
    }

    fn lease(&self, mailbox: &str) -> String {
        format!("{}:lease:{mailbox}", self.prefix)
    }

    fn state(&self, mailbox: &str) -> String {
        format!("{}:state:{mailbox}", self.prefix)
    }
}

/// Renew this replica's membership and leases, and take free mailboxes up
/// to its share. KEYS: members, holders, the leases held (ARGV[4] of
/// them), then those it may take, best first. ARGV: token, lease (ms),
/// mailboxes in all, number held. Returns the holder of each lease held
/// after the renewal, the positions taken among those it could take and
/// who held each before, the live members, and the share.
const TICK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, lease, held = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + lease, token)
redis.call('PEXPIRE', KEYS[1], lease * 2)
local holders, count = {}, 0
for i = 1, held do
  local key = KEYS[2 + i]
  if redis.call('GET', key) == token then
    redis.call('PEXPIRE', key, lease)
    count = count + 1
  end
  holders[i] = redis.call('GET', key) or ''
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local share = math.ceil(tonumber(ARGV[3]) / #members)
local taken, before = {}, {}
for i = 3 + held, #KEYS do
  if count >= share then break end
  local mine = redis.call('GET', KEYS[i]) == token
  if mine then
    -- Taken by a round whose answer was lost.
    redis.call('PEXPIRE', KEYS[i], lease)
  end
  if mine or redis.call('SET', KEYS[i], token, 'NX', 'PX', lease) then
    count = count + 1
    taken[#taken + 1] = i - 2 - held
    before[#before + 1] = mine and '' or (redis.call('HGET', KEYS[2], KEYS[i]) or '')
    redis.call('HSET', KEYS[2], KEYS[i], token)
  end
end
return {holders, taken, before, members, share}
";

/// Let go of the leases in KEYS (after KEYS[1], holders) that are still
/// ARGV[1]'s; with ARGV[2] = 'leave', leave the members too.
const RELEASE: &str = r"
local n = 0
for i = 2, #KEYS - 1 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    redis.call('HDEL', KEYS[1], KEYS[i])
    n = n + 1
  end
end
if ARGV[2] == 'leave' then redis.call('ZREM', KEYS[#KEYS], ARGV[1]) end
return n
";

/// Write a folder's state (KEYS[2] field ARGV[2] = ARGV[3]) only while
/// the lease KEYS[1] is ARGV[1]'s.
const WRITE_STATE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
";

struct Scripts {
    tick: Script,
    release: Script,
    write_state: Script,
}

/// Loaded by their digest (EVALSHA), sent whole once when Redis lacks them.
fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        tick: Script::new(TICK),
        release: Script::new(RELEASE),
        write_state: Script::new(WRITE_STATE),
    })
}

/// Where Redis is and how to log in: the master itself, or the one the
/// sentinels name, asked again at each connection (a failover is followed).
pub struct Redis {
    cluster: Cluster,
    /// The database and user the URL names.
    settings: RedisConnectionInfo,
    tls: bool,
    /// With rediss:// and a ca_file: the system's authorities and its.
    roots: Option<Vec<u8>>,
    io: Duration,
}

impl Redis {
    pub fn new(cluster: &Cluster, ca_file: Option<&Path>) -> Result<Redis, Outcome> {
        let config = |e: String| Outcome::new(Cause::Config, e);
        let url = &cluster.redis_url.value;
        let settings = url
            .as_str()
            .into_connection_info()
            .map_err(|e| config(format!("bad redis_url ({}): {e}", cluster.redis_url.source)))?
            .redis_settings()
            .clone();
        let tls = url.scheme() == "rediss";
        let roots = match ca_file {
            Some(path) if tls => Some(crate::tls::trusted_pem(path).map_err(|e| config(e.to_string()))?),
            _ => None,
        };
        Ok(Redis { cluster: cluster.clone(), settings, tls, roots, io: Timing::of(cluster.lease).io })
    }

    /// Read now: a password file fixed takes effect at the next connection.
    fn password(&self) -> Result<Option<Password>, Outcome> {
        match &self.cluster.password {
            Some(secret) => {
                secret.value.read().map(Some).map_err(|e| Outcome::new(Cause::Config, e.to_string()))
            }
            None => Ok(None),
        }
    }

    fn client(&self, host: &str, port: u16, settings: RedisConnectionInfo) -> RedisResult<Client> {
        let addr = match self.tls {
            true => ConnectionAddr::TcpTls { host: host.into(), port, insecure: false, tls_params: None },
            false => ConnectionAddr::Tcp(host.into(), port),
        };
        let info = addr.into_connection_info()?.set_redis_settings(settings);
        match &self.roots {
            Some(pem) => Client::build_with_tls(
                info,
                TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
            None => Client::open(info),
        }
    }

    /// A connection whose every read and write has a deadline.
    fn open(&self, host: &str, port: u16, settings: RedisConnectionInfo) -> RedisResult<Connection> {
        let connection = self.client(host, port, settings)?.get_connection_with_timeout(self.io)?;
        connection.set_read_timeout(Some(self.io))?;
        connection.set_write_timeout(Some(self.io))?;
        Ok(connection)
    }

    /// A connection to the master.
    pub fn connect(&self) -> Result<Connection, Outcome> {
        let password = self.password()?;
        let mut settings = self.settings.clone();
        if let Some(password) = &password {
            settings = settings.set_password(password.expose());
        }
        let url = &self.cluster.redis_url.value;
        if self.cluster.sentinels.is_empty() {
            let (host, port) = (url.host_str().unwrap_or_default(), url.port().unwrap_or(6379));
            let host = host.trim_start_matches('[').trim_end_matches(']');
            return self.open(host, port, settings).map_err(|e| self.trouble(&e, url.as_ref(), &password));
        }
        let (host, port) = self.master(&password)?;
        let at = format!("{host}:{port} (the master the sentinels name)");
        let mut connection =
            self.open(&host, port, settings).map_err(|e| self.trouble(&e, &at, &password))?;
        // Until a failover is done, a sentinel may still name the old master.
        let role: Vec<redis::Value> =
            redis::cmd("ROLE").query(&mut connection).map_err(|e| self.trouble(&e, &at, &password))?;
        match role.first().map(redis::from_redis_value_ref::<String>) {
            Some(Ok(role)) if role == "master" => Ok(connection),
            _ => Err(Outcome::new(Cause::Refused, format!("Redis at {at} is not the master (yet)"))
                .with_fix("a failover is under way: it is asked again shortly")),
        }
    }

    /// Where the master is, asked of each sentinel in turn (with the
    /// password, as Chatwoot sends it).
    fn master(&self, password: &Option<Password>) -> Result<(String, u16), Outcome> {
        let name = &self.cluster.sentinel_master;
        let mut settings = RedisConnectionInfo::default();
        if let Some(password) = password {
            settings = settings.set_password(password.expose());
        }
        let mut failed = Vec::new();
        for (host, port) in &self.cluster.sentinels {
            let asked = self.open(host, *port, settings.clone()).and_then(|mut connection| {
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(name)
                    .query::<Option<(String, u16)>>(&mut connection)
            });
            match asked {
                Ok(Some(master)) => return Ok(master),
                Ok(None) => failed.push(format!("{host}:{port} knows no master named {name:?}")),
                Err(e) => {
                    failed.push(self.trouble(&e, &format!("{host}:{port}"), password).reason().to_string())
                }
            }
        }
        Err(Outcome::new(Cause::Refused, format!("no sentinel names the master: {}", failed.join("; ")))
            .with_fix("start the sentinels, or fix [cluster] sentinels and sentinel_master (or REDIS_SENTINELS and REDIS_SENTINEL_MASTER_NAME)"))
    }

    /// A failure of Redis as an outcome, by its type; the password never
    /// shows, in any spelling.
    fn trouble(&self, e: &RedisError, at: &str, password: &Option<Password>) -> Outcome {
        let secrets: Vec<&str> = password.iter().map(Password::expose).collect();
        let reason = secret::scrub(&format!("Redis at {at}: {e}"), &secrets);
        let login = matches!(e.kind(), ErrorKind::AuthenticationFailed)
            || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
        // rustls's refusal reaches us only as an I/O error of its own kind
        // (the crate keeps the io::Error to itself): over rediss://, an I/O
        // error that is no refusal, timeout or dropped connection is TLS.
        let tls = self.tls
            && e.is_io_error()
            && !(e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped());
        if tls {
            Outcome::new(Cause::Tls, reason).with_fix(
                "rediss:// verifies Redis's certificate: it must be valid for the host and issued by an authority this machine trusts (set ca_file for a private one)",
            )
        } else if login {
            Outcome::new(Cause::PasswordRejected, reason).with_fix(
                "give the password Redis wants in [cluster] password_file, REDIS_PASSWORD or the URL (and the user in the URL, with ACLs)",
            )
        } else if e.is_timeout() {
            Outcome::new(Cause::Timeout, reason)
                .with_fix("Redis answers too slowly or not at all: see its log and the network in between")
        } else {
            Outcome::new(Cause::Refused, reason).with_fix(REDIS_FIX)
        }
    }
}

const REDIS_FIX: &str =
    "start Redis, or fix [cluster] redis_url or sentinels (or Chatwoot's REDIS_URL, REDIS_SENTINELS)";

/// One connection, opened when first needed and again after any failure.
pub struct Link {
    redis: Arc<Redis>,
    connection: Mutex<Option<Connection>>,
}

impl Link {
    fn new(redis: Arc<Redis>) -> Link {
        Link { redis, connection: Mutex::new(None) }
    }

    /// `f` on the connection; once more on a new one when a connection
    /// kept from before turns out to be gone (Redis restarted, a failover):
    /// every request of ours may be sent twice.
    fn with<T>(&self, mut f: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T, Outcome> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let kept = connection.is_some();
        for fresh in [!kept, true] {
            if connection.is_none() {
                *connection = Some(self.redis.connect()?);
            }
            match f(connection.as_mut().expect("just connected")) {
                Ok(done) => return Ok(done),
                Err(e) => {
                    // Whatever went wrong (a timeout mid-answer, a master
                    // demoted to replica), the next use starts afresh.
                    *connection = None;
                    let gone = (e.is_connection_dropped() || e.is_unrecoverable_error()) && !e.is_timeout();
                    if fresh || !gone {
                        let password = self.redis.password().ok().flatten();
                        return Err(self.redis.trouble(&e, &self.redis.cluster.describe(), &password));
                    }
                }
            }
        }
        unreachable!("the second round is always on a fresh connection")
    }
}

/// Nanoseconds since the first call, on the monotonic clock.
fn clock() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

fn at(nanos: u64) -> Instant {
    let now = clock();
    match nanos.checked_sub(now) {
        Some(ahead) => Instant::now() + Duration::from_nanos(ahead),
        None => Instant::now() - Duration::from_nanos(now - nanos),
    }
}

/// This replica's hold on one mailbox, as its workers ask it.
#[derive(Clone)]
pub struct Lease(Arc<LeaseInner>);

struct LeaseInner {
    mailbox: String,
    /// Until when (on [`clock`]) the lease is surely ours; 0 once it is not.
    until: AtomicU64,
    /// The mailbox's workers stop on it.
    stop: Arc<Stop>,
    /// The guard asked them to stop: the lease was not renewed in time.
    expiring: AtomicBool,
    keeper: Sender<Msg>,
}

impl Lease {
    fn new(mailbox: &str, keeper: Sender<Msg>) -> Lease {
        Lease(Arc::new(LeaseInner {
            mailbox: mailbox.to_string(),
            until: AtomicU64::new(0),
            stop: Arc::new(Stop::default()),
            expiring: AtomicBool::new(false),
            keeper,
        }))
    }

    /// Whether this replica surely holds the mailbox now.
    pub fn held(&self) -> bool {
        clock() < self.0.until.load(SeqCst)
    }

    /// What the mailbox's workers stop on.
    pub fn stop(&self) -> Arc<Stop> {
        self.0.stop.clone()
    }

    /// Told by each of the mailbox's workers as it ends: once all have, the
    /// lease is let go.
    pub fn ended(&self) {
        let _ = self.0.keeper.send(Msg::Ended(self.0.mailbox.clone()));
    }

    /// Renewed (or taken) by a request sent at `sent`.
    fn renewed(&self, sent: Instant, timing: &Timing) {
        let until = sent + timing.lease - timing.margin;
        let nanos =
            clock() + u64::try_from(until.saturating_duration_since(Instant::now()).as_nanos()).unwrap_or(0);
        self.0.until.store(nanos, SeqCst);
    }

    fn end(&self) {
        self.0.until.store(0, SeqCst);
        self.0.stop.request();
    }
}

/// What reaches the keeper.
enum Msg {
    /// A worker of this mailbox ended.
    Ended(String),
    Quit,
}

/// Asks the workers of a mailbox whose lease was not renewed in time to
/// stop, `lead` before it can have ended; it waits on the clock alone, so
/// a keeper stuck on Redis cannot keep a session open past its lease.
struct Guard {
    leases: Mutex<(Vec<Lease>, bool)>,
    changed: Condvar,
}

impl Guard {
    fn leases(&self) -> MutexGuard<'_, (Vec<Lease>, bool)> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch(&self, lease: &Lease) {
        self.leases().0.push(lease.clone());
        self.changed.notify_all();
    }

    fn forget(&self, lease: &Lease) {
        self.leases().0.retain(|l| !Arc::ptr_eq(&l.0, &lease.0));
    }

    fn quit(&self) {
        self.leases().1 = true;
        self.changed.notify_all();
    }

    fn run(&self, timing: Timing, metrics: &Metrics) {
        let before_end = timing.lead - timing.margin.min(timing.lead);
        let mut leases = self.leases();
        while !leases.1 {
            let now = clock();
            let mut next: Option<u64> = None;
            for lease in leases.0.iter().filter(|l| !l.0.expiring.load(SeqCst)) {
                let until = lease.0.until.load(SeqCst);
                let stop_at = until.saturating_sub(u64::try_from(before_end.as_nanos()).unwrap_or(0));
                if now >= stop_at {
                    lease.0.expiring.store(true, SeqCst);
                    lease.0.stop.request();
                    metrics.lease_held(&lease.0.mailbox, false);
                    log::warning(
                        "lease-lost",
                        format!(
                            "{}: lease lost: not renewed in time; its workers stop before it can end (in {} ms)",
                            lease.0.mailbox,
                            until.saturating_sub(now) / 1_000_000
                        ),
                    )
                    .place(&lease.0.mailbox, None)
                    .emit();
                } else {
                    next = Some(next.map_or(stop_at, |n| n.min(stop_at)));
                }
            }
            leases = match next {
                Some(next) => {
                    let wait = at(next).saturating_duration_since(Instant::now());
                    self.changed.wait_timeout(leases, wait).unwrap_or_else(|e| e.into_inner()).0
                }
                None => self.changed.wait(leases).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// What starts the workers of a mailbox whose lease was taken: each
/// calls [`Lease::ended`] as it ends.
pub type Start = Box<dyn Fn(&str, &Lease, Arc<dyn Places>) -> Result<Vec<JoinHandle<()>>, Outcome> + Send>;

/// Why a mailbox is being let go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Letting {
    /// More than this replica's share.
    Rebalance,
    /// The lease ended (not renewed in time, or another holds it).
    Lost,
    Stopping,
}

struct Holding {
    lease: Lease,
    workers: Vec<JoinHandle<()>>,
    running: usize,
    letting: Option<Letting>,
}

/// How the cluster stands for this replica, for systemd's status line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standing {
    pub held: usize,
    pub replicas: usize,
    pub share: usize,
    pub redis_failing: bool,
}

/// The thread that keeps this replica's membership and leases.
pub struct Keeper {
    thread: Option<JoinHandle<()>>,
    guard: Arc<Guard>,
    guard_thread: Option<JoinHandle<()>>,
    tell: Sender<Msg>,
    standing: Arc<Mutex<Standing>>,
}

struct Keeping {
    cluster: Cluster,
    timing: Timing,
    keys: Keys,
    token: String,
    /// Every mailbox this replica may hold.
    mailboxes: Vec<String>,
    link: Link,
    /// For the workers' state, beside the keeper's own connection.
    places: Arc<dyn Places>,
    start: Start,
    holdings: BTreeMap<String, Holding>,
    guard: Arc<Guard>,
    tell: Sender<Msg>,
    heard: Receiver<Msg>,
    metrics: Arc<Metrics>,
    heartbeat: metrics::Heartbeat,
    standing: Arc<Mutex<Standing>>,
    /// Since when Redis fails, if it does.
    failing: Option<Instant>,
}

/// This process's part of the tokens: two processes given one node name
/// never share a lease.
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No randomness to be had: the process id and the time differ too.
            let nanos = std::time::UNIX_EPOCH.elapsed().unwrap_or_default().subsec_nanos();
            bytes = (u64::from(std::process::id()) << 32 | u64::from(nanos)).to_be_bytes();
        }
        hex::encode(bytes)
    })
}

/// The node a token names.
fn node_of(token: &str) -> &str {
    token.rsplit_once(' ').map_or(token, |(node, _)| node)
}

/// How much `node` is the replica of choice for `mailbox` (rendezvous
/// hashing): replicas prefer different mailboxes, and the same ones again
/// after a restart.
fn affinity(node: &str, mailbox: &str) -> u64 {
    let hash = Sha256::digest(format!("{node}\n{mailbox}"));
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

impl Keeper {
    pub fn start(
        cluster: &Cluster,
        ca_file: Option<&Path>,
        mailboxes: Vec<String>,
        start: Start,
        metrics: Arc<Metrics>,
        health: &Arc<metrics::Health>,
    ) -> Result<Keeper, Outcome> {
        let timing = Timing::of(cluster.lease);
        let redis = Arc::new(Redis::new(cluster, ca_file)?);
        let keys = Keys { prefix: cluster.key_prefix.clone() };
        let token = format!("{} {}", cluster.node, run_id());
        let (tell, heard) = mpsc::channel();
        let guard = Arc::new(Guard { leases: Mutex::new((Vec::new(), false)), changed: Condvar::new() });
        let standing = Arc::new(Mutex::new(Standing::default()));
        let places = Arc::new(Shared {
            link: Arc::new(Link::new(redis.clone())),
            keys: keys.clone(),
            token: token.clone(),
            cluster: cluster.describe(),
        });
        let within =
            timing.tick + timing.io * 2 * (cluster.sentinels.len() as u32 + 2) + Duration::from_secs(30);
        let keeping = Keeping {
            cluster: cluster.clone(),
            timing,
            keys,
            token,
            mailboxes,
            link: Link::new(redis),
            places,
            start,
            holdings: BTreeMap::new(),
            guard: guard.clone(),
            tell: tell.clone(),
            heard,
            metrics: metrics.clone(),
            heartbeat: health.register("cluster", within),
            standing: standing.clone(),
            failing: None,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new().name(name.into()).spawn(f).map_err(|e| {
                Outcome::new(Cause::Bug, format!("cannot start a thread: {}", sys::io_reason(&e)))
            })
        };
        let watched = guard.clone();
        let guard_thread = spawn("cluster-guard", Box::new(move || watched.run(timing, &metrics)))?;
        let thread = spawn("cluster", Box::new(move || keeping.run()))?;
        Ok(Keeper { thread: Some(thread), guard, guard_thread: Some(guard_thread), tell, standing })
    }

    pub fn standing(&self) -> Standing {
        *self.standing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Dropped, it stops every worker (each finishes its message in flight),
/// lets go of every lease and leaves the members.
impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.tell.send(Msg::Quit);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.guard.quit();
        if let Some(thread) = self.guard_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Keeping {
    fn run(mut self) {
        let mut next = Instant::now();
        let mut first = true;
        let mut again = Backoff::new(self.timing.tick, self.timing.lease.max(self.timing.tick));
        loop {
            self.heartbeat.beat(
                next.saturating_duration_since(Instant::now()) + self.timing.io * 8 + Duration::from_secs(30),
            );
            match self.heard.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(Msg::Quit) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Ended(mailbox)) => {
                    self.ended(&mailbox);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let ran = run::catch(|| self.tick(first));
            first = false;
            let pause = match ran {
                Ok(true) => {
                    again.reset();
                    self.timing.tick
                }
                // While leases are held they are renewed at every tick;
                // without any, Redis is asked less and less often.
                Ok(false) if self.holdings.values().any(|h| h.lease.held()) => self.timing.tick,
                Ok(false) => again.next_pause(),
                Err(bug) => {
                    log::error("cluster", bug.reason()).emit();
                    self.timing.tick
                }
            };
            next = Instant::now() + pause;
        }
        self.leave();
    }

    /// One round with Redis: renew, take, decide what to let go. False
    /// when Redis failed.
    fn tick(&mut self, first: bool) -> bool {
        let held: Vec<String> = self.holdings.keys().cloned().collect();
        // The first round only announces this replica, so that replicas
        // started together see each other before they take their shares.
        let mut free: Vec<&String> = match first {
            true => Vec::new(),
            false => self.mailboxes.iter().filter(|m| !self.holdings.contains_key(*m)).collect(),
        };
        let node = self.cluster.node.clone();
        free.sort_by_key(|m| std::cmp::Reverse(affinity(&node, m)));
        let keys = &self.keys;
        let sent = Instant::now();
        let answer = self.link.with(|connection| {
            let mut call = scripts().tick.prepare_invoke();
            call.key(keys.members()).key(keys.holders());
            for mailbox in held.iter().chain(free.iter().copied()) {
                call.key(keys.lease(mailbox));
            }
            call.arg(&self.token)
                .arg(u64::try_from(self.timing.lease.as_millis()).unwrap_or(u64::MAX))
                .arg(self.mailboxes.len())
                .arg(held.len());
            call.invoke::<(Vec<String>, Vec<usize>, Vec<String>, Vec<String>, usize)>(connection)
        });
        let (holders, taken, before, members, share) = match answer {
            Ok(answer) => answer,
            Err(outcome) => {
                self.failing(&outcome);
                return false;
            }
        };
        let free: Vec<String> = free.into_iter().cloned().collect();
        if let Some(since) = self.failing.take() {
            log::info("redis-back", format!("Redis answers again, after {} s", since.elapsed().as_secs()))
                .emit();
        }
        for (mailbox, holder) in held.iter().zip(&holders) {
            let Some(holding) = self.holdings.get_mut(mailbox) else { continue };
            if *holder == self.token {
                holding.lease.renewed(sent, &self.timing);
                continue;
            }
            if holding.letting == Some(Letting::Lost) {
                continue;
            }
            let expiring = holding.lease.0.expiring.load(SeqCst);
            holding.lease.end();
            holding.letting = Some(Letting::Lost);
            self.metrics.lease_held(mailbox, false);
            if !expiring {
                let now = match holder.as_str() {
                    "" => "it ran out".to_string(),
                    other => format!("{} holds it now", node_of(other)),
                };
                log::warning("lease-lost", format!("{mailbox}: lease lost: {now}; its workers stop"))
                    .place(mailbox, None)
                    .emit();
            }
        }
        for (position, before) in taken.iter().zip(&before) {
            let Some(mailbox) = position.checked_sub(1).and_then(|i| free.get(i)) else { continue };
            self.took(mailbox, before, sent, members.len(), share);
        }
        // More than the share: the ones other replicas like best go first.
        let mut keeping: Vec<&String> =
            self.holdings.iter().filter(|(_, h)| h.letting.is_none()).map(|(m, _)| m).collect();
        if keeping.len() > share {
            keeping.sort_by_key(|m| affinity(&node, m));
            let extra: Vec<String> = keeping[..keeping.len() - share].iter().map(|m| m.to_string()).collect();
            for mailbox in extra {
                let holding = self.holdings.get_mut(&mailbox).expect("held");
                holding.letting = Some(Letting::Rebalance);
                holding.lease.0.stop.request();
            }
        }
        let held = self.holdings.values().filter(|h| h.letting.is_none()).count();
        let mut standing = self.standing.lock().unwrap_or_else(|e| e.into_inner());
        *standing = Standing { held, replicas: members.len(), share, redis_failing: false };
        drop(standing);
        // Mailboxes whose workers are all gone already.
        let done: Vec<String> = self
            .holdings
            .iter()
            .filter(|(_, h)| h.running == 0 && h.letting.is_some())
            .map(|(m, _)| m.clone())
            .collect();
        for mailbox in done {
            self.let_go(&mailbox);
        }
        true
    }

    /// A lease was taken: start the mailbox's workers.
    fn took(&mut self, mailbox: &str, before: &str, sent: Instant, replicas: usize, share: usize) {
        let lease = Lease::new(mailbox, self.tell.clone());
        lease.renewed(sent, &self.timing);
        let how = match before {
            "" => "lease taken".to_string(),
            token if token == self.token => "lease taken again (it had run out)".to_string(),
            token => format!("taken over from {}, whose lease ran out", node_of(token)),
        };
        let event =
            if before.is_empty() || before == self.token { "lease-taken" } else { "lease-taken-over" };
        log::info(
            event,
            format!("{mailbox}: {how} ({replicas} replica(s), {share} mailbox(es) each at most)"),
        )
        .place(mailbox, None)
        .emit();
        self.metrics.lease_held(mailbox, true);
        self.guard.watch(&lease);
        match (self.start)(mailbox, &lease, self.places.clone()) {
            Ok(workers) => {
                let running = workers.len();
                self.holdings.insert(mailbox.to_string(), Holding { lease, workers, running, letting: None });
            }
            Err(outcome) => {
                log::error("cluster", format!("{mailbox}: cannot start its workers: {outcome}"))
                    .place(mailbox, None)
                    .emit();
                lease.end();
                self.holdings.insert(
                    mailbox.to_string(),
                    Holding { lease, workers: Vec::new(), running: 0, letting: Some(Letting::Lost) },
                );
                self.let_go(mailbox);
            }
        }
    }

    fn ended(&mut self, mailbox: &str) {
        let Some(holding) = self.holdings.get_mut(mailbox) else { return };
        holding.running = holding.running.saturating_sub(1);
        if holding.running > 0 {
            return;
        }
        // Workers end on their own only when asked, or when the lease was
        // no longer surely held.
        if holding.letting.is_none() {
            holding.letting = Some(Letting::Lost);
        }
        self.let_go(mailbox);
    }

    /// Every worker of `mailbox` ended: the lease goes back to Redis.
    fn let_go(&mut self, mailbox: &str) {
        let Some(holding) = self.holdings.remove(mailbox) else { return };
        for worker in holding.workers {
            let _ = worker.join();
        }
        self.guard.forget(&holding.lease);
        let was_held = holding.lease.held();
        holding.lease.end();
        self.metrics.lease_held(mailbox, false);
        let released = self.release(&[mailbox.to_string()], false);
        let why = match holding.letting {
            Some(Letting::Rebalance) => "to even out the shares",
            Some(Letting::Stopping) => "stopping",
            // Its loss was told when it happened.
            Some(Letting::Lost) | None => return,
        };
        let (level, text) = match released {
            Ok(_) => (log::Level::Info, format!("{mailbox}: lease released ({why})")),
            Err(outcome) if was_held => (
                log::Level::Warning,
                format!("{mailbox}: lease left to run out ({why}): it could not be released: {outcome}"),
            ),
            Err(_) => return,
        };
        log::event(level, "lease-released", text).place(mailbox, None).emit();
    }

    fn release(&self, mailboxes: &[String], leave: bool) -> Result<usize, Outcome> {
        let keys = &self.keys;
        self.link.with(|connection| {
            let mut call = scripts().release.prepare_invoke();
            call.key(keys.holders());
            for mailbox in mailboxes {
                call.key(keys.lease(mailbox));
            }
            call.key(keys.members()).arg(&self.token).arg(if leave { "leave" } else { "stay" });
            call.invoke::<usize>(connection)
        })
    }

    /// Redis failed: said once, with what to do and what it means.
    fn failing(&mut self, outcome: &Outcome) {
        self.standing.lock().unwrap_or_else(|e| e.into_inner()).redis_failing = true;
        if self.failing.is_some() {
            return;
        }
        self.failing = Some(Instant::now());
        let held = self.holdings.values().filter(|h| h.lease.held()).count();
        let then = match held {
            0 => "this replica holds no mailbox; it asks again with backoff".to_string(),
            n => format!(
                "the {n} mailbox(es) this replica holds stop within {} s unless it answers; mail waits in the mailboxes",
                (self.timing.lease - self.timing.lead).as_secs()
            ),
        };
        log::error("redis-failing", format!("cluster: {outcome}; {then}"))
            .status(outcome.cause.code())
            .error(outcome.reason(), outcome.fix())
            .emit();
    }

    /// Stop every worker, wait for them, let go of every lease, leave.
    fn leave(mut self) {
        for holding in self.holdings.values_mut() {
            holding.letting.get_or_insert(Letting::Stopping);
            holding.lease.0.stop.request();
        }
        let mailboxes: Vec<String> = self.holdings.keys().cloned().collect();
        for mailbox in &mailboxes {
            let holding = self.holdings.get_mut(mailbox).expect("held");
            for worker in holding.workers.drain(..) {
                let _ = worker.join();
            }
            holding.running = 0;
            self.let_go(mailbox);
        }
        let _ = self.release(&[], true);
    }
}

/// The folders' states in Redis (cluster mode).
struct Shared {
    link: Arc<Link>,
    keys: Keys,
    token: String,
    cluster: String,
}

impl Places for Shared {
    fn place(&self, mailbox: &str, folder: &str) -> Box<dyn Place> {
        Box::new(RedisPlace {
            link: self.link.clone(),
            lease: self.keys.lease(mailbox),
            state: self.keys.state(mailbox),
            folder: folder.to_string(),
            token: self.token.clone(),
            described: format!(
                "the state of {mailbox}/{folder} in Redis ({}, {})",
                self.cluster,
                self.keys.state(mailbox)
            ),
        })
    }
}

struct RedisPlace {
    link: Arc<Link>,
    lease: String,
    state: String,
    folder: String,
    token: String,
    described: String,
}

impl Place for RedisPlace {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        self.link
            .with(|connection| redis::cmd("HGET").arg(&self.state).arg(&self.folder).query(connection))
            .map_err(|outcome| io::Error::other(outcome.reason().to_string()))
    }

    fn fix(&self) -> Option<String> {
        Some(REDIS_FIX.into())
    }

    // Redis keeps it as its own persistence settings say.
    fn write(&self, bytes: &[u8], _durable: bool) -> io::Result<()> {
        let written = self.link.with(|connection| {
            scripts()
                .write_state
                .key(&self.lease)
                .key(&self.state)
                .arg(&self.token)
                .arg(&self.folder)
                .arg(bytes)
                .invoke::<i64>(connection)
        });
        match written {
            Ok(1) => Ok(()),
            Ok(_) => Err(io::Error::other("this replica no longer holds the mailbox's lease")),
            Err(outcome) => Err(io::Error::other(outcome.reason().to_string())),
        }
    }
}

/// What `watch --status` found.
pub struct Report {
    pub text: String,
    /// Mailboxes no live replica holds.
    pub unheld: Vec<String>,
}

/// The replicas and the mailboxes each holds, from Redis.
pub fn status(cluster: &Cluster, ca_file: Option<&Path>, mailboxes: &[String]) -> Result<Report, Outcome> {
    let redis = Redis::new(cluster, ca_file)?;
    let mut connection = redis.connect()?;
    let keys = Keys { prefix: cluster.key_prefix.clone() };
    let password = redis.password().ok().flatten();
    let fail = |e: RedisError| redis.trouble(&e, &cluster.describe(), &password);
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut connection).map_err(fail)?;
    let now = secs * 1000 + micros / 1000;
    let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys.members())
        .arg(now)
        .arg("+inf")
        .query(&mut connection)
        .map_err(fail)?;
    let mut pipe = redis::pipe();
    for mailbox in mailboxes {
        pipe.cmd("GET").arg(keys.lease(mailbox)).cmd("PTTL").arg(keys.lease(mailbox));
    }
    let leases: Vec<(Option<String>, i64)> = pipe.query(&mut connection).map_err(fail)?;

    let mut text = format!(
        "cluster: Redis at {}, keys {}:*, lease {} s\n",
        cluster.describe(),
        cluster.key_prefix,
        cluster.lease.as_secs()
    );
    let mut nodes: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for member in &members {
        nodes.entry(node_of(member)).or_default().0 += 1;
    }
    let (mut unheld, mut free, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for (mailbox, (holder, ttl)) in mailboxes.iter().zip(&leases) {
        match holder {
            Some(token) if members.contains(token) => {
                nodes.entry(node_of(token)).or_default().1.push(mailbox)
            }
            Some(token) => {
                gone.push(format!(
                    "{mailbox} (held by {}, which is gone; free in {} ms)",
                    node_of(token),
                    ttl.max(&0)
                ));
                unheld.push(mailbox.clone());
            }
            None => {
                free.push(mailbox.as_str());
                unheld.push(mailbox.clone());
            }
        }
    }
    text.push_str(&format!("{} replica(s):\n", nodes.len()));
    for (node, (processes, held)) in &nodes {
        let twice = match processes {
            0 | 1 => String::new(),
            n => format!(" ({n} processes with this name)"),
        };
        let list = if held.is_empty() { "none".to_string() } else { held.join(", ") };
        text.push_str(&format!("  {node}{twice}: {} mailbox(es): {list}\n", held.len()));
    }
    if !gone.is_empty() {
        text.push_str(&format!("held by a replica that is gone: {}\n", gone.join(", ")));
    }
    if !free.is_empty() {
        text.push_str(&format!("held by no replica: {}\n", free.join(", ")));
    }
    if unheld.is_empty() {
        text.push_str(&format!("every mailbox ({}) is held\n", mailboxes.len()));
    }
    Ok(Report { text, unheld })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timing_follows_the_lease() {
        let t = Timing::of(Duration::from_secs(30));
        assert_eq!(
            (t.tick, t.io, t.margin, t.lead),
            (Duration::from_secs(2), Duration::from_secs(2), Duration::from_secs(3), Duration::from_secs(6))
        );
        let t = Timing::of(Duration::from_secs(5));
        assert_eq!(t.tick, Duration::from_millis(1250));
        // Workers stop before the lease can end, after renewals could have saved it.
        assert!(t.lead > t.margin && t.lease - t.lead > t.tick * 2);
    }

    #[test]
    fn a_lease_is_held_until_its_time_by_this_clock_only() {
        let (tell, _heard) = mpsc::channel();
        let lease = Lease::new("support", tell);
        assert!(!lease.held(), "not before it is taken");
        let timing = Timing::of(Duration::from_secs(5));
        lease.renewed(Instant::now(), &timing);
        assert!(lease.held());
        lease.renewed(Instant::now() - Duration::from_millis(4600), &timing);
        assert!(!lease.held(), "sent 4.6 s ago: past lease − margin");
        lease.renewed(Instant::now(), &timing);
        lease.end();
        assert!(!lease.held() && lease.stop().requested());
    }

    #[test]
    fn replicas_prefer_different_mailboxes() {
        let mailboxes: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        let first = |node: &str| mailboxes.iter().max_by_key(|m| affinity(node, m)).unwrap().clone();
        let firsts: std::collections::BTreeSet<String> = ["a", "b", "c", "d"].map(first).into();
        assert!(firsts.len() > 1);
        assert_eq!(node_of("host-a:12 0011aabb"), "host-a:12");
    }
}
