//! `plinthctl images list|pull|remove|prune`: the agent's image cache and registry pulls.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use plinth_jobs::cache::CachedImage;

use super::CtlError;
use crate::api::images::{PullAnswer, PullRequest, RemovedAnswer};
use crate::client::AdminClient;

/// `plinthctl images` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List cached images, most recently used first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull an image from a configured registry into the cache.
    Pull {
        /// `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
        reference: String,
        /// Digest the image must have.
        #[arg(long, value_name = "sha256:HEX")]
        digest: Option<String>,
        /// Apply this tenant's signature policy.
        #[arg(long)]
        tenant: Option<String>,
        /// Show download and unpack progress on stderr.
        #[arg(long)]
        progress: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove one image (refused while a job uses it).
    Remove {
        /// The image id (`sha256:<hex>`).
        image_id: String,
    },
    /// Remove every image no job uses.
    Prune,
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CtlError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs one `plinthctl images` command.
pub async fn run(client: &AdminClient, command: ImagesCommand) -> Result<(), CtlError> {
    match command {
        ImagesCommand::List { json } => {
            let images: Vec<CachedImage> = client.get("/v1/images").await?;
            if json {
                return print_json(&images);
            }
            if images.is_empty() {
                println!("the image cache is empty");
            }
            for image in images {
                let reference = image
                    .origin
                    .as_ref()
                    .map_or("(local import)", |origin| origin.reference.as_str());
                let signer = image
                    .origin
                    .as_ref()
                    .and_then(|origin| origin.signer.as_ref())
                    .map(|signer| format!(" signed-by={}", signer.key))
                    .unwrap_or_default();
                println!(
                    "{} {:>12} bytes{} {reference}{signer}",
                    image.image_id,
                    image.size_bytes,
                    if image.in_use { " in-use" } else { "" }
                );
            }
            Ok(())
        }
        ImagesCommand::Pull {
            reference,
            digest,
            tenant,
            progress,
            json,
        } => {
            let request = PullRequest {
                reference: reference.clone(),
                digest,
                tenant,
            };
            let pull = client.post::<_, PullAnswer>("/v1/images/pull", &request);
            let answer = if progress {
                tokio::pin!(pull);
                let mut last = String::new();
                loop {
                    tokio::select! {
                        answer = &mut pull => break answer?,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            let pulls: BTreeMap<String, String> =
                                client.get("/v1/images/pulls").await.unwrap_or_default();
                            if let Some(line) = pulls.get(&reference)
                                && *line != last
                            {
                                eprintln!("{line}");
                                last = line.clone();
                            }
                        }
                    }
                }
            } else {
                pull.await?
            };
            if json {
                return print_json(&answer);
            }
            let signer = answer
                .signer
                .as_ref()
                .map(|signer| format!(", signed by {} ({})", signer.key, signer.key_sha256))
                .unwrap_or_default();
            println!(
                "{} {} ({} from {}{signer})",
                if answer.cached { "cached" } else { "pulled" },
                answer.image_id,
                answer.origin.reference,
                answer.origin.endpoint
            );
            Ok(())
        }
        ImagesCommand::Remove { image_id } => {
            let answer: RemovedAnswer = client.delete(&format!("/v1/images/{image_id}")).await?;
            for id in answer.removed {
                println!("removed {id}");
            }
            Ok(())
        }
        ImagesCommand::Prune => {
            let answer: RemovedAnswer = client
                .post("/v1/images/prune", &serde_json::json!({}))
                .await?;
            println!("removed {} images", answer.removed.len());
            for id in answer.removed {
                println!("removed {id}");
            }
            Ok(())
        }
    }
}
