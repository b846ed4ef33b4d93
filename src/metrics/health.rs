//! Liveness and readiness, as the engine reports them.
//!
//! Liveness reflects progress, not a process that merely exists (a process
//! check misses deadlocked threads): each worker promises when it will be
//! back in its loop, and is stuck once it has broken that promise.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The health of one process: the workers' heartbeats and the engine's word
/// on readiness.
pub struct Health {
    workers: Mutex<Workers>,
    ready: Mutex<Result<(), String>>,
}

#[derive(Default)]
struct Workers {
    next: u64,
    /// id → (name, last beat, promised to beat again within).
    promises: BTreeMap<u64, (String, Instant, Duration)>,
}

/// One worker's promise to come back to its loop; dropping it (the worker
/// ended) withdraws the promise.
pub struct Heartbeat {
    id: u64,
    health: Arc<Health>,
}

impl Health {
    /// No workers yet (live), and not ready until the engine says so.
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            workers: Mutex::new(Workers::default()),
            ready: Mutex::new(Err("starting: the configuration is not loaded yet".into())),
        })
    }

    fn workers(&self) -> MutexGuard<'_, Workers> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker named `name` (as the 503 will name it: "mailbox/folder")
    /// that promises its first beat within `within` (the time it may take
    /// to connect). Several workers may share a name.
    pub fn register(self: &Arc<Self>, name: impl Into<String>, within: Duration) -> Heartbeat {
        let mut workers = self.workers();
        let id = workers.next;
        workers.next += 1;
        workers.promises.insert(id, (name.into(), Instant::now(), within));
        Heartbeat { id, health: self.clone() }
    }

    /// Ok while every worker has kept its promise; otherwise every stuck
    /// worker, named, with how long it has been gone.
    pub fn live(&self) -> Result<(), String> {
        self.live_at(Instant::now())
    }

    fn live_at(&self, now: Instant) -> Result<(), String> {
        let mut stuck: Vec<String> = self
            .workers()
            .promises
            .values()
            .filter(|(_, beat, within)| now.saturating_duration_since(*beat) > *within)
            .map(|(name, beat, within)| {
                format!(
                    "{name} has not come back to its loop for {} s (its deadline: {} s)",
                    now.saturating_duration_since(*beat).as_secs(),
                    within.as_secs_f64()
                )
            })
            .collect();
        if stuck.is_empty() {
            return Ok(());
        }
        stuck.sort();
        Err(format!("stuck: {}", stuck.join("; ")))
    }

    /// What the engine last said: ready (the configuration is loaded and the
    /// ingress answered its last delivery or probe), or why not.
    pub fn set_ready(&self, state: Result<(), String>) {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub fn ready(&self) -> Result<(), String> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Heartbeat {
    /// "I am in my loop now, and will be back within `within`": a worker
    /// about to wait (IDLE, a poll interval, a backoff) promises that wait
    /// plus the time its next step may take.
    pub fn beat(&self, within: Duration) {
        if let Some(promise) = self.health.workers().promises.get_mut(&self.id) {
            promise.1 = Instant::now();
            promise.2 = within;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.health.workers().promises.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_stuck_once_past_its_own_promise() {
        let health = Health::new();
        let start = Instant::now();
        let idle = health.register("support/INBOX", Duration::from_secs(60));
        let busy = health.register("sales/INBOX", Duration::from_secs(10));
        assert_eq!(health.live_at(start + Duration::from_secs(9)), Ok(()));
        let error = health.live_at(start + Duration::from_secs(30)).unwrap_err();
        assert!(error.starts_with("stuck: sales/INBOX has not come back"), "{error}");
        assert!(!error.contains("support"), "{error}");
        // A beat renews the promise, with a deadline of its own.
        busy.beat(Duration::from_secs(120));
        let later = Instant::now() + Duration::from_secs(90);
        let error = health.live_at(later).unwrap_err();
        assert!(error.contains("support/INBOX") && !error.contains("sales"), "{error}");
        idle.beat(Duration::from_secs(120));
        assert_eq!(health.live_at(later), Ok(()));
    }

    #[test]
    fn every_stuck_worker_is_named_and_an_ended_one_is_forgotten() {
        let health = Health::new();
        let a = health.register("b/INBOX", Duration::ZERO);
        let b = health.register("a/Archive", Duration::ZERO);
        let later = Instant::now() + Duration::from_secs(5);
        let error = health.live_at(later).unwrap_err();
        assert!(error.starts_with("stuck: a/Archive has not come back to its loop for 5 s"), "{error}");
        assert!(error.contains("; b/INBOX"), "{error}");
        drop((a, b));
        assert_eq!(health.live_at(later), Ok(()));
    }

    #[test]
    fn not_ready_until_the_engine_says_so() {
        let health = Health::new();
        assert!(health.ready().unwrap_err().contains("not loaded"));
        health.set_ready(Ok(()));
        assert_eq!(health.ready(), Ok(()));
        health.set_ready(Err("the ingress did not answer: connection refused".into()));
        assert_eq!(health.ready(), Err("the ingress did not answer: connection refused".into()));
    }
}
