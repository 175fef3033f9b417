//! Policy plugins in the agent: the `[plugins]` configuration section and the service
//! that loads signed packages from the plugin directory at start and on SIGHUP, installs
//! new ones (verified and self-tested before they replace the active plugin, then
//! persisted), lists and removes them. Decisions go through [`PluginService::policies`],
//! which falls back to built-in policies whenever a plugin fails.

use std::fs;
use std::path::{Path, PathBuf};

use plinth_plugin_host::{
    HostConfig, PackageError, PluginHost, PluginHostError, PluginInfo, PluginKind,
    PluginStatsSnapshot, PolicySet, ReloadError, SelfTest, TrustPolicy,
};
use plinth_toolbox::error_chain;
use serde::{Deserialize, Serialize};

pub use crate::config::PluginsConfig;

/// File extension of plugin packages in the plugin directory.
pub const PACKAGE_EXTENSION: &str = "plinthpkg";

/// Errors of the plugin service.
#[derive(Debug, thiserror::Error)]
pub enum PluginServiceError {
    /// A trusted key in `[plugins] trusted_keys` is malformed.
    #[error("invalid plugins.trusted_keys entry")]
    TrustedKey(#[source] PackageError),
    /// The wasmtime host could not start.
    #[error("cannot start the plugin host")]
    Host(#[from] PluginHostError),
    /// A package failed to load or its self-test.
    #[error("plugin not installed")]
    Reload(#[from] ReloadError),
    /// A package could not be stored durably.
    #[error("cannot store the plugin package")]
    Store(#[from] plinth_toolbox::durable::DurableError),
    /// The plugin directory could not be read or written.
    #[error("cannot access plugin file {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One active plugin and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStatus {
    /// What it is.
    pub info: PluginInfo,
    /// How it behaved.
    pub stats: PluginStatsSnapshot,
}

/// Outcome of loading the plugin directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Plugins now active.
    pub loaded: Vec<PluginInfo>,
    /// Packages that were not installed, with the error chain; the previous plugin of
    /// that kind (if any) keeps serving.
    pub failed: Vec<(PathBuf, String)>,
}

/// The agent's plugins: host, active policies and trust settings.
pub struct PluginService {
    dir: PathBuf,
    host: PluginHost,
    policies: PolicySet,
    trust: TrustPolicy,
    config: PluginsConfig,
}

impl std::fmt::Debug for PluginService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PluginService")
            .field("dir", &self.dir)
            .field("active", &self.policies.list())
            .finish_non_exhaustive()
    }
}

impl PluginService {
    /// Start the host (no plugins loaded yet; call [`Self::load_dir`]). Relative
    /// defaults resolve under `state_dir`.
    pub fn new(
        config: PluginsConfig,
        state_dir: &Path,
    ) -> Result<PluginService, PluginServiceError> {
        let trust = TrustPolicy::from_hex_keys(&config.trusted_keys, config.allow_unsigned)
            .map_err(PluginServiceError::TrustedKey)?;
        let dir = config
            .dir
            .clone()
            .unwrap_or_else(|| state_dir.join("plugins"));
        let cache_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("plugin-cache"));
        let host = PluginHost::new(HostConfig {
            cache_dir: Some(cache_dir),
            ..HostConfig::default()
        })?;
        Ok(PluginService {
            dir,
            host,
            policies: PolicySet::new(config.fallback.clone()),
            trust,
            config,
        })
    }

    /// The active policies (with built-in fallbacks): what pricing, scheduling and
    /// reporting decisions go through.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// What plugins learn through WIT 0.1.2 (network quality for scheduling, liveness
    /// summaries for reporting) from now on; see [`crate::liveness::facts`].
    pub fn set_facts(&self, facts: plinth_plugin_host::Facts) {
        self.host.set_facts(facts);
    }

    fn install_bytes(&self, bytes: &[u8]) -> Result<PluginInfo, ReloadError> {
        let name = plinth_plugin_host::Package::parse(bytes)
            .map(|package| package.manifest.name)
            .unwrap_or_default();
        let operator_config = self.config.config.get(&name).cloned().unwrap_or_default();
        let fixtures = self
            .config
            .fixtures_dir
            .as_ref()
            .map(|dir| dir.join(&name))
            .filter(|dir| dir.is_dir());
        let self_test = match &fixtures {
            Some(dir) => SelfTest::Fixtures(dir),
            None => SelfTest::Smoke,
        };
        self.policies
            .reload_package(&self.host, bytes, &self.trust, &operator_config, self_test)
    }

