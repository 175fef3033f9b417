//! The job manager's settings, and how the agent configuration's `[jobs]` and `[images]`
//! sections (and the built-in pricing's settings in `[plugins.fallback]`) map onto them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plinth_jobs::engine::EngineConfig;
use plinth_jobs::registry::{RegistryHost, RegistrySettings};
use plinth_plugin_host::fallback::FallbackConfig;

use crate::config::AgentConfig;

/// Configuration of the job manager.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// Interval between interim receipts of a running job.
    pub receipt_interval: Duration,
    /// Settings of the built-in pricing policy that prices receipts (the plugin host's
    /// fallback: one default price for quotes and receipts alike).
    pub pricing: FallbackConfig,
    /// Whether a job may ask for the host's network namespace.
    pub allow_host_network: bool,
}

impl JobsConfig {
    /// The agent configuration's `[jobs]` section applied over [`JobsConfig::from_dirs`].
    pub fn from_config(config: &AgentConfig) -> JobsConfig {
        let section = &config.jobs;
        let mut jobs = JobsConfig::from_dirs(&config.agent.state_dir, &config.agent.runtime_dir);
        jobs.engine.runtime_binary = section.runtime.clone();
        if !section.image_roots.is_empty() {
            jobs.engine.image_roots = section.image_roots.clone();
        }
        jobs.engine.cdi_dirs = section.cdi_dirs.clone();
        jobs.engine.runner_socket = section.runner_socket.clone();
        jobs.engine.cgroup_parent = section.cgroup_parent.clone();
        jobs.engine.log_cap_bytes = section.log_cap_bytes;
        jobs.engine.kill_grace = Duration::from_secs(section.kill_grace_seconds);
        jobs.receipt_interval = Duration::from_secs(section.receipt_interval_seconds);
        jobs.allow_host_network = section.allow_host_network;
        jobs.engine.registry = registry_settings(&config.images);
        jobs.engine.cache_max_bytes = config.images.cache_max_bytes;
        jobs.pricing = config.plugins.fallback.clone();
        jobs
    }

    /// Defaults derived from the agent's directories: jobs and images under
    /// `state_dir`, runc state under `runtime_dir`, the supervisor being this
    /// executable's `job-shim` subcommand. The other values are the `[jobs]` defaults.
    pub fn from_dirs(state_dir: &Path, runtime_dir: &Path) -> JobsConfig {
        let section = crate::config::JobsSection::default();
        let shim_binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("plinth-agent"));
        JobsConfig {
            engine: EngineConfig {
                jobs_dir: state_dir.join("jobs"),
                image_store: state_dir.join("images"),
                image_roots: vec![state_dir.join("import")],
                runtime_binary: section.runtime,
                runtime_root: runtime_dir.join("runc"),
                shim_binary,
                shim_args: vec!["job-shim".to_owned()],
                cdi_dirs: section.cdi_dirs,
                cgroup_parent: section.cgroup_parent,
                log_cap_bytes: section.log_cap_bytes,
                kill_grace: Duration::from_secs(section.kill_grace_seconds),
                unpack_limits: plinth_jobs::unpack::UnpackLimits::default(),
                registry: registry_settings(&crate::config::ImagesSection::default()),
                cache_max_bytes: crate::config::ImagesSection::default().cache_max_bytes,
                runner_socket: section.runner_socket,
            },
            receipt_interval: Duration::from_secs(section.receipt_interval_seconds),
            pricing: FallbackConfig::default(),
            allow_host_network: section.allow_host_network,
        }
    }
}

/// The `[images]` section as the engine's registry settings.
pub fn registry_settings(images: &crate::config::ImagesSection) -> RegistrySettings {
    RegistrySettings {
        registries: images
            .registries
            .iter()
            .map(|registry| RegistryHost {
                host: registry.host.clone(),
                mirrors: registry.mirrors.clone(),
                credentials_file: registry.credentials_file.clone(),
                ca_file: registry.ca_file.clone(),
                insecure: registry.insecure,
                signed_by: registry.signed_by.clone(),
            })
            .collect(),
        keys: images.keys.clone(),
        tenants: images
            .tenants
            .iter()
            .map(|(tenant, policy)| (tenant.clone(), policy.signed_by.clone()))
            .collect(),
        concurrency: images.concurrency as usize,
        connect_timeout: Duration::from_secs(images.connect_timeout_seconds),
        stall_timeout: Duration::from_secs(images.stall_timeout_seconds),
        retries: images.retries,
        max_manifest_bytes: images.max_manifest_bytes,
        max_config_bytes: images.max_config_bytes,
        max_layers: images.max_layers as usize,
        max_image_bytes: images.max_image_bytes,
        max_index_entries: images.max_index_entries as usize,
        max_redirects: images.max_redirects as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_config_section() {
        let config = AgentConfig::default();
        let from_config = JobsConfig::from_config(&config);
        let from_dirs = JobsConfig::from_dirs(&config.agent.state_dir, &config.agent.runtime_dir);
        assert_eq!(from_config.engine.cdi_dirs, from_dirs.engine.cdi_dirs);
        assert_eq!(
            from_config.engine.runtime_binary,
            from_dirs.engine.runtime_binary
        );
        assert_eq!(
            from_config.engine.log_cap_bytes,
            from_dirs.engine.log_cap_bytes
        );
        assert_eq!(from_config.engine.kill_grace, from_dirs.engine.kill_grace);
        assert_eq!(from_config.engine.image_roots, from_dirs.engine.image_roots);
        assert_eq!(from_config.receipt_interval, from_dirs.receipt_interval);
        assert_eq!(from_config.pricing, from_dirs.pricing);
        // `[images]` defaults and the engine's registry defaults are one set of values.
        assert_eq!(from_config.engine.registry, RegistrySettings::default());
        assert_eq!(from_config.engine.cache_max_bytes, 0);
        assert_eq!(
            from_config.engine.cdi_dirs,
            plinth_jobs::cdi::DEFAULT_CDI_DIRS
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn sections_are_mapped() {
        let mut config = AgentConfig::default();
        config.jobs.kill_grace_seconds = 3;
        config.jobs.receipt_interval_seconds = 7;
        config.plugins.fallback.gpu_hour_micros = 42;
        let jobs = JobsConfig::from_config(&config);
        assert_eq!(jobs.engine.kill_grace, Duration::from_secs(3));
        assert_eq!(jobs.receipt_interval, Duration::from_secs(7));
        assert_eq!(jobs.pricing.gpu_hour_micros, 42);
    }
}
