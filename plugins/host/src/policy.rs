//! The active policy of each kind, with built-in fallbacks and checked hot reload.
//!
//! The agent asks a [`PolicySet`] and always gets an answer: from the installed plugin
//! when it answers correctly, else from the built-in policy (the plugin's error is kept
//! in [`DecisionSource::BuiltIn`] and logged). Installing a plugin runs a self-test
//! first; a plugin that fails it is not installed and the previous one keeps serving.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::fallback::{self, FallbackConfig};
use crate::host::{Plugin, PluginCallError, PluginHost, PluginInfo, PluginLoadError};
use crate::package::TrustPolicy;
use crate::tools::{self, ToolsError};
use crate::{
    GpuClass, HostState, JobRequest, PluginKind, PriceDecision, PricingState, ReportRecord,
    ScheduleDecision, UsageRecord,
};

/// Who made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "source")]
pub enum DecisionSource {
    /// The installed plugin.
    Plugin {
        /// Its name.
        name: String,
        /// Its version.
        version: String,
    },
    /// The built-in policy; `plugin_error` says why the plugin was not used, if one is
    /// installed.
    BuiltIn {
        /// The plugin's failure, if any.
        plugin_error: Option<String>,
    },
}

/// A decision and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided<T> {
    /// The decision.
    pub value: T,
    /// Its source.
    pub source: DecisionSource,
}

/// How a new plugin proves itself before it is installed.
#[derive(Debug, Clone, Copy)]
pub enum SelfTest<'a> {
    /// One built-in sample call per kind must answer without error.
    Smoke,
    /// Every fixture in the directory must match (see [`tools::run_fixtures`]).
    Fixtures(&'a Path),
}

/// Why a plugin was not installed. The previous plugin, if any, keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The package could not be loaded.
    #[error("cannot load the new plugin")]
    Load(#[from] PluginLoadError),
    /// The smoke test call failed.
    #[error("self-test of plugin {plugin} failed")]
    SmokeTest {
        /// Plugin name.
        plugin: String,
        /// The failure.
        #[source]
        source: PluginCallError,
    },
    /// Fixtures did not match.
    #[error(
        "self-test of plugin {plugin} failed: {failed} of {total} fixtures do not match ({names})"
    )]
    Fixtures {
        /// Plugin name.
        plugin: String,
        /// Failed cases.
        failed: usize,
        /// All cases.
        total: usize,
        /// Names of the failed cases.
        names: String,
    },
    /// The fixtures could not be read.
    #[error("cannot run the self-test fixtures")]
    FixtureIo(#[from] ToolsError),
}

/// Active plugins by kind, plus built-in fallbacks.
pub struct PolicySet {
    slots: [RwLock<Option<Arc<Plugin>>>; 3],
    fallback: FallbackConfig,
    fallbacks: AtomicU64,
}

fn slot_idx(kind: PluginKind) -> usize {
    match kind {
        PluginKind::Pricing => 0,
        PluginKind::Scheduling => 1,
        PluginKind::Reporting => 2,
    }
}

impl PolicySet {
    /// No plugins installed: every decision is built-in.
    pub fn new(fallback: FallbackConfig) -> PolicySet {
        PolicySet {
            slots: Default::default(),
            fallback,
            fallbacks: AtomicU64::new(0),
        }
    }

    /// The plugin serving `kind`, if any.
    pub fn active(&self, kind: PluginKind) -> Option<Arc<Plugin>> {
        self.slots[slot_idx(kind)]
            .read()
            .ok()
            .and_then(|slot| slot.clone())
    }

    /// Info about every installed plugin.
    pub fn list(&self) -> Vec<PluginInfo> {
        PluginKind::ALL
            .iter()
            .filter_map(|kind| self.active(*kind))
            .map(|plugin| plugin.info().clone())
            .collect()
    }

