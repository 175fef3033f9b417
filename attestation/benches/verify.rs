//! Verification throughput: one SNP report with its chain, one GPU report with
//! its chain, one TPM quote, one event-log replay (single-threaded), and batch
//! throughput across all cores. Uses the real vectors ($PLINTH_VECTORS or
//! ../shared/vectors); prints a reason and measures nothing when they are
//! absent. Numbers are recorded in docs/attestation.md.
// criterion's macros generate undocumented pub fns; the harness may panic on
// broken vectors.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plinth_attestation::gpu::spdm::{self, GpuEvidence, SpdmReport};
use plinth_attestation::policy::{GpuPolicy, SnpPolicy, TpmPolicy};
use plinth_attestation::snp::{self, SnpEvidence, SnpReport};
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::eventlog::EventLog;
use plinth_attestation::tpm::pcrs::PcrValues;
use plinth_attestation::tpm::public::TpmPublic;
use plinth_attestation::tpm::quote::{self, Attest, QuoteEvidence, TpmSignature};
use plinth_attestation::x509chain;

const AT: i64 = 1_767_225_600;

/// One verification of one kind of evidence.
type VerifyFn = fn(&Inputs) -> bool;

struct Inputs {
    snp_report: Vec<u8>,
    snp_vcek: Vec<u8>,
    gpu_report: Vec<u8>,
    gpu_chain: Vec<u8>,
    gpu_nonce: Vec<u8>,
    tpm_ak: Vec<u8>,
    tpm_quote: Vec<u8>,
    tpm_sig: Vec<u8>,
    tpm_pcrs: PcrValues,
    eventlog: Vec<u8>,
}

fn vectors() -> Option<PathBuf> {
    let dir = std::env::var_os("PLINTH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    dir.join("MANIFEST.txt").is_file().then_some(dir)
}

fn load(dir: &Path) -> Inputs {
    let read = |rel: &str| std::fs::read(dir.join(rel)).unwrap();
    let gcp: serde_json::Value = serde_json::from_slice(&read(
        "go-attestation/attest/testdata/windows_gcp_shielded_vm.json",
    ))
    .unwrap();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let mut tpm_pcrs = PcrValues::new();
    for pcr in gcp["Log"]["PCRs"].as_array().unwrap() {
        tpm_pcrs
            .entry(HashAlg::Sha1)
            .or_default()
            .insert(pcr["Index"].as_u64().unwrap() as u32, b64(&pcr["Digest"]));
    }
    let gpu =
        "nv-attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata/sample_attestation_data/gpu";
    Inputs {
        snp_report: read("virtee-sev/tests/certs_data/report_milan.hex"),
        snp_vcek: read("virtee-sev/tests/certs_data/vcek_milan.der"),
        gpu_report: read(&format!("{gpu}/hopperAttestationReport.txt")),
        gpu_chain: read(&format!("{gpu}/hopperCertChain.txt")),
        gpu_nonce: hex::decode("27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66")
            .unwrap(),
        tpm_ak: b64(&gcp["AK"]["Public"]),
        tpm_quote: b64(&gcp["Quote"]["Quote"]),
        tpm_sig: b64(&gcp["Quote"]["Signature"]),
        tpm_pcrs,
        eventlog: read("tpm2-tools/test/integration/fixtures/event-arch-linux.bin"),
    }
}

/// Parse and verify one SNP report with its VCEK and the pinned chain.
fn snp_once(i: &Inputs) -> bool {
    let evidence = SnpEvidence {
        report: SnpReport::parse(&i.snp_report).unwrap(),
        vcek_der: i.snp_vcek.clone(),
        chain: None,
    };
    snp::verify(&evidence, &SnpPolicy::default(), AT)
        .unwrap()
        .verified()
}

/// Parse and verify one GPU report with its 5-certificate chain.
fn gpu_once(i: &Inputs) -> bool {
    let evidence = GpuEvidence {
        report: SpdmReport::parse(&i.gpu_report).unwrap(),
        chain: x509chain::parse_bundle(&i.gpu_chain, "chain").unwrap(),
        rims: Vec::new(),
    };
    spdm::verify(&evidence, Some(&i.gpu_nonce), &GpuPolicy::default(), AT)
        .unwrap()
        .verified()
}

/// Parse and verify one TPM quote with its PCR values.
fn tpm_once(i: &Inputs) -> bool {
    let evidence = QuoteEvidence {
        ak: TpmPublic::parse(&i.tpm_ak).unwrap().key,
        attest: Attest::parse(&i.tpm_quote).unwrap(),
        signature: TpmSignature::parse(&i.tpm_sig).unwrap(),
        pcrs: Some(i.tpm_pcrs.clone()),
    };
    quote::verify(&evidence, Some(&[]), &TpmPolicy::default()).verified()
}

/// Parse and replay one event log.
fn eventlog_once(i: &Inputs) -> bool {
    !EventLog::parse(&i.eventlog).unwrap().replay().is_empty()
}

fn bench(c: &mut Criterion) {
    let Some(dir) = vectors() else {
        eprintln!("skipping benchmarks: evidence vectors not found (set PLINTH_VECTORS)");
        return;
    };
    let inputs = load(&dir);
    assert!(snp_once(&inputs) && gpu_once(&inputs) && tpm_once(&inputs) && eventlog_once(&inputs));
    let mut single = c.benchmark_group("single_thread");
    single.throughput(Throughput::Elements(1));
    // Cold: no certificate signature remembered, the whole chain is checked.
    single.bench_function("snp_report_and_chain_cold", |b| {
        b.iter(|| {
            x509chain::clear_signature_cache();
            snp_once(&inputs)
        })
    });
    single.bench_function("gpu_report_and_chain_cold", |b| {
        b.iter(|| {
            x509chain::clear_signature_cache();
            gpu_once(&inputs)
        })
    });
    // Warm: vendor CA signatures verified once per process (a checker's
    // steady state); the report signature and validity are checked each time.
    single.bench_function("snp_report_and_chain", |b| b.iter(|| snp_once(&inputs)));
    single.bench_function("gpu_report_and_chain", |b| b.iter(|| gpu_once(&inputs)));
    // The floor: one ECDSA P-384 signature check with ring.
    let report = SnpReport::parse(&inputs.snp_report).unwrap();
    let vcek = x509chain::parse_cert(&inputs.snp_vcek, "vcek", 0).unwrap();
    let x509chain::RawPublicKey::P384(point) =
        x509chain::raw_public_key(vcek.public_key(), "vcek").unwrap()
    else {
        panic!("vcek is not P-384")
    };
    single.bench_function("ecdsa_p384_verify_only", |b| {
        b.iter(|| report.verify_signature(&point))
    });
    single.bench_function("tpm_quote", |b| b.iter(|| tpm_once(&inputs)));
    single.bench_function("eventlog_replay", |b| b.iter(|| eventlog_once(&inputs)));
    single.finish();

    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let per_thread = 16usize;
    let mut batch = c.benchmark_group(format!("batch_{threads}_threads"));
    batch.throughput(Throughput::Elements((threads * per_thread) as u64));
    let kinds: [(&str, VerifyFn); 3] = [
        ("snp_report_and_chain", snp_once),
        ("gpu_report_and_chain", gpu_once),
        ("tpm_quote", tpm_once),
    ];
    for (name, verify) in kinds {
        batch.bench_function(name, |b| {
            b.iter(|| {
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        scope.spawn(|| (0..per_thread).all(|_| verify(&inputs)));
                    }
                })
            })
        });
    }
    batch.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
