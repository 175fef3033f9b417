//! Scheduling plugin built against plinth:policy@0.1.3, a compatible version newer than
//! the host (0.1.2): it may use what the host lacks, so the host must refuse it at load
//! time with an error naming both versions.

wit_bindgen::generate!({
    path: "wit/policy.wit",
    world: "scheduling-plugin",
    generate_all,
});

use exports::plinth::policy::scheduling::{Guest, ScheduleDecision};
use plinth::policy::types::{HostState, JobRequest, PolicyError};

struct FromTheFuture;

impl Guest for FromTheFuture {
    fn schedule(_req: JobRequest, _state: HostState) -> Result<ScheduleDecision, PolicyError> {
        let peers = plinth::policy::network::peers();
        Ok(ScheduleDecision::Reject(format!(
            "built for 0.1.3 ({} peers)",
            peers.len()
        )))
    }
}

export!(FromTheFuture);
