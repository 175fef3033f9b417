//! Host configuration, per-plugin limits and plugin kinds.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a plugin decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Quotes prices (`plinth:policy/pricing`).
    Pricing,
    /// Admits jobs and picks GPUs (`plinth:policy/scheduling`).
    Scheduling,
    /// Turns usage into report records (`plinth:policy/reporting`).
    Reporting,
}

impl PluginKind {
    /// Every kind, in a fixed order.
    pub const ALL: [PluginKind; 3] = [
        PluginKind::Pricing,
        PluginKind::Scheduling,
        PluginKind::Reporting,
    ];

    /// The kind's name, as in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Pricing => "pricing",
            PluginKind::Scheduling => "scheduling",
            PluginKind::Reporting => "reporting",
        }
    }

    /// The WIT interface the plugin exports, without version.
    pub fn export_interface(self) -> &'static str {
        match self {
            PluginKind::Pricing => "plinth:policy/pricing",
            PluginKind::Scheduling => "plinth:policy/scheduling",
            PluginKind::Reporting => "plinth:policy/reporting",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A string that names no plugin kind.
#[derive(Debug, thiserror::Error)]
#[error("unknown plugin kind {0:?} (expected pricing, scheduling or reporting)")]
pub struct PluginKindParseError(pub String);

impl FromStr for PluginKind {
    type Err = PluginKindParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pricing" => Ok(PluginKind::Pricing),
            "scheduling" => Ok(PluginKind::Scheduling),
            "reporting" => Ok(PluginKind::Reporting),
            other => Err(PluginKindParseError(other.to_string())),
        }
    }
}

/// Bounds on one plugin call. Packages ask for limits; the host clamps them to
/// [`HostConfig::max_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory (all memories of the instance together), bytes.
    pub memory_bytes: u64,
    /// Wall-clock CPU budget of one call, milliseconds (epoch deadline).
    pub cpu_ms: u64,
    /// Fuel per call in deterministic mode (about one unit per wasm instruction).
    pub fuel: u64,
    /// Largest accepted answer, bytes (strings and lists counted by their content).
    pub output_bytes: u64,
    /// Log records a plugin may emit per call; further records are dropped and counted.
    pub log_records_per_call: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 32 << 20,
            cpu_ms: 20,
            fuel: 50_000_000,
            output_bytes: 64 << 10,
            log_records_per_call: 32,
        }
    }
}

impl Limits {
    /// Each field clamped to at most the same field of `max`.
    pub fn clamp_to(self, max: &Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.min(max.memory_bytes),
            cpu_ms: self.cpu_ms.min(max.cpu_ms),
            fuel: self.fuel.min(max.fuel),
            output_bytes: self.output_bytes.min(max.output_bytes),
            log_records_per_call: self.log_records_per_call.min(max.log_records_per_call),
        }
    }
}

/// Configuration of a [`crate::PluginHost`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Directory for compiled code; `None` disables the on-disk cache. The host creates
    /// it with mode 0700 and refuses to use it if it is not owned by the current user
    /// or is accessible to others.
    pub cache_dir: Option<PathBuf>,
    /// Upper bound for every plugin's limits; also sizes the pooling allocator's slots.
    pub max_limits: Limits,
    /// Epoch tick period: the granularity of CPU deadlines.
    pub epoch_tick: Duration,
    /// Deterministic mode: CPU bounded by fuel instead of time, clocks frozen, entropy
    /// seeded per call. Used by `plinthctl plugin test`; slower.
    pub deterministic: bool,
    /// Instance slots of the pooling allocator (concurrent instances across plugins).
    pub pool_instances: u32,
    /// Wasm stack limit in bytes; deeper recursion traps with a stack overflow.
    pub max_wasm_stack: usize,
    /// Warm instances kept per plugin for reuse between calls.
    pub warm_instances_per_plugin: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache_dir: None,
            max_limits: Limits {
                memory_bytes: 64 << 20,
                cpu_ms: 200,
                fuel: 1_000_000_000,
                output_bytes: 1 << 20,
                log_records_per_call: 256,
            },
            epoch_tick: Duration::from_millis(1),
            deterministic: false,
            pool_instances: 64,
            max_wasm_stack: 512 << 10,
            warm_instances_per_plugin: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_one_source_of_defaults() {
        // A manifest's `[limits]` table, empty or partial, takes the missing values from
        // `Limits::default()`, as the built-in policies' settings do from theirs.
        assert_eq!(toml::from_str::<Limits>("").unwrap(), Limits::default());
        let partial: Limits = toml::from_str("cpu_ms = 5").unwrap();
        assert_eq!(
            partial,
            Limits {
                cpu_ms: 5,
                ..Limits::default()
            }
        );
        use crate::fallback::FallbackConfig;
        assert_eq!(
            toml::from_str::<FallbackConfig>("").unwrap(),
            FallbackConfig::default()
        );
        assert!(
            toml::from_str::<Limits>("cpu_msec = 5").is_err(),
            "unknown keys refused"
        );
    }

    #[test]
    fn kinds_round_trip() {
        for kind in PluginKind::ALL {
            assert_eq!(kind.as_str().parse::<PluginKind>().unwrap(), kind);
        }
        assert!(
            "pricer"
                .parse::<PluginKind>()
                .unwrap_err()
                .to_string()
                .contains("pricer")
        );
    }

    #[test]
    fn limits_are_clamped() {
        let asked = Limits {
            memory_bytes: 1 << 40,
            cpu_ms: 1,
            ..Limits::default()
        };
        let clamped = asked.clamp_to(&HostConfig::default().max_limits);
        assert_eq!(clamped.memory_bytes, 64 << 20);
        assert_eq!(clamped.cpu_ms, 1);
    }
}
