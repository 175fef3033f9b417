//! The driver behind a trait: what the GPU module asks NVML, and the real implementation.
//!
//! [`NvmlBackend`] is the one way the agent talks to GPUs. [`NvmlLibrary`] (feature
//! `nvidia`, on by default) loads libnvidia-ml at run time through nvml-wrapper, so the
//! agent builds and starts on hosts without a driver; no driver is an error value the
//! caller turns into "CPU-only", never a panic. The labelled test double is
//! [`super::double::RecordingNvml`]; the daemon never selects it.

use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the NVML backend.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum NvmlError {
    /// libnvidia-ml could not be loaded or initialised.
    #[error("no NVIDIA driver: {detail}")]
    NoDriver {
        /// NVML's error.
        detail: String,
    },
    /// The GPU is gone (fell off the bus, was removed).
    #[error("GPU {index} is lost: {detail}")]
    Lost {
        /// Its index.
        index: u32,
        /// What NVML said.
        detail: String,
    },
    /// A query failed.
    #[error("NVML {operation} failed for GPU {index}: {detail}")]
    Query {
        /// The NVML call.
        operation: &'static str,
        /// The device index.
        index: u32,
        /// NVML's error.
        detail: String,
    },
}

/// A MIG instance of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    /// Its index under the parent GPU.
    pub index: u32,
    /// `MIG-...`.
    pub uuid: String,
    /// Its memory, bytes.
    pub memory_bytes: u64,
}

/// Everything the agent knows about one GPU that does not change while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInventory {
    /// NVML index.
    pub index: u32,
    /// `GPU-...`.
    pub uuid: String,
    /// Model name (`NVIDIA H200`).
    pub name: String,
    /// Architecture, lowercase (`hopper`).
    pub architecture: String,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// Driver version.
    pub driver_version: String,
    /// CUDA driver API version (`12.4`).
    pub cuda_driver_version: String,
    /// VBIOS version.
    pub vbios_version: String,
    /// PCI bus id (`00000000:17:00.0`).
    pub pci_bus_id: String,
    /// NUMA node, when the platform reports one.
    pub numa_node: Option<u32>,
    /// PCI bus ids at the other end of active NVLinks.
    pub nvlink_peers: Vec<String>,
    /// MIG mode: `enabled`, `disabled` or `unsupported`.
    pub mig_mode: String,
    /// MIG instances (empty unless MIG is enabled).
    pub mig_instances: Vec<MigInstance>,
    /// Confidential-computing mode: `on`, `off`, `devtools` or `unknown`.
    pub cc_mode: String,
}

/// ECC error counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EccCounts {
    /// Corrected (single-bit) errors since the driver loaded.
    pub volatile_corrected: u64,
    /// Uncorrected (double-bit) errors since the driver loaded.
    pub volatile_uncorrected: u64,
    /// Uncorrected errors over the GPU's life.
    pub aggregate_uncorrected: u64,
}

/// Retired memory pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredPages {
    /// Retired for multiple single-bit errors.
    pub single_bit: u64,
    /// Retired for a double-bit error.
    pub double_bit: u64,
    /// Retirements waiting for a reboot.
    pub pending: bool,
}

/// One reading of a GPU's health; `None` where the GPU does not support the query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuHealth {
    /// Core temperature, °C.
    pub temperature_c: Option<u32>,
    /// Power draw, milliwatts.
    pub power_mw: Option<u32>,
    /// Enforced power limit, milliwatts.
    pub power_limit_mw: Option<u32>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub memory_clock_mhz: Option<u32>,
    /// Active clock throttle reasons, by NVML's names.
    pub throttle_reasons: Vec<String>,
    /// ECC counts (None: ECC off or unsupported).
    pub ecc: Option<EccCounts>,
    /// Retired pages (None: unsupported; Ampere and later remap rows instead).
    pub retired_pages: Option<RetiredPages>,
    /// Total energy since the driver loaded, millijoules.
    pub energy_mj: Option<u64>,
    /// SM (kernel) utilisation over the last sample period, percent.
    pub sm_utilisation_pct: Option<u32>,
}

