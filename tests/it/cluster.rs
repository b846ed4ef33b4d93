//! Cluster mode: several `watch` replicas — separate processes with state
//! directories of their own, as on separate hosts — share the mailboxes of
//! a real Dovecot through a real, password-protected Redis (and Sentinel),
//! delivering to the real Rails ingress. What the issue asks of them: one
//! holder per mailbox, fair shares, takeover of a dead replica's mailboxes
//! within lease + 5 s, nothing lost or repeated beyond the message in
//! flight, Redis trouble waited out without restarts, a failover followed.
//!
//! Every replica logs JSON; its lease events (taken, taken over, released,
//! lost) carry the time, which is how the logs show that no two replicas
//! ever held one mailbox at once. Dovecot's own list of sessions (`doveadm
//! who`), asked all along, shows it too.

use crate::common;
use crate::watch::{message, IMAP_PASSWORD};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::imap::Dovecot;
use common::process::{wait_for, Process};
use common::rails::Rails;
use common::redis::{wait_for_master, Server, REDIS_PASSWORD};
use common::{BIN, PASSWORD};

/// Short, to keep the tests quick: renewals every 1.25 s, takeover within 10 s.
const LEASE: Duration = Duration::from_secs(5);

/// The ingress, the mail server, Redis, and a directory for the replicas.
struct World {
    rails: Rails,
    dovecot: Dovecot,
    redis: Server,
    dir: tempfile::TempDir,
    mailboxes: Vec<String>,
}

impl World {
    /// `n` mailboxes, each an account of its own.
    fn start(n: usize) -> World {
        let rails = Rails::start(Some(PASSWORD), "relay");
        let dovecot = Dovecot::start(None);
        let mailboxes: Vec<String> = (1..=n).map(|i| format!("m{i:02}")).collect();
        for name in &mailboxes {
            dovecot.user(name, IMAP_PASSWORD);
        }
        let dir = tempfile::tempdir().unwrap();
        for (file, secret) in [("imap.password", IMAP_PASSWORD), ("redis.password", REDIS_PASSWORD)] {
            fs::write(dir.path().join(file), format!("{secret}\n")).unwrap();
        }
        World { rails, dovecot, redis: Server::start(), dir, mailboxes }
    }

    /// Replica `node`'s configuration, in a directory of its own; `redis`
    /// says where Redis is (the lines of [cluster] that do).
    fn config_with(&self, node: &str, redis: &str) -> PathBuf {
        let home = self.dir.path().join(node);
        fs::create_dir_all(&home).unwrap();
        let mut text = format!(
            "url = \"{}\"\npassword = \"{PASSWORD}\"\ntimeout = 10\nstate_dir = \"{}\"\n",
            self.rails.url(),
            home.join("state").display()
        );
        for name in &self.mailboxes {
            text.push_str(&format!(
                "\n[[mailbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nuser = \"{name}\"\npassword_file = \"{}\"\n",
                self.dovecot.plain_port,
                self.dir.path().join("imap.password").display()
            ));
        }
        text.push_str(&format!(
            "\n[cluster]\n{redis}\npassword_file = \"{}\"\nlease = {}\nnode = \"{node}\"\n",
            self.dir.path().join("redis.password").display(),
            LEASE.as_secs()
        ));
        let path = home.join("config.toml");
        fs::write(&path, text).unwrap();
        path
    }

    fn config(&self, node: &str) -> PathBuf {
        self.config_with(node, &format!("redis_url = \"{}\"", self.redis.url()))
    }

    fn replica(&self, node: &str) -> Replica {
        Replica::start(node, &self.config(node))
    }

    /// A new message in `mailbox`'s INBOX; its Message-ID.
    fn append(&self, mailbox: &str, id: &str) -> String {
        self.dovecot.append(mailbox, "INBOX", &message(id, "support@inbox.test"));
        format!("{id}@sender.test")
    }

    /// `watch --status` with replica `node`'s configuration: (exit code, output).
    fn status_of(&self, node: &str) -> (i32, String) {
        watch_status(&self.dir.path().join(node).join("config.toml"))
    }

    fn status(&self) -> (i32, String) {
        let node = fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.path().join("config.toml").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap();
        self.status_of(&node)
    }

