//! Hostile scheduling plugin used by the network API's lease tests. The operator config
//! key `mode`, else the request id's part before its first `.` (so that one installed
//! plugin can misbehave per request: quote id `ghost.1`), selects what it answers: `reject` (refuses every request, with a reason),
//! `defer` (asks again in 30 s), `trap` (traps), `ghost` (admits GPU indices that do
//! not exist on the host), `twice` (admits the first free GPU twice); anything else
//! admits the first free GPUs. A host must refuse the bad assignments, never trust them.

use plinth_plugin_sdk::scheduling::{Guest, HostState, JobRequest, PolicyError, ScheduleDecision};

struct BadScheduler;

impl Guest for BadScheduler {
    fn schedule(req: JobRequest, state: HostState) -> Result<ScheduleDecision, PolicyError> {
        let mode = plinth_plugin_sdk::config_get("mode").unwrap_or_else(|| {
            req.request_id
                .split_once('.')
                .map(|(mode, _)| mode.to_string())
                .unwrap_or_default()
        });
        let free: Vec<u32> = state
            .gpus
            .iter()
            .filter(|gpu| !gpu.drained && !gpu.allocated)
            .map(|gpu| gpu.index)
            .collect();
        match mode.as_str() {
            "reject" => Ok(ScheduleDecision::Reject(format!(
                "bad-scheduler rejects {} by configuration",
                req.request_id
            ))),
            "defer" => Ok(ScheduleDecision::Defer(30)),
            "trap" => {
                std::process::abort();
            }
            "ghost" => Ok(ScheduleDecision::Admit(
                (0..req.gpu_count).map(|n| 1000 + n).collect(),
            )),
            "twice" => Ok(ScheduleDecision::Admit(vec![
                free.first()
                    .copied()
                    .unwrap_or(0);
                req.gpu_count.max(2) as usize
            ])),
            _ => Ok(ScheduleDecision::Admit(
                free.into_iter().take(req.gpu_count as usize).collect(),
            )),
        }
    }
}

plinth_plugin_sdk::export_scheduling!(BadScheduler);
