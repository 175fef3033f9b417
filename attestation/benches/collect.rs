//! Collecting a bundle's TPM evidence on a real swtpm (manufactured with EK
//! certificates), split by step: opening the TCTI and ESAPI context, reading the EK
//! certificate from NV, creating the EK from its template (enrollment and the first
//! collection only; cached after), loading the persisted AK, the quote with the PCR
//! read-back, reading the event log, and signing the bundle with an Ed25519 node key;
//! then one whole TPM collection. Skips with a reason without swtpm. Numbers are in
//! docs/attestation.md, "Collecting".
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use plinth_attestation::bundle::model::{
    AgentClaims, Base64Bytes, Evidence, EvidenceBundle, Hex, NodeClaims, Piece, TpmEvidence,
    UnsignedBundle,
};
use plinth_attestation::collect::tpm::{self, TpmCollector, TpmSession, TpmSettings};
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::eventlog::LogBuilder;
use plinth_tests::swtpm::{self, Swtpm};
use ring::signature::{Ed25519KeyPair, KeyPair};

fn collect(c: &mut Criterion) {
    if !swtpm::available("collect benchmark") {
        return;
    }
    let tpm = Swtpm::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A 64-event log, about the size of a small firmware log.
    let mut builder = LogBuilder::new(&[HashAlg::Sha256]).unwrap();
    for event in 0..64u32 {
        builder.measure(event % 8, 0x0d, &[event as u8; 200]);
    }
    let log_path = work.path().join("binary_bios_measurements");
    std::fs::write(&log_path, builder.to_bytes()).unwrap();
    let settings = TpmSettings {
        tcti: tpm.tcti(),
        event_log: log_path.clone(),
        ..TpmSettings::default()
    };
    let binding = [7u8; 32];
    // Create and persist the AK once, outside the measurements.
    TpmSession::open(&settings)
        .unwrap()
        .attestation_key()
        .unwrap();

    let mut group = c.benchmark_group("collect_tpm");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("open", |b| b.iter(|| TpmSession::open(&settings).unwrap()));
    let mut session = TpmSession::open(&settings).unwrap();
    group.bench_function("ek_certificate_nv_read", |b| {
        b.iter(|| session.ek_certificate().unwrap())
    });
    group.bench_function("ek_create_from_template", |b| {
        b.iter(|| session.endorsement_key().unwrap())
    });
    group.bench_function("ak_load", |b| b.iter(|| session.attestation_key().unwrap()));
    group.bench_function("quote_and_pcr_read", |b| {
        b.iter(|| session.quote(&binding).unwrap())
    });
    drop(session);
    group.bench_function("event_log_read", |b| {
        b.iter(|| tpm::read_event_log(&log_path).unwrap())
    });

    let mut collector = TpmCollector::new(settings.clone());
    let collection = collector.collect(&binding, true).unwrap();
    group.bench_function("whole_tpm_collection_ek_cached", |b| {
        b.iter(|| collector.collect(&binding, true).unwrap())
    });

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let claims = NodeClaims {
        node_public_key: Hex(key.public_key().as_ref().try_into().unwrap()),
        hostname: "bench".to_owned(),
        boot_id: "00000000-0000-0000-0000-000000000000".to_owned(),
        agent: AgentClaims {
            version: "0.1.0".to_owned(),
            binary_sha256: Hex([1; 32]),
        },
        config_sha256: Hex([2; 32]),
        plugins: Vec::new(),
        gpus: Vec::new(),
    };
    let evidence = Evidence {
        tpm: Piece::Present(TpmEvidence {
            ak_public: Base64Bytes(collection.ak.public.clone()),
            ak_handle: collection.ak.handle,
            quote: Base64Bytes(collection.quote.attest.clone()),
            signature: Base64Bytes(collection.quote.signature.clone()),
            pcrs: TpmEvidence::banks_from(&collection.quote.pcrs),
            event_log: collection.event_log.present().cloned().map(Base64Bytes),
            ek_certificate: collection.ek_certificate.clone().map(Base64Bytes),
            ek_chain: Vec::new(),
            ek_public: collection.ek_public.clone().map(Base64Bytes),
        }),
        snp: Piece::absent("bench"),
        gpus: Vec::new(),
        capacity: None,
    };
    let nonce = [3u8; 32];
    group.bench_function("bundle_binding_and_sign", |b| {
        b.iter(|| {
            let unsigned = UnsignedBundle::new(
                &nonce,
                time::OffsetDateTime::UNIX_EPOCH,
                claims.clone(),
                evidence.clone(),
            )
            .unwrap();
            EvidenceBundle::sign(unsigned, &key).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, collect);
criterion_main!(benches);