    /// Which mailboxes each replica holds, by `watch --status`, when every
    /// mailbox is held by a live replica.
    fn shares(&self) -> Option<BTreeMap<String, BTreeSet<String>>> {
        let (code, text) = self.status();
        (code == 0).then(|| held_in(&text))
    }

    /// Every message that Rails stored, by Message-ID, with how often.
    fn stored(&self) -> BTreeMap<String, usize> {
        let mut stored = BTreeMap::new();
        for record in self.rails.records() {
            let id = record["message_id"].as_str().unwrap_or_default().to_string();
            *stored.entry(id).or_default() += 1;
        }
        stored
    }

    /// Wait until every one of `ids` is stored; then each must be there once.
    fn all_stored(&self, ids: &[String], within: Duration, logs: &dyn Fn() -> String) {
        let expected: BTreeSet<&String> = ids.iter().collect();
        wait_for(within, "every message stored", || {
            let stored = self.stored();
            expected.iter().all(|id| stored.contains_key(*id))
        });
        let stored = self.stored();
        let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "stored twice: {twice:?}\n{}", logs());
        let unknown: Vec<_> = stored.keys().filter(|id| !expected.contains(id)).collect();
        assert!(unknown.is_empty(), "stored but never sent: {unknown:?}");
    }
}

/// `node: N mailbox(es): a, b` lines of `watch --status`.
fn held_in(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut held = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("  ")) {
        let Some((node, rest)) = line.trim().split_once(": ") else { continue };
        let Some((_, list)) = rest.split_once(": ") else { continue };
        let node = node.split(' ').next().unwrap().to_string();
        let mailboxes = list.split(", ").filter(|m| *m != "none").map(str::to_string).collect();
        held.insert(node, mailboxes);
    }
    held
}

/// One replica, logging JSON.
struct Replica {
    node: String,
    process: Process,
}

impl Replica {
    fn start(node: &str, config: &Path) -> Replica {
        Replica { node: node.to_string(), process: Process::watch(config, &["--log-format", "json"], &[]) }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.process.stdout().lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// The mailboxes of its events named `event`.
    fn mailboxes(&self, event: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["event"] == event)
            .filter_map(|e| e["mailbox"].as_str().map(str::to_string))
            .collect()
    }

    /// Message-IDs it logged as delivered.
    fn delivered(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "delivered")
            .filter_map(|e| e["message_id"].as_str().map(|id| id.trim_matches(['<', '>']).to_string()))
            .collect()
    }

    fn kill(&self) {
        self.process.signal("KILL");
    }
}

fn logs(replicas: &[&Replica]) -> String {
    replicas.iter().map(|r| format!("--- {}\n{}", r.node, r.process.output())).collect()
}

/// From the lease events of every replica: no two held one mailbox at
/// the same time (a lease is taken before its session opens, released
/// after it closed; times are the same host's clock).
fn no_two_holders(replicas: &[&Replica]) {
    let mut spans: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for replica in replicas {
        let mut open: BTreeMap<String, String> = BTreeMap::new();
        for event in replica.events() {
            let (Some(kind), Some(mailbox), Some(time)) =
                (event["event"].as_str(), event["mailbox"].as_str(), event["time"].as_str())
            else {
                continue;
            };
            match kind {
                "lease-taken" | "lease-taken-over" => {
                    open.insert(mailbox.to_string(), time.to_string());
                }
                "lease-released" | "lease-lost" => {
                    let start = open.remove(mailbox).unwrap_or_default();
                    spans.entry(mailbox.into()).or_default().push((start, time.into(), replica.node.clone()));
                }
                _ => {}
            }
        }
        for (mailbox, start) in open {
            spans.entry(mailbox).or_default().push((start, "~".into(), replica.node.clone()));
        }
    }
    for (mailbox, mut spans) in spans {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{mailbox} held by {} until {} and by {} from {}",
                pair[0].2,
                pair[0].1,
                pair[1].2,
                pair[1].0
            );
        }
    }
}

/// Asks Dovecot who is logged in, all along, and remembers the most
/// sessions any account had at once.
struct Sessions<'a> {
    dovecot: &'a Dovecot,
    most: Mutex<BTreeMap<String, usize>>,
    done: AtomicBool,
}

