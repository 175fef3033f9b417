//! End to end through the real agent: a busybox image pushed with skopeo to a real
//! registry (Debian's docker-registry on loopback) and signed cosign-style; the agent
//! configured with `[images]` (the registry, a signing key, a cache bound) pulls it for a
//! job that runc runs; `plinthctl images pull --progress|list|remove|prune` work on the
//! same cache; the job's receipts name the image digest and its signer, and the ledger
//! verifies. An unsigned image is refused with the reason in the job. Skips with a
//! printed reason without root, runc, busybox, docker-registry or skopeo.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Node, stderr};
use plinth_attestation::receipt::{LedgerOptions, Receipt, verify_ledger};
use plinth_tests::registry::{Compression, Registry, SigningKey, busybox_tar, image_layout};

fn wait_for_end(node: &Node, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job: serde_json::Value =
            serde_json::from_str(&node.ctl_ok(&["jobs", "show", id, "--json"])).unwrap();
        let state = job["state"].as_str().unwrap_or_default().to_owned();
        if ["succeeded", "failed", "cancelled", "timed_out"].contains(&state.as_str()) {
            return job;
        }
        assert!(Instant::now() < deadline, "job did not end: {job}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn submit(node: &Node, reference: &str) -> String {
    let spec = serde_json::json!({
        "format": "plinth-job/1",
        "image": {"source": "registry", "reference": reference},
        "command": ["/bin/sh", "-c", "echo hello from the registry"],
        "resources": {"memory_bytes": 67108864u64, "pids": 32, "max_duration_s": 30}
    });
    let file = node.path("spec.json");
    std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
    node.ctl_ok(&[
        "jobs",
        "submit",
        file.to_str().unwrap(),
        "--tenant",
        "t1",
        "--lease",
        "l1",
    ])
    .trim()
    .to_owned()
}

#[test]
fn a_signed_registry_image_runs_and_its_receipts_name_it() {
    if !plinth_tests::jobs_available("the registry end-to-end test")
        || !plinth_tests::registry::available("the registry end-to-end test")
    {
        return;
    }
    let node = Node::new("");
    let registry = Registry::start_plain(&node.path("registry")).unwrap();
    let layout = node.path("layout");
    let layer = busybox_tar(&node.path("busybox"), &["sh", "echo"]).unwrap();
    let image = image_layout(&layout, "v1", &[(layer, Compression::Zstd)]).unwrap();
    registry.push(&layout, "v1", "tenants/busybox:v1").unwrap();
    let unsigned = image_layout(
        &node.path("unsigned"),
        "v1",
        &[(
            busybox_tar(&node.path("busybox2"), &["sh"]).unwrap(),
            Compression::Gzip,
        )],
    )
    .unwrap();
    registry
        .push(&node.path("unsigned"), "v1", "tenants/unsigned:v1")
        .unwrap();
    let key = SigningKey::generate().unwrap();
    let key_path = node.path("release.pub");
    std::fs::write(&key_path, &key.public_pem).unwrap();
    let sig_tag = format!("{}.sig", image.manifest_digest.replace(':', "-"));
    key.sign_into(&node.path("sig"), "sig", &image.manifest_digest, "busybox")
        .unwrap();
    registry
        .push(
            &node.path("sig"),
            "sig",
            &format!("tenants/busybox:{sig_tag}"),
        )
        .unwrap();
    node.configure(&format!(
        "[images]\ncache_max_bytes = 1073741824\n[images.keys]\nrelease = \"{}\"\n\
         [[images.registries]]\nhost = \"{}\"\ninsecure = true\nsigned_by = [\"release\"]\n",
        key_path.display(),
        registry.addr
    ));
    let agent = node.start();
    let reference = format!("{}/tenants/busybox:v1", registry.addr);

    // plinthctl images pull --progress, then list.
    let output = node.ctl(&["images", "pull", &reference, "--progress"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("pulled {}", image.manifest_digest)),
        "{stdout}"
    );
    assert!(stdout.contains("signed by release"), "{stdout}");
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&node.ctl_ok(&["images", "list", "--json"])).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["image_id"], image.manifest_digest.as_str());
    assert_eq!(listed[0]["origin"]["signer"]["key"], "release");

    // A job on it runs under runc.
    let id = submit(&node, &reference);
    let job = wait_for_end(&node, &id);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", agent.log_tail());
    assert_eq!(
        job["image"]["manifest_digest"],
        image.manifest_digest.as_str()
    );
    assert_eq!(job["image"]["signer"], "release");
    let logs = node.ctl_ok(&["jobs", "logs", &id]);
    assert!(logs.contains("hello from the registry"), "{logs}");
    // Its final receipt names the image and the signer, and the ledger verifies.
    let ledger = node.ctl_ok(&["receipts", "export"]);
    let summary = verify_ledger(ledger.as_bytes(), &LedgerOptions::default()).unwrap();
    assert!(summary.n_receipts >= 1);
    let last: Receipt = serde_json::from_str(ledger.lines().last().unwrap()).unwrap();
    let receipt_image = last.image.unwrap();
    assert_eq!(receipt_image.manifest_digest, image.manifest_digest);
    assert_eq!(receipt_image.signer.as_deref(), Some("release"));
    assert_eq!(receipt_image.reference.as_deref(), Some(reference.as_str()));

    // An unsigned image is refused before unpacking, with the reason in the job.
    let refused = submit(&node, &format!("{}/tenants/unsigned:v1", registry.addr));
    let job = wait_for_end(&node, &refused);
    assert_eq!(job["state"], "failed", "{job}");
    let reason = job["reason"].as_str().unwrap();
    assert!(
        reason.contains("is not signed by any of the required keys (release)"),
        "{reason}"
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&node.ctl_ok(&["images", "list", "--json"])).unwrap();
    assert!(
        listed
            .iter()
            .all(|i| i["image_id"] != unsigned.manifest_digest.as_str()),
        "{listed:?}"
    );

    // remove and prune (the job ended, so nothing is in use).
    let removed = node.ctl_ok(&["images", "remove", &image.manifest_digest]);
    assert!(removed.contains(&image.manifest_digest), "{removed}");
    assert!(node.ctl_ok(&["images", "list"]).contains("empty"));
    let pruned = node.ctl_ok(&["images", "prune"]);
    assert!(pruned.contains("removed 0 images"), "{pruned}");
}
