//! `plinthctl status`.

use std::fmt::Write;

use crate::api::status::StatusReport;
use crate::cli::OutputArgs;
use crate::client::AdminClient;

use super::CtlError;

/// Fetches and prints the agent's status.
pub async fn run(client: &AdminClient, output: OutputArgs) -> Result<(), CtlError> {
    let report: StatusReport = client.get("/v1/status").await?;
    if output.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Renders a status report for people.
pub fn render(report: &StatusReport) -> String {
    let mut text = String::new();
    let uptime = humanize(report.uptime_seconds);
    let _ = writeln!(text, "plinth-agent {} (pid {})", report.version, report.pid);
    let _ = writeln!(text, "  running since  {} ({uptime})", report.started_at);
    let _ = writeln!(text, "  previous run   {}", report.previous_run);
    let _ = writeln!(text, "  node key       {}", report.node.public_key);
    let _ = writeln!(
        text,
        "  store          {} (schema v{}, integrity {}, {}{})",
        report.store.path,
        report.store.schema_version,
        report.store.integrity,
        report.store.journal_mode,
        if report.store.responsive {
            ""
        } else {
            ", NOT RESPONDING"
        }
    );
    let _ = writeln!(text, "  hardware       {}", report.hardware.summary);
    let gpus = &report.hardware.gpus;
    match &report.hardware.cpu_only {
        Some(reason) => {
            let _ = writeln!(text, "  gpus           none: CPU-only ({reason})");
        }
        None => {
            let _ = writeln!(
                text,
                "  gpus           {} ({} healthy, {} drained)",
                gpus.total, gpus.healthy, gpus.drained
            );
        }
    }
    let files = if report.config.files.is_empty() {
        "built-in defaults".to_owned()
    } else {
        report.config.files.join(", ")
    };
    let _ = writeln!(text, "  config         {files}");
    let _ = writeln!(text, "  config sha256  {}", report.config.sha256);
    match &report.network_api {
        Some(network) => {
            let _ = writeln!(
                text,
                "  network API    https://{} ({} pinned clients; certificate sha256 {})",
                network.listen, network.clients, network.certificate_sha256
            );
        }
        None => {
            let _ = writeln!(text, "  network API    off (api.listen unset)");
        }
    }
    text
}

fn humanize(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {}s", seconds % 60),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::humanize;

    #[test]
    fn uptime_is_humanized() {
        assert_eq!(humanize(5), "5s");
        assert_eq!(humanize(125), "2m 5s");
        assert_eq!(humanize(7260), "2h 1m");
        assert_eq!(humanize(90_000), "1d 1h");
    }
}
