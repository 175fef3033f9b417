//! systemd integration without libsystemd: readiness, status and the watchdog through
//! the notify socket, and log routing (journald under systemd, stderr otherwise).
//!
//! **Architecture Invariant:** this is the only module of plinth that knows systemd.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogTarget;

/// Errors setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// journald was asked for but its socket could not be opened.
    #[error("cannot connect to journald")]
    Journald(#[source] std::io::Error),
    /// A global logger was already installed.
    #[error("cannot install the logger: {0}")]
    Logger(String),
}

/// Tells the service manager that start-up finished.
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the one-line status shown by `systemctl status`.
pub fn notify_status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells the service manager that the agent is shutting down.
pub fn notify_stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Tells the service manager that the agent is reloading; a `READY=1` follows.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => tracing::warn!(error = %err, "cannot read the monotonic clock for RELOADING=1"),
    }
}

/// Pets the watchdog.
pub fn notify_watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval requested by systemd (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot write to NOTIFY_SOCKET");
    }
}

/// Whether stderr is connected to the journal (`JOURNAL_STREAM` names stderr's device
/// and inode), which is how systemd tells a service its output goes to journald.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    let Ok(metadata) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse::<u64>().ok() == Some(metadata.dev())
        && inode.parse::<u64>().ok() == Some(metadata.ino())
}

/// Installs the global logger: journald (structured fields) or human text on stderr.
///
/// `PLINTH_LOG` (EnvFilter syntax), when set, overrides `filter`.
pub fn init_logging(target: LogTarget, filter: &str) -> Result<(), SystemdError> {
    let filter = std::env::var("PLINTH_LOG")
        .ok()
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(filter));
    let journald = match target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => stderr_is_journal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if journald {
        let layer = tracing_journald::layer()
            .map_err(SystemdError::Journald)?
            .with_syslog_identifier("plinth-agent".to_owned());
        registry.with(layer).try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    installed.map_err(|err| SystemdError::Logger(err.to_string()))
}
