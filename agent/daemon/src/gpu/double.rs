//! **Test double.** A recording NVML: made-up GPUs whose health readings and driver
//! events a test scripts (XID sequences, ECC storms, a GPU vanishing mid-job), and a log
//! of every call the GPU module made. Compiled only for tests and the `test-doubles`
//! feature; the daemon never selects it (it only ever asks
//! [`super::nvml::NvmlLibrary::init`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::nvml::{GpuEvent, GpuEventKind, GpuHealth, GpuInventory, NvmlBackend, NvmlError};

#[derive(Debug, Default)]
struct State {
    gpus: Vec<GpuInventory>,
    health: BTreeMap<String, GpuHealth>,
    lost: Vec<String>,
    events: VecDeque<GpuEvent>,
    calls: Vec<String>,
}

/// **Test double** of NVML (see the module documentation).
#[derive(Debug, Default)]
pub struct RecordingNvml {
    state: Mutex<State>,
}

/// A made-up GPU for tests: `NVIDIA H200`, index `index`, uuid `GPU-test-<index>`.
pub fn test_gpu(index: u32) -> GpuInventory {
    GpuInventory {
        index,
        uuid: format!("GPU-test-{index}"),
        name: "NVIDIA H200".to_owned(),
        architecture: "hopper".to_owned(),
        memory_bytes: 141_000_000_000,
        driver_version: "550.54.15".to_owned(),
        cuda_driver_version: "12.4".to_owned(),
        vbios_version: "96.00.99.00.01".to_owned(),
        pci_bus_id: format!("00000000:{:02X}:00.0", 0x17 + index),
        numa_node: Some(index / 4),
        nvlink_peers: Vec::new(),
        mig_mode: "disabled".to_owned(),
        mig_instances: Vec::new(),
        cc_mode: "off".to_owned(),
    }
}

impl RecordingNvml {
    /// A host with `count` test GPUs, each healthy.
    pub fn with_gpus(count: u32) -> Self {
        let double = Self::default();
        {
            let mut state = double.lock();
            for index in 0..count {
                let gpu = test_gpu(index);
                state.health.insert(gpu.uuid.clone(), GpuHealth::default());
                state.gpus.push(gpu);
            }
        }
        double
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the next health readings of the GPU with `uuid`.
    pub fn set_health(&self, uuid: &str, health: GpuHealth) {
        self.lock().health.insert(uuid.to_owned(), health);
    }

    /// Queues a driver event.
    pub fn push_event(&self, uuid: &str, kind: GpuEventKind) {
        self.lock().events.push_back(GpuEvent {
            uuid: uuid.to_owned(),
            kind,
        });
    }

    /// Makes the GPU vanish: its queries fail as lost and the driver reports it lost.
    pub fn lose(&self, uuid: &str) {
        let mut state = self.lock();
        state.lost.push(uuid.to_owned());
        state.events.push_back(GpuEvent {
            uuid: uuid.to_owned(),
            kind: GpuEventKind::Lost,
        });
    }

    /// Events not delivered yet.
    pub fn pending_events(&self) -> usize {
        self.lock().events.len()
    }

    /// Every call so far (`inventory`, `health 0`, `watch_events`).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }
}

impl NvmlBackend for RecordingNvml {
    fn describe(&self) -> String {
        "recording NVML test double".to_owned()
    }

    fn inventory(&self) -> Result<Vec<GpuInventory>, NvmlError> {
        let mut state = self.lock();
        state.calls.push("inventory".to_owned());
        Ok(state.gpus.clone())
    }

    fn health(&self, index: u32) -> Result<GpuHealth, NvmlError> {
        let mut state = self.lock();
        state.calls.push(format!("health {index}"));
        let uuid = state
            .gpus
            .iter()
            .find(|gpu| gpu.index == index)
            .map(|gpu| gpu.uuid.clone())
            .ok_or_else(|| NvmlError::Query {
                operation: "device_by_index",
                index,
                detail: "no such GPU".to_owned(),
            })?;
        if state.lost.contains(&uuid) {
            return Err(NvmlError::Lost {
                index,
                detail: "GPU is lost".to_owned(),
            });
        }
        Ok(state.health.get(&uuid).cloned().unwrap_or_default())
    }

    fn watch_events(
        &self,
        stop: &AtomicBool,
        poll_ms: u32,
        on_event: &mut dyn FnMut(GpuEvent),
    ) -> Result<(), NvmlError> {
        self.lock().calls.push("watch_events".to_owned());
        while !stop.load(Ordering::Relaxed) {
            let next = self.lock().events.pop_front();
            match next {
                Some(event) => on_event(event),
                None => std::thread::sleep(Duration::from_millis(u64::from(poll_ms.min(20)))),
            }
        }
        Ok(())
    }
}
