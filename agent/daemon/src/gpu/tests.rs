//! The GPU module through the NVML trait with the recording double (labelled, never
//! selected by the daemon) and a real SQLite store: inventory, XID sequences, ECC
//! storms, drain and undrain, restarts, burn-in recovery, a GPU vanishing mid-job, and
//! the CPU-only host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plinth_attestation::challenge::CpuProver;

use super::double::RecordingNvml;
use super::drain::{self, DrainSource};
use super::nvml::{EccCounts, GpuEventKind, GpuHealth, NvmlBackend};
use super::{GpuService, GpuSettings, GpuSummary, notices};
use crate::store::Store;

struct Host {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    nvml: Arc<RecordingNvml>,
}

impl Host {
    fn new(gpus: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(&dir.path().join("plinth.db"), crate::migrations::MIGRATIONS).unwrap(),
        );
        Self {
            dir,
            store,
            nvml: Arc::new(RecordingNvml::with_gpus(gpus)),
        }
    }

    fn settings(&self) -> GpuSettings {
        GpuSettings {
            poll_interval: Duration::from_millis(20),
            cdi_dirs: vec![self.dir.path().join("cdi")],
            jobs_dir: Some(self.dir.path().join("jobs")),
            burn_in_n: 64,
            burn_in_backoff: super::retry::Backoff {
                first: Duration::from_secs(600),
                max: Duration::from_secs(2400),
            },
        }
    }

    /// The service without its threads (tests drive polls and events themselves).
    fn service(&self) -> GpuService {
        GpuService::new(
            Ok(self.nvml.clone() as Arc<dyn NvmlBackend>),
            self.store.clone(),
            self.settings(),
        )
    }

    /// The service with its poller and event thread, as the daemon starts it.
    fn started(&self) -> Arc<GpuService> {
        GpuService::start(
            Ok(self.nvml.clone() as Arc<dyn NvmlBackend>),
            self.store.clone(),
            self.settings(),
        )
    }

    fn write_cdi_spec(&self) {
        let dir = self.dir.path().join("cdi");
        std::fs::create_dir_all(&dir).unwrap();
        // The shape `nvidia-ctk cdi generate` writes (trimmed): by index, by uuid, all.
        std::fs::write(
            dir.join("nvidia.yaml"),
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n\
             - name: \"0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n\
             - name: GPU-test-0\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n\
             - name: \"1\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia1\n\
             - name: all\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n    - path: /dev/nvidia1\n\
             containerEdits:\n  deviceNodes:\n  - path: /dev/nvidiactl\n",
        )
        .unwrap();
    }

    fn running_job(&self, id: &str, devices: &[&str]) {
        std::fs::create_dir_all(self.dir.path().join("jobs").join(id)).unwrap();
        self.store
            .connection()
            .execute(
                "INSERT INTO jobs (id, tenant, lease_id, spec, gpu_devices, state, created_at_ms, updated_at_ms)
                 VALUES (?1, 't', 'l', '{}', ?2, 'running', 0, 0)",
                rusqlite::params![id, serde_json::to_string(devices).unwrap()],
            )
            .unwrap();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn with_ecc(corrected: u64, uncorrected: u64) -> GpuHealth {
    GpuHealth {
        temperature_c: Some(41),
        power_mw: Some(120_000),
        ecc: Some(EccCounts {
            volatile_corrected: corrected,
            volatile_uncorrected: uncorrected,
            aggregate_uncorrected: uncorrected,
        }),
        ..GpuHealth::default()
    }
}

#[test]
fn inventory_and_health_are_reported_for_every_gpu() {
    let host = Host::new(2);
    host.nvml.set_health("GPU-test-1", with_ecc(3, 0));
    let service = host.service();
    service.poll_once();
    let report = service.report();
    assert_eq!(report.cpu_only, None);
    assert_eq!(report.driver.as_deref(), Some("recording NVML test double"));
    assert_eq!(
        report.summary,
        GpuSummary {
            total: 2,
            healthy: 2,
            drained: 0
        }
    );
    assert_eq!(report.gpus[1].inventory.uuid, "GPU-test-1");
    assert_eq!(report.gpus[1].inventory.name, "NVIDIA H200");
    assert_eq!(
        report.gpus[1]
            .health
            .as_ref()
            .unwrap()
            .ecc
            .as_ref()
            .unwrap()
            .volatile_corrected,
        3
    );
    // No CDI spec: the report says how to create one.
    assert!(report.cdi_hint.unwrap().contains("nvidia-ctk cdi generate"));
    assert_eq!(
        host.nvml.calls(),
        ["inventory", "health 0", "health 1"],
        "the module asked exactly this"
    );
}

#[test]
fn an_xid_sequence_counts_application_faults_and_drains_on_the_fatal_one() {
    let host = Host::new(2);
    let service = host.service();
    for code in [13, 31, 43, 13, 61] {
        service.process_event(&super::nvml::GpuEvent {
            uuid: "GPU-test-0".to_owned(),
            kind: GpuEventKind::Xid { code },
        });
    }
    let report = service.report();
    assert!(
        report.gpus[0].drain.is_none(),
        "application XIDs do not drain"
    );
    assert_eq!(report.gpus[0].counters.application_xids.get(&13), Some(&2));
    assert_eq!(report.gpus[0].counters.application_xids.get(&31), Some(&1));
    assert_eq!(report.gpus[0].counters.other_xids.get(&61), Some(&1));
    service.process_event(&super::nvml::GpuEvent {
        uuid: "GPU-test-0".to_owned(),
        kind: GpuEventKind::Xid { code: 79 },
    });
    // A second fatal XID keeps the first reason.
    service.process_event(&super::nvml::GpuEvent {
        uuid: "GPU-test-0".to_owned(),
        kind: GpuEventKind::Xid { code: 48 },
    });
    let report = service.report();
    let drain = report.gpus[0].drain.as_ref().unwrap();
    assert_eq!(drain.reason, "fatal XID 79");
    assert_eq!(drain.source, DrainSource::Policy);
    assert_eq!(report.gpus[0].counters.fatal_events, 2);
    assert!(report.gpus[1].drain.is_none(), "the other GPU still serves");
    assert_eq!(
        service.summary(),
        GpuSummary {
            total: 2,
            healthy: 1,
            drained: 1
        }
    );
    assert_eq!(drain::log(&host.store, "GPU-test-0").unwrap().len(), 1);
}

#[test]
fn an_ecc_storm_and_an_uncorrectable_error_drain() {
    let host = Host::new(2);
    let service = host.service();
    host.nvml.set_health("GPU-test-0", with_ecc(10, 0));
    host.nvml.set_health("GPU-test-1", with_ecc(10, 0));
    service.poll_once();
    // GPU 0: a storm of corrected errors between two polls; GPU 1: a steady trickle.
    host.nvml.set_health("GPU-test-0", with_ecc(5_000, 0));
    host.nvml.set_health("GPU-test-1", with_ecc(20, 0));
    service.poll_once();
    let report = service.report();
    assert!(
        report.gpus[0]
            .drain
            .as_ref()
            .unwrap()
            .reason
            .contains("ECC storm")
    );
    assert!(report.gpus[1].drain.is_none());
    // An uncorrectable error event on GPU 1.
    service.process_event(&super::nvml::GpuEvent {
        uuid: "GPU-test-1".to_owned(),
        kind: GpuEventKind::UncorrectableEcc,
    });
    let report = service.report();
    assert_eq!(
        report.gpus[1].drain.as_ref().unwrap().reason,
        "uncorrectable ECC error"
    );
    // And through the counters: a new host whose GPU's uncorrected count rises.
    let other = Host::new(1);
    let service = other.service();
    other.nvml.set_health("GPU-test-0", with_ecc(0, 0));
    service.poll_once();
    other.nvml.set_health("GPU-test-0", with_ecc(0, 1));
    service.poll_once();
    assert!(
        service.report().gpus[0]
            .drain
            .as_ref()
            .unwrap()
            .reason
            .contains("uncorrectable ECC errors: 1")
    );
}

#[test]
fn operator_drain_and_undrain_are_recorded_and_survive_a_restart() {
    let host = Host::new(2);
    let service = host.service();
    assert!(service.drain(1, "fan noise, RMA pending").unwrap());
    assert!(!service.drain(1, "again").unwrap(), "already drained");
    assert!(matches!(
        service.drain(7, "x"),
        Err(super::GpuError::NoSuchGpu { index: 7, count: 2 })
    ));
    drop(service);
    // A restart: a new service on the same database.
    let restarted = host.service();
    let report = restarted.report();
    let drain = report.gpus[1].drain.as_ref().unwrap();
    assert_eq!(drain.reason, "fan noise, RMA pending");
    assert_eq!(drain.source, DrainSource::Operator);
    assert!(restarted.undrain(1, "fan replaced").unwrap());
    assert!(!restarted.undrain(1, "again").unwrap());
    let log = drain::log(&host.store, "GPU-test-1").unwrap();
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|entry| (entry.action.as_str(), entry.reason.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("drain", "fan noise, RMA pending"),
            ("undrain", "fan replaced")
        ]
    );
    assert!(
        log.iter()
            .all(|entry| entry.source == DrainSource::Operator)
    );
}

