//! {{name}}: a scheduling policy for plinth. First fit: admit the job on the first free
//! GPUs (by index) of the wanted model and memory; defer (config `defer-s`, default 60)
//! when such GPUs exist but are busy; reject what this host can never run. Drained GPUs
//! are never handed out.

use plinth_plugin_sdk::scheduling::{
    Gpu, Guest, HostState, JobRequest, PolicyError, ScheduleDecision,
};

struct Plugin;

fn usable(req: &JobRequest, gpu: &Gpu) -> bool {
    !gpu.drained
        && gpu.memory_mib >= req.min_gpu_memory_mib
        && req.gpu_model.as_deref().is_none_or(|wanted| {
            gpu.model
                .to_ascii_lowercase()
                .contains(&wanted.to_ascii_lowercase())
        })
}

impl Guest for Plugin {
    fn schedule(req: JobRequest, state: HostState) -> Result<ScheduleDecision, PolicyError> {
        plinth_plugin_sdk::init_logging();
        let defer_s: u32 =
            plinth_plugin_sdk::config_parse("defer-s", 60).map_err(PolicyError::BadConfig)?;
        if req.gpu_count == 0 {
            return Err(PolicyError::InvalidInput("gpu-count is 0".to_string()));
        }
        let wanted = req.gpu_count as usize;
        let usable: Vec<&Gpu> = state.gpus.iter().filter(|gpu| usable(&req, gpu)).collect();
        if usable.len() < wanted {
            return Ok(ScheduleDecision::Reject(format!(
                "host has {} usable gpus, {wanted} wanted",
                usable.len()
            )));
        }
        let free: Vec<u32> = usable
            .iter()
            .filter(|gpu| !gpu.allocated)
            .map(|gpu| gpu.index)
            .take(wanted)
            .collect();
        if free.len() < wanted {
            plinth_plugin_sdk::log::debug!("{}: busy, deferring", req.request_id);
            return Ok(ScheduleDecision::Defer(defer_s));
        }
        Ok(ScheduleDecision::Admit(free))
    }
}

plinth_plugin_sdk::export_scheduling!(Plugin);
