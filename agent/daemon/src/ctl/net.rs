//! `plinthctl net probe PEER...`.

use clap::Subcommand;

use super::CtlError;
use crate::api::net::{NetProbeAnswer, NetProbeRequest, NetProbeResult};
use crate::client::AdminClient;

/// `plinthctl net` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Measure round-trip time and throughput to peers of `[liveness.net.peers]`.
    Probe {
        /// Peer names (default: every configured peer).
        #[arg(value_name = "PEER")]
        peers: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `plinthctl metrics`: prints `GET /v1/metrics`.
pub async fn metrics(client: &AdminClient) -> Result<(), CtlError> {
    let bytes = client
        .request(hyper::Method::GET, "/v1/metrics", None)
        .await?;
    print!("{}", String::from_utf8_lossy(&bytes));
    Ok(())
}

/// Runs a `plinthctl net` command; fails when any peer could not be measured.
pub async fn run(client: &AdminClient, command: NetCommand) -> Result<(), CtlError> {
    match command {
        NetCommand::Probe { peers, json } => {
            let answer: NetProbeAnswer = client
                .post("/v1/net/probe", &NetProbeRequest { peers })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                for result in &answer.results {
                    match result {
                        NetProbeResult::Sample(s) => println!(
                            "{}: rtt min {:.3} ms, median {:.3} ms, p99 {:.3} ms over {}; throughput {}",
                            s.peer,
                            s.rtt_min_us as f64 / 1000.0,
                            s.rtt_median_us as f64 / 1000.0,
                            s.rtt_p99_us as f64 / 1000.0,
                            s.samples,
                            s.throughput_bytes_per_s
                                .map_or("not measured".to_owned(), |b| {
                                    format!("{:.1} MiB/s", b as f64 / (1024.0 * 1024.0))
                                })
                        ),
                        NetProbeResult::Error(message) => eprintln!("{message}"),
                    }
                }
            }
            let failures = answer
                .results
                .iter()
                .filter(|r| matches!(r, NetProbeResult::Error(_)))
                .count();
            if failures > 0 {
                return Err(CtlError::Output {
                    what: format!("{failures} peer measurements"),
                    source: std::io::Error::other("peers could not be measured (see above)"),
                });
            }
            Ok(())
        }
    }
}
