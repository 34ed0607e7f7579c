//! At most one log line per interval for an error that repeats per request.
//!
//! On a full disk every export fails the same way, hundreds of times a second. Logged
//! each time, that floods the journal, and journald's rate limit then drops the lines that
//! matter (the index failing, and recovering). A [`LogThrottle`] lets the first line of
//! each interval through with the number it held back since the last one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one line in per interval; see the module.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    /// When a line was last let through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// One line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now, else `None`
    /// (and the line is counted as held back).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < self.interval => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(throttle.admit_at(t0), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(throttle.admit_at(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(
            throttle.admit_at(t0 + Duration::from_millis(1_000)),
            Some(4)
        );
        assert_eq!(throttle.admit_at(t0 + Duration::from_millis(1_500)), None);
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(5)), Some(1));
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(10)), Some(0));
    }
}