#[test]
fn a_burn_in_returns_a_drained_gpu_to_service() {
    let host = Host::new(1);
    let service = host.service();
    service.process_event(&super::nvml::GpuEvent {
        uuid: "GPU-test-0".to_owned(),
        kind: GpuEventKind::Xid { code: 94 },
    });
    assert!(service.is_drained("GPU-test-0"));
    // The burn-in runs the capacity challenge (here with the CPU prover: the test has
    // no GPU) and verifies it; passing undrains with source burn-in.
    assert!(service.latest_transcript().is_none());
    let transcript = service.burn_in(0, &CpuProver).unwrap();
    assert_eq!(transcript.challenge.n, 64);
    assert_eq!(service.latest_transcript(), Some(transcript.clone()));
    assert!(!service.is_drained("GPU-test-0"));
    let log = drain::log(&host.store, "GPU-test-0").unwrap();
    assert_eq!(log.last().unwrap().source, DrainSource::BurnIn);
    assert!(log.last().unwrap().reason.starts_with("burn-in passed"));

    // A prover that gets the product wrong fails the burn-in; the GPU stays drained.
    struct Broken;
    impl plinth_attestation::challenge::Prover for Broken {
        fn info(&self) -> plinth_attestation::challenge::ProverInfo {
            plinth_attestation::challenge::ProverInfo {
                device: "gpu:0".to_owned(),
                model: "NVIDIA H200".to_owned(),
            }
        }
        fn multiply(
            &self,
            a: &[i8],
            b: &[i8],
            n: usize,
        ) -> Result<Vec<i32>, plinth_attestation::challenge::ProverError> {
            let mut c = plinth_attestation::challenge::prover::multiply_cpu(a, b, n);
            c[n + 1] ^= 4;
            Ok(c)
        }
    }
    service.drain(0, "suspect").unwrap();
    let err = service.burn_in(0, &Broken).unwrap_err();
    assert!(err.to_string().contains("challenge.freivalds"), "{err}");
    assert!(service.is_drained("GPU-test-0"));
}

