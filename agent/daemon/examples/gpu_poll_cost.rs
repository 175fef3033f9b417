//! The GPU health poller's own cost: `GpuService::poll_once` over eight GPUs, timed in
//! thread CPU time, and what that costs as a share of one core at the 10 s poll
//! interval. The GPUs are a constant **test double** defined here (no NVML call is
//! made), so this is the poller's cost without the driver's; the driver's share must
//! be measured on a GPU host (docs/gpus.md, "Still to measure").
//!
//! `cargo run -p plinth-agent --example gpu_poll_cost [--release]`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use plinth_agent::gpu::nvml::{
    EccCounts, GpuEvent, GpuHealth, GpuInventory, NvmlBackend, NvmlError,
};
use plinth_agent::gpu::{GpuService, GpuSettings};

/// **Test double**: eight made-up GPUs with constant readings.
struct ConstantGpus;

impl NvmlBackend for ConstantGpus {
    fn describe(&self) -> String {
        "constant test double".to_owned()
    }

    fn inventory(&self) -> Result<Vec<GpuInventory>, NvmlError> {
        Ok((0..8)
            .map(|index| GpuInventory {
                index,
                uuid: format!("GPU-bench-{index}"),
                name: "NVIDIA H200".to_owned(),
                architecture: "hopper".to_owned(),
                memory_bytes: 141_000_000_000,
                driver_version: "550.54.15".to_owned(),
                cuda_driver_version: "12.4".to_owned(),
                vbios_version: "96.00".to_owned(),
                pci_bus_id: format!("00000000:{index:02X}:00.0"),
                numa_node: Some(0),
                nvlink_peers: Vec::new(),
                mig_mode: "disabled".to_owned(),
                mig_instances: Vec::new(),
                cc_mode: "off".to_owned(),
            })
            .collect())
    }

    fn health(&self, _index: u32) -> Result<GpuHealth, NvmlError> {
        Ok(GpuHealth {
            temperature_c: Some(40),
            power_mw: Some(100_000),
            power_limit_mw: Some(700_000),
            sm_clock_mhz: Some(1980),
            memory_clock_mhz: Some(2619),
            throttle_reasons: vec!["gpu_idle".to_owned()],
            ecc: Some(EccCounts::default()),
            retired_pages: None,
            energy_mj: Some(1),
            sm_utilisation_pct: Some(0),
        })
    }

    fn watch_events(
        &self,
        _stop: &AtomicBool,
        _poll_ms: u32,
        _on_event: &mut dyn FnMut(GpuEvent),
    ) -> Result<(), NvmlError> {
        Ok(())
    }
}

fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given, which points to
    // a zeroed rusage owned by this frame.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: getrusage succeeded, so the value is initialised (it was zeroed anyway).
    let usage = unsafe { usage.assume_init() };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        plinth_agent::store::Store::open(
            &dir.path().join("plinth.db"),
            plinth_agent::migrations::MIGRATIONS,
        )
        .unwrap(),
    );
    let settings = GpuSettings {
        poll_interval: Duration::from_secs(3600),
        cdi_dirs: Vec::new(),
        ..GpuSettings::default()
    };
    let service = GpuService::start(Ok(Arc::new(ConstantGpus)), store, settings);
    let polls = 20_000u32;
    let before = thread_cpu();
    for _ in 0..polls {
        service.poll_once();
    }
    let per_poll = (thread_cpu() - before) / polls;
    let share = per_poll.as_secs_f64() / 10.0 * 100.0;
    println!(
        "poll_once over 8 GPUs: {:.1} µs of CPU per poll; at one poll every 10 s: {share:.5} % of one core",
        per_poll.as_secs_f64() * 1e6
    );
    service.shutdown();
}