impl<'a> Sessions<'a> {
    fn new(dovecot: &'a Dovecot) -> Sessions<'a> {
        Sessions { dovecot, most: Mutex::new(BTreeMap::new()), done: AtomicBool::new(false) }
    }

    fn watch(&self) {
        while !self.done.load(Ordering::SeqCst) {
            let mut now: BTreeMap<String, usize> = BTreeMap::new();
            for line in self.dovecot.cmd("doveadm", &["who", "-1"]).lines().skip(1) {
                if let Some(user) = line.split_whitespace().next() {
                    *now.entry(user.to_string()).or_default() += 1;
                }
            }
            let mut most = self.most.lock().unwrap();
            for (user, n) in now {
                let m = most.entry(user).or_default();
                *m = (*m).max(n);
            }
            drop(most);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn end(&self) -> BTreeMap<String, usize> {
        self.done.store(true, Ordering::SeqCst);
        self.most.lock().unwrap().clone()
    }
}

fn at_most_one_session(most: &BTreeMap<String, usize>) {
    let twice: Vec<_> = most.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "accounts with more than one session at once: {twice:?}");
}

/// Each holds ⌈12/3⌉ = 4, or one less or more while it settles.
fn fair(shares: &BTreeMap<String, BTreeSet<String>>, replicas: usize, mailboxes: usize) -> bool {
    let even = mailboxes / replicas;
    shares.len() == replicas && shares.values().all(|held| held.len().abs_diff(even) <= 1)
}

#[test]
#[ignore = "needs Redis, Dovecot and Rails"]
fn three_replicas_share_twelve_mailboxes_and_deliver_each_message_once_with_one_session_per_mailbox() {
    let world = World::start(12);
    let sessions = Sessions::new(&world.dovecot);
    std::thread::scope(|scope| {
        scope.spawn(|| sessions.watch());
        // Mail before the replicas start, while they share out, and after.
        let mut ids = Vec::new();
        for (i, mailbox) in world.mailboxes.iter().enumerate() {
            ids.push(world.append(mailbox, &format!("before-{i}")));
        }
        let replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|node| world.replica(node)).collect();
        let all: Vec<&Replica> = replicas.iter().collect();
        for round in 0..3 {
            for (i, mailbox) in world.mailboxes.iter().enumerate() {
                ids.push(world.append(mailbox, &format!("during-{round}-{i}")));
                std::thread::sleep(Duration::from_millis(80));
            }
        }
        wait_for(Duration::from_secs(30), "fair shares", || {
            world.shares().is_some_and(|shares| fair(&shares, 3, 12))
        });
        for (i, mailbox) in world.mailboxes.iter().enumerate() {
            ids.push(world.append(mailbox, &format!("after-{i}")));
        }
        world.all_stored(&ids, Duration::from_secs(60), &|| logs(&all));
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(world.rails.posts(), ids.len(), "one POST per message\n{}", logs(&all));
        let shares = world.shares().unwrap();
        assert!(fair(&shares, 3, 12), "{shares:?}");
        at_most_one_session(&sessions.end());
        no_two_holders(&all);
        // A clean stop lets go of every lease at once.
        let mut replicas = replicas;
        for replica in &mut replicas {
            assert_eq!(replica.process.stop("TERM").0, 0, "{}", replica.process.output());
        }
        let released: usize = replicas.iter().map(|r| r.mailboxes("lease-released").len()).sum();
        let taken: usize = replicas
            .iter()
            .map(|r| r.mailboxes("lease-taken").len() + r.mailboxes("lease-taken-over").len())
            .sum();
        assert_eq!(released, taken, "{}", logs(&replicas.iter().collect::<Vec<_>>()));
        let (code, text) = world.status();
        assert_eq!((code, text.contains("0 replica(s)")), (1, true), "{text}");
    });
}

#[test]
#[ignore = "needs Redis, Dovecot and Rails"]
fn a_replica_killed_while_it_delivers_is_taken_over_within_the_lease_and_5_s_and_nothing_is_lost() {
    let world = World::start(12);
    let replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|node| world.replica(node)).collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    wait_for(Duration::from_secs(30), "fair shares", || world.shares().is_some_and(|s| fair(&s, 3, 12)));
    let shares = world.shares().unwrap();
    let (victim, held) = shares.iter().find(|(_, held)| !held.is_empty()).unwrap();
    let victim = replicas.iter().find(|r| &r.node == victim).unwrap();
    // A backlog in each of its mailboxes, and mail for the others too.
    let mut ids = Vec::new();
    for n in 0..8 {
        for mailbox in &world.mailboxes {
            if held.contains(mailbox) || n == 0 {
                ids.push(world.append(mailbox, &format!("{mailbox}-{n}")));
            }
        }
    }
    wait_for(Duration::from_secs(30), "the victim delivering", || victim.delivered().len() >= 2);
    victim.kill();
    let killed = Instant::now();
    let delivered_before_kill = victim.delivered();
    let survivors: Vec<&Replica> = replicas.iter().filter(|r| r.node != victim.node).collect();
    wait_for(LEASE + Duration::from_secs(5), "its mailboxes taken over", || {
        let over: BTreeSet<String> = survivors.iter().flat_map(|r| r.mailboxes("lease-taken-over")).collect();
        held.iter().all(|m| over.contains(m))
    });
    let took = killed.elapsed();
    // More mail after the takeover.
    for mailbox in held {
        ids.push(world.append(mailbox, &format!("{mailbox}-after")));
    }
    world.all_stored(&ids, Duration::from_secs(60), &|| logs(&all));
    std::thread::sleep(Duration::from_secs(2));
    // A message may be POSTed twice only if it was in flight at the kill:
    // one per mailbox of the victim at most, and only messages of those.
    let posts = world.rails.posts();
    assert!(posts <= ids.len() + held.len(), "{posts} POSTs for {} messages\n{}", ids.len(), logs(&all));
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for id in survivors.iter().flat_map(|r| r.delivered()).chain(delivered_before_kill) {
        *times.entry(id).or_default() += 1;
    }
    for (id, n) in &times {
        assert!(*n == 1, "{id} delivered {n} times by the replicas' own account\n{}", logs(&all));
    }
    eprintln!("taken over after {took:?}; {posts} POSTs for {} messages", ids.len());
    let (code, text) = world.status();
    assert_eq!(code, 0, "{text}");
    assert!(held_in(&text).values().all(|h| h.len() == 6), "{text}");
}

