//! Example scheduling plugin: best-fit bin-packing that keeps a job's GPUs inside one
//! NVLink domain (else one NUMA node), never hands out drained or leased GPUs, defers
//! when the GPUs exist but are busy, and rejects what this host can never run.
//! Tightly coupled work goes only where the network is fast: with `coupled.max-rtt-us`
//! set, a request of at least `coupled.min-gpus` GPUs (one rank of a multi-node job) is
//! rejected unless the host's measured round trip to some configured peer (WIT 0.1.2
//! `network.peers`, p99) is within the limit; admitted, it logs the peers by round trip,
//! fastest first, as the ones to place its other ranks on.
//!
//! Operator configuration (all optional): `allow-split` (`true` lets a job span domains
//! when no single domain fits), `defer-s` (retry hint, default 60), `coupled.max-rtt-us`
//! (default 0: no network check), `coupled.min-gpus` (default 8).

use std::collections::BTreeMap;

use plinth_plugin_sdk::scheduling::{
    Gpu, Guest, HostState, JobRequest, PeerQuality, PolicyError, ScheduleDecision, network_peers,
};

struct BinPacking;

fn matches(req: &JobRequest, gpu: &Gpu) -> bool {
    if gpu.drained || gpu.memory_mib < req.min_gpu_memory_mib {
        return false;
    }
    match &req.gpu_model {
        Some(wanted) => gpu
            .model
            .to_ascii_lowercase()
            .contains(&wanted.to_ascii_lowercase()),
        None => true,
    }
}

/// Best fit: among groups with at least `wanted` free GPUs, the one with the fewest free
/// GPUs (ties broken by lowest key), so that large domains stay whole for large jobs.
fn best_fit(groups: &BTreeMap<u32, Vec<u32>>, wanted: usize) -> Option<Vec<u32>> {
    groups
        .iter()
        .filter(|(_, members)| members.len() >= wanted)
        .min_by_key(|(key, members)| (members.len(), **key))
        .map(|(_, members)| members[..wanted].to_vec())
}

/// For a tightly coupled request: `Err(reason)` when no measured peer is within
/// `max_rtt_us` (p99), else the peers that are, fastest first.
fn coupled_peers(req: &JobRequest, max_rtt_us: u64) -> Result<Vec<PeerQuality>, String> {
    let mut peers = network_peers();
    peers.sort_by(|left, right| {
        (left.rtt_p99_us, left.rtt_median_us, &left.peer).cmp(&(
            right.rtt_p99_us,
            right.rtt_median_us,
            &right.peer,
        ))
    });
    let Some(fastest) = peers.first() else {
        return Err(format!(
            "tightly coupled request ({} gpus): no peer's network quality is measured",
            req.gpu_count
        ));
    };
    if fastest.rtt_p99_us > max_rtt_us {
        return Err(format!(
            "tightly coupled request ({} gpus): lowest measured rtt p99 is {} us (peer {}), above coupled.max-rtt-us {max_rtt_us}",
            req.gpu_count, fastest.rtt_p99_us, fastest.peer
        ));
    }
    peers.retain(|peer| peer.rtt_p99_us <= max_rtt_us);
    Ok(peers)
}

impl Guest for BinPacking {
    fn schedule(req: JobRequest, state: HostState) -> Result<ScheduleDecision, PolicyError> {
        plinth_plugin_sdk::init_logging();
        let allow_split = plinth_plugin_sdk::config_parse("allow-split", false)
            .map_err(PolicyError::BadConfig)?;
        let defer_s =
            plinth_plugin_sdk::config_parse("defer-s", 60u32).map_err(PolicyError::BadConfig)?;
        if req.gpu_count == 0 {
            // A CPU-only job needs no GPU: admit it without one.
            return Ok(ScheduleDecision::Admit(Vec::new()));
        }
        let wanted = req.gpu_count as usize;
        let usable: Vec<&Gpu> = state.gpus.iter().filter(|gpu| matches(&req, gpu)).collect();
        if usable.len() < wanted {
            return Ok(ScheduleDecision::Reject(format!(
                "host has {} usable gpus for this request, {wanted} wanted",
                usable.len()
            )));
        }
        let max_rtt_us = plinth_plugin_sdk::config_parse("coupled.max-rtt-us", 0u64)
            .map_err(PolicyError::BadConfig)?;
        let min_gpus = plinth_plugin_sdk::config_parse("coupled.min-gpus", 8u32)
            .map_err(PolicyError::BadConfig)?;
        if max_rtt_us > 0 && req.gpu_count >= min_gpus {
            match coupled_peers(&req, max_rtt_us) {
                Err(reason) => return Ok(ScheduleDecision::Reject(reason)),
                Ok(peers) => {
                    let order: Vec<String> = peers
                        .iter()
                        .map(|peer| format!("{} ({} us)", peer.peer, peer.rtt_p99_us))
                        .collect();
                    plinth_plugin_sdk::log::info!(
                        "{}: tightly coupled; peers by rtt p99: {}",
                        req.request_id,
                        order.join(", ")
                    );
                }
            }
        }
        let free: Vec<&Gpu> = usable
            .iter()
            .copied()
            .filter(|gpu| !gpu.allocated)
            .collect();
        let mut by_nvlink: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut by_numa: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for gpu in &free {
            by_nvlink
                .entry(gpu.nvlink_domain)
                .or_default()
                .push(gpu.index);
            by_numa.entry(gpu.numa_node).or_default().push(gpu.index);
        }
        if let Some(chosen) = best_fit(&by_nvlink, wanted).or_else(|| best_fit(&by_numa, wanted)) {
            plinth_plugin_sdk::log::debug!("{} admitted on {chosen:?}", req.request_id);
            return Ok(ScheduleDecision::Admit(chosen));
        }
        if allow_split && free.len() >= wanted {
            // Take whole domains, largest first, to span as few as possible.
            let mut groups: Vec<&Vec<u32>> = by_nvlink.values().collect();
            groups.sort_by_key(|members| std::cmp::Reverse(members.len()));
            let mut chosen: Vec<u32> = groups.into_iter().flatten().copied().take(wanted).collect();
            chosen.sort_unstable();
            return Ok(ScheduleDecision::Admit(chosen));
        }
        Ok(ScheduleDecision::Defer(defer_s))
    }
}

plinth_plugin_sdk::export_scheduling!(BinPacking);
