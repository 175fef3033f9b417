//! The daemon's life: start-up in a fixed order, serving, reloading and shutdown.
//!
//! Start-up order: the store (refusing a corrupt or too-new database), the node key,
//! hardware detection, the admin socket, the metrics listener (`[metrics] listen`; a
//! listener that cannot bind is logged, not fatal: monitoring must not stop billing),
//! then `READY=1`. Shutdown on SIGTERM or SIGINT:
//! `STOPPING=1`, stop accepting, finish in-flight requests, record a clean end in the
//! store, remove the socket. SIGHUP re-reads and re-checks the configuration and tells
//! subscribers (plugins, jobs) through [`ReloadHandle`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::api::{self, AgentState, ApiError};
use crate::config::{self, ConfigError, ConfigSources, LoadedConfig};
use crate::hardware::Hardware;
use crate::identity::{IdentityError, NodeIdentity};
use crate::store::{PreviousRun, Store, StoreError};
use crate::systemd;

/// Process exit codes of `plinth-agent`; part of the contract with systemd
/// (`RestartPreventExitStatus=` lists the ones where restarting cannot help).
pub mod exit_code {
    /// Clean shutdown.
    pub const OK: u8 = 0;
    /// A transient failure: restarting may help (systemd restarts on failure).
    pub const TRANSIENT: u8 = 75;
    /// The state on disk is unusable (corrupt or too-new database, bad node key):
    /// an operator must act; restarting will not help.
    pub const BAD_STATE: u8 = 65;
    /// A permission problem on a file or socket: an operator must act.
    pub const NO_PERMISSION: u8 = 77;
    /// The configuration is invalid: fix it; restarting will not help.
    pub const CONFIG: u8 = 78;
}

