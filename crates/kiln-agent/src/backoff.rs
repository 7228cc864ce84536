//! Exponential backoff with jitter, so a fleet of agents does not reconnect
//! to a restarted server in lock-step.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const MOST: Duration = Duration::from_secs(5);

pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The next delay: between half and all of the current step, which
    /// doubles each time up to [`MOST`].
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MOST);
        let half = base / 2;
        let spread = half.as_millis().max(1) as u64;
        half + Duration::from_millis(random() % spread)
    }
}

/// A random number good enough for jitter: each `RandomState` is seeded
/// afresh, which spares a dependency on a random number crate.
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= FIRST);
        for _ in 0..20 {
            assert!(backoff.next_delay() <= MOST);
        }
        assert!(backoff.next_delay() >= MOST / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }
}