#[test]
#[ignore = "needs Redis, Dovecot and Rails"]
fn a_fourth_replica_gets_its_share_within_one_lease_period_and_nothing_is_lost_or_repeated() {
    let world = World::start(12);
    let mut replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|node| world.replica(node)).collect();
    wait_for(Duration::from_secs(30), "fair shares", || {
        world.shares().is_some_and(|s| s.values().all(|h| h.len() == 4) && s.len() == 3)
    });
    let sessions = Sessions::new(&world.dovecot);
    std::thread::scope(|scope| {
        scope.spawn(|| sessions.watch());
        let mut ids = Vec::new();
        let joined = Instant::now();
        replicas.push(world.replica("d"));
        // Mail throughout the change.
        let mut round = 0;
        while world.shares().is_none_or(|s| !(s.len() == 4 && s.values().all(|h| h.len() == 3))) {
            assert!(joined.elapsed() < LEASE, "not 3/3/3/3 within {LEASE:?}: {}", world.status().1);
            let mailbox = &world.mailboxes[round % 12];
            ids.push(world.append(mailbox, &format!("{mailbox}-{round}")));
            round += 1;
        }
        let took = joined.elapsed();
        for (i, mailbox) in world.mailboxes.iter().enumerate() {
            ids.push(world.append(mailbox, &format!("after-{i}")));
        }
        let all: Vec<&Replica> = replicas.iter().collect();
        world.all_stored(&ids, Duration::from_secs(60), &|| logs(&all));
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(world.rails.posts(), ids.len(), "nothing repeated\n{}", logs(&all));
        at_most_one_session(&sessions.end());
        no_two_holders(&all);
        eprintln!("3/3/3/3 after {took:?}");
    });
}

/// CPU time of `replicas` over `window`, each.
fn cpu_over(replicas: &[Replica], window: Duration) -> Vec<Duration> {
    let before: Vec<Duration> = replicas.iter().map(|r| r.process.cpu()).collect();
    std::thread::sleep(window);
    replicas.iter().zip(before).map(|(r, b)| r.process.cpu() - b).collect()
}

