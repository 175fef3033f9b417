//! Automatic burn-in: when a GPU drained by the health policy is retried.
//!
//! A GPU drained by the policy (an XID, ECC errors) is retried by a burn-in after a
//! back-off: the first attempt [`Backoff::first`] after the agent first sees it
//! drained, each failure doubling the wait up to [`Backoff::max`]. A pass returns the
//! GPU to service (the burn-in undrains it with source `burn-in`). Operator drains are
//! never retried, nor lost GPUs (they need a reset or a reboot). The schedule lives in
//! memory: after a restart the first attempt again waits [`Backoff::first`]. The
//! clock is the caller's `now`, so tests drive it without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The back-off of automatic burn-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first attempt.
    pub first: Duration,
    /// The longest wait between attempts.
    pub max: Duration,
}

impl Default for Backoff {
    /// 10 minutes, doubling, capped at 6 hours.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(600),
            max: Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    next_at: Instant,
    wait: Duration,
}

/// The next attempt of each policy-drained GPU, by uuid.
#[derive(Debug, Default)]
pub struct Schedule {
    backoff: Backoff,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Schedule {
    /// An empty schedule with `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether GPU `uuid` (drained by the policy) is due for a burn-in at `now`. The
    /// first call for a GPU schedules its first attempt [`Backoff::first`] later.
    pub fn due(&self, uuid: &str, now: Instant) -> bool {
        let first = self.backoff.first;
        let entry = *self.lock().entry(uuid.to_owned()).or_insert(Entry {
            next_at: now + first,
            wait: first,
        });
        now >= entry.next_at
    }

    /// Records a failed attempt at `now`: the wait doubles (capped) and the next attempt
    /// is that much later. Returns the new wait.
    pub fn failed(&self, uuid: &str, now: Instant) -> Duration {
        let backoff = self.backoff;
        let mut entries = self.lock();
        let entry = entries.entry(uuid.to_owned()).or_insert(Entry {
            next_at: now,
            wait: backoff.first,
        });
        entry.wait = entry.wait.saturating_mul(2).min(backoff.max);
        entry.next_at = now + entry.wait;
        entry.wait
    }

    /// Forgets GPU `uuid` (it passed, or is no longer drained by the policy).
    pub fn forget(&self, uuid: &str) {
        self.lock().remove(uuid);
    }

    /// The wait before the next attempt of GPU `uuid`, when one is scheduled.
    pub fn next_in(&self, uuid: &str, now: Instant) -> Option<Duration> {
        self.lock()
            .get(uuid)
            .map(|entry| entry.next_at.saturating_duration_since(now))
    }
}

/// Makes the prover that burns one GPU in, or says why it cannot.
pub type ProverFor<'a> = dyn Fn(&super::nvml::GpuInventory) -> Result<Box<dyn plinth_attestation::challenge::Prover>, String>
    + 'a;

/// The prover the daemon burns GPU `index` in with: the CUDA prover on that GPU
/// (feature `nvidia`). A burn-in on the CPU would say nothing about the GPU, so there
/// is no fallback.
pub fn gpu_prover(
    index: u32,
    model: &str,
) -> Result<Box<dyn plinth_attestation::challenge::Prover>, String> {
    #[cfg(feature = "nvidia")]
    {
        super::cuda::CudaProver::new(index, model)
            .map(|prover| Box::new(prover) as Box<dyn plinth_attestation::challenge::Prover>)
            .map_err(|err| crate::error_chain(&err))
    }
    #[cfg(not(feature = "nvidia"))]
    {
        let _ = model;
        Err(format!("gpu:{index}: built without the `nvidia` feature"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_starts_at_first_doubles_and_is_capped() {
        let schedule = Schedule::new(Backoff {
            first: Duration::from_secs(600),
            max: Duration::from_secs(3000),
        });
        let t0 = Instant::now();
        assert!(!schedule.due("g", t0));
        assert!(!schedule.due("g", t0 + Duration::from_secs(599)));
        assert!(schedule.due("g", t0 + Duration::from_secs(600)));
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(schedule.failed("g", t1), Duration::from_secs(1200));
        assert!(!schedule.due("g", t1 + Duration::from_secs(1199)));
        assert!(schedule.due("g", t1 + Duration::from_secs(1200)));
        let t2 = t1 + Duration::from_secs(1200);
        assert_eq!(schedule.failed("g", t2), Duration::from_secs(2400));
        assert_eq!(schedule.failed("g", t2), Duration::from_secs(3000));
        assert_eq!(schedule.failed("g", t2), Duration::from_secs(3000));
        assert_eq!(schedule.next_in("g", t2), Some(Duration::from_secs(3000)));
        schedule.forget("g");
        assert_eq!(schedule.next_in("g", t2), None);
        // Forgotten: a new drain starts again at the first wait.
        assert!(!schedule.due("g", t2));
        assert_eq!(schedule.next_in("g", t2), Some(Duration::from_secs(600)));
    }
}
