//! The series read from their source on each scrape: jobs by state, plugins, attestation,
//! GPUs, the liveness ledger and network quality.
//!
//! Every family is described on every scrape, with no samples when its source is absent
//! (a CPU-only host has no per-GPU series), so a dashboard's queries name families that
//! always exist. A source that fails to answer (the store busy or broken) leaves its
//! family without samples and logs why; the scrape itself does not fail.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;

use super::MetricsSources;
use crate::attestation::AttestationOperation;

/// The plugin call latency histogram's bucket edges, in seconds (a warm WASM call takes
/// microseconds; the CPU deadline stops a call at `limits.cpu_ms`).
pub const PLUGIN_LATENCY_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25,
];

/// Reads the sources on each scrape.
#[derive(Debug)]
pub struct ScrapeCollector {
    sources: MetricsSources,
    started_at_s: f64,
    plugin_edges_ns: Vec<u64>,
}

impl ScrapeCollector {
    /// A collector over `sources`; the agent's start time is now.
    pub fn new(sources: MetricsSources) -> ScrapeCollector {
        ScrapeCollector {
            sources,
            started_at_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
            plugin_edges_ns: PLUGIN_LATENCY_BUCKETS
                .iter()
                .map(|seconds| (seconds * 1e9).round() as u64)
                .collect(),
        }
    }
}

