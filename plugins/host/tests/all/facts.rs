//! WIT 0.1.2's facts: a scheduling plugin decides by the network quality the host
//! supplies, a reporting plugin reports the liveness summaries the host supplies, for
//! the periods it asks about, within the per-call bound.

use std::sync::{Arc, Mutex};

use plinth_plugin_host::facts::MAX_SUMMARIES_PER_CALL;
use plinth_plugin_host::{
    FixedFacts, HostFacts, HostState, Instance, LivenessSummary, NoFacts, Outage, OutageCause,
    PeerQuality, PluginKind, PolicySet, ScheduleDecision, UsageRecord,
};

use crate::support::{host, load, request, state};

fn peer(name: &str, rtt_p99_us: u64) -> PeerQuality {
    PeerQuality {
        peer: name.to_string(),
        rtt_min_us: rtt_p99_us / 3,
        rtt_median_us: rtt_p99_us / 2,
        rtt_p99_us,
        samples: 10,
        throughput_bytes_per_s: Some(1_000_000_000),
        measured_at_s: 1_767_225_000,
    }
}

fn network(peers: Vec<PeerQuality>) -> Arc<FixedFacts> {
    Arc::new(FixedFacts {
        network: peers,
        liveness: Vec::new(),
    })
}

/// Eight free GPUs in one NVLink domain: an 8-GPU request fits.
fn one_domain() -> HostState {
    let mut host_state = state();
    for gpu in &mut host_state.gpus {
        gpu.nvlink_domain = 0;
    }
    host_state
}

#[test]
fn a_scheduling_plugin_decides_by_the_measured_network_quality() {
    let host = host();
    let Some(plugin) = load(
        &host,
        "plinth_example_scheduling",
        "scheduling",
        PluginKind::Scheduling,
        &[("coupled.max-rtt-us", "1000")],
    ) else {
        return;
    };
    assert_eq!(plugin.info().wit, "plinth:policy@0.1.2");
    assert!(
        plugin
            .info()
            .imports
            .iter()
            .any(|import| import == "plinth:policy/network@0.1.2"),
        "{:?}",
        plugin.info().imports
    );
    let coupled = request(8);
    let fast = network(vec![peer("c", 5_200), peer("b", 420)]);
    let slow = network(vec![peer("b", 2_900), peer("c", 5_200)]);
    let admitted = ScheduleDecision::Admit((0..8).collect());
    assert_eq!(
        plugin
            .schedule_with(Instance::Warm, &coupled, &one_domain(), fast.clone())
            .unwrap(),
        admitted
    );
    assert_eq!(
        plugin
            .schedule_with(Instance::Warm, &coupled, &one_domain(), slow.clone())
            .unwrap(),
        ScheduleDecision::Reject(
            "tightly coupled request (8 gpus): lowest measured rtt p99 is 2900 us (peer b), above coupled.max-rtt-us 1000".to_string()
        )
    );
    assert_eq!(
        plugin
            .schedule_with(
                Instance::Fresh,
                &coupled,
                &one_domain(),
                network(Vec::new())
            )
            .unwrap(),
        ScheduleDecision::Reject(
            "tightly coupled request (8 gpus): no peer's network quality is measured".to_string()
        )
    );
    // A small request is not tightly coupled: the network does not matter.
    assert_eq!(
        plugin
            .schedule_with(Instance::Warm, &request(2), &one_domain(), slow.clone())
            .unwrap(),
        ScheduleDecision::Admit(vec![0, 1])
    );

    // The agent's path: the facts set on the host, read by every later call (the same
    // warm instance sees the new measurements), through the policy set.
    let policies = PolicySet::new(Default::default());
    policies
        .install(plugin, plinth_plugin_host::SelfTest::Smoke)
        .unwrap();
    host.set_facts(slow);
    assert!(matches!(
        policies.schedule(&coupled, &one_domain()).value,
        ScheduleDecision::Reject(_)
    ));
    host.set_facts(fast);
    let decided = policies.schedule(&coupled, &one_domain());
    assert_eq!(decided.value, admitted);
    assert!(matches!(
        decided.source,
        plinth_plugin_host::DecisionSource::Plugin { .. }
    ));
    host.set_facts(Arc::new(NoFacts));
    assert!(matches!(
        policies.schedule(&coupled, &one_domain()).value,
        ScheduleDecision::Reject(ref reason) if reason.contains("no peer")
    ));
}

