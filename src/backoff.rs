//! Exponential backoff with jitter, for every retry loop: delivery attempts,
//! IMAP reconnections, token requests. Jitter keeps many processes (one per
//! queued message, or watchers restarted together) from retrying in step.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    seed: RandomState,
    draws: u64,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, next: first, seed: RandomState::new(), draws: 0 }
    }

    /// The next pause: the current step, doubled each time up to `max`,
    /// scaled by a random factor between 0.5 and 1.5.
    pub fn next_pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let factor = 0.5 + self.unit();
        step.mul_f64(factor)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// A number in [0, 1): std's randomly keyed hasher is enough for jitter.
    fn unit(&mut self) -> f64 {
        self.draws += 1;
        let mut hasher = self.seed.build_hasher();
        hasher.write_u64(self.draws);
        (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_around_each_step() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps: Vec<u128> = (0..6).map(|_| backoff.next_pause().as_millis()).collect();
        for (pause, step) in steps.iter().zip([100, 200, 400, 800, 800, 800]) {
            assert!((step / 2..=step * 3 / 2).contains(pause), "{steps:?}");
        }
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(150));
        let pauses: std::collections::HashSet<_> = (0..20).map(|_| backoff.next_pause()).collect();
        assert!(pauses.len() > 1, "jittered");
    }
}
