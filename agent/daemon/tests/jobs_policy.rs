//! Node policy on submissions: a tenant cannot get the host's network namespace unless
//! the operator allows it (`jobs.allow_host_network`), and nothing is recorded for a
//! refused submission.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use plinth_agent::config::AgentConfig;
use plinth_agent::identity::NodeIdentity;
use plinth_agent::jobs::{JobManager, JobsConfig, JobsError, SubmitRequest};
use plinth_agent::store::Store;

fn manager(allow_host_network: bool) -> (tempfile::TempDir, Arc<Store>, JobManager) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::default();
    config.agent.state_dir = dir.path().join("state");
    config.agent.runtime_dir = dir.path().join("run");
    config.jobs.allow_host_network = allow_host_network;
    let store = Arc::new(
        Store::open(
            &config.database_path(),
            plinth_agent::migrations::MIGRATIONS,
        )
        .unwrap(),
    );
    let identity = Arc::new(NodeIdentity::create(&config.node_key_path()).unwrap());
    let jobs = JobsConfig::from_config(&config);
    assert_eq!(jobs.allow_host_network, allow_host_network);
    let manager = JobManager::new(store.clone(), identity, jobs).unwrap();
    (dir, store, manager)
}

fn host_network_request(dir: &std::path::Path) -> SubmitRequest {
    SubmitRequest {
        spec: serde_json::json!({
            "format": "plinth-job/1",
            "image": {"source": "oci-layout", "path": dir.join("state/import/any")},
            "command": ["/bin/true"],
            "resources": {"memory_bytes": 67108864u64, "max_duration_s": 30},
            "network": "host",
        }),
        tenant: "t1".into(),
        lease_id: "l1".into(),
        gpu_devices: Vec::new(),
    }
}

fn job_count(store: &Store) -> i64 {
    store
        .connection()
        .query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn host_network_is_refused_by_default() {
    let (dir, store, manager) = manager(false);
    let err = manager
        .submit(&host_network_request(dir.path()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            JobsError::InvalidRequest {
                field: "spec.network",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("allow_host_network"), "{err}");
    assert_eq!(
        job_count(&store),
        0,
        "a refused submission leaves no job behind"
    );
}

#[test]
fn host_network_is_accepted_when_allowed() {
    let (dir, store, manager) = manager(true);
    manager.submit(&host_network_request(dir.path())).unwrap();
    assert_eq!(job_count(&store), 1);
}