const H0: u64 = 1_767_225_600;

/// Answers every period with a summary derived from it, and records what was asked.
#[derive(Default)]
struct Recording {
    asked: Mutex<Vec<(u64, u64)>>,
}

impl HostFacts for Recording {
    fn peers(&self) -> Vec<PeerQuality> {
        Vec::new()
    }

    fn liveness_summary(&self, from_s: u64, to_s: u64) -> Option<LivenessSummary> {
        self.asked.lock().unwrap().push((from_s, to_s));
        let hour = (from_s - H0) / 3600;
        Some(LivenessSummary {
            period_start_s: from_s,
            period_end_s: to_s,
            entries: 60,
            covered_s: to_s - from_s,
            uptime_s: to_s - from_s - hour,
            drained_gpu_s: 0,
            outages: (hour > 0)
                .then(|| Outage {
                    start_s: from_s + 10,
                    length_s: hour,
                    cause: OutageCause::Missed,
                })
                .into_iter()
                .collect(),
            head_seq: 60 * (hour + 1),
            head_hash: "ab".repeat(32),
        })
    }
}

fn job(hours: u64) -> Vec<UsageRecord> {
    vec![UsageRecord {
        job_id: "job-1".to_string(),
        tenant: "tenant-a".to_string(),
        start_s: H0 + 120,
        end_s: H0 + hours * 3600 - 60,
        gpu_count: 1,
        utilisation_pct: 80,
        charged_micros: 1_000_000,
    }]
}

fn value(record: &plinth_plugin_host::ReportRecord, name: &str) -> Option<u64> {
    record
        .values
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| *value)
}

#[test]
fn a_reporting_plugin_reports_the_liveness_summary_of_each_hour() {
    let host = host();
    let Some(plugin) = load(
        &host,
        "plinth_example_reporting",
        "reporting",
        PluginKind::Reporting,
        &[],
    ) else {
        return;
    };
    assert!(
        plugin
            .info()
            .imports
            .iter()
            .any(|import| import == "plinth:policy/liveness@0.1.2"),
        "{:?}",
        plugin.info().imports
    );
    // No ledger: the usage records only.
    let plain = plugin.report(&job(3)).unwrap();
    assert_eq!(plain.len(), 3);
    assert!(plain.iter().all(|record| record.key == "tenant-a"));

    let recording = Arc::new(Recording::default());
    host.set_facts(recording.clone());
    let report = plugin.report(&job(3)).unwrap();
    assert_eq!(
        *recording.asked.lock().unwrap(),
        vec![
            (H0, H0 + 3600),
            (H0 + 3600, H0 + 7200),
            (H0 + 7200, H0 + 10_800)
        ],
        "one summary per hour the report covers"
    );
    let liveness: Vec<_> = report
        .iter()
        .filter(|record| record.key == "liveness")
        .collect();
    assert_eq!(liveness.len(), 3);
    assert_eq!(liveness[2].period_start_s, H0 + 7200);
    assert_eq!(value(liveness[2], "uptime-s"), Some(3598));
    assert_eq!(value(liveness[2], "availability-ppm"), Some(999_444));
    assert_eq!(value(liveness[2], "outages"), Some(1));
    assert_eq!(value(liveness[2], "outage-s.missed"), Some(2));
    assert_eq!(value(liveness[2], "head-seq"), Some(180));
    assert_eq!(value(liveness[0], "outages"), Some(0));

    // At most MAX_SUMMARIES_PER_CALL summaries per call, however many hours.
    recording.asked.lock().unwrap().clear();
    let long = plugin.report(&job(100)).unwrap();
    assert_eq!(
        recording.asked.lock().unwrap().len(),
        MAX_SUMMARIES_PER_CALL as usize
    );
    let n_liveness = long
        .iter()
        .filter(|record| record.key == "liveness")
        .count();
    assert_eq!(n_liveness, MAX_SUMMARIES_PER_CALL as usize);

    // Facts given per call (fixtures) take precedence over the host's.
    let fixed = plugin
        .report_with(Instance::Fresh, &job(1), Arc::new(FixedFacts::default()))
        .unwrap();
    assert_eq!(fixed.len(), 1);
}
