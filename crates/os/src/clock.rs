//! The wall clock as Unix milliseconds, and a steady clock read in the same unit.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the wall clock (0 if the clock is set before
/// 1970). It can step backwards or forwards: use [`SteadyClock`] to measure durations.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A clock that never goes backwards, read as Unix milliseconds: the wall clock when it
/// was created plus the monotonic time elapsed since. Readable in logs and audit records
/// like [`now_ms`], while intervals measured with it are immune to wall-clock steps.
#[derive(Clone, Copy, Debug)]
pub struct SteadyClock {
    origin: Instant,
    origin_unix_ms: u64,
}

impl SteadyClock {
    pub fn new() -> SteadyClock {
        SteadyClock {
            origin: Instant::now(),
            origin_unix_ms: now_ms(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.origin_unix_ms
            .saturating_add(self.origin.elapsed().as_millis() as u64)
    }
}

impl Default for SteadyClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn now_ms_is_the_wall_clock() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let now = now_ms();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }

    #[test]
    fn steady_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let wall = now_ms();
        let c = SteadyClock::new();
        let first = c.now_ms();
        assert!(first >= wall && first <= now_ms(), "{wall} {first}");
        std::thread::sleep(Duration::from_millis(20));
        let second = c.now_ms();
        assert!(second >= first + 20, "{first} {second}");
    }
}