#[test]
#[ignore = "needs Redis, Dovecot and Rails"]
fn redis_stopped_for_20_s_under_load_loses_nothing_and_work_resumes_without_restarts() {
    let mut world = World::start(6);
    let replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|node| world.replica(node)).collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    wait_for(Duration::from_secs(30), "fair shares", || world.shares().is_some_and(|s| fair(&s, 3, 6)));
    let mut ids = Vec::new();
    for n in 0..5 {
        for mailbox in &world.mailboxes {
            ids.push(world.append(mailbox, &format!("{mailbox}-load-{n}")));
        }
    }
    // Under load: stopped while they deliver.
    wait_for(Duration::from_secs(20), "deliveries under way", || world.rails.posts() >= 6);
    world.redis.stop();
    let stopped = Instant::now();
    for mailbox in &world.mailboxes {
        ids.push(world.append(mailbox, &format!("{mailbox}-while-down")));
    }
    // Each replica says so once, and stops before its leases can end.
    wait_for(LEASE + Duration::from_secs(3), "every lease given up", || {
        replicas.iter().all(|r| r.events().iter().any(|e| e["event"] == "redis-failing"))
            && replicas.iter().map(|r| r.mailboxes("lease-lost").len()).sum::<usize>() >= 6
    });
    let posts_while_down = world.rails.posts();
    let cpu = cpu_over(&replicas, Duration::from_secs(10));
    assert_eq!(world.rails.posts(), posts_while_down, "nothing fetched without a lease\n{}", logs(&all));
    for (replica, used) in replicas.iter().zip(&cpu) {
        assert!(
            *used < Duration::from_millis(300),
            "{} used {used:?} of CPU in 10 s while waiting",
            replica.node
        );
    }
    let sleep = Duration::from_secs(20).saturating_sub(stopped.elapsed());
    std::thread::sleep(sleep);
    world.redis.restart();
    world.all_stored(&ids, Duration::from_secs(60), &|| logs(&all));
    std::thread::sleep(Duration::from_secs(2));
    // In flight when Redis stopped: at most one message per mailbox.
    let posts = world.rails.posts();
    assert!(posts <= ids.len() + 6, "{posts} POSTs for {} messages\n{}", ids.len(), logs(&all));
    // Each asks again with backoff (at most the lease, with jitter).
    wait_for(LEASE * 2, "every replica hearing Redis again", || {
        replicas.iter().all(|r| r.events().iter().any(|e| e["event"] == "redis-back"))
    });
    for replica in &replicas {
        let failing = replica.events().iter().filter(|e| e["event"] == "redis-failing").count();
        assert_eq!(failing, 1, "said once\n{}", replica.process.output());
    }
    wait_for(Duration::from_secs(20), "every mailbox held again", || world.shares().is_some());
    no_two_holders(&all);
    for replica in &replicas {
        assert!(!replica.process.output().contains(REDIS_PASSWORD), "{}", replica.process.output());
    }
    eprintln!("CPU while waiting, 10 s: {cpu:?}; {posts} POSTs for {} messages", ids.len());
}