#[test]
fn a_gpu_vanishing_mid_job_is_drained_and_the_job_is_told() {
    let host = Host::new(2);
    host.write_cdi_spec();
    host.running_job("job-a", &["nvidia.com/gpu=0"]);
    host.running_job("job-b", &["nvidia.com/gpu=1"]);
    let service = host.started();
    assert_eq!(
        service.report().gpus[0].cdi_names,
        [
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=GPU-test-0",
            "nvidia.com/gpu=all"
        ]
    );
    assert!(service.report().cdi_hint.is_none());
    host.nvml.lose("GPU-test-0");
    wait_for("the lost GPU to be drained", || {
        service.is_drained("GPU-test-0")
    });
    let report = service.report();
    assert!(report.gpus[0].lost);
    assert!(
        report.gpus[0]
            .drain
            .as_ref()
            .unwrap()
            .reason
            .contains("lost")
    );
    assert!(!report.gpus[1].lost && report.gpus[1].drain.is_none());
    // The job holding it is told, through its log and its record; the other is not.
    wait_for("the notice", || {
        !notices::of_job(&host.store, "job-a").unwrap().is_empty()
    });
    let log = std::fs::read_to_string(host.dir.path().join("jobs/job-a/gpu.log")).unwrap();
    assert!(log.contains("GPU 0 (GPU-test-0) was drained"), "{log}");
    assert!(notices::of_job(&host.store, "job-b").unwrap().is_empty());
    assert!(!host.dir.path().join("jobs/job-b/gpu.log").exists());
    // Withdrawn from scheduling: every name that reaches it is refused, others pass.
    for name in [
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=GPU-test-0",
        "nvidia.com/gpu=all",
    ] {
        let refused = service.check_devices(&[name.to_owned()]).unwrap_err();
        assert!(refused.contains("drained"), "{refused}");
    }
    service
        .check_devices(&["nvidia.com/gpu=1".to_owned()])
        .unwrap();
    assert_eq!(service.serving().len(), 1);
    // A lost GPU cannot be burnt in until it is reset.
    assert!(service.burn_in(0, &CpuProver).is_err());
    service.shutdown();
    assert!(host.nvml.calls().contains(&"watch_events".to_owned()));
}

