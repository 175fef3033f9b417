//! GPU metering for receipts: per job and GPU, the uuid, GPU-milliseconds, the mean SM
//! utilisation and the energy in joules, from the health poller's NVML readings.
//!
//! Energy is the difference of NVML's total-energy counter between the first and the
//! last reading inside the job's period, scaled to the whole period; utilisation is the
//! mean of the readings' SM utilisation. A period with fewer than two readings (a job
//! shorter than two poll intervals, or one that started before the agent) has no
//! measurement, and the receipt says why instead of guessing.

use std::sync::{Arc, Weak};

use plinth_jobs::meter::{GpuMeter, GpuUsage, GpuUsageEntry};

use super::GpuService;

/// Readings kept per GPU (a day at the 10 s poll interval).
pub const MAX_SAMPLES: usize = 8640;

/// One reading kept for metering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// NVML's total energy counter, millijoules.
    pub energy_mj: Option<u64>,
    /// SM utilisation, percent.
    pub sm_pct: Option<u32>,
}

/// Now, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The usage of one GPU over `[start_ms, end_ms]` from its readings, or why there is
/// none.
pub fn usage_from_samples(
    uuid: &str,
    samples: &[Sample],
    start_ms: u64,
    end_ms: u64,
) -> Result<GpuUsageEntry, String> {
    let with_energy: Vec<(u64, u64)> = samples
        .iter()
        .filter_map(|sample| sample.energy_mj.map(|energy| (sample.at_ms, energy)))
        .collect();
    let (Some(first), Some(last)) = (with_energy.first(), with_energy.last()) else {
        return Err(format!("{uuid}: no NVML energy reading in the period"));
    };
    if last.0 <= first.0 {
        return Err(format!(
            "{uuid}: fewer than two NVML readings in the period (a job shorter than two poll intervals)"
        ));
    }
    let period_ms = end_ms.saturating_sub(start_ms);
    let measured = last.1.saturating_sub(first.1);
    let energy_mj =
        u64::try_from(u128::from(measured) * u128::from(period_ms) / u128::from(last.0 - first.0))
            .unwrap_or(u64::MAX);
    let utilisation: Vec<u32> = samples.iter().filter_map(|sample| sample.sm_pct).collect();
    let utilisation_pct = if utilisation.is_empty() {
        0
    } else {
        (utilisation.iter().map(|&pct| u64::from(pct)).sum::<u64>() / utilisation.len() as u64)
            as u32
    };
    Ok(GpuUsageEntry {
        uuid: uuid.to_owned(),
        gpu_ms: period_ms,
        utilisation_pct,
        energy_mj,
    })
}

/// The jobs engine's GPU meter on a host with NVML.
#[derive(Debug)]
pub struct NvmlMeter {
    service: Weak<GpuService>,
}

impl NvmlMeter {
    /// The meter reading `service`'s samples.
    pub fn new(service: Arc<GpuService>) -> Self {
        Self {
            service: Arc::downgrade(&service),
        }
    }
}

impl GpuMeter for NvmlMeter {
    fn usage(&self, devices: &[String], start_ms: u64, end_ms: u64) -> GpuUsage {
        let absent = |reason: String| GpuUsage::Absent { reason };
        let Some(service) = self.service.upgrade() else {
            return absent("the GPU module has stopped".to_owned());
        };
        if let Some(reason) = service.cpu_only() {
            return absent(format!("no GPU on this host ({reason})"));
        }
        if devices.is_empty() {
            return absent("no GPU assigned".to_owned());
        }
        let mut uuids: Vec<String> = Vec::new();
        for device in devices {
            let reached = service.cdi.uuids_of(device);
            if reached.is_empty() {
                return absent(format!("{device} names no GPU in the CDI specs"));
            }
            for uuid in reached {
                if !uuids.contains(&uuid) {
                    uuids.push(uuid);
                }
            }
        }
        let mut gpus = Vec::new();
        for uuid in uuids {
            let samples = service
                .samples_between(&uuid, start_ms, end_ms)
                .unwrap_or_default();
            match usage_from_samples(&uuid, &samples, start_ms, end_ms) {
                Ok(entry) => gpus.push(entry),
                Err(reason) => return absent(reason),
            }
        }
        GpuUsage::Measured { gpus }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, energy_mj: u64, sm_pct: u32) -> Sample {
        Sample {
            at_ms,
            energy_mj: Some(energy_mj),
            sm_pct: Some(sm_pct),
        }
    }

    #[test]
    fn energy_is_scaled_to_the_period_and_utilisation_averaged() {
        // 10 s of readings, 3 kJ, inside a 20 s period: 6 kJ.
        let samples = [
            sample(1_000, 0, 80),
            sample(6_000, 1_500_000, 90),
            sample(11_000, 3_000_000, 100),
        ];
        let entry = usage_from_samples("GPU-a", &samples, 0, 20_000).unwrap();
        assert_eq!(entry.energy_mj, 6_000_000);
        assert_eq!(entry.utilisation_pct, 90);
        assert_eq!(entry.gpu_ms, 20_000);
    }

    #[test]
    fn too_few_readings_are_absent_with_a_reason() {
        let err = usage_from_samples("GPU-a", &[sample(1, 5, 5)], 0, 10).unwrap_err();
        assert!(err.contains("fewer than two"), "{err}");
        let none = Sample {
            at_ms: 1,
            energy_mj: None,
            sm_pct: None,
        };
        assert!(usage_from_samples("GPU-a", &[none], 0, 10).is_err());
    }
}
