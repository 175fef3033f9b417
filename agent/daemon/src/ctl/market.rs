//! `plinthctl quote|lease|reports|identity`: the network API's market side, for an
//! operator exercising a host by hand over `--remote URL --identity FILE` (they also
//! work on the admin socket, where the agent answers as to an admin).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::CtlError;
use crate::client::AdminClient;
use crate::netapi::quotes::{JobRequestBody, LeaseAnswer, LeaseRequest, QuoteRequest, SignedQuote};
use crate::netapi::routes::ReportAnswer;
use crate::remote::ClientIdentity;

/// Arguments of `plinthctl quote`.
#[derive(Debug, Args)]
pub struct QuoteArgs {
    /// The client's name as pinned in the host's `[[api.clients]]`.
    #[arg(long, env = "PLINTH_CLIENT_ID", value_name = "NAME")]
    pub client: String,
    /// Number of GPUs wanted.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// Expected run time, seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Wanted GPU model (a substring of the product name).
    #[arg(long)]
    pub model: Option<String>,
    /// Minimum memory per GPU, MiB.
    #[arg(long, default_value_t = 0)]
    pub min_memory_mib: u64,
    /// Highest total price accepted, micro-units.
    #[arg(long)]
    pub max_price: Option<u64>,
    /// The quote's id (idempotency key); default: a random one.
    #[arg(long)]
    pub quote_id: Option<String>,
    /// Write the signed quote here (for `plinthctl lease --quote`).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Arguments of `plinthctl lease`.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// The signed quote, as `plinthctl quote --out` wrote it.
    #[arg(long, value_name = "FILE")]
    pub quote: PathBuf,
    /// The job spec (`plinth-job/1`, JSON).
    #[arg(long, value_name = "FILE")]
    pub spec: PathBuf,
    /// The lease's id (idempotency key); default: a random one.
    #[arg(long)]
    pub lease_id: Option<String>,
    /// Follow the job until it ends, with a progress display.
    #[arg(long)]
    pub watch: bool,
}

/// Arguments of `plinthctl reports`.
#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// Period start, Unix seconds (default: a day before --to).
    #[arg(long)]
    pub from: Option<u64>,
    /// Period end, Unix seconds (default: now).
    #[arg(long)]
    pub to: Option<u64>,
    /// Write the report (JSON) here instead of standard output.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `plinthctl identity`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Make a client identity (Ed25519 key and self-signed certificate, one PEM file) and
    /// print the `[[api.clients]]` entry that pins it.
    New {
        /// The client's name (its tenant on the host).
        #[arg(long)]
        name: String,
        /// The role to print in the entry: market, checker or admin.
        #[arg(long, default_value = "market")]
        role: String,
        /// Where to write the identity (mode 0600; refuses to overwrite).
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
    },
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CtlError> {
    std::fs::read(path).map_err(|source| CtlError::Output {
        what: format!("{what} {}", path.display()),
        source,
    })
}

fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    format!("{prefix}-{}", hex::encode(bytes))
}