#[test]
fn events_reach_the_policy_through_the_event_thread() {
    let host = Host::new(1);
    let service = host.started();
    host.nvml
        .push_event("GPU-test-0", GpuEventKind::Xid { code: 13 });
    host.nvml
        .push_event("GPU-test-0", GpuEventKind::Xid { code: 64 });
    wait_for("the XID 64 drain", || service.is_drained("GPU-test-0"));
    assert_eq!(
        service.report().gpus[0].counters.application_xids.get(&13),
        Some(&1)
    );
    service.shutdown();
}

#[test]
fn a_host_without_a_driver_runs_cpu_only_and_says_why() {
    let host = Host::new(0);
    let service = GpuService::start(
        Err("no NVIDIA driver: libnvidia-ml.so: cannot open shared object file".to_owned()),
        host.store.clone(),
        host.settings(),
    );
    let report = service.report();
    assert!(report.cpu_only.unwrap().contains("libnvidia-ml"));
    assert_eq!(report.summary, GpuSummary::default());
    assert!(matches!(
        service.drain(0, "x"),
        Err(super::GpuError::NoSuchGpu { .. })
    ));
    // A driver that finds no GPU is CPU-only too.
    let empty = GpuService::start(
        Ok(host.nvml.clone() as Arc<dyn NvmlBackend>),
        host.store.clone(),
        host.settings(),
    );
    assert!(empty.cpu_only().unwrap().contains("reports no GPU"));
}

#[test]
fn the_real_backend_on_this_host_never_panics() {
    // On a host without the driver this is the CPU-only reason; with one, an inventory.
    match GpuService::detect() {
        Ok(backend) => {
            let inventory = backend.inventory();
            println!("NVML present: {} -> {inventory:?}", backend.describe());
        }
        Err(reason) => println!("skipping the NVML inventory: {reason}"),
    }
    println!(
        "CUDA libraries present: {}",
        super::cuda::libraries_present()
    );
}

#[test]
fn the_plugins_host_state_comes_from_the_inventory_drains_and_jobs() {
    let host = Host::new(3);
    host.write_cdi_spec();
    host.running_job("job-a", &["nvidia.com/gpu=1"]);
    let service = host.service();
    service.drain(0, "maintenance").unwrap();
    let state = service.host_state();
    assert_eq!(state.gpus.len(), 3);
    assert_eq!(state.running_jobs, 1);
    assert!(state.gpus[0].drained && !state.gpus[0].allocated);
    assert!(!state.gpus[1].drained && state.gpus[1].allocated);
    assert!(!state.gpus[2].drained && !state.gpus[2].allocated);
    assert_eq!(state.gpus[2].model, "NVIDIA H200");
    assert_eq!(state.gpus[2].memory_mib, 141_000_000_000 >> 20);
    // Pricing (quotes) sees one class with one free GPU of three.
    let pricing = plinth_plugin_host::summarize(&state);
    assert_eq!(pricing.classes.len(), 1);
    assert_eq!((pricing.classes[0].total, pricing.classes[0].free), (3, 1));
}

/// A prover that gets one entry of C wrong: its burn-ins fail (labelled test double).
struct WrongEntry;

impl plinth_attestation::challenge::Prover for WrongEntry {
    fn info(&self) -> plinth_attestation::challenge::ProverInfo {
        plinth_attestation::challenge::ProverInfo {
            device: "gpu:0".to_owned(),
            model: "NVIDIA H200".to_owned(),
        }
    }
    fn multiply(
        &self,
        a: &[i8],
        b: &[i8],
        n: usize,
    ) -> Result<Vec<i32>, plinth_attestation::challenge::ProverError> {
        let mut c = plinth_attestation::challenge::prover::multiply_cpu(a, b, n);
        c[n + 1] ^= 4;
        Ok(c)
    }
}