    /// Load every `*.plinthpkg` in the plugin directory (at start and on SIGHUP). Each
    /// package is verified and self-tested before it replaces the active plugin of its
    /// kind; failures are reported and leave the previous plugin serving.
    pub fn load_dir(&self) -> Result<LoadReport, PluginServiceError> {
        let dir = &self.dir;
        let mut report = LoadReport::default();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(source) => {
                return Err(PluginServiceError::Io {
                    path: dir.clone(),
                    source,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == PACKAGE_EXTENSION))
            .collect();
        paths.sort();
        for path in paths {
            let outcome = fs::read(&path)
                .map_err(|source| PluginServiceError::Io {
                    path: path.clone(),
                    source,
                })
                .and_then(|bytes| self.install_bytes(&bytes).map_err(PluginServiceError::from));
            match outcome {
                Ok(info) => report.loaded.push(info),
                Err(error) => {
                    tracing::warn!(path = %path.display(), error = %error_chain(&error), "plugin package not loaded");
                    report.failed.push((path, error_chain(&error)));
                }
            }
        }
        Ok(report)
    }

    /// Install a package: verify, self-test, activate, then store it as
    /// `<dir>/<kind>.plinthpkg` (replacing the previous package of that kind).
    pub fn install(&self, bytes: &[u8]) -> Result<PluginInfo, PluginServiceError> {
        let info = self.install_bytes(bytes)?;
        let dir = &self.dir;
        fs::create_dir_all(dir).map_err(|source| PluginServiceError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = package_path(dir, info.kind);
        plinth_toolbox::durable::write(&path, bytes)?;
        Ok(info)
    }

    /// Active plugins with their counters.
    pub fn list(&self) -> Vec<PluginStatus> {
        PluginKind::ALL
            .iter()
            .filter_map(|kind| self.policies.active(*kind))
            .map(|plugin| PluginStatus {
                info: plugin.info().clone(),
                stats: plugin.stats(),
            })
            .collect()
    }

    /// Deactivate the plugin of `kind` (the built-in policy takes over) and delete its
    /// package from the plugin directory.
    pub fn remove(&self, kind: PluginKind) -> Result<Option<PluginInfo>, PluginServiceError> {
        let removed = self
            .policies
            .remove(kind)
            .map(|plugin| plugin.info().clone());
        let path = package_path(&self.dir, kind);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(PluginServiceError::Io { path, source }),
        }
        Ok(removed)
    }
}

/// Start plugin support for the daemon: create the host and load the plugin directory.
/// Failures are logged, never fatal: without plugins every decision uses the built-in
/// policies.
pub fn start(config: &crate::config::AgentConfig) -> Option<std::sync::Arc<PluginService>> {
    let service = match PluginService::new(config.plugins.clone(), &config.agent.state_dir) {
        Ok(service) => service,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "plugin support disabled");
            return None;
        }
    };
    match service.load_dir() {
        Ok(report) => tracing::info!(
            loaded = report.loaded.len(),
            failed = report.failed.len(),
            dir = %service.dir.display(),
            "plugins loaded"
        ),
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "cannot read the plugin directory")
        }
    }
    Some(std::sync::Arc::new(service))
}

/// Reload the plugin directory off the async workers (on SIGHUP); the outcome is logged.
pub fn reload_in_background(service: Option<std::sync::Arc<PluginService>>) {
    let Some(service) = service else { return };
    tokio::task::spawn_blocking(move || match service.load_dir() {
        Ok(report) => tracing::info!(
            loaded = report.loaded.len(),
            failed = report.failed.len(),
            "plugins reloaded"
        ),
        Err(error) => tracing::error!(error = %error_chain(&error), "plugin reload failed"),
    });
}

/// Where the package of `kind` lives in `dir`.
pub fn package_path(dir: &Path, kind: PluginKind) -> PathBuf {
    dir.join(format!("{kind}.{PACKAGE_EXTENSION}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &Path, allow_unsigned: bool) -> PluginService {
        PluginService::new(
            PluginsConfig {
                allow_unsigned,
                ..PluginsConfig::default()
            },
            dir,
        )
        .unwrap()
    }

    #[test]
    fn empty_directory_serves_built_in_policies() {
        let temp = tempfile::tempdir().unwrap();
        let service = service(temp.path(), false);
        let report = service.load_dir().unwrap();
        assert!(report.loaded.is_empty() && report.failed.is_empty());
        assert!(service.list().is_empty());
        let (request, state, _) = plinth_plugin_host::policy::sample_inputs();
        let decided = service.policies().schedule(&request, &state);
        assert_eq!(
            decided.source,
            plinth_plugin_host::DecisionSource::BuiltIn { plugin_error: None }
        );
        assert!(service.remove(PluginKind::Pricing).unwrap().is_none());
    }

    #[test]
    fn bad_packages_are_reported_not_fatal() {
        let temp = tempfile::tempdir().unwrap();
        let service = service(temp.path(), true);
        fs::create_dir_all(temp.path().join("plugins")).unwrap();
        fs::write(
            temp.path().join("plugins/pricing.plinthpkg"),
            b"garbage, not a plugin package",
        )
        .unwrap();
        let report = service.load_dir().unwrap();
        assert_eq!(report.failed.len(), 1);
        assert!(
            report.failed[0].1.contains("not a plinth plugin package"),
            "{:?}",
            report.failed
        );
        let error = service
            .install(b"garbage, not a plugin package")
            .unwrap_err();
        assert!(
            error_chain(&error).contains("not a plinth plugin package"),
            "{}",
            error_chain(&error)
        );
    }

    #[test]
    fn malformed_trusted_key_is_a_config_error() {
        let temp = tempfile::tempdir().unwrap();
        let config = PluginsConfig {
            trusted_keys: vec!["zz".to_string()],
            ..PluginsConfig::default()
        };
        let error = PluginService::new(config, temp.path()).unwrap_err();
        assert!(
            matches!(error, PluginServiceError::TrustedKey(_)),
            "{error}"
        );
    }

    #[test]
    fn config_section_is_strict() {
        let parsed: PluginsConfig =
            toml::from_str("trusted_keys = []\nallow_unsigned = true\n[config.example-pricing]\n\"surcharge.pct\" = \"10\"\n")
                .unwrap();
        assert!(parsed.allow_unsigned);
        assert_eq!(parsed.config["example-pricing"]["surcharge.pct"], "10");
        assert!(toml::from_str::<PluginsConfig>("trusted = []").is_err());
    }
}
