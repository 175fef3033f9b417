//! The epoch ticker: the clock behind every plugin call's CPU deadline, awake only
//! while a call can use it.
//!
//! wasmtime interrupts a call when the engine's epoch passes the store's deadline, so
//! something must advance the epoch. Advancing it every tick for the life of the host
//! costs a wake-up per tick (a thousand a second at the default 1 ms) on a host that
//! may answer a quote a minute. This ticker parks on a condition variable once no call
//! has been in flight for [`LINGER`], and the next call wakes it. A deadline is armed
//! relative to the epoch at the start of the call, so a parked ticker cannot make a
//! deadline fire early; after a wake the first tick comes one tick later, so a looping
//! plugin is still stopped within its budget plus one tick (plus scheduling delay).
//!
//! The call path is one atomic increment and one atomic load (plus a lock and a notify
//! only when the ticker is parked); the lock is never taken by a call while the ticker
//! runs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::Engine;

/// How long the ticker keeps ticking after the last call ended before it parks: long
/// enough that a host under load (calls every few milliseconds) never pays the wake-up,
/// short enough that a burst costs a few dozen wake-ups.
pub const LINGER: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Shared {
    /// Calls in flight.
    active: AtomicUsize,
    /// The ticker is parked (or about to park) and must be notified.
    parked: AtomicBool,
    stop: AtomicBool,
    /// Epoch increments so far (diagnostics and tests).
    ticks: AtomicU64,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Advances an engine's epoch every tick while calls are in flight. Stops its thread
/// when dropped.
#[derive(Debug)]
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Marks one call in flight; the ticker may park once every guard is dropped.
#[derive(Debug)]
#[must_use = "the call is in flight only while the guard lives"]
pub struct InFlight<'a> {
    shared: &'a Shared,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    /// Start the ticker thread for `engine`, ticking every `tick` while calls run.
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<EpochTicker> {
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let linger_ticks = (LINGER.as_micros() / tick.as_micros().max(1)).max(1) as u64;
        let thread = std::thread::Builder::new()
            .name("plinth-plugin-epoch".to_string())
            .spawn(move || run(&thread_shared, &engine, tick, linger_ticks))?;
        Ok(EpochTicker {
            shared,
            thread: Some(thread),
        })
    }

    /// Mark a call in flight for as long as the returned guard lives, waking the ticker
    /// if it is parked.
    pub fn enter(&self) -> InFlight<'_> {
        let shared = &*self.shared;
        // SeqCst on `active` and `parked` on both sides: either the ticker sees this
        // call before it waits, or this call sees `parked` and notifies under the lock.
        if shared.active.fetch_add(1, Ordering::SeqCst) == 0 && shared.parked.load(Ordering::SeqCst)
        {
            let _guard = shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
            shared.wake.notify_one();
        }
        InFlight { shared }
    }

    /// Epoch increments since the host started.
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// Whether the ticker is parked (no call in flight for a while).
    pub fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }
}

fn run(shared: &Shared, engine: &Engine, tick: Duration, linger_ticks: u64) {
    let mut idle_ticks = 0u64;
    // Ticks fall on a fixed grid from the last wake-up, so sleep overshoot does not
    // accumulate: 50 ticks of 1 ms are 50 ms, not 50 oversleeps.
    let mut next = Instant::now() + tick;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.active.load(Ordering::SeqCst) > 0 {
            idle_ticks = 0;
        } else {
            idle_ticks += 1;
            if idle_ticks > linger_ticks {
                let mut guard = shared.lock.lock().unwrap_or_else(PoisonError::into_inner);
                shared.parked.store(true, Ordering::SeqCst);
                while shared.active.load(Ordering::SeqCst) == 0
                    && !shared.stop.load(Ordering::SeqCst)
                {
                    guard = shared
                        .wake
                        .wait(guard)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                shared.parked.store(false, Ordering::SeqCst);
                drop(guard);
                idle_ticks = 0;
                next = Instant::now() + tick;
                continue;
            }
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        // After a long stall (a suspended host), restart the grid instead of bursting.
        next = if next + tick > now {
            next + tick
        } else {
            now + tick
        };
        // Count first, so a caller that saw its deadline fire also sees the tick.
        shared.ticks.fetch_add(1, Ordering::SeqCst);
        engine.increment_epoch();
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self
                .shared
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn parks_when_idle_and_ticks_while_a_call_runs() {
        let engine = Engine::default();
        let ticker = EpochTicker::start(engine, Duration::from_millis(1)).unwrap();
        wait_until("the idle ticker parks", || ticker.is_parked());
        let parked_at = ticker.ticks();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ticker.ticks(), parked_at, "a parked ticker must not tick");

        let call = ticker.enter();
        wait_until("the ticker ticks for a call", || {
            ticker.ticks() >= parked_at + 20
        });
        assert!(!ticker.is_parked());
        // Two overlapping calls: the ticker keeps ticking until both end.
        let second = ticker.enter();
        drop(call);
        let during = ticker.ticks();
        wait_until("the ticker ticks for the second call", || {
            ticker.ticks() >= during + 20
        });
        drop(second);
        wait_until("the ticker parks after the last call", || {
            ticker.is_parked()
        });
    }

    #[test]
    fn many_short_calls_from_many_threads_never_lose_a_wake_up() {
        let engine = Engine::default();
        let ticker = Arc::new(EpochTicker::start(engine, Duration::from_micros(200)).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ticker = Arc::clone(&ticker);
                std::thread::spawn(move || {
                    for round in 0..200u64 {
                        {
                            let _call = ticker.enter();
                            // Each call must see the epoch move (a lost wake-up hangs it).
                            let start = ticker.ticks();
                            wait_until("a call sees a tick", || ticker.ticks() > start);
                        }
                        if round % 50 == 0 {
                            // Idle long enough for the ticker to park between calls.
                            std::thread::sleep(LINGER * 2);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn drop_stops_a_parked_ticker() {
        let ticker = EpochTicker::start(Engine::default(), Duration::from_millis(1)).unwrap();
        wait_until("the ticker parks", || ticker.is_parked());
        let started = Instant::now();
        drop(ticker);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
