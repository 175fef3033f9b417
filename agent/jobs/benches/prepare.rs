//! Criterion benchmarks of the per-job CPU work that sits on the start path
//! once the image is cached: parsing and validating a job spec, building the
//! runtime spec, applying CDI edits (fixture vendor, /dev/null devices),
//! and verifying layer unpacking of a small layer.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use oci_spec::image::ImageConfiguration;
use plinth_jobs::bundle::{BundleInputs, build_spec};
use plinth_jobs::cdi::{CdiRegistry, CdiSpec};
use plinth_jobs::image::{ImageRecord, ImportedImage};
use plinth_jobs::spec::JobSpec;
use plinth_jobs::unpack::{UnpackLimits, Unpacker};

const SPEC: &str = r#"{"format":"plinth-job/1","image":{"source":"oci-layout","path":"/var/lib/plinth/import/img"},
"command":["/bin/sh","-c","echo hi"],"env":{"A":"1","B":"2"},"gpus":{"count":2},
"resources":{"cpu":4.0,"memory_bytes":1073741824,"pids":512,"max_duration_s":3600}}"#;

/// TEST FIXTURE: a fake vendor whose "GPUs" are /dev/null.
const CDI: &str = r#"{"cdiVersion":"0.6.0","kind":"test.plinth.invalid/gpu",
"containerEdits":{"env":["FIXTURE=1"]},
"devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/fixture0","hostPath":"/dev/null"}]}},
{"name":"1","containerEdits":{"deviceNodes":[{"path":"/dev/fixture1","hostPath":"/dev/null"}]}}]}"#;

fn benches(c: &mut Criterion) {
    c.bench_function("job spec parse + validate", |b| {
        b.iter(|| JobSpec::from_json(black_box(SPEC.as_bytes())).unwrap())
    });
    let spec = JobSpec::from_json(SPEC.as_bytes()).unwrap();
    let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let image = ImportedImage {
        record: ImageRecord {
            image_id: format!("sha256:{}", "0".repeat(64)),
            config_digest: format!("sha256:{}", "1".repeat(64)),
            config,
            origin: None,
            size_bytes: 0,
        },
        rootfs: "/nonexistent/rootfs".into(),
        cached: true,
    };
    let inputs = BundleInputs {
        container_id: "plinth-bench",
        spec: &spec,
        image: &image,
        scratch_dir: Path::new("/var/lib/plinth/jobs/bench/scratch"),
        cgroups_path: "/plinth/bench",
        limit_swap: true,
    };
    c.bench_function("runtime spec build", |b| {
        b.iter(|| build_spec(black_box(&inputs)).unwrap())
    });
    let mut registry = CdiRegistry::default();
    registry.add(CdiSpec::parse(Path::new("fixture.json"), CDI.as_bytes()).unwrap());
    let runtime_spec = build_spec(&inputs).unwrap();
    let devices = vec![
        "test.plinth.invalid/gpu=0".to_string(),
        "test.plinth.invalid/gpu=1".to_string(),
    ];
    c.bench_function("CDI apply (2 devices)", |b| {
        b.iter(|| {
            registry
                .apply(black_box(&runtime_spec), black_box(&devices))
                .unwrap()
        })
    });
    let mut builder = tar::Builder::new(Vec::new());
    for idx in 0..100 {
        let data = vec![b'x'; 1024];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("dir/f{idx}"), &data[..])
            .unwrap();
    }
    let layer = builder.into_inner().unwrap();
    c.bench_function("unpack 100 x 1 KiB files", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let mut unpacker = Unpacker::new(dir.path(), UnpackLimits::default()).unwrap();
                unpacker.apply_layer("bench", &layer[..], None).unwrap();
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
}

criterion_group!(group, benches);
criterion_main!(group);