/// Errors that end the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("cannot open the state store")]
    Store(#[from] StoreError),
    /// The node key could not be loaded or created.
    #[error("cannot load the node identity")]
    Identity(#[from] IdentityError),
    /// The admin API could not be set up.
    #[error("cannot start the admin API")]
    Api(#[from] ApiError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The API server failed while serving.
    #[error("the admin API server failed")]
    Serve(#[source] std::io::Error),
    /// The network API (`api.listen`) could not be started.
    #[error("cannot start the network API")]
    NetApi(#[from] crate::netapi::NetApiError),
}

impl DaemonError {
    /// The exit code that tells systemd whether restarting helps.
    pub fn exit_code(&self) -> u8 {
        let permission = |err: &std::io::Error| err.kind() == std::io::ErrorKind::PermissionDenied;
        match self {
            Self::Config(_) => exit_code::CONFIG,
            Self::Store(StoreError::Corrupt { .. })
            | Self::Store(StoreError::TooNew { .. })
            | Self::Store(StoreError::Foreign { .. })
            | Self::Identity(IdentityError::Malformed { .. })
            | Self::Identity(IdentityError::Owner { .. }) => exit_code::BAD_STATE,
            Self::Identity(IdentityError::Permissions { .. }) => exit_code::NO_PERMISSION,
            Self::Identity(IdentityError::Io { source, .. })
            | Self::Store(StoreError::CreateDir { source, .. })
            | Self::Api(ApiError::Socket { source, .. })
            | Self::Api(ApiError::CreateDir { source, .. })
                if permission(source) =>
            {
                exit_code::NO_PERMISSION
            }
            Self::Api(ApiError::NoSuchGroup { .. }) => exit_code::CONFIG,
            Self::Api(ApiError::NotASocket { .. }) => exit_code::BAD_STATE,
            _ => exit_code::TRANSIENT,
        }
    }
}

/// Lets subsystems learn about configuration reloads (SIGHUP).
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    receiver: watch::Receiver<Arc<LoadedConfig>>,
}

impl ReloadHandle {
    /// Waits for the next successful reload and returns the new configuration.
    pub async fn changed(&mut self) -> Option<Arc<LoadedConfig>> {
        self.receiver.changed().await.ok()?;
        Some(self.receiver.borrow_and_update().clone())
    }
}

/// Options of `plinth-agent run` that are not configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the configuration came from, to re-read it on SIGHUP.
    pub sources: ConfigSources,
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(loaded: LoadedConfig, options: RunOptions) -> Result<(), DaemonError> {
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let config = loaded.config.clone();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        files = ?loaded.files_read,
        config_sha256 = %loaded.sha256,
        "plinth-agent starting"
    );

    let store = Arc::new(Store::open(
        &config.database_path(),
        crate::migrations::MIGRATIONS,
    )?);
    let (run_id, previous_run) = store.begin_run(env!("CARGO_PKG_VERSION"))?;
    if let PreviousRun::Unclean { started_at } = &previous_run {
        tracing::warn!(%started_at, "the previous agent run did not shut down cleanly");
    }
    let identity = Arc::new(NodeIdentity::load_or_create(&config.node_key_path())?);
    if identity.was_created() {
        tracing::info!(public_key = %identity.public_key_hex(), path = %identity.path().display(), "created node key");
    }
    // The real driver only (NVML loaded at run time); none means CPU-only, logged.
    let gpus = crate::gpu::GpuService::start(
        crate::gpu::GpuService::detect(),
        store.clone(),
        crate::gpu::GpuSettings::from_config(&config),
    );
    let jobs =
        crate::jobs::start_with_gpu_meter(&config, store.clone(), identity.clone(), gpus.meter());
    let plugins = crate::plugins::start(&config);
    let hardware = Hardware::detect();
    tracing::info!(summary = %hardware.summary, "hardware detected");
    // Devices are opened once, here, before the socket serves anyone.
    let attestation = Arc::new(crate::attestation::AttestationService::new(
        &config.attestation,
        crate::attestation::Sources::detect(&config.attestation),
        identity.clone(),
        &loaded.sha256,
        plugins.clone(),
    ));
    let capacity_gpus = gpus.clone();
    attestation.include_capacity(Arc::new(move || capacity_gpus.latest_transcript()));
    tracing::info!(collectors = %attestation.summary(), "attestation collectors");
    let liveness = crate::liveness::start(
        &config,
        store.clone(),
        identity.clone(),
        run_id,
        crate::liveness::HealthSources {
            gpus: Some(gpus.clone()),
            plugins: plugins.clone(),
        },
    );
    let net =
        crate::liveness::net::start(&config.liveness.net, identity.clone(), liveness.clone()).await;
    // Scheduling plugins see the measured network quality, reporting plugins the
    // ledger's summaries (WIT 0.1.2).
    if let Some(plugins) = &plugins {
        plugins.set_facts(Arc::new(crate::liveness::facts::AgentFacts::new(
            liveness.as_ref(),
            net.as_ref(),
        )));
    }

    let metrics = Arc::new(crate::metrics::AgentMetrics::new(
        crate::metrics::MetricsSources {
            jobs: jobs.as_ref().map(|jobs| jobs.manager.clone()),
            plugins: plugins.clone(),
            attestation: Some(attestation.clone()),
            gpus: Some(gpus.clone()),
            liveness: liveness.clone(),
            net: net.clone(),
        },
    ));
    let metrics_addr = config.metrics.listen_addr()?;
    // Validated with the configuration: an address that does not parse never gets here.
    let api_addr: Option<std::net::SocketAddr> = config
        .api
        .listen
        .as_deref()
        .and_then(|listen| listen.parse().ok());

    let socket_path = config.socket_path();
    // Held until `run` returns: its lock keeps other agents off this socket.
    let admin_socket = api::bind_admin_socket(
        &socket_path,
        config.socket_mode()?,
        config.api.socket_group.as_deref(),
    )?;

    let (reload_sender, reload_receiver) = watch::channel(Arc::new(loaded.clone()));
    let _reload = ReloadHandle {
        receiver: reload_receiver,
    };
    let state = Arc::new(AgentState {
        config: loaded,
        store: store.clone(),
        identity: identity.clone(),
        hardware,
        started: std::time::Instant::now(),
        started_at: crate::store::now_rfc3339(),
        previous_run,
        jobs: jobs.as_ref().map(|jobs| jobs.manager.clone()),
        plugins: plugins.clone(),
        attestation,
        gpus: gpus.clone(),
        liveness: liveness.clone(),
        net,
        metrics: metrics.clone(),
        network_api: std::sync::OnceLock::new(),
    });
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let (shutdown_sender, mut shutdown_receiver) = watch::channel(false);
    let server = axum::serve(admin_socket.listener, api::router(state.clone()))
        .with_graceful_shutdown(async move {
            let _ = shutdown_receiver.wait_for(|stop| *stop).await;
        });
    let mut server = tokio::spawn(async move { server.await });
    if let Some(addr) = metrics_addr {
        serve_metrics(addr, metrics, shutdown_sender.subscribe()).await;
    }
    if let Some(address) = api_addr {
        let net = crate::netapi::NetApi::new(state.clone());
        match crate::netapi::serve(net, address, shutdown_sender.subscribe()).await {
            Ok(status) => {
                let _ = state.network_api.set(status);
            }
            Err(err) => {
                cleanup(&store, run_id, &socket_path, "network API failure");
                return Err(err.into());
            }
        }
    }

    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(watchdog(store.clone(), interval));
    }
    let ready = match state.network_api.get() {
        Some(network) => format!(
            "serving on {} and https://{}; node {}",
            socket_path.display(),
            network.listen,
            &identity.public_key_hex()[..16]
        ),
        None => format!(
            "serving on {}; node {}",
            socket_path.display(),
            &identity.public_key_hex()[..16]
        ),
    };
    systemd::notify_ready(&ready);
    tracing::info!(socket = %socket_path.display(), "plinth-agent ready");

    let outcome = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            _ = hangup.recv() => {
                reload(&options.sources, &reload_sender, &ready);
                crate::plugins::reload_in_background(plugins.clone());
            }
            result = &mut server => {
                let failure = match result {
                    Ok(Ok(())) => std::io::Error::other("server stopped unexpectedly"),
                    Ok(Err(err)) => err,
                    Err(join) => std::io::Error::other(join.to_string()),
                };
                cleanup(&store, run_id, &socket_path, "server failure");
                return Err(DaemonError::Serve(failure));
            }
        }
    };
    tracing::info!(signal = outcome, "shutting down");
    systemd::notify_stopping("shutting down");
    let _ = shutdown_sender.send(true);
    if let Some(jobs) = &jobs {
        jobs.stop();
    }
    gpus.shutdown();
    if let Some(liveness) = &liveness
        && let Err(err) = liveness.stop()
    {
        tracing::error!(error = %crate::error_chain(&err), "cannot write the liveness stop entry");
    }
    match tokio::time::timeout(Duration::from_secs(10), &mut server).await {
        Ok(_) => {}
        Err(_) => tracing::warn!("in-flight requests did not finish within 10 s; closing"),
    }
    cleanup(&store, run_id, &socket_path, "clean");
    tracing::info!("plinth-agent stopped");
    Ok(())
}

