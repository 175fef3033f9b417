//! Scheduling plugin built against the frozen plinth:policy@0.1.1 WIT (no `network`
//! interface): the host (0.1.2) must keep serving it. It admits the first free GPUs in
//! index order, logs through the 0.1.1 host interface and draws one number from the
//! 0.1.1 `entropy` interface.

wit_bindgen::generate!({
    path: "../../../wit/frozen/0.1.1/policy.wit",
    world: "scheduling-plugin",
    generate_all,
});

use exports::plinth::policy::scheduling::{Guest, ScheduleDecision};
use plinth::policy::host::{self, Level};
use plinth::policy::types::{HostState, JobRequest, PolicyError};

struct Compat;

impl Guest for Compat {
    fn schedule(req: JobRequest, state: HostState) -> Result<ScheduleDecision, PolicyError> {
        let draw = plinth::policy::entropy::next_u64();
        host::log(
            Level::Info,
            "compat 0.1.1 plugin scheduling",
            &[("draw".to_string(), draw.to_string())],
        );
        let free: Vec<u32> = state
            .gpus
            .iter()
            .filter(|gpu| !gpu.drained && !gpu.allocated)
            .map(|gpu| gpu.index)
            .take(req.gpu_count as usize)
            .collect();
        if free.len() < req.gpu_count as usize {
            return Ok(ScheduleDecision::Defer(60));
        }
        Ok(ScheduleDecision::Admit(free))
    }
}

export!(Compat);
