//! Registry pull benchmarks against a real loopback registry (Debian's docker-registry):
//!
//! 1. throughput: a multi-layer image (LAYERS layers of LAYER_MIB MiB of incompressible
//!    data, gzip) pulled by plinth (download + verify into staging, then unpack into the
//!    cache) against `skopeo copy docker://… oci:DIR` of the same image (download +
//!    verify + write, no unpack); the download phase of plinth's pull is reported
//!    on its own (until the last layer is verified on disk);
//! 2. cold start: a busybox image pulled, unpacked and started by the engine, from
//!    `prepare` until the container's first instruction (busybox `adjtimex`, which
//!    prints the kernel clock), each iteration with an empty image cache. Needs root,
//!    runc and busybox-static; skipped with a message otherwise.
//!
//! A custom harness (not criterion): each sample is seconds long and the comparison is
//! against an external tool. Run: `cargo bench -p plinth-jobs --bench registry_pull`
//! (ITERATIONS, LAYERS, LAYER_MIB env: defaults 3, 8, 16).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/jobs/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plinth_jobs::engine::Engine;
use plinth_jobs::image::{ImageStore, ImportProgress};
use plinth_jobs::registry::{Puller, RegistryHost, RegistrySettings};
use plinth_jobs::spec::JobSpec;
use plinth_tests::registry::{Compression, Registry, busybox_tar, image_layout, tar_of};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn insecure(addr: &str) -> RegistrySettings {
    RegistrySettings {
        registries: vec![RegistryHost {
            host: addr.to_owned(),
            insecure: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn stamp_us(output: &str) -> u64 {
    let field = |name: &str| -> u64 {
        output
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .map(|v| v.trim().parse::<u64>().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name} in {output:?}"))
    };
    field("time.tv_sec:") * 1_000_000 + field("time.tv_usec:")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !plinth_tests::registry::available("the registry pull benchmark") {
        return;
    }
    let iterations = env_or("ITERATIONS", 3);
    let n_layers = env_or("LAYERS", 8);
    let layer_mib = env_or("LAYER_MIB", 16);
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_plain(&dir.path().join("registry")).unwrap();
    let layout = dir.path().join("layout");
    let rng = ring::rand::SystemRandom::new();
    let layers: Vec<(Vec<u8>, Compression)> = (0..n_layers)
        .map(|idx| {
            let mut data = vec![0u8; layer_mib * 1024 * 1024];
            ring::rand::SecureRandom::fill(&rng, &mut data).unwrap();
            let name = format!("layer{idx}.bin");
            (
                tar_of(&[(name.as_str(), &data, 0o644)]).unwrap(),
                Compression::Gzip,
            )
        })
        .collect();
    image_layout(&layout, "v1", &layers).unwrap();
    registry.push(&layout, "v1", "bench/big:v1").unwrap();
    let blob_bytes: u64 = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let mib = blob_bytes as f64 / (1024.0 * 1024.0);
    let reference = format!("{}/bench/big:v1", registry.addr);
    let settings = insecure(&registry.addr);

    let (mut ours_total, mut ours_download, mut skopeo) = (Vec::new(), Vec::new(), Vec::new());
    for iteration in 0..iterations {
        let cache = dir.path().join(format!("cache{iteration}"));
        let store = ImageStore::new(&cache, Default::default()).unwrap();
        let started = Instant::now();
        let mut downloaded = Duration::ZERO;
        let mut done_layers = 0;
        Puller::new(settings.clone())
            .pull(&store, &reference, None, None, &mut |event| {
                if let ImportProgress::Download { bytes, total, .. } = event
                    && bytes == total
                    && total > 0
                {
                    done_layers += 1;
                    if done_layers == n_layers {
                        downloaded = started.elapsed();
                    }
                }
            })
            .unwrap();
        ours_total.push(started.elapsed().as_secs_f64());
        ours_download.push(downloaded.as_secs_f64());
        std::fs::remove_dir_all(&cache).unwrap();

        let out = dir.path().join(format!("skopeo{iteration}"));
        let started = Instant::now();
        let status = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:v1", out.display()))
            .status()
            .unwrap();
        assert!(status.success());
        skopeo.push(started.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&out).unwrap();
    }
    let (total, download, skopeo) = (
        median(&mut ours_total),
        median(&mut ours_download),
        median(&mut skopeo),
    );
    println!(
        "pull of {n_layers} layers, {mib:.0} MiB compressed, loopback registry, median of {iterations}:"
    );
    println!(
        "  plinth download+verify        {download:>7.3} s  {:>7.1} MiB/s",
        mib / download
    );
    println!(
        "  plinth download+verify+unpack {total:>7.3} s  {:>7.1} MiB/s",
        mib / total
    );
    println!(
        "  skopeo copy docker:// oci:    {skopeo:>7.3} s  {:>7.1} MiB/s",
        mib / skopeo
    );

    if !common::runtime_available() {
        return;
    }
    let busybox = dir.path().join("busybox-layout");
    let layer = busybox_tar(&dir.path().join("busybox"), &["adjtimex"]).unwrap();
    image_layout(&busybox, "v1", &[(layer, Compression::Gzip)]).unwrap();
    registry.push(&busybox, "v1", "bench/busybox:v1").unwrap();
    let env = common::TestEnv::new(None);
    let spec = JobSpec::from_json(
        serde_json::json!({
            "format": "plinth-job/1",
            "image": {"source": "registry", "reference": format!("{}/bench/busybox:v1", registry.addr)},
            "command": ["/bin/adjtimex"],
            "resources": {"memory_bytes": 67108864u64, "max_duration_s": 30}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let mut cold = Vec::new();
    for iteration in 0..iterations.max(5) {
        let mut config = env.config.clone();
        config.registry = insecure(&registry.addr);
        config.image_store = env.dir.path().join(format!("cold-cache{iteration}"));
        let engine = Engine::new(config.clone()).unwrap();
        let job_id = format!("cold{iteration}");
        let t0 = now_us();
        engine.prepare(&job_id, &spec, &[], &mut |_| {}).unwrap();
        engine.start(&job_id).unwrap();
        engine.wait(&job_id, Duration::from_secs(30)).unwrap();
        let out = std::fs::read_to_string(engine.log_path(&job_id, false).unwrap()).unwrap();
        cold.push((stamp_us(&out) as f64 - t0 as f64) / 1000.0);
        engine.remove(&job_id).unwrap();
        std::fs::remove_dir_all(&config.image_store).unwrap();
    }
    let n = cold.len();
    println!(
        "cold start (pull + unpack + first instruction) of a busybox registry image, median of {n}: {:.1} ms",
        median(&mut cold)
    );
}
