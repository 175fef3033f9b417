//! The capacity policy: what each GPU model (and the CPU class) can do, and so how long
//! an honest answer may take and which sizes fit. It is the `[challenge]` section of the
//! appraisal policy file.
//!
//! The time budget for a challenge of size n answered by a device with peak int8
//! throughput `T` (tera-operations per second, dense) is
//!
//! ```text
//! budget_ms = slack_ms
//!           + 2·n³ / (T·10¹² · min_percent_of_peak / 100) · 1000      (the product)
//!           + 6·n² / (host_mib_per_s · 2²⁰) · 1000                    (A, B generated, C hashed)
//! ```
//!
//! and the memory a size needs on a GPU is `6·n²` bytes (A and B as `i8`, C as `i32`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// One GPU model's capacity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuModelSpec {
    /// Peak dense int8 tensor throughput, TOPS.
    pub int8_tops: u64,
    /// Device memory in GB (10⁹ bytes, as vendors state it).
    pub memory_gb: u64,
}

/// The CPU class: what a host without a GPU is credited with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuClass {
    /// The int8 multiply-accumulate throughput of the whole host, giga-operations per
    /// second (an operation is a multiply or an add).
    pub int8_gops: u64,
}

impl Default for CpuClass {
    fn default() -> Self {
        Self { int8_gops: 10 }
    }
}

/// The `[challenge]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChallengePolicy {
    /// The fewest rows a transcript must open.
    pub min_rows: u32,
    /// The share of the peak throughput an honest device must reach, percent.
    pub min_percent_of_peak: u32,
    /// Fixed allowance for the network and start-up, milliseconds.
    pub slack_ms: u64,
    /// The host's rate for generating A and B and hashing C, MiB per second.
    pub host_mib_per_s: u64,
    /// The CPU class.
    pub cpu: CpuClass,
    /// GPU models by the name NVML reports (`NVIDIA H200`). A file that lists models
    /// replaces the built-in table.
    pub models: BTreeMap<String, GpuModelSpec>,
}

impl Default for ChallengePolicy {
    fn default() -> Self {
        // Dense (not sparse) int8 tensor peaks from NVIDIA's data sheets.
        let models = [
            ("NVIDIA H200", 1979, 141),
            ("NVIDIA H100 80GB HBM3", 1979, 80),
            ("NVIDIA H100 PCIe", 1513, 80),
            ("NVIDIA A100-SXM4-80GB", 624, 80),
            ("NVIDIA A100-SXM4-40GB", 624, 40),
            ("NVIDIA A100 80GB PCIe", 624, 80),
            ("NVIDIA L40S", 733, 48),
            ("NVIDIA L4", 242, 24),
            ("NVIDIA GeForce RTX 4090", 661, 24),
        ]
        .into_iter()
        .map(|(name, int8_tops, memory_gb)| {
            (
                name.to_owned(),
                GpuModelSpec {
                    int8_tops,
                    memory_gb,
                },
            )
        })
        .collect();
        Self {
            min_rows: 8,
            min_percent_of_peak: 50,
            slack_ms: 2000,
            host_mib_per_s: 200,
            cpu: CpuClass::default(),
            models,
        }
    }
}

/// What the policy allows a device for one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// The time budget, milliseconds.
    pub budget_ms: u64,
    /// The memory the size needs, bytes, and the device's, when it is a GPU.
    pub memory: Option<(u64, u64)>,
}

impl ChallengePolicy {
    /// Parses the section's body from TOML (the policy file nests it under
    /// `[challenge]`).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The allowance for `model` (`cpu` for the CPU class) at size `n`, or why the policy
    /// cannot judge it.
    pub fn allowance(&self, model: &str, n: u64) -> Result<Allowance, String> {
        let (ops_per_s, memory) = if model == "cpu" {
            (u128::from(self.cpu.int8_gops) * 1_000_000_000, None)
        } else {
            let spec = self.models.get(model).ok_or_else(|| {
                format!("the policy has no peak throughput for GPU model '{model}' (add it under [challenge.models])")
            })?;
            (
                u128::from(spec.int8_tops) * 1_000_000_000_000,
                Some((6 * n * n, spec.memory_gb * 1_000_000_000)),
            )
        };
        let credited = ops_per_s * u128::from(self.min_percent_of_peak.max(1)) / 100;
        let n = u128::from(n);
        let product_ms = (2 * n * n * n * 1000).div_ceil(credited.max(1));
        let host_ms = (6 * n * n * 1000).div_ceil(u128::from(self.host_mib_per_s.max(1)) << 20);
        let budget = u128::from(self.slack_ms) + product_ms + host_ms;
        Ok(Allowance {
            budget_ms: u64::try_from(budget).unwrap_or(u64::MAX),
            memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_grow_with_n_and_shrink_with_throughput() {
        let policy = ChallengePolicy::default();
        let h200 = policy.allowance("NVIDIA H200", 16384).unwrap();
        let l4 = policy.allowance("NVIDIA L4", 16384).unwrap();
        assert!(h200.budget_ms < l4.budget_ms);
        let cpu_small = policy.allowance("cpu", 1024).unwrap();
        let cpu_large = policy.allowance("cpu", 2048).unwrap();
        assert!(cpu_small.budget_ms < cpu_large.budget_ms);
        // 2·1024³ ops at 5 Gops/s is 430 ms; 6 MiB at 200 MiB/s is 30 ms.
        assert_eq!(cpu_small.budget_ms, 2000 + 430 + 30);
        assert_eq!(cpu_small.memory, None);
        assert_eq!(h200.memory, Some((6 * 16384 * 16384, 141_000_000_000)));
        assert!(policy.allowance("NVIDIA T1000", 64).is_err());
    }
}