/// Serves `GET /metrics` on `addr` until shutdown; a listener that cannot bind is
/// logged and skipped (the admin socket's `GET /v1/metrics` still answers).
async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Arc<crate::metrics::AgentMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match crate::metrics::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %crate::error_chain(&err), "no metrics listener; GET /v1/metrics on the admin socket still serves them");
            return;
        }
    };
    let address = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |bound| bound.to_string());
    tracing::info!(%address, "metrics listener serving GET /metrics");
    let server =
        axum::serve(listener, crate::metrics::router(metrics)).with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
    tokio::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(error = %err, "the metrics listener failed");
        }
    });
}

fn cleanup(store: &Store, run_id: i64, socket_path: &PathBuf, outcome: &str) {
    if let Err(err) = store.end_run(run_id, outcome) {
        tracing::error!(error = %err, "cannot record the end of this run");
    }
    if let Err(err) = std::fs::remove_file(socket_path) {
        tracing::warn!(error = %err, socket = %socket_path.display(), "cannot remove admin socket");
    }
}

fn reload(sources: &ConfigSources, sender: &watch::Sender<Arc<LoadedConfig>>, ready_status: &str) {
    systemd::notify_reloading();
    let mut sources = sources.clone();
    sources.env = std::env::vars().collect();
    match config::load(&sources) {
        Ok(loaded) => {
            tracing::info!(config_sha256 = %loaded.sha256, "configuration reloaded");
            let _ = sender.send(Arc::new(loaded));
        }
        Err(err) => {
            tracing::error!(error = %crate::error_chain(&err), "reload refused; keeping the running configuration");
        }
    }
    systemd::notify_ready(ready_status);
}

/// Pets the systemd watchdog at half the interval, but only while the store answers:
/// a wedged database or event loop lets the watchdog fire and systemd restart us.
async fn watchdog(store: Arc<Store>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval / 2);
    loop {
        ticker.tick().await;
        let store = store.clone();
        let probe = tokio::task::spawn_blocking(move || {
            store
                .connection()
                .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                .is_ok()
        });
        match tokio::time::timeout(interval / 2, probe).await {
            Ok(Ok(true)) => systemd::notify_watchdog(),
            _ => tracing::error!("store did not answer; withholding the watchdog ping"),
        }
    }
}
