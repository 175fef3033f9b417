//! SEV-SNP reports from real Milan machines.

use plinth_attestation::policy::{HexBytes, MinTcb, SnpPolicy};
use plinth_attestation::snp::{self, SnpEvidence, SnpReport};
use plinth_attestation::x509chain;

use crate::common::{AT_2026, read, vectors};

fn evidence(dir: &std::path::Path, report: &str, vcek: &str) -> SnpEvidence {
    SnpEvidence {
        report: SnpReport::parse(&read(dir, report)).unwrap(),
        vcek_der: read(dir, vcek),
        chain: None,
    }
}

/// The go-sev-guest report was launched with the DEBUG policy bit, so its
/// appraisal needs `allow_debug`; the default policy must reject it.
fn lenient() -> SnpPolicy {
    SnpPolicy {
        allow_debug: true,
        ..SnpPolicy::default()
    }
}

const PAIRS: &[(&str, &str)] = &[
    (
        "virtee-sev/tests/certs_data/report_milan.hex",
        "virtee-sev/tests/certs_data/vcek_milan.der",
    ),
    (
        "go-sev-guest/verify/testdata/attestation.bin",
        "go-sev-guest/verify/testdata/vcek.testcer",
    ),
];

#[test]
fn positive_vectors_verify() {
    let Some(dir) = vectors() else { return };
    for (report, vcek) in PAIRS {
        let ev = evidence(&dir, report, vcek);
        let appraisal = snp::verify(&ev, &lenient(), AT_2026).unwrap();
        assert!(appraisal.verified(), "{report}:\n{}", appraisal.to_human());
        assert!(
            appraisal
                .checks
                .iter()
                .any(|c| c.name == "snp.chip_id"
                    && c.status == plinth_attestation::CheckStatus::Pass)
        );
    }
}

#[test]
fn explicit_chain_file_verifies_and_must_end_at_pinned_ark() {
    let Some(dir) = vectors() else { return };
    let mut ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    ev.chain = Some(
        x509chain::parse_bundle(
            &read(&dir, "virtee-sev/tests/certs_data/cert_chain_milan"),
            "chain",
        )
        .unwrap(),
    );
    assert!(
        snp::verify(&ev, &SnpPolicy::default(), AT_2026)
            .unwrap()
            .verified()
    );
    // A Genoa chain does not sign a Milan VCEK.
    ev.chain = Some(
        x509chain::parse_bundle(
            &read(&dir, "go-sev-guest/verify/trust/ask_ark_genoa.pem"),
            "chain",
        )
        .unwrap(),
    );
    let appraisal = snp::verify(&ev, &SnpPolicy::default(), AT_2026).unwrap();
    assert!(!appraisal.verified());
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let Some(dir) = vectors() else { return };
    for (report, vcek) in PAIRS {
        let ev = evidence(&dir, report, vcek);
        let raw = ev.report.raw.clone();
        let vcek_der = ev.vcek_der.clone();
        for idx in 0..raw.len() {
            let mut flipped = raw.clone();
            flipped[idx] ^= 0x01;
            let accepted = match SnpReport::parse(&flipped) {
                Err(_) => false,
                Ok(report) => {
                    let ev = SnpEvidence {
                        report,
                        vcek_der: vcek_der.clone(),
                        chain: None,
                    };
                    snp::verify(&ev, &lenient(), AT_2026).unwrap().verified()
                }
            };
            assert!(!accepted, "{report}: flipping byte {idx:#x} was accepted");
        }
    }
}

#[test]
fn expired_and_wrong_vcek_are_rejected() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    // 2040: after the VCEK's notAfter.
    let appraisal = snp::verify(&ev, &SnpPolicy::default(), 2_208_988_800).unwrap();
    assert!(!appraisal.verified());
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.cert_chain"]);
    // The other machine's VCEK.
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[1].1);
    let appraisal = snp::verify(&ev, &SnpPolicy::default(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert!(fail.contains(&"snp.signature".to_owned()), "{fail:?}");
    assert!(fail.contains(&"snp.chip_id".to_owned()), "{fail:?}");
}

#[test]
fn policy_checks() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[1].0, PAIRS[1].1);
    let tcb_ok = MinTcb {
        bootloader: 2,
        tee: 0,
        snp: 5,
        microcode: 68,
        fmc: 0,
    };
    let policy = SnpPolicy {
        min_tcb: Some(tcb_ok),
        measurements: vec![HexBytes(ev.report.measurement.to_vec())],
        report_data: Some(HexBytes(ev.report.report_data.to_vec())),
        ..lenient()
    };
    assert!(snp::verify(&ev, &policy, AT_2026).unwrap().verified());
    let debug_refused = snp::verify(&ev, &SnpPolicy::default(), AT_2026).unwrap();
    let fail: Vec<_> = debug_refused.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.policy.debug"]);
    let strict = SnpPolicy {
        min_tcb: Some(MinTcb { snp: 6, ..tcb_ok }),
        measurements: vec![HexBytes(vec![0; 48])],
        report_data: Some(HexBytes(vec![1])),
        ..lenient()
    };
    let appraisal = snp::verify(&ev, &strict, AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(
        fail,
        vec![
            "snp.policy.min_tcb",
            "snp.policy.measurement",
            "snp.policy.report_data"
        ]
    );
}

