//! Slows password guessing: after a few failures in a row for one user name or from one
//! address, each further attempt must wait, twice as long each time (capped). Kept in
//! memory: a restart forgives, which costs an attacker a restart they cannot cause.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before attempts are delayed: enough for typos.
pub const FREE_FAILURES: u32 = 5;
/// Longest wait imposed between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most; beyond it the oldest are dropped, so a spray of random names
/// cannot grow memory without bound.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failure counts per user name and per client address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<String, Failures>>,
}

fn delay_after(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (count - FREE_FAILURES).min(20);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}

impl LoginThrottle {
    /// How long the caller must still wait before another attempt for `keys`
    /// (`user:<name>`, `addr:<ip>`); zero when it may try now.
    pub fn wait(&self, keys: &[String], now: Instant) -> Duration {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|k| entries.get(k))
            .map(|f| {
                let until = f.last + delay_after(f.count);
                until.saturating_duration_since(now)
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Records a failed attempt for every key.
    pub fn failed(&self, keys: &[String], now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            // Forget entries whose delay has passed; if that is not enough, the oldest.
            entries.retain(|_, f| f.last + delay_after(f.count) > now);
            if entries.len() >= MAX_ENTRIES {
                let mut by_age: Vec<(String, Instant)> =
                    entries.iter().map(|(k, f)| (k.clone(), f.last)).collect();
                by_age.sort_by_key(|(_, t)| *t);
                for (k, _) in by_age.into_iter().take(MAX_ENTRIES / 10) {
                    entries.remove(&k);
                }
            }
        }
        for key in keys {
            let e = entries.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            e.count = e.count.saturating_add(1);
            e.last = now;
        }
    }

    /// Clears the user name's failures after a successful login (the address keeps its
    /// count: one right password does not excuse a spray from the same place).
    pub fn succeeded(&self, user_key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_free_failures_and_double() {
        let t = LoginThrottle::default();
        let keys = vec!["user:a".to_string(), "addr:1.2.3.4".to_string()];
        let now = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(&keys, now);
        }
        assert_eq!(t.wait(&keys, now), Duration::ZERO);
        t.failed(&keys, now);
        assert_eq!(t.wait(&keys, now), Duration::from_secs(1));
        t.failed(&keys, now);
        assert_eq!(t.wait(&keys, now), Duration::from_secs(2));
        assert_eq!(t.wait(&keys, now + Duration::from_secs(2)), Duration::ZERO);
        // Another user from the same address is still slowed by the address.
        let other = vec!["user:b".to_string(), "addr:1.2.3.4".to_string()];
        assert_eq!(t.wait(&other, now), Duration::from_secs(2));
        t.succeeded("user:a");
        assert_eq!(t.wait(&["user:a".to_string()], now), Duration::ZERO);
        for _ in 0..64 {
            t.failed(&keys, now);
        }
        assert_eq!(t.wait(&keys, now), MAX_DELAY);
    }

    #[test]
    fn memory_is_bounded_under_a_spray_of_names() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_ENTRIES + 10) {
            t.failed(&[format!("user:{i}")], now);
        }
        assert!(t.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