    /// How many decisions fell back to a built-in policy after a plugin failure.
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn decide<T>(
        &self,
        kind: PluginKind,
        call: impl FnOnce(&Plugin) -> Result<T, PluginCallError>,
        built_in: impl FnOnce() -> T,
    ) -> Decided<T> {
        let Some(plugin) = self.active(kind) else {
            return Decided {
                value: built_in(),
                source: DecisionSource::BuiltIn { plugin_error: None },
            };
        };
        match call(&plugin) {
            Ok(value) => Decided {
                value,
                source: DecisionSource::Plugin {
                    name: plugin.info().name.clone(),
                    version: plugin.info().version.clone(),
                },
            },
            Err(error) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                plugin.count_fallback();
                tracing::warn!(plugin = plugin.name(), %kind, %error, "plugin call failed; using the built-in policy");
                Decided {
                    value: built_in(),
                    source: DecisionSource::BuiltIn {
                        plugin_error: Some(error.to_string()),
                    },
                }
            }
        }
    }

    /// Price a request; `state` is [`summarize`] of the current host state (recompute it
    /// when GPUs are leased, released or drained, not per quote).
    pub fn price(&self, request: &JobRequest, state: &PricingState) -> Decided<PriceDecision> {
        self.decide(
            PluginKind::Pricing,
            |plugin| plugin.price(request, state),
            || fallback::price(&self.fallback, request, state),
        )
    }

    /// Decide admission and GPUs.
    pub fn schedule(&self, request: &JobRequest, state: &HostState) -> Decided<ScheduleDecision> {
        self.decide(
            PluginKind::Scheduling,
            |plugin| plugin.schedule(request, state),
            || fallback::schedule(&self.fallback, request, state),
        )
    }

    /// Aggregate usage into report records.
    pub fn report(&self, records: &[UsageRecord]) -> Decided<Vec<ReportRecord>> {
        self.decide(
            PluginKind::Reporting,
            |plugin| plugin.report(records),
            || fallback::report(records),
        )
    }

    /// Run the self-test on `plugin`; on success make it the active plugin of its kind
    /// and return the one it replaced. On failure nothing changes.
    pub fn install(
        &self,
        plugin: Arc<Plugin>,
        self_test: SelfTest<'_>,
    ) -> Result<Option<Arc<Plugin>>, ReloadError> {
        match self_test {
            SelfTest::Smoke => smoke_test(&plugin)?,
            SelfTest::Fixtures(dir) => {
                let report = tools::run_fixtures(&plugin, dir, false)?;
                let failed: Vec<&str> = report
                    .cases
                    .iter()
                    .filter(|case| !case.passed)
                    .map(|case| case.name.as_str())
                    .collect();
                if !failed.is_empty() || report.cases.is_empty() {
                    return Err(ReloadError::Fixtures {
                        plugin: plugin.name().to_string(),
                        failed: failed.len(),
                        total: report.cases.len(),
                        names: if report.cases.is_empty() {
                            "no fixtures found".to_string()
                        } else {
                            failed.join(", ")
                        },
                    });
                }
            }
        }
        let mut slot = self.slots[slot_idx(plugin.kind())]
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tracing::info!(plugin = plugin.name(), version = %plugin.info().version, kind = %plugin.kind(), "plugin installed");
        Ok(slot.replace(plugin))
    }

    /// Load a package and [`install`](Self::install) it: the hot-reload path used on
    /// SIGHUP and `plinthctl plugin install`.
    pub fn reload_package(
        &self,
        host: &PluginHost,
        bytes: &[u8],
        trust: &TrustPolicy,
        operator_config: &BTreeMap<String, String>,
        self_test: SelfTest<'_>,
    ) -> Result<PluginInfo, ReloadError> {
        let plugin = host.load_package(bytes, trust, operator_config)?;
        let info = plugin.info().clone();
        self.install(plugin, self_test)?;
        Ok(info)
    }

    /// Remove the plugin of `kind`; the built-in policy takes over.
    pub fn remove(&self, kind: PluginKind) -> Option<Arc<Plugin>> {
        let mut slot = self.slots[slot_idx(kind)]
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.take()
    }
}