#[test]
fn turin_vcek_chains_to_pinned_turin_roots_and_carries_fmc() {
    let Some(dir) = vectors() else { return };
    let vcek = read(&dir, "virtee-sev/tests/certs_data/vcek_turin.der");
    let (ask, ark) = snp::pinned_chain(snp::Product::Turin, false).unwrap();
    let summary = x509chain::verify_chain(&[vcek.clone(), ask], &[ark], AT_2026).unwrap();
    assert_eq!(summary.subjects, vec!["SEV-VCEK", "SEV-Turin", "ARK-Turin"]);
    // The Milan roots do not sign it.
    let (milan_ask, milan_ark) = snp::pinned_chain(snp::Product::Milan, false).unwrap();
    assert!(x509chain::verify_chain(&[vcek.clone(), milan_ask], &[milan_ark], AT_2026).is_err());
    // Turin VCEKs carry the FMC SPL and an 8-byte hwID.
    let cert = x509chain::parse_cert(&vcek, "vcek", 0).unwrap();
    let fmc = x509chain::extension_value(&cert, "1.3.6.1.4.1.3704.1.3.9")
        .and_then(x509chain::der_integer_u64);
    assert!(fmc.is_some());
    let hwid = x509chain::extension_value(&cert, "1.3.6.1.4.1.3704.1.4").unwrap();
    assert_eq!(x509chain::der_octet_string(hwid).unwrap_or(hwid).len(), 8);
}

#[test]
fn remembered_chain_signatures_do_not_mask_a_changed_certificate() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    assert!(snp::verify(&ev, &lenient(), AT_2026).unwrap().verified());
    // Same report, VCEK with one byte of its signature changed: the chain
    // check must run again and fail, although the good VCEK was seen before.
    let mut vcek = ev.vcek_der.clone();
    let last = vcek.len() - 5;
    vcek[last] ^= 0x01;
    let tampered = SnpEvidence {
        vcek_der: vcek,
        ..ev.clone()
    };
    let appraisal = snp::verify(&tampered, &lenient(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.cert_chain"]);
}

/// No real version-3 report is in the vectors: a v2 report relabelled as v3
/// with CPUID bytes checks the v3 parsing and product cross-check (its
/// signature then fails, as it must).
#[test]
fn version3_cpuid_is_parsed_and_cross_checked() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(&dir, PAIRS[0].0, PAIRS[0].1);
    let mut raw = ev.report.raw.clone();
    raw[0] = 3;
    raw[0x188] = 0x19; // family: Zen 3/4
    raw[0x189] = 0x01; // model: Milan
    raw[0x18A] = 0x01; // stepping
    let report = SnpReport::parse(&raw).unwrap();
    assert_eq!(report.cpuid, Some((0x19, 0x01, 0x01)));
    let appraisal = snp::verify(
        &SnpEvidence {
            report,
            ..ev.clone()
        },
        &lenient(),
        AT_2026,
    )
    .unwrap();
    let product = appraisal
        .checks
        .iter()
        .find(|c| c.name == "snp.product")
        .unwrap();
    assert_eq!(
        product.status,
        plinth_attestation::CheckStatus::Pass,
        "{}",
        product.detail
    );
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["snp.signature"]);
    // A Turin CPUID under a Milan VCEK is a product mismatch.
    raw[0x188] = 0x1A;
    raw[0x189] = 0x02;
    let report = SnpReport::parse(&raw).unwrap();
    let appraisal = snp::verify(&SnpEvidence { report, ..ev }, &lenient(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert!(fail.contains(&"snp.product".to_owned()), "{fail:?}");
}
