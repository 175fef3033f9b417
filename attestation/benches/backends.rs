//! ring against aws-lc-rs on the signatures a verifier checks most: ECDSA
//! P-384 with SHA-384 (SNP reports, NVIDIA SPDM reports and device
//! certificates) and RSA-PSS-4096 with SHA-384 (the AMD ARK -> ASK -> VCEK
//! chain). The inputs are real: the Milan VCEK certificate (signed by the
//! ASK, RSA-PSS) and the H100 device chain (P-384), from the vectors
//! ($PLINTH_VECTORS or ../shared/vectors). Numbers are in docs/attestation.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use plinth_attestation::x509chain;
use x509_parser::prelude::FromDer;

/// What one certificate signature check needs.
struct Signed {
    message: Vec<u8>,
    signature: Vec<u8>,
    issuer_key: Vec<u8>,
}

fn vectors() -> Option<PathBuf> {
    let dir = std::env::var_os("PLINTH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    dir.join("MANIFEST.txt").is_file().then_some(dir)
}

fn signed(child: &[u8], issuer: &[u8]) -> Signed {
    let (_, child) = x509_parser::certificate::X509Certificate::from_der(child).unwrap();
    let (_, issuer) = x509_parser::certificate::X509Certificate::from_der(issuer).unwrap();
    Signed {
        message: child.tbs_certificate.as_ref().to_vec(),
        signature: child.signature_value.data.to_vec(),
        issuer_key: issuer.public_key().subject_public_key.data.to_vec(),
    }
}

fn backends(c: &mut Criterion) {
    let Some(dir) = vectors() else {
        eprintln!("skipping: evidence vectors not found (set PLINTH_VECTORS)");
        return;
    };
    // RSA-PSS-4096 / SHA-384: the Milan ASK signs the VCEK.
    let vcek = std::fs::read(dir.join("virtee-sev/tests/certs_data/vcek_milan.der")).unwrap();
    let ask_ark = x509chain::parse_bundle(
        &std::fs::read(dir.join("virtee-sev/tests/certs_data/cert_chain_milan")).unwrap(),
        "chain",
    )
    .unwrap();
    let rsa = signed(&vcek, &ask_ark[0]);
    // ECDSA P-384 / SHA-384: the H100 device chain's first link.
    let gpu_chain = x509chain::parse_bundle(
        &std::fs::read(dir.join(
            "nv-attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata/sample_attestation_data/gpu/hopperCertChain.txt",
        ))
        .unwrap(),
        "chain",
    )
    .unwrap();
    let ecdsa = signed(&gpu_chain[0], &gpu_chain[1]);

    // Both backends accept both signatures before anything is timed.
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PSS_2048_8192_SHA384,
        &rsa.issuer_key,
    )
    .verify(&rsa.message, &rsa.signature)
    .unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA384,
        &rsa.issuer_key,
    )
    .verify(&rsa.message, &rsa.signature)
    .unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P384_SHA384_ASN1,
        &ecdsa.issuer_key,
    )
    .verify(&ecdsa.message, &ecdsa.signature)
    .unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1,
        &ecdsa.issuer_key,
    )
    .verify(&ecdsa.message, &ecdsa.signature)
    .unwrap();

    let mut group = c.benchmark_group("signature_backend");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("ring/ecdsa_p384_sha384", |b| {
        b.iter(|| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P384_SHA384_ASN1,
                &ecdsa.issuer_key,
            )
            .verify(&ecdsa.message, &ecdsa.signature)
            .is_ok()
        })
    });
    group.bench_function("aws-lc-rs/ecdsa_p384_sha384", |b| {
        b.iter(|| {
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1,
                &ecdsa.issuer_key,
            )
            .verify(&ecdsa.message, &ecdsa.signature)
            .is_ok()
        })
    });
    group.bench_function("ring/rsa_pss_4096_sha384", |b| {
        b.iter(|| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PSS_2048_8192_SHA384,
                &rsa.issuer_key,
            )
            .verify(&rsa.message, &rsa.signature)
            .is_ok()
        })
    });
    group.bench_function("aws-lc-rs/rsa_pss_4096_sha384", |b| {
        b.iter(|| {
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA384,
                &rsa.issuer_key,
            )
            .verify(&rsa.message, &rsa.signature)
            .is_ok()
        })
    });
    group.finish();
}

criterion_group!(benches, backends);
criterion_main!(benches);
