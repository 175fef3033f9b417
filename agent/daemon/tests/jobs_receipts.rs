//! Periodic receipts of a running job, driven through the job manager with a
//! short receipt interval: interim receipts while it runs, one final
//! receipt, consecutive periods, a verifying ledger; and a second manager
//! (an agent restart) that bills nothing again. Real runc and a busybox
//! image; skips with a printed reason without root, runc, tar or busybox.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plinth_agent::identity::NodeIdentity;
use plinth_agent::jobs::{JobManager, JobState, JobsConfig, SubmitRequest};
use plinth_agent::store::Store;
use plinth_attestation::receipt::{LedgerOptions, Receipt, ReceiptKind, verify_ledger};

#[test]
fn running_jobs_get_interim_receipts_and_one_final() {
    if !plinth_tests::jobs_available("the receipts test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let layout = state.join("import/busybox");
    std::fs::create_dir_all(&layout).unwrap();
    plinth_tests::busybox_layout(dir.path(), &layout, &["sh", "sleep"]).unwrap();
    let store = Arc::new(
        Store::open(
            &state.join("agent.db"),
            plinth_agent::migrations::MIGRATIONS,
        )
        .unwrap(),
    );
    let identity = Arc::new(NodeIdentity::create(&state.join("node.key")).unwrap());
    let mut config = JobsConfig::from_dirs(&state, &dir.path().join("run"));
    config.engine.shim_binary = PathBuf::from(env!("CARGO_BIN_EXE_plinth-agent"));
    config.receipt_interval = Duration::from_millis(400);
    let manager = JobManager::new(store.clone(), identity.clone(), config.clone()).unwrap();
    let id = manager
        .submit(&SubmitRequest {
            spec: serde_json::json!({
                "format": "plinth-job/1",
                "image": {"source": "oci-layout", "path": layout},
                "command": ["/bin/sh", "-c", "sleep 2"],
                "resources": {"memory_bytes": 67108864u64, "max_duration_s": 30}
            }),
            tenant: "t1".into(),
            lease_id: "l1".into(),
            gpu_devices: Vec::new(),
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut restarted = false;
    loop {
        manager.tick().unwrap();
        let job = manager.get(&id).unwrap();
        if job.state == JobState::Succeeded {
            break;
        }
        assert!(!job.state.is_terminal(), "{job:?}");
        assert!(Instant::now() < deadline, "job did not finish: {job:?}");
        if !restarted && job.billed_until_ms.is_some() {
            // An "agent restart" in the middle: a second manager on the same
            // store takes over; it must continue the periods, not repeat them.
            restarted = true;
            let second = JobManager::new(store.clone(), identity.clone(), config.clone()).unwrap();
            second.recover().unwrap();
            second.tick().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(restarted, "no interim receipt was issued while the job ran");
    let ledger = manager.export_receipts().unwrap();
    let summary = verify_ledger(
        &ledger,
        &LedgerOptions {
            node_key: Some(identity.public_key_hex()),
            ..LedgerOptions::default()
        },
    )
    .unwrap_or_else(|err| panic!("ledger does not verify: {err}"));
    let receipts: Vec<Receipt> = ledger
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Receipt::from_json(l).unwrap())
        .collect();
    let interim = receipts
        .iter()
        .filter(|r| r.kind == ReceiptKind::Interim)
        .count();
    let finals = receipts
        .iter()
        .filter(|r| r.kind == ReceiptKind::Final)
        .count();
    assert!(interim >= 2, "{receipts:#?}");
    assert_eq!(finals, 1);
    assert_eq!(summary.n_final, 1);
    // Consecutive periods that cover the run.
    for pair in receipts.windows(2) {
        assert_eq!(pair[1].period_start_ms, pair[0].period_end_ms, "{pair:#?}");
    }
    // Priced by the one built-in policy (the plugin host's fallback): a job without GPUs
    // costs nothing, and every receipt names the policy and its settings.
    for receipt in &receipts {
        assert_eq!(
            receipt.pricing_policy_sha256,
            plinth_plugin_host::fallback::pricing_sha256(&config.pricing)
        );
        assert_eq!(receipt.price.currency, config.pricing.currency);
        assert_eq!(receipt.price.amount_micros, 0, "{receipt:?}");
    }
    let billed_ms: u64 = receipts.iter().map(|r| r.usage.wall_ms).sum();
    assert!((1900..6000).contains(&billed_ms), "billed {billed_ms} ms");
}