/// What an NVML event reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuEventKind {
    /// An XID error with its code.
    Xid {
        /// The XID.
        code: u64,
    },
    /// A double-bit (uncorrectable) ECC error.
    UncorrectableEcc,
    /// A single-bit (corrected) ECC error.
    CorrectableEcc,
    /// The GPU stopped answering (fell off the bus).
    Lost,
}

/// One event from the driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEvent {
    /// The GPU's uuid.
    pub uuid: String,
    /// What happened.
    pub kind: GpuEventKind,
}

/// The driver, as the GPU module uses it.
pub trait NvmlBackend: Send + Sync {
    /// A description for logs (`libnvidia-ml, driver 550.54.15`).
    fn describe(&self) -> String;

    /// Every GPU's inventory.
    fn inventory(&self) -> Result<Vec<GpuInventory>, NvmlError>;

    /// One reading of GPU `index`'s health.
    fn health(&self, index: u32) -> Result<GpuHealth, NvmlError>;

    /// Blocks, delivering every XID and ECC event to `on_event`, until `stop` is set
    /// (checked at least every `poll_ms`). Runs on its own thread.
    fn watch_events(
        &self,
        stop: &AtomicBool,
        poll_ms: u32,
        on_event: &mut dyn FnMut(GpuEvent),
    ) -> Result<(), NvmlError>;
}

#[cfg(feature = "nvidia")]
pub use real::NvmlLibrary;

#[cfg(feature = "nvidia")]
mod real {
    use std::sync::atomic::{AtomicBool, Ordering};

    use nvml_wrapper::Nvml;
    use nvml_wrapper::bitmasks::event::EventTypes;
    use nvml_wrapper::enum_wrappers::device::{
        Clock, EccCounter, MemoryError, RetirementCause, TemperatureSensor,
    };
    use nvml_wrapper::enums::device::DeviceArchitecture;
    use nvml_wrapper::enums::event::XidError;
    use nvml_wrapper::error::NvmlError as WrapperError;

    use super::{
        EccCounts, GpuEvent, GpuEventKind, GpuHealth, GpuInventory, MigInstance, NvmlBackend,
        NvmlError, RetiredPages,
    };

    /// The real driver: libnvidia-ml, loaded at run time.
    pub struct NvmlLibrary {
        nvml: Nvml,
    }