/// Summarise a host state for pricing: one class per (model, memory), largest memory
/// first, counting free devices (neither drained nor allocated) and the most free
/// devices in one NVLink domain.
pub fn summarize(state: &HostState) -> PricingState {
    let mut classes: Vec<GpuClass> = Vec::new();
    let mut domains: Vec<(usize, u32, u32)> = Vec::new();
    for gpu in &state.gpus {
        let class_idx = match classes
            .iter()
            .position(|class| class.model == gpu.model && class.memory_mib == gpu.memory_mib)
        {
            Some(class_idx) => class_idx,
            None => {
                classes.push(GpuClass {
                    model: gpu.model.clone(),
                    memory_mib: gpu.memory_mib,
                    total: 0,
                    free: 0,
                    free_in_one_nvlink_domain: 0,
                });
                classes.len() - 1
            }
        };
        let class = &mut classes[class_idx];
        class.total += 1;
        if !gpu.drained && !gpu.allocated {
            class.free += 1;
            match domains
                .iter_mut()
                .find(|(idx, domain, _)| *idx == class_idx && *domain == gpu.nvlink_domain)
            {
                Some((_, _, count)) => *count += 1,
                None => domains.push((class_idx, gpu.nvlink_domain, 1)),
            }
        }
    }
    for (class_idx, _, count) in domains {
        let class = &mut classes[class_idx];
        class.free_in_one_nvlink_domain = class.free_in_one_nvlink_domain.max(count);
    }
    classes.sort_by(|left, right| {
        right
            .memory_mib
            .cmp(&left.memory_mib)
            .then_with(|| left.model.cmp(&right.model))
    });
    PricingState {
        classes,
        running_jobs: state.running_jobs,
        utilisation_pct: state.utilisation_pct,
    }
}

/// Sample inputs for smoke tests and benches: 4 free GPUs on one NVLink domain.
pub fn sample_inputs() -> (JobRequest, HostState, Vec<UsageRecord>) {
    let gpus = (0..4)
        .map(|index| crate::Gpu {
            index,
            uuid: format!("GPU-sample-{index}"),
            model: "NVIDIA H100 80GB HBM3".to_string(),
            memory_mib: 81_559,
            numa_node: 0,
            nvlink_domain: 0,
            utilisation_pct: 0,
            drained: false,
            allocated: false,
        })
        .collect();
    let request = JobRequest {
        request_id: "self-test".to_string(),
        tenant: "self-test".to_string(),
        gpu_count: 1,
        gpu_model: None,
        min_gpu_memory_mib: 0,
        duration_s: 3600,
        max_price_micros: None,
    };
    let records = vec![UsageRecord {
        job_id: "self-test".to_string(),
        tenant: "self-test".to_string(),
        start_s: 1_767_225_600,
        end_s: 1_767_229_200,
        gpu_count: 1,
        utilisation_pct: 50,
        charged_micros: 1_000_000,
    }];
    (
        request,
        HostState {
            gpus,
            running_jobs: 0,
            utilisation_pct: 0,
        },
        records,
    )
}

fn smoke_test(plugin: &Plugin) -> Result<(), ReloadError> {
    let (request, state, records) = sample_inputs();
    let failure = |source| ReloadError::SmokeTest {
        plugin: plugin.name().to_string(),
        source,
    };
    match plugin.kind() {
        PluginKind::Pricing => plugin
            .price_fresh(&request, &summarize(&state))
            .map(drop)
            .map_err(failure),
        PluginKind::Scheduling => plugin
            .schedule_fresh(&request, &state)
            .map(drop)
            .map_err(failure),
        PluginKind::Reporting => plugin.report_fresh(&records).map(drop).map_err(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_groups_by_class_and_counts_free_devices() {
        let (_, mut state, _) = sample_inputs();
        state.gpus[0].drained = true;
        state.gpus[1].allocated = true;
        state.gpus[3].nvlink_domain = 1;
        let mut small = state.gpus[2].clone();
        small.index = 4;
        small.memory_mib = 40_960;
        small.model = "NVIDIA A100-PCIE-40GB".to_string();
        state.gpus.push(small);
        let summary = summarize(&state);
        assert_eq!(summary.classes.len(), 2);
        let big = &summary.classes[0];
        assert_eq!(
            (
                big.memory_mib,
                big.total,
                big.free,
                big.free_in_one_nvlink_domain
            ),
            (81_559, 4, 2, 1)
        );
        assert_eq!((summary.classes[1].total, summary.classes[1].free), (1, 1));
    }
}