fn write_out(path: Option<&Path>, text: &str) -> Result<(), CtlError> {
    match path {
        Some(path) => std::fs::write(path, text).map_err(|source| CtlError::Output {
            what: path.display().to_string(),
            source,
        }),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Runs `plinthctl quote`.
pub async fn quote(client: &AdminClient, args: QuoteArgs) -> Result<(), CtlError> {
    let request = QuoteRequest {
        client_id: args.client,
        quote_id: args.quote_id.unwrap_or_else(|| random_id("q")),
        request: JobRequestBody {
            gpu_count: args.gpus,
            gpu_model: args.model,
            min_gpu_memory_mib: args.min_memory_mib,
            duration_s: args.duration,
            max_price_micros: args.max_price,
        },
    };
    let quote: SignedQuote = client.post("/v1/quotes", &request).await?;
    eprintln!(
        "quote {}: {} micro-{} for {} s ({} per GPU-hour), priced by {} (sha256 {}){}, valid until {} ms",
        quote.quote_id,
        quote.offer.price_micros,
        quote.offer.currency,
        quote.offer.billable_s,
        quote.offer.gpu_hour_micros,
        match (&quote.pricing.name, &quote.pricing.version) {
            (Some(name), Some(version)) => format!("plugin {name} {version}"),
            _ => "the built-in policy".to_owned(),
        },
        &quote.pricing.sha256[..quote.pricing.sha256.len().min(16)],
        quote
            .pricing
            .plugin_error
            .as_ref()
            .map(|error| format!(" because the plugin failed: {error}"))
            .unwrap_or_default(),
        quote.expires_at_ms
    );
    let mut text = serde_json::to_string_pretty(&quote)?;
    text.push('\n');
    write_out(args.out.as_deref(), &text)
}

/// Runs `plinthctl lease`.
pub async fn lease(client: &AdminClient, args: LeaseArgs) -> Result<(), CtlError> {
    let quote: SignedQuote = serde_json::from_slice(&read_file(&args.quote, "quote")?)?;
    let spec: serde_json::Value = serde_json::from_slice(&read_file(&args.spec, "job spec")?)?;
    let request = LeaseRequest {
        lease_id: args.lease_id.unwrap_or_else(|| random_id("l")),
        quote,
        spec,
    };
    let answer: LeaseAnswer = client.post("/v1/leases", &request).await?;
    eprintln!(
        "lease {} (quote {}): job {} on [{}], scheduled by {}",
        answer.lease_id,
        answer.quote_id,
        answer.job_id,
        answer.gpu_devices.join(", "),
        answer.scheduled_by
    );
    println!("{}", answer.job_id);
    if args.watch {
        super::jobs::watch(client, &answer.job_id).await?;
    }
    Ok(())
}

/// Runs `plinthctl reports`.
pub async fn reports(client: &AdminClient, args: ReportsArgs) -> Result<(), CtlError> {
    let mut query = Vec::new();
    if let Some(from) = args.from {
        query.push(format!("from={from}"));
    }
    if let Some(to) = args.to {
        query.push(format!("to={to}"));
    }
    let path = if query.is_empty() {
        "/v1/reports".to_owned()
    } else {
        format!("/v1/reports?{}", query.join("&"))
    };
    let report: ReportAnswer = client.get(&path).await?;
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    write_out(args.out.as_deref(), &text)
}

/// Runs `plinthctl identity`.
pub fn identity(command: IdentityCommand) -> Result<(), CtlError> {
    let IdentityCommand::New { name, role, out } = command;
    let identity = ClientIdentity::generate(&name).map_err(|err| CtlError::Output {
        what: format!("identity {}", out.display()),
        source: std::io::Error::other(crate::error_chain(&err)),
    })?;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(|source| CtlError::Output {
            what: format!("identity {} (it must not exist yet)", out.display()),
            source,
        })?;
    file.write_all(identity.to_pem().as_bytes())
        .map_err(|source| CtlError::Output {
            what: format!("identity {}", out.display()),
            source,
        })?;
    eprintln!("wrote {}; pin it on the host with:", out.display());
    println!(
        "[[api.clients]]\nname = {name:?}\nrole = {role:?}\ncert_sha256 = {:?}",
        identity.spki_sha256()
    );
    Ok(())
}

/// Arguments of `plinthctl bench-quotes`.
#[derive(Debug, Args)]
pub struct BenchQuotesArgs {
    /// The client's name as pinned in the host's `[[api.clients]]`.
    #[arg(long, env = "PLINTH_CLIENT_ID", value_name = "NAME")]
    pub client: String,
    /// Quotes to ask for in all.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Quotes a second to offer (paced; 0: as fast as the connections allow).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Connections (each keeps its TLS session and sends its requests in turn).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// GPUs each quote asks for.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// Stop after this many seconds even if `count` is not reached.
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `plinthctl bench-quotes` measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchResult {
    /// Quotes answered 200/201.
    pub ok: u64,
    /// Quotes refused by the pricing policy (409).
    pub refused: u64,
    /// Other answers and transport errors.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Answers per second achieved.
    pub per_second: f64,
    /// Latency percentiles in microseconds (request sent to answer read).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// Runs `plinthctl bench-quotes`: `count` quotes at `rate` a second over `connections`
/// keep-alive connections, each with a fresh quote id; prints throughput and latency.
pub async fn bench_quotes(client: &AdminClient, args: BenchQuotesArgs) -> Result<(), CtlError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let next = Arc::new(AtomicU64::new(0));
    let run = random_id("bench");
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(args.max_seconds);
    let mut workers = Vec::new();
    for _ in 0..args.connections.max(1) {
        let mut connection = client.connect().await?;
        let next = next.clone();
        let run = run.clone();
        let client_id = args.client.clone();
        let (count, rate, gpus) = (args.count, args.rate, args.gpus);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut refused, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count || std::time::Instant::now() >= deadline {
                    break;
                }
                if rate > 0 {
                    let due =
                        started + std::time::Duration::from_secs_f64(index as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = serde_json::json!({
                    "client_id": client_id,
                    "quote_id": format!("{run}-{index}"),
                    "request": {"gpu_count": gpus, "duration_s": 3600}
                })
                .to_string()
                .into_bytes();
                let sent = std::time::Instant::now();
                match connection
                    .exchange(hyper::Method::POST, "/v1/quotes", body)
                    .await
                {
                    Ok((status, _)) if status.is_success() => {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    Ok((status, _)) if status == hyper::StatusCode::CONFLICT => {
                        latencies.push(sent.elapsed().as_micros() as u64);
                        refused += 1;
                    }
                    Ok((status, bytes)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&bytes))
                        });
                    }
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| crate::error_chain(&err));
                        break;
                    }
                }
            }
            (latencies, refused, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let (mut refused, mut errors, mut first_error) = (0, 0, None);
    for worker in workers {
        match worker.await {
            Ok((worker_latencies, worker_refused, worker_errors, worker_error)) => {
                latencies.extend(worker_latencies);
                refused += worker_refused;
                errors += worker_errors;
                if first_error.is_none() {
                    first_error = worker_error;
                }
            }
            Err(join) => {
                errors += 1;
                first_error.get_or_insert_with(|| join.to_string());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let quantile = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    let answered = latencies.len() as u64;
    let result = BenchResult {
        ok: answered - refused,
        refused,
        errors,
        first_error,
        seconds,
        per_second: answered as f64 / seconds.max(1e-9),
        p50_us: quantile(0.50),
        p90_us: quantile(0.90),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        max_us: latencies.last().copied().unwrap_or(0),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "{} quotes in {:.2} s ({:.0}/s; {} refused, {} errors)\nlatency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            result.ok + result.refused,
            result.seconds,
            result.per_second,
            result.refused,
            result.errors,
            result.p50_us,
            result.p90_us,
            result.p99_us,
            result.p999_us,
            result.max_us
        );
        if let Some(error) = &result.first_error {
            println!("first error: {error}");
        }
    }
    Ok(())
}