#[test]
fn a_policy_drain_is_retried_with_back_off_and_returns_when_a_burn_in_passes() {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};

    let host = Host::new(3);
    let service = host.service();
    // GPU 0: drained by the policy (XID 79). GPU 1: drained by the operator. GPU 2:
    // lost (drained by the policy too, but it cannot come back without a reset).
    service.process_event(&super::nvml::GpuEvent {
        uuid: "GPU-test-0".to_owned(),
        kind: GpuEventKind::Xid { code: 79 },
    });
    service.drain(1, "maintenance").unwrap();
    host.nvml.lose("GPU-test-2");
    service.poll_once();
    assert!(service.is_drained("GPU-test-0"));
    assert!(service.is_drained("GPU-test-2"));

    // The burn-in passes only when `healthy` is set; every prover made is counted.
    let healthy = AtomicBool::new(false);
    let made = Cell::new(Vec::<u32>::new());
    let prover_for = |gpu: &super::nvml::GpuInventory| {
        let mut seen = made.take();
        seen.push(gpu.index);
        made.set(seen);
        Ok::<_, String>(if healthy.load(Ordering::Relaxed) {
            Box::new(CpuProver) as Box<dyn plinth_attestation::challenge::Prover>
        } else {
            Box::new(WrongEntry)
        })
    };
    let minute = Duration::from_secs(60);
    let t0 = Instant::now();
    // Seen drained at t0: nothing is due before the first back-off (10 min).
    assert!(service.retry_drained(t0, &prover_for).is_empty());
    assert!(
        service
            .retry_drained(t0 + 9 * minute, &prover_for)
            .is_empty()
    );
    // At 10 min GPU 0 is tried, and fails: the wait doubles to 20 min.
    let attempts = service.retry_drained(t0 + 10 * minute, &prover_for);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].0, 0);
    let failure = attempts[0].1.as_ref().unwrap_err();
    assert!(failure.contains("challenge.freivalds"), "{failure}");
    assert!(service.is_drained("GPU-test-0"));
    assert!(
        service
            .retry_drained(t0 + 29 * minute, &prover_for)
            .is_empty()
    );
    // At 30 min: fails again, wait 40 min (the cap); then 40 min again, not 80.
    assert!(
        service.retry_drained(t0 + 30 * minute, &prover_for)[0]
            .1
            .is_err()
    );
    assert!(
        service.retry_drained(t0 + 70 * minute, &prover_for)[0]
            .1
            .is_err()
    );
    assert!(
        service
            .retry_drained(t0 + 109 * minute, &prover_for)
            .is_empty()
    );
    // The GPU recovers: the next attempt (at 110 min) passes and returns it to service.
    healthy.store(true, Ordering::Relaxed);
    let attempts = service.retry_drained(t0 + 110 * minute, &prover_for);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0], (0, Ok(())));
    assert!(!service.is_drained("GPU-test-0"));
    let log = drain::log(&host.store, "GPU-test-0").unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].action, "undrain");
    assert_eq!(log[1].source, DrainSource::BurnIn);
    // Only GPU 0 was ever tried: never the operator's drain, never the lost GPU.
    assert_eq!(made.take(), vec![0, 0, 0, 0]);
    assert!(
        service
            .retry_drained(t0 + 1000 * minute, &prover_for)
            .is_empty()
    );
    assert!(service.is_drained("GPU-test-1"));
    assert!(service.is_drained("GPU-test-2"));
    assert_eq!(
        drain::get(&host.store, "GPU-test-1")
            .unwrap()
            .unwrap()
            .source,
        DrainSource::Operator
    );

    // Drained again later: the back-off starts over at 10 min.
    service.process_event(&super::nvml::GpuEvent {
        uuid: "GPU-test-0".to_owned(),
        kind: GpuEventKind::Xid { code: 79 },
    });
    let t1 = t0 + 2000 * minute;
    assert!(service.retry_drained(t1, &prover_for).is_empty());
    assert!(
        service
            .retry_drained(t1 + 9 * minute, &prover_for)
            .is_empty()
    );
    assert_eq!(
        service.retry_drained(t1 + 10 * minute, &prover_for),
        vec![(0, Ok(()))]
    );
}
