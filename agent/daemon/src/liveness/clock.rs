//! The clocks a liveness entry reads: the wall clock, the time since boot and the boot id,
//! behind a trait so that a test can roll the wall clock back.

use std::sync::Mutex;

/// The host's clocks.
pub trait LivenessClock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time, Unix milliseconds.
    fn wall_ms(&self) -> u64;
    /// Time since the host booted, suspend included, milliseconds.
    fn boot_ms(&self) -> u64;
    /// The kernel's id of this boot.
    fn boot_id(&self) -> String;
}

/// The real clocks: `SystemTime`, `/proc/uptime` (CLOCK_BOOTTIME) and
/// `/proc/sys/kernel/random/boot_id`.
#[derive(Debug, Default)]
pub struct SystemClock;

impl LivenessClock for SystemClock {
    fn wall_ms(&self) -> u64 {
        plinth_jobs::protocol::now_ms()
    }

    fn boot_ms(&self) -> u64 {
        // "12345.67 54321.00": seconds since boot with centiseconds.
        std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|text| {
                let first = text.split_whitespace().next()?.to_owned();
                let (seconds, fraction) = first.split_once('.').unwrap_or((first.as_str(), "0"));
                let seconds: u64 = seconds.parse().ok()?;
                let centis: u64 = format!("{fraction:0<2}").get(..2)?.parse().ok()?;
                Some(seconds * 1000 + centis * 10)
            })
            .unwrap_or_default()
    }

    fn boot_id(&self) -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    }
}

/// **Test double**: clocks a test sets by hand (a wall clock that can run backwards).
/// Never selected by the daemon.
#[derive(Debug)]
pub struct TestClock {
    state: Mutex<(u64, u64, String)>,
}

impl TestClock {
    /// Clocks reading `wall_ms`, `boot_ms` and `boot_id`.
    pub fn new(wall_ms: u64, boot_ms: u64, boot_id: &str) -> Self {
        Self {
            state: Mutex::new((wall_ms, boot_ms, boot_id.to_owned())),
        }
    }

    /// Moves the boot clock forward by `boot_delta_ms` and the wall clock by
    /// `wall_delta_ms`, which may be negative (a clock stepped back).
    pub fn advance(&self, boot_delta_ms: u64, wall_delta_ms: i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 += boot_delta_ms;
        state.0 = state.0.saturating_add_signed(wall_delta_ms);
    }
}

impl LivenessClock for TestClock {
    fn wall_ms(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn boot_ms(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    fn boot_id(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .2
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clocks_read_this_host() {
        let clock = SystemClock;
        assert!(clock.boot_ms() > 0);
        assert_eq!(clock.boot_id().len(), 36, "{}", clock.boot_id());
        assert!(clock.wall_ms() > 1_600_000_000_000);
    }
}