#[test]
#[ignore = "needs Redis, Dovecot and Rails"]
fn the_watchers_follow_a_sentinel_failover_and_go_on() {
    let mut world = World::start(4);
    let replica_server = Server::replica_of(&world.redis);
    let sentinel = Server::sentinel(&world.redis, "mymaster");
    let redis = format!(
        "redis_url = \"redis://127.0.0.1:1/0\"\nsentinels = [\"127.0.0.1:{}\"]\nsentinel_master = \"mymaster\"",
        sentinel.port
    );
    let replicas: Vec<Replica> =
        ["a", "b"].iter().map(|node| Replica::start(node, &world.config_with(node, &redis))).collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    wait_for(Duration::from_secs(30), "fair shares", || world.shares().is_some_and(|s| fair(&s, 2, 4)));
    let mut ids = Vec::new();
    for mailbox in &world.mailboxes {
        ids.push(world.append(mailbox, &format!("{mailbox}-before")));
    }
    world.all_stored(&ids, Duration::from_secs(30), &|| logs(&all));
    // What the master has, the replica has (loopback replication), then the master dies.
    wait_for(Duration::from_secs(10), "the replica in step", || {
        let offset = |s: &Server, key: &str| {
            s.cli(&["INFO", "replication"])
                .lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        };
        offset(&world.redis, "master_repl_offset:") == offset(&replica_server, "slave_repl_offset:")
    });
    world.redis.kill();
    wait_for_master(&replica_server, Duration::from_secs(30));
    for mailbox in &world.mailboxes {
        ids.push(world.append(mailbox, &format!("{mailbox}-after")));
    }
    world.all_stored(&ids, Duration::from_secs(60), &|| logs(&all));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        world.rails.posts(),
        ids.len(),
        "nothing in flight at the failover, nothing twice\n{}",
        logs(&all)
    );
    wait_for(Duration::from_secs(20), "every mailbox held, on the new master", || {
        world.shares().is_some_and(|s| fair(&s, 2, 4))
    });
    assert!(replica_server.cli(&["KEYS", "chatwoot-ingress:lease:*"]).lines().count() == 4);
    no_two_holders(&all);
    let lost: usize = replicas.iter().map(|r| r.mailboxes("lease-lost").len()).sum();
    eprintln!("failover followed; {lost} lease(s) lost on the way");
}

#[test]
#[ignore = "needs Redis, Dovecot and Rails"]
fn leases_of_a_crashed_run_do_not_block_its_restart_for_longer_than_one_lease_period() {
    let world = World::start(6);
    let replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|node| world.replica(node)).collect();
    wait_for(Duration::from_secs(30), "fair shares", || world.shares().is_some_and(|s| fair(&s, 3, 6)));
    for replica in &replicas {
        replica.kill();
    }
    let mut ids = Vec::new();
    for mailbox in &world.mailboxes {
        ids.push(world.append(mailbox, &format!("{mailbox}-while-down")));
    }
    // Started again at once, under the same names.
    let restarted = Instant::now();
    let again: Vec<Replica> = ["a", "b", "c"].iter().map(|node| world.replica(node)).collect();
    let all: Vec<&Replica> = again.iter().collect();
    // The old leases end within one lease period; they are taken at the next round after.
    let tick = Duration::from_millis(1250);
    wait_for(LEASE + tick + Duration::from_secs(1), "every mailbox held again", || {
        let taken: BTreeSet<String> = again
            .iter()
            .flat_map(|r| r.mailboxes("lease-taken").into_iter().chain(r.mailboxes("lease-taken-over")))
            .collect();
        taken.len() == 6
    });
    let took = restarted.elapsed();
    world.all_stored(&ids, Duration::from_secs(30), &|| logs(&all));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(world.rails.posts(), ids.len(), "{}", logs(&all));
    no_two_holders(&all);
    eprintln!("held again after {took:?}");
}