    impl std::fmt::Debug for NvmlLibrary {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter
                .debug_struct("NvmlLibrary")
                .finish_non_exhaustive()
        }
    }

    impl NvmlLibrary {
        /// Loads libnvidia-ml and initialises NVML; no driver is [`NvmlError::NoDriver`].
        pub fn init() -> Result<Self, NvmlError> {
            Nvml::init()
                .map(|nvml| Self { nvml })
                .map_err(|err| NvmlError::NoDriver {
                    detail: err.to_string(),
                })
        }
    }

    fn query(operation: &'static str, index: u32) -> impl FnOnce(WrapperError) -> NvmlError {
        move |err| match err {
            WrapperError::GpuLost => NvmlError::Lost {
                index,
                detail: format!("{operation}: {err}"),
            },
            other => NvmlError::Query {
                operation,
                index,
                detail: other.to_string(),
            },
        }
    }

    /// `Ok(None)` for a query the GPU does not support, the error otherwise.
    fn optional<T>(
        result: Result<T, WrapperError>,
        operation: &'static str,
        index: u32,
    ) -> Result<Option<T>, NvmlError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(WrapperError::NotSupported | WrapperError::NoPermission) => Ok(None),
            Err(err) => Err(query(operation, index)(err)),
        }
    }

    impl NvmlBackend for NvmlLibrary {
        fn describe(&self) -> String {
            match self.nvml.sys_driver_version() {
                Ok(version) => format!("libnvidia-ml, driver {version}"),
                Err(_) => "libnvidia-ml".to_owned(),
            }
        }

        fn inventory(&self) -> Result<Vec<GpuInventory>, NvmlError> {
            let count = self.nvml.device_count().map_err(query("device_count", 0))?;
            let driver_version = self
                .nvml
                .sys_driver_version()
                .map_err(query("sys_driver_version", 0))?;
            let cuda_driver_version = match self.nvml.sys_cuda_driver_version() {
                Ok(version) => format!(
                    "{}.{}",
                    nvml_wrapper::cuda_driver_version_major(version),
                    nvml_wrapper::cuda_driver_version_minor(version)
                ),
                Err(_) => "unknown".to_owned(),
            };
            let mut out = Vec::new();
            for index in 0..count {
                let device = self
                    .nvml
                    .device_by_index(index)
                    .map_err(query("device_by_index", index))?;
                let architecture = match device.architecture() {
                    Ok(DeviceArchitecture::Unknown) | Err(_) => "unknown".to_owned(),
                    Ok(arch) => arch.to_string().to_lowercase(),
                };
                let mut nvlink_peers = Vec::new();
                // NVML_NVLINK_MAX_LINKS is 18 on Hopper.
                for link in 0..18 {
                    let wrapper = device.link_wrapper_for(link);
                    if wrapper.is_active().unwrap_or(false)
                        && let Ok(remote) = wrapper.remote_pci_info()
                    {
                        nvlink_peers.push(remote.bus_id);
                    }
                }
                nvlink_peers.sort();
                nvlink_peers.dedup();
                let (mig_mode, mig_instances) = match device.mig_mode() {
                    Ok(mode) if mode.current == 1 => {
                        let mut instances = Vec::new();
                        let max = device.mig_device_count().unwrap_or(0);
                        for mig_index in 0..max {
                            if let Ok(mig) = device.mig_device_by_index(mig_index) {
                                instances.push(MigInstance {
                                    index: mig_index,
                                    uuid: mig.uuid().unwrap_or_default(),
                                    memory_bytes: mig
                                        .memory_info()
                                        .map(|info| info.total)
                                        .unwrap_or(0),
                                });
                            }
                        }
                        ("enabled".to_owned(), instances)
                    }
                    Ok(_) => ("disabled".to_owned(), Vec::new()),
                    Err(_) => ("unsupported".to_owned(), Vec::new()),
                };
                let cc_mode = match (device.is_cc_enabled(), device.is_cc_dev_mode_enabled()) {
                    (Ok(true), Ok(true)) => "devtools",
                    (Ok(true), _) => "on",
                    (Ok(false), _) | (Err(WrapperError::NotSupported), _) => "off",
                    (Err(_), _) => "unknown",
                };
                out.push(GpuInventory {
                    index,
                    uuid: device.uuid().map_err(query("uuid", index))?,
                    name: device.name().map_err(query("name", index))?,
                    architecture,
                    memory_bytes: device
                        .memory_info()
                        .map_err(query("memory_info", index))?
                        .total,
                    driver_version: driver_version.clone(),
                    cuda_driver_version: cuda_driver_version.clone(),
                    vbios_version: device
                        .vbios_version()
                        .map_err(query("vbios_version", index))?,
                    pci_bus_id: device.pci_info().map_err(query("pci_info", index))?.bus_id,
                    numa_node: device.numa_node_id().ok(),
                    nvlink_peers,
                    mig_mode,
                    mig_instances,
                    cc_mode: cc_mode.to_owned(),
                });
            }
            Ok(out)
        }

        fn health(&self, index: u32) -> Result<GpuHealth, NvmlError> {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(query("device_by_index", index))?;
            let ecc = match (
                device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
                device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
                device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate),
            ) {
                (Ok(corrected), Ok(uncorrected), aggregate) => Some(EccCounts {
                    volatile_corrected: corrected,
                    volatile_uncorrected: uncorrected,
                    aggregate_uncorrected: aggregate.unwrap_or(uncorrected),
                }),
                (Err(WrapperError::GpuLost), _, _) | (_, Err(WrapperError::GpuLost), _) => {
                    return Err(NvmlError::Lost {
                        index,
                        detail: "total_ecc_errors".to_owned(),
                    });
                }
                _ => None,
            };
            let retired_pages = match (
                device.retired_pages(RetirementCause::MultipleSingleBitEccErrors),
                device.retired_pages(RetirementCause::DoubleBitEccError),
            ) {
                (Ok(single), Ok(double)) => Some(RetiredPages {
                    single_bit: single.len() as u64,
                    double_bit: double.len() as u64,
                    pending: device.are_pages_pending_retired().unwrap_or(false),
                }),
                _ => None,
            };
            let throttle_reasons = match device.current_throttle_reasons() {
                Ok(reasons) => reasons
                    .iter_names()
                    .map(|(name, _)| name.to_lowercase())
                    .collect(),
                Err(_) => Vec::new(),
            };
            Ok(GpuHealth {
                temperature_c: optional(
                    device.temperature(TemperatureSensor::Gpu),
                    "temperature",
                    index,
                )?,
                power_mw: optional(device.power_usage(), "power_usage", index)?,
                power_limit_mw: optional(
                    device.enforced_power_limit(),
                    "enforced_power_limit",
                    index,
                )?,
                sm_clock_mhz: optional(device.clock_info(Clock::SM), "clock_info", index)?,
                memory_clock_mhz: optional(device.clock_info(Clock::Memory), "clock_info", index)?,
                throttle_reasons,
                ecc,
                retired_pages,
                energy_mj: optional(
                    device.total_energy_consumption(),
                    "total_energy_consumption",
                    index,
                )?,
                sm_utilisation_pct: optional(
                    device.utilization_rates(),
                    "utilization_rates",
                    index,
                )?
                .map(|rates| rates.gpu),
            })
        }

        fn watch_events(
            &self,
            stop: &AtomicBool,
            poll_ms: u32,
            on_event: &mut dyn FnMut(GpuEvent),
        ) -> Result<(), NvmlError> {
            let mut set = self
                .nvml
                .create_event_set()
                .map_err(query("create_event_set", 0))?;
            let count = self.nvml.device_count().map_err(query("device_count", 0))?;
            for index in 0..count {
                let device = self
                    .nvml
                    .device_by_index(index)
                    .map_err(query("device_by_index", index))?;
                let supported = device
                    .supported_event_types()
                    .unwrap_or(EventTypes::CRITICAL_XID_ERROR);
                let wanted = supported
                    & (EventTypes::CRITICAL_XID_ERROR
                        | EventTypes::DOUBLE_BIT_ECC_ERROR
                        | EventTypes::SINGLE_BIT_ECC_ERROR);
                set = device
                    .register_events(wanted, set)
                    .map_err(|err| NvmlError::Query {
                        operation: "register_events",
                        index,
                        detail: err.error.to_string(),
                    })?;
            }
            while !stop.load(Ordering::Relaxed) {
                match set.wait(poll_ms) {
                    Ok(data) => {
                        let uuid = data.device.uuid().unwrap_or_default();
                        let kind = if data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                            match data.event_data {
                                Some(XidError::Value(code)) => GpuEventKind::Xid { code },
                                _ => GpuEventKind::Xid { code: 0 },
                            }
                        } else if data.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
                            GpuEventKind::UncorrectableEcc
                        } else {
                            GpuEventKind::CorrectableEcc
                        };
                        on_event(GpuEvent { uuid, kind });
                    }
                    Err(WrapperError::Timeout) => {}
                    Err(WrapperError::GpuLost) => {
                        on_event(GpuEvent {
                            uuid: String::new(),
                            kind: GpuEventKind::Lost,
                        });
                    }
                    Err(err) => return Err(query("event_set_wait", 0)(err)),
                }
            }
            Ok(())
        }
    }
}
