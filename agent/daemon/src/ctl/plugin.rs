//! `plinthctl plugin new|wit|keygen|sign|inspect|test|bench`: tools for plugin authors that work
//! without an agent. Thin wrappers over `plinth_plugin_host::tools`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Subcommand;
use plinth_plugin_host::scaffold::{self, Language, ScaffoldError, ScaffoldOptions};
use plinth_plugin_host::tools::{self, ToolsError};
use plinth_plugin_host::wit::UnknownWitVersion;
use plinth_plugin_host::{HostConfig, PluginHost, PluginHostError};

use super::CtlError;
use crate::api::plugins::{InstallRequest, RemoveResponse};
use crate::client::AdminClient;
use crate::plugins::{LoadReport, PluginStatus};

/// `plinthctl plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project (manifest, source, fixtures, README) that builds and passes
    /// `plinthctl plugin test` as it is.
    New {
        /// pricing, scheduling or reporting.
        kind: plinth_plugin_host::PluginKind,
        /// Plugin, package and crate name: [a-z][a-z0-9-]{0,63}.
        name: String,
        /// rust (plinth-plugin-sdk, cargo) or js (TypeScript, componentize-js).
        #[arg(long, value_name = "LANG")]
        lang: Language,
        /// Directory to create [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The SDK crate for a Rust plugin: <plinth checkout>/plugins/sdk [default: the
        /// checkout this plinthctl was built from].
        #[arg(long, value_name = "DIR")]
        sdk_path: Option<PathBuf>,
    },
    /// Print the WIT of the plugin interface (the version this host serves, or a
    /// released one).
    Wit {
        /// A released version, e.g. 0.1.0 [default: the version this host serves].
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
        /// List the released versions instead.
        #[arg(long, conflicts_with = "version")]
        list: bool,
    },
    /// Generate an Ed25519 signing key (PKCS#8, mode 0600) and print its public key.
    Keygen {
        /// Where to write the private key (never overwritten).
        out: PathBuf,
    },
    /// Build a package from a manifest and a wasm component, signed with a key.
    Sign {
        /// Manifest (TOML; `wasm_sha256` is filled in).
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// The wasm component.
        #[arg(long, value_name = "FILE")]
        wasm: PathBuf,
        /// PKCS#8 private key from `plinthctl plugin keygen`; omit for an unsigned package.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Output package.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: PathBuf,
    },
    /// Show a package's or component's kind, WIT version, imports, exports, limits, signer.
    Inspect {
        /// Package (.plinthpkg) or raw component (.wasm).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin against a fixtures directory and diff against the expected outputs.
    Test {
        /// Package or raw component.
        file: PathBuf,
        /// Directory of NAME.input.json / NAME.expected.json pairs (+ optional config.json).
        #[arg(long, value_name = "DIR")]
        fixtures: PathBuf,
        /// Rewrite the expected files from the actual answers.
        #[arg(long)]
        bless: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install a package on the running agent (verified and self-tested there first).
    Install {
        /// The `.plinthpkg` file.
        file: PathBuf,
    },
    /// List the agent's active plugins with their counters.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the agent's plugin of one kind; the built-in policy takes over.
    Remove {
        /// pricing, scheduling or reporting.
        kind: plinth_plugin_host::PluginKind,
    },
    /// Make the agent reload its plugin directory (as SIGHUP does).
    Reload,
    /// Measure plugins side by side on one fixture input: component size, compile time,
    /// first instantiation, warm-call and fresh-instance latency.
    Bench {
        /// Packages or raw components (each measured on the same input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A NAME.input.json file.
        #[arg(long, value_name = "FILE")]
        fixture: PathBuf,
        /// Calls per series.
        #[arg(long, default_value_t = 10_000)]
        iterations: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Errors of `plinthctl plugin`.
#[derive(Debug, thiserror::Error)]
pub enum PluginCtlError {
    /// A plugin tool failed.
    #[error(transparent)]
    Tools(#[from] ToolsError),
    /// A project could not be created.
    #[error(transparent)]
    Scaffold(#[from] ScaffoldError),
    /// No such WIT version.
    #[error(transparent)]
    Wit(#[from] UnknownWitVersion),
    /// The wasmtime host could not start.
    #[error("cannot start the plugin host")]
    Host(#[from] PluginHostError),
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// JSON output or input failed.
    #[error("invalid JSON in {path}")]
    Json {
        /// The file (or `-` for output).
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The command talks to the agent; use [`dispatch`].
    #[error("this command needs the running agent")]
    NeedsAgent,
    /// Some fixtures did not match.
    #[error("{failed} of {total} fixtures failed")]
    FixturesFailed {
        /// Failed cases.
        failed: usize,
        /// All cases.
        total: usize,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, PluginCtlError> {
    std::fs::read(path).map_err(|source| PluginCtlError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), PluginCtlError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| PluginCtlError::Json {
        path: PathBuf::from("-"),
        source,
    })?;
    println!("{text}");
    Ok(())
}

/// Tools run deterministically (fuel, frozen clocks), like the host's self-tests.
fn tool_host(deterministic: bool) -> Result<PluginHost, PluginCtlError> {
    Ok(PluginHost::new(HostConfig {
        deterministic,
        pool_instances: 16,
        ..HostConfig::default()
    })?)
}

/// Run one `plinthctl plugin` command: install, list, remove and reload talk to the
/// agent, the others work locally.
pub async fn dispatch(client: &AdminClient, command: PluginCommand) -> Result<(), CtlError> {
    match command {
        PluginCommand::Install { file } => {
            let bytes = read(&file)?;
            let request = InstallRequest {
                package_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            };
            let info: plinth_plugin_host::PluginInfo = client.post("/v1/plugins", &request).await?;
            println!(
                "installed {} {} ({}, {})",
                info.name, info.version, info.kind, info.wit
            );
            Ok(())
        }
        PluginCommand::List { json } => {
            let plugins: Vec<PluginStatus> = client.get("/v1/plugins").await?;
            if json {
                return Ok(print_json(&plugins)?);
            }
            if plugins.is_empty() {
                println!("no plugins installed; built-in policies serve every kind");
            }
            for status in plugins {
                let (info, stats) = (&status.info, &status.stats);
                println!(
                    "{:<11} {} {} ({}) calls={} ok={} traps={} timeouts={} p50={}ns p99={}ns",
                    info.kind.as_str(),
                    info.name,
                    info.version,
                    info.wit,
                    stats.calls,
                    stats.ok,
                    stats.traps,
                    stats.timeouts,
                    stats.p50_ns,
                    stats.p99_ns
                );
            }
            Ok(())
        }
        PluginCommand::Remove { kind } => {
            let answer: RemoveResponse = client.delete(&format!("/v1/plugins/{kind}")).await?;
            match answer.removed {
                Some(info) => println!("removed {} {}", info.name, info.version),
                None => println!("no {kind} plugin was installed"),
            }
            Ok(())
        }
        PluginCommand::Reload => {
            let report: LoadReport = client
                .post("/v1/plugins/reload", &serde_json::json!({}))
                .await?;
            for info in &report.loaded {
                println!("loaded  {} {} ({})", info.name, info.version, info.kind);
            }
            for (path, error) in &report.failed {
                println!("FAILED  {}: {error}", path.display());
            }
            Ok(())
        }
        local => Ok(run(local)?),
    }
}

/// Run one local `plinthctl plugin` command (everything but install, list, remove,
/// reload).
pub fn run(command: PluginCommand) -> Result<(), PluginCtlError> {
    match command {
        PluginCommand::Install { .. }
        | PluginCommand::List { .. }
        | PluginCommand::Remove { .. }
        | PluginCommand::Reload => Err(PluginCtlError::NeedsAgent),
        PluginCommand::New {
            kind,
            name,
            lang,
            dir,
            sdk_path,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let written = scaffold::scaffold(&ScaffoldOptions {
                kind,
                language: lang,
                name: name.clone(),
                dir: dir.clone(),
                sdk_path,
            })?;
            for path in &written {
                println!("{}", path.display());
            }
            eprintln!(
                "created {kind} plugin {name} ({lang}) in {}; see its README.md to build, test, sign and install it",
                dir.display()
            );
            Ok(())
        }
        PluginCommand::Wit { version, list } => {
            if list {
                for released in plinth_plugin_host::wit::versions() {
                    println!("plinth:policy@{released}");
                }
            } else {
                print!("{}", plinth_plugin_host::wit::text(version.as_deref())?);
            }
            Ok(())
        }
        PluginCommand::Keygen { out } => {
            let public_hex = tools::keygen(&out)?;
            println!("{public_hex}");
            eprintln!(
                "private key written to {}; add the public key above to [plugins] trusted_keys",
                out.display()
            );
            Ok(())
        }
        PluginCommand::Sign {
            manifest,
            wasm,
            key,
            out,
        } => {
            let manifest = tools::read_manifest(&manifest)?;
            let bytes = tools::sign(manifest, read(&wasm)?, key.as_deref())?;
            std::fs::write(&out, &bytes).map_err(|source| PluginCtlError::Io {
                path: out.clone(),
                source,
            })?;
            println!("{}", out.display());
            Ok(())
        }
        PluginCommand::Inspect { file, json } => {
            let report = tools::inspect(&tool_host(false)?, &read(&file)?)?;
            if json {
                return print_json(&report);
            }
            let plugin = &report.plugin;
            println!("name:      {} {}", plugin.name, plugin.version);
            println!("kind:      {}", plugin.kind);
            println!("wit:       {}", plugin.wit);
            println!("sha256:    {}", plugin.wasm_sha256);
            match (&report.signer, report.signature_valid) {
                (Some(signer), Some(valid)) => {
                    println!(
                        "signer:    {signer} (signature {})",
                        if valid { "valid" } else { "INVALID" }
                    )
                }
                _ => println!("signer:    unsigned"),
            }
            if let Some(matches) = report.wasm_digest_matches {
                println!(
                    "digest:    {}",
                    if matches {
                        "matches manifest"
                    } else {
                        "DOES NOT MATCH manifest"
                    }
                );
            }
            let limits = &plugin.limits;
            println!(
                "limits:    memory {} B, cpu {} ms, fuel {}, output {} B, {} log records/call",
                limits.memory_bytes,
                limits.cpu_ms,
                limits.fuel,
                limits.output_bytes,
                limits.log_records_per_call
            );
            println!("imports:   {}", plugin.imports.join(", "));
            println!("exports:   {}", plugin.exports.join(", "));
            Ok(())
        }
        PluginCommand::Test {
            file,
            fixtures,
            bless,
            json,
        } => {
            let host = tool_host(true)?;
            let config = tools::fixture_config(&fixtures)?;
            let (plugin, _) = tools::load_any(&host, &read(&file)?, &config)?;
            let report = tools::run_fixtures(&plugin, &fixtures, bless)?;
            if json {
                print_json(&report)?;
            } else {
                print_fixture_report(&report);
            }
            let failed = report.cases.iter().filter(|case| !case.passed).count();
            if failed > 0 || report.cases.is_empty() {
                return Err(PluginCtlError::FixturesFailed {
                    failed,
                    total: report.cases.len(),
                });
            }
            Ok(())
        }
        PluginCommand::Bench {
            files,
            fixture,
            iterations,
            json,
        } => {
            let host = tool_host(false)?;
            let config = fixture
                .parent()
                .map(tools::fixture_config)
                .transpose()?
                .unwrap_or_default();
            let input: serde_json::Value =
                serde_json::from_slice(&read(&fixture)?).map_err(|source| {
                    PluginCtlError::Json {
                        path: fixture.clone(),
                        source,
                    }
                })?;
            let mut reports = Vec::with_capacity(files.len());
            for file in &files {
                let report = tools::bench_file(&host, &read(file)?, &config, &input, iterations)?;
                reports.push((file.clone(), report));
            }
            if json {
                let reports: Vec<_> = reports.into_iter().map(|(_, report)| report).collect();
                return print_json(&reports);
            }
            print_bench_table(&reports);
            Ok(())
        }
    }
}

fn print_bench_table(reports: &[(PathBuf, tools::BenchReport)]) {
    let us = |ns: u64| ns as f64 / 1e3;
    let cpu_us = |series: &Option<tools::Percentiles>, pick: fn(&tools::Percentiles) -> u64| {
        series.as_ref().map_or_else(
            || "-".to_string(),
            |series| format!("{:.2}", us(pick(series))),
        )
    };
    println!(
        "{:<28} {:>9} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "file",
        "size KiB",
        "compile ms",
        "1st inst us",
        "warm p50",
        "warm p99",
        "cpu p50",
        "cpu p99",
        "fresh p50",
        "fresh p99"
    );
    for (file, report) in reports {
        let name = file
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_else(|| file.display().to_string());
        println!(
            "{:<28} {:>9.1} {:>10.1} {:>11.1} {:>9.2} {:>9.2} {:>9} {:>9} {:>9.2} {:>9.2}",
            name,
            report.component_bytes as f64 / 1024.0,
            report.compile_ms,
            report.first_instantiation_us,
            us(report.warm.p50_ns),
            us(report.warm.p99_ns),
            cpu_us(&report.warm_cpu, |series| series.p50_ns),
            cpu_us(&report.warm_cpu, |series| series.p99_ns),
            us(report.fresh.p50_ns),
            us(report.fresh.p99_ns)
        );
    }
    println!(
        "(latencies in us; {} warm and {} fresh calls per plugin; warm and fresh are wall \
         clock, cpu is the calling thread's CPU time per warm call)",
        reports.first().map_or(0, |(_, report)| report.warm.samples),
        reports
            .first()
            .map_or(0, |(_, report)| report.fresh.samples)
    );
}

fn print_fixture_report(report: &tools::FixtureReport) {
    for case in &report.cases {
        let Some(diff) = &case.diff else {
            println!("ok    {}", case.name);
            continue;
        };
        println!("FAIL  {}", case.name);
        for line in diff.lines() {
            println!("        {line}");
        }
        if let Some(text_diff) = &case.text_diff {
            for line in text_diff.lines() {
                println!("        {line}");
            }
        }
        if case.logs.is_empty() {
            println!("      the plugin logged nothing during this call");
        } else {
            println!("      plugin log:");
            for line in &case.logs {
                println!("        {line}");
            }
        }
    }
    let failed = report.cases.iter().filter(|case| !case.passed).count();
    eprintln!(
        "{} of {} fixtures passed",
        report.cases.len() - failed,
        report.cases.len()
    );
}