/// Without any Redis listening: `watch --status` exits 75 with one line
/// that says where it looked and what to do; the watcher says it once and
/// waits. The password, written inside the URL, shows nowhere.
#[test]
fn without_redis_status_exits_75_and_the_watcher_waits_and_the_password_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::imap::free_port();
    let secret = "s3cr3t-pw+/";
    let encoded = "s3cr3t-pw%2B%2F";
    let base = format!(
        "url = \"http://127.0.0.1:9\"\npassword = \"{PASSWORD}\"\nstate_dir = \"{}\"\n\n[[mailbox]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nuser = \"u\"\npassword = \"p\"\n",
        dir.path().join("state").display()
    );
    let config = dir.path().join("config.toml");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = Command::new(BIN)
            .args(["watch", "--config", config.to_str().unwrap()])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        (output.status.code().unwrap_or(-1), text)
    };
    let url = format!("redis://:{encoded}@127.0.0.1:{port}/0");
    let plain = format!("redis://127.0.0.1:{port}/0");
    for (cluster, env) in [
        (format!("[cluster]\nredis_url = \"{url}\"\n"), vec![]),
        ("[cluster]\n".to_string(), vec![("REDIS_URL", url.as_str())]),
        (
            "[cluster]\n".to_string(),
            vec![("CHATWOOT_INGRESS_REDIS_URL", plain.as_str()), ("REDIS_PASSWORD", secret)],
        ),
    ] {
        fs::write(&config, format!("{base}{cluster}")).unwrap();
        let (code, text) = run(&["--status"], &env);
        assert_eq!(code, 75, "{text}");
        assert!(text.starts_with("4.4.1 Redis at redis://127.0.0.1:"), "{text}");
        assert!(text.contains("start Redis"), "{text}");
        assert!(!text.contains(secret) && !text.contains(encoded), "{text}");
    }
    // The watcher: one line, with the fix, then quiet backoff.
    fs::write(&config, format!("{base}[cluster]\nredis_url = \"{url}\"\nlease = 3\n")).unwrap();
    let mut watcher = Process::watch(&config, &["--log-format", "json"], &[]);
    wait_for(Duration::from_secs(10), "Redis failing, said", || watcher.output().contains("redis-failing"));
    std::thread::sleep(Duration::from_secs(4));
    let cpu = watcher.cpu();
    let (code, _) = watcher.stop("TERM");
    let output = watcher.output();
    assert_eq!(code, 0, "{output}");
    assert_eq!(output.matches("\"redis-failing\"").count(), 1, "{output}");
    assert!(!output.contains(secret) && !output.contains(encoded), "{output}");
    assert!(cpu < Duration::from_millis(500), "{cpu:?}");
    // --once does not take part in a cluster; without [cluster] there is no status.
    let (code, text) = run(&["--once"], &[]);
    assert_eq!(code, 75, "{text}");
    assert!(text.contains("--once does not take part in a cluster"), "{text}");
    fs::write(&config, &base).unwrap();
    let (code, text) = run(&["--status"], &[]);
    assert!(code == 75 && text.contains("no [cluster]"), "{text}");
}

/// rediss://: Redis's certificate is verified, against the system's
/// authorities and ca_file; a replica holds its mailbox over TLS.
#[test]
#[ignore = "needs Redis"]
fn rediss_verifies_the_certificate_with_ca_file_and_a_replica_holds_its_mailbox_over_tls() {
    let redis = Server::start_tls();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("redis.password"), format!("{REDIS_PASSWORD}\n")).unwrap();
    let config = dir.path().join("config.toml");
    let write = |ca_file: &str| {
        let text = format!(
            "url = \"http://127.0.0.1:9\"\npassword = \"{PASSWORD}\"\nstate_dir = \"{}\"\n{ca_file}\n[[mailbox]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nuser = \"u\"\npassword = \"p\"\n\n[cluster]\nredis_url = \"rediss://127.0.0.1:{}/0\"\npassword_file = \"{}\"\nlease = 3\nnode = \"tls-node\"\n",
            dir.path().join("state").display(),
            redis.port,
            dir.path().join("redis.password").display()
        );
        fs::write(&config, text).unwrap();
    };
    let status = || watch_status(&config);
    // A private authority no one told us of: refused, with what to do.
    write("");
    let (code, text) = status();
    assert_eq!(code, 75, "{text}");
    assert!(text.starts_with("4.7.5 Redis at rediss://127.0.0.1:") && text.contains("ca_file"), "{text}");
    // With it: asked over TLS; no replica yet.
    write(&format!("ca_file = \"{}\"\n", redis.ca.as_ref().unwrap().display()));
    let (code, text) = status();
    assert!(
        code == 1 && text.contains("0 replica(s)") && text.contains("held by no replica: support"),
        "{text}"
    );
    let port = common::imap::free_port();
    let mut watcher = Process::watch(&config, &["--metrics-listen", &format!("127.0.0.1:{port}")], &[]);
    wait_for(Duration::from_secs(15), "the mailbox held", || status().0 == 0);
    assert!(status().1.contains("  tls-node: 1 mailbox(es): support"), "{}", status().1);
    // The lease shows in the metrics.
    let metrics = || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(metrics().contains("\nchatwoot_ingress_lease_held{mailbox=\"support\"} 1\n"), "{}", metrics());
    assert_eq!(watcher.stop("TERM").0, 0, "{}", watcher.output());
    assert!(watcher.output().contains("support: lease released (stopping)"), "{}", watcher.output());
}

/// `watch --status` with the configuration `config`, in an empty
/// environment: (exit code, output).
fn watch_status(config: &Path) -> (i32, String) {
    let output = Command::new(BIN)
        .args(["watch", "--config", config.to_str().unwrap(), "--status"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}