/// Describes one family and encodes its samples: `(labels, value)` pairs.
fn family<L, V>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    V: Sample,
{
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        value.encode_into(&mut metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Describes one family without labels and encodes its one sample, if any.
fn unlabelled<V: Sample>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: Option<V>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match value {
        Some(value) => value.encode_into(&mut metric),
        None => Ok(()),
    }
}

/// A value that encodes as a gauge or a counter sample.
trait Sample {
    fn encode_into(&self, metric: &mut MetricEncoder<'_>) -> fmt::Result;
}

/// A gauge's value.
struct GaugeValue<V>(V);

impl<V: EncodeGaugeValue> Sample for GaugeValue<V> {
    fn encode_into(&self, metric: &mut MetricEncoder<'_>) -> fmt::Result {
        metric.encode_gauge(&self.0)
    }
}

/// A counter's value.
struct CounterValue(u64);

impl Sample for CounterValue {
    fn encode_into(&self, metric: &mut MetricEncoder<'_>) -> fmt::Result {
        metric.encode_counter::<NoLabelSet, u64, u64>(&self.0, None)
    }
}

fn gauge<L, V>(labels: L, value: V) -> (L, GaugeValue<V>) {
    (labels, GaugeValue(value))
}

fn bool_gauge(value: bool) -> GaugeValue<i64> {
    GaugeValue(i64::from(value))
}

impl ScrapeCollector {
    fn encode_agent(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        family(
            encoder,
            "plinth_agent_info",
            "Always 1; labels carry the agent's version (a host is up while this is scraped).",
            MetricType::Gauge,
            [gauge([("version", env!("CARGO_PKG_VERSION"))], 1i64)],
        )?;
        unlabelled(
            encoder,
            "plinth_agent_start_time_seconds",
            "When this agent run started, Unix time.",
            Some(GaugeValue(self.started_at_s)),
        )
    }

    fn encode_jobs(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let counts = match &self.sources.jobs {
            None => Vec::new(),
            Some(jobs) => jobs.count_by_state().unwrap_or_else(|err| {
                tracing::warn!(error = %crate::error_chain(&err), "metrics: cannot count jobs");
                Vec::new()
            }),
        };
        family(
            encoder,
            "plinth_jobs",
            "Jobs in the store, by lifecycle state (no samples when jobs are disabled).",
            MetricType::Gauge,
            counts
                .into_iter()
                .map(|(state, n_jobs)| gauge([("state", state.as_str())], n_jobs)),
        )
    }

    fn encode_plugins(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let plugins: Vec<_> = self
            .sources
            .plugins
            .as_ref()
            .map(|service| {
                plinth_plugin_host::PluginKind::ALL
                    .iter()
                    .filter_map(|kind| service.policies().active(*kind))
                    .collect()
            })
            .unwrap_or_default();
        let labels: Vec<[(&str, String); 2]> = plugins
            .iter()
            .map(|plugin| {
                [
                    ("kind", plugin.kind().to_string()),
                    ("plugin", plugin.info().name.clone()),
                ]
            })
            .collect();
        let stats: Vec<_> = plugins.iter().map(|plugin| plugin.stats()).collect();
        type Field = fn(&plinth_plugin_host::PluginStatsSnapshot) -> u64;
        let counters: [(&str, &str, Field); 6] = [
            (
                "plinth_plugin_calls",
                "Calls made to the plugin (self-tests included).",
                |stats| stats.calls,
            ),
            (
                "plinth_plugin_traps",
                "Calls that trapped, including stack overflow and exhausted memory.",
                |stats| stats.traps,
            ),
            (
                "plinth_plugin_timeouts",
                "Calls stopped at the CPU deadline.",
                |stats| stats.timeouts,
            ),
            (
                "plinth_plugin_invalid_outputs",
                "Calls whose output was too large or malformed.",
                |stats| stats.invalid_outputs,
            ),
            (
                "plinth_plugin_policy_errors",
                "Calls where the plugin answered with its own policy error.",
                |stats| stats.policy_errors,
            ),
            (
                "plinth_plugin_fallbacks",
                "Decisions the built-in policy made because the plugin's call failed.",
                |stats| stats.fallbacks,
            ),
        ];
        for (name, help, field) in counters {
            family(
                encoder,
                name,
                help,
                MetricType::Counter,
                labels
                    .iter()
                    .zip(&stats)
                    .map(|(labels, stats)| (labels.as_slice(), CounterValue(field(stats)))),
            )?;
        }
        let mut metric = encoder.encode_descriptor(
            "plinth_plugin_call_duration_seconds",
            "Plugin call latency (a bucket counts calls whose internal 19 %-wide bucket lies at or below its edge).",
            None,
            MetricType::Histogram,
        )?;
        for (plugin, labels) in plugins.iter().zip(&labels) {
            let counts = plugin.latency_cumulative(&self.plugin_edges_ns);
            let mut buckets = Vec::with_capacity(PLUGIN_LATENCY_BUCKETS.len() + 1);
            let mut below = 0u64;
            for (edge, cumulative) in PLUGIN_LATENCY_BUCKETS.iter().zip(&counts.at_or_below) {
                buckets.push((*edge, cumulative.saturating_sub(below)));
                below = *cumulative;
            }
            buckets.push((f64::MAX, counts.count.saturating_sub(below)));
            metric
                .encode_family(&labels.as_slice())?
                .encode_histogram::<NoLabelSet>(
                    counts.sum_ns as f64 / 1e9,
                    counts.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn encode_attestation(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let service = self.sources.attestation.as_ref();
        let series =
            |value: fn(&crate::attestation::AttestationMetrics, AttestationOperation) -> u64| {
                AttestationOperation::ALL.into_iter().map(move |operation| {
                    (
                        [("operation", operation.as_str())],
                        CounterValue(
                            service.map_or(0, |service| value(service.metrics(), operation)),
                        ),
                    )
                })
            };
        family(
            encoder,
            "plinth_attestation_requests",
            "Attestation requests (evidence, enrollment, activation) since the agent started.",
            MetricType::Counter,
            series(crate::attestation::AttestationMetrics::requests),
        )?;
        family(
            encoder,
            "plinth_attestation_failures",
            "Attestation requests answered with an error (an absent evidence piece is not one).",
            MetricType::Counter,
            series(crate::attestation::AttestationMetrics::failures),
        )
    }

    fn encode_gpus(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let report = self.sources.gpus.as_ref().map(|gpus| gpus.report());
        let entries = report.as_ref().map_or(&[][..], |report| &report.gpus[..]);
        let labels: Vec<[(&str, String); 2]> = entries
            .iter()
            .map(|entry| {
                [
                    ("gpu", entry.inventory.index.to_string()),
                    ("uuid", entry.inventory.uuid.clone()),
                ]
            })
            .collect();
        let summary = report
            .as_ref()
            .map(|report| report.summary)
            .unwrap_or_default();
        family(
            encoder,
            "plinth_gpus",
            "GPUs in the inventory, by state: healthy (serving) or drained (lost ones included).",
            MetricType::Gauge,
            [
                gauge([("state", "healthy")], summary.healthy as u64),
                gauge([("state", "drained")], summary.drained as u64),
            ],
        )?;
        family(
            encoder,
            "plinth_gpu_healthy",
            "1 while the GPU serves jobs (neither drained nor lost).",
            MetricType::Gauge,
            labels.iter().zip(entries).map(|(labels, entry)| {
                (
                    labels.as_slice(),
                    bool_gauge(entry.drain.is_none() && !entry.lost),
                )
            }),
        )?;
        family(
            encoder,
            "plinth_gpu_drained",
            "1 while the GPU is drained (by policy or by the operator) or lost.",
            MetricType::Gauge,
            labels.iter().zip(entries).map(|(labels, entry)| {
                (
                    labels.as_slice(),
                    bool_gauge(entry.drain.is_some() || entry.lost),
                )
            }),
        )?;
        let reading = |value: fn(&crate::gpu::nvml::GpuHealth) -> Option<f64>| {
            labels
                .iter()
                .zip(entries)
                .filter_map(move |(labels, entry)| {
                    entry
                        .health
                        .as_ref()
                        .and_then(value)
                        .map(|value| gauge(labels.as_slice(), value))
                })
        };
        family(
            encoder,
            "plinth_gpu_temperature_celsius",
            "Core temperature at the latest health poll.",
            MetricType::Gauge,
            reading(|health| health.temperature_c.map(f64::from)),
        )?;
        family(
            encoder,
            "plinth_gpu_power_watts",
            "Power draw at the latest health poll.",
            MetricType::Gauge,
            reading(|health| health.power_mw.map(|mw| f64::from(mw) / 1000.0)),
        )?;
        family(
            encoder,
            "plinth_gpu_sm_utilization_ratio",
            "SM (kernel) utilisation over the latest sample period, 0 to 1.",
            MetricType::Gauge,
            reading(|health| health.sm_utilisation_pct.map(|pct| f64::from(pct) / 100.0)),
        )?;
        family(
            encoder,
            "plinth_gpu_fatal_events",
            "Fatal GPU events (fatal XIDs, uncorrectable ECC) seen since the agent started.",
            MetricType::Counter,
            labels.iter().zip(entries).map(|(labels, entry)| {
                (labels.as_slice(), CounterValue(entry.counters.fatal_events))
            }),
        )
    }

    fn encode_liveness(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let liveness = self.sources.liveness.as_ref();
        unlabelled(
            encoder,
            "plinth_liveness_head_seq",
            "Sequence number of the liveness ledger's head.",
            liveness.map(|liveness| GaugeValue(liveness.head_seq())),
        )?;
        unlabelled(
            encoder,
            "plinth_liveness_run_id",
            "The agent run writing the ledger.",
            liveness.map(|liveness| GaugeValue(liveness.run_id())),
        )?;
        let samples = self
            .sources
            .net
            .as_ref()
            .map(|net| net.latest())
            .unwrap_or_default();
        family(
            encoder,
            "plinth_net_rtt_seconds",
            "Round trip to a peer (TCP connect, TLS handshake, request), at the latest measurement.",
            MetricType::Gauge,
            samples.iter().flat_map(|sample| {
                [
                    ("0", sample.rtt_min_us),
                    ("0.5", sample.rtt_median_us),
                    ("0.99", sample.rtt_p99_us),
                ]
                .map(|(quantile, us)| {
                    gauge(
                        [("peer", sample.peer.as_str()), ("quantile", quantile)],
                        us as f64 / 1e6,
                    )
                })
            }),
        )?;
        family(
            encoder,
            "plinth_net_throughput_bytes_per_second",
            "Bounded transfer from a peer, at the latest measurement.",
            MetricType::Gauge,
            samples.iter().filter_map(|sample| {
                sample
                    .throughput_bytes_per_s
                    .map(|rate| gauge([("peer", sample.peer.as_str())], rate))
            }),
        )
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_agent(&mut encoder)?;
        self.encode_jobs(&mut encoder)?;
        self.encode_plugins(&mut encoder)?;
        self.encode_attestation(&mut encoder)?;
        self.encode_gpus(&mut encoder)?;
        self.encode_liveness(&mut encoder)
    }
}
