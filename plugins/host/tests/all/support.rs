//! Shared helpers: build the example plugins from source once per test run, sample
//! requests and host states.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use plinth_plugin_host::{
    Gpu, HostConfig, HostState, JobRequest, Limits, Plugin, PluginHost, PluginKind, PluginSpec,
};

/// Workspace root.
pub fn workspace_root() -> PathBuf {
    plinth_tests::repo_root()
}

/// The examples workspace.
pub fn examples_dir() -> PathBuf {
    workspace_root().join("plugins/examples")
}

/// Built example wasm files (by the shared helper, once per test run), or `None` (with a
/// printed reason) when the wasm32-wasip2 target is not installed.
pub fn wasm_dir() -> Option<PathBuf> {
    plinth_tests::example_plugins().unwrap()
}

/// Bytes of one built example, e.g. `plinth_example_pricing`.
pub fn wasm(name: &str) -> Option<Vec<u8>> {
    let dir = wasm_dir()?;
    Some(std::fs::read(dir.join(format!("{name}.wasm"))).unwrap())
}

/// A host with small pools, shared limits and no disk cache.
pub fn host() -> PluginHost {
    PluginHost::new(HostConfig {
        pool_instances: 16,
        ..HostConfig::default()
    })
    .unwrap()
}

/// A spec for an unsigned component.
pub fn spec(name: &str, kind: PluginKind, config: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        name: name.to_string(),
        version: "0.1.0".to_string(),
        kind,
        declared_wit: None,
        limits: Limits {
            memory_bytes: 16 << 20,
            cpu_ms: 50,
            ..Limits::default()
        },
        config: config
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect::<BTreeMap<_, _>>(),
        signer: None,
    }
}

/// Load a built example by file stem.
#[allow(dead_code)]
pub fn load(
    host: &PluginHost,
    file: &str,
    name: &str,
    kind: PluginKind,
    config: &[(&str, &str)],
) -> Option<Arc<Plugin>> {
    let bytes = wasm(file)?;
    Some(
        host.load_component(spec(name, kind, config), &bytes)
            .unwrap(),
    )
}

fn gpu(index: u32, model: &str, nvlink_domain: u32, numa_node: u32) -> Gpu {
    Gpu {
        index,
        uuid: format!("GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd"),
        model: model.to_string(),
        memory_mib: 81_559,
        numa_node,
        nvlink_domain,
        utilisation_pct: 0,
        drained: false,
        allocated: false,
    }
}

/// An 8-GPU H100 host: two NVLink domains of four, one per NUMA node.
pub fn state() -> HostState {
    HostState {
        gpus: (0..8)
            .map(|index| gpu(index, "NVIDIA H100 80GB HBM3", index / 4, index / 4))
            .collect(),
        running_jobs: 0,
        utilisation_pct: 20,
    }
}

/// [`state`] summarised for pricing.
#[allow(dead_code)]
pub fn pricing_state() -> plinth_plugin_host::PricingState {
    plinth_plugin_host::summarize(&state())
}

/// A request for `gpu_count` GPUs for an hour.
pub fn request(gpu_count: u32) -> JobRequest {
    JobRequest {
        request_id: "req-1".to_string(),
        tenant: "tenant-a".to_string(),
        gpu_count,
        gpu_model: Some("h100".to_string()),
        min_gpu_memory_mib: 40_000,
        duration_s: 3600,
        max_price_micros: None,
    }
}
