//! Outlook's limits, kept on our side (concepts/throttling-limits.md,
//! "Outlook service limits"): at most 4 requests in flight per app and
//! mailbox, and none at all while a `Retry-After` holds.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Error;
use crate::http::Kind;

/// Outlook's limit of concurrent requests per app and mailbox.
pub const MAX_IN_FLIGHT: usize = 4;

/// The gates of every mailbox one client talks to.
pub(crate) struct Limits {
    max: usize,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

#[derive(Default)]
struct Gate {
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    /// Until then, every request is answered with this throttling error
    /// without being sent.
    held: Option<(Instant, Error)>,
}

/// One request's place; given back when dropped.
pub(crate) struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        lock(&self.gate.state).in_flight -= 1;
        self.gate.freed.notify_one();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // a panic elsewhere leaves the counts as they were
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Limits {
    pub(crate) fn new(max: usize) -> Limits {
        Limits { max: max.max(1), gates: Mutex::new(HashMap::new()) }
    }

    fn gate(&self, mailbox: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.entry(mailbox.to_lowercase()).or_default().clone()
    }

    /// A place for one request to `mailbox`, waiting at most `wait` for
    /// one to be free. While a `Retry-After` holds: the throttling error
    /// again, with the time left.
    pub(crate) fn enter(&self, mailbox: &str, wait: Duration) -> Result<Permit, Error> {
        let gate = self.gate(mailbox);
        let deadline = Instant::now() + wait;
        let mut state = lock(&gate.state);
        loop {
            let now = Instant::now();
            if let Some((until, error)) = &state.held {
                if *until > now {
                    return Err(match error.clone() {
                        Error::Throttled { detail, .. } => {
                            Error::Throttled { retry_after: Some(*until - now), detail }
                        }
                        Error::Server { detail, .. } => {
                            Error::Server { retry_after: Some(*until - now), detail }
                        }
                        other => other,
                    });
                }
                state.held = None;
            }
            if state.in_flight < self.max {
                state.in_flight += 1;
                return Ok(Permit { gate: gate.clone() });
            }
            if now >= deadline {
                return Err(Error::Transport {
                    kind: Kind::Timeout,
                    detail: format!("{} requests to this mailbox are still in flight", self.max),
                });
            }
            state = gate.freed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// An answer asked us to wait (`Retry-After`): no request to `mailbox`
    /// goes out before then, from any thread.
    pub(crate) fn hold(&self, mailbox: &str, error: &Error) {
        let Some(wait) = error.retry_after() else { return };
        let gate = self.gate(mailbox);
        let mut state = lock(&gate.state);
        let until = Instant::now() + wait;
        if state.held.as_ref().is_none_or(|(held, _)| *held < until) {
            state.held = Some((until, error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::error::Detail;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    #[test]
    fn never_more_than_the_limit_in_flight() {
        let limits = Arc::new(Limits::new(MAX_IN_FLIGHT));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let (limits, now, most) = (limits.clone(), now.clone(), most.clone());
                thread::spawn(move || {
                    for _ in 0..20 {
                        let _permit = limits.enter("Support@contoso.com", Duration::from_secs(10)).unwrap();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(1));
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    }

    #[test]
    fn mailboxes_are_apart_and_a_full_one_times_out() {
        let limits = Limits::new(2);
        let _a = limits.enter("a@x", Duration::ZERO).unwrap();
        let _b = limits.enter("A@X", Duration::ZERO).unwrap();
        let started = Instant::now();
        let e = limits.enter("a@x", Duration::from_millis(50)).err().unwrap();
        assert!(matches!(e, Error::Transport { kind: Kind::Timeout, .. }), "{e:?}");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(limits.enter("b@x", Duration::ZERO).is_ok(), "another mailbox is not held up");
        drop(_a);
        assert!(limits.enter("a@x", Duration::ZERO).is_ok());
    }

    #[test]
    fn a_retry_after_holds_every_request_to_the_mailbox() {
        let limits = Limits::new(4);
        let detail = Detail { status: 429, code: Some("ApplicationThrottled".into()), message: None };
        let throttled = Error::Throttled { retry_after: Some(Duration::from_millis(300)), detail };
        limits.hold("a@x", &throttled);
        let e = limits.enter("a@x", Duration::ZERO).err().unwrap();
        let left = e.retry_after().unwrap();
        assert!(left > Duration::from_millis(200) && left <= Duration::from_millis(300), "{left:?}");
        assert!(e.has_code("ApplicationThrottled"));
        assert!(limits.enter("b@x", Duration::ZERO).is_ok());
        // a shorter wait does not shorten a longer one
        let short = Error::Server {
            retry_after: Some(Duration::from_millis(1)),
            detail: Detail { status: 503, code: None, message: None },
        };
        limits.hold("a@x", &short);
        assert!(limits.enter("a@x", Duration::ZERO).is_err());
        thread::sleep(Duration::from_millis(310));
        assert!(limits.enter("a@x", Duration::ZERO).is_ok());
        // an error without a Retry-After holds nothing
        limits.hold("c@x", &Error::BadAnswer("x".into()));
        assert!(limits.enter("c@x", Duration::ZERO).is_ok());
    }
}
