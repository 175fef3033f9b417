//! NVIDIA SPDM reports from real H100, GB100 and NVSwitch devices.

use plinth_attestation::CheckStatus;
use plinth_attestation::gpu::rim::Rim;
use plinth_attestation::gpu::spdm::{self, GpuEvidence, SpdmReport};
use plinth_attestation::policy::GpuPolicy;
use plinth_attestation::x509chain;

use crate::common::{AT_2026, read, vectors};

const SDK: &str = "nv-attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata";
const NVTRUST: &str = "nvtrust/guest_tools/gpu_verifiers/local_gpu_verifier/src/verifier/samples";

pub fn pairs() -> Vec<(String, String, &'static str)> {
    vec![
        (
            format!("{NVTRUST}/hopperAttestationReport.txt"),
            format!("{NVTRUST}/hopperCertChain.txt"),
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        ),
        (
            format!("{SDK}/sample_attestation_data/gpu/hopperAttestationReport.txt"),
            format!("{SDK}/sample_attestation_data/gpu/hopperCertChain.txt"),
            "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66",
        ),
        (
            format!("{SDK}/sample_attestation_data/gpu/blackwellAttestationReport.txt"),
            format!("{SDK}/sample_attestation_data/gpu/blackwellCertChain.txt"),
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        ),
        (
            format!("{SDK}/sample_attestation_data/switch/switchAttestationReport.txt"),
            format!("{SDK}/sample_attestation_data/switch/switchCertChain.txt"),
            "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
        ),
    ]
}

fn evidence(dir: &std::path::Path, report: &str, chain: &str) -> GpuEvidence {
    GpuEvidence {
        report: SpdmReport::parse(&read(dir, report)).unwrap(),
        chain: x509chain::parse_bundle(&read(dir, chain), chain).unwrap(),
        rims: Vec::new(),
    }
}

#[test]
fn positive_vectors_verify_with_nonce() {
    let Some(dir) = vectors() else { return };
    for (report, chain, nonce) in pairs() {
        let ev = evidence(&dir, &report, &chain);
        let nonce = hex::decode(nonce).unwrap();
        let appraisal = spdm::verify(&ev, Some(&nonce), &GpuPolicy::default(), AT_2026).unwrap();
        assert!(appraisal.verified(), "{report}:\n{}", appraisal.to_human());
        let wrong = spdm::verify(&ev, Some(&[0u8; 32]), &GpuPolicy::default(), AT_2026).unwrap();
        let fail: Vec<_> = wrong.failures().map(|c| c.name.clone()).collect();
        assert_eq!(fail, vec!["gpu.nonce"]);
    }
}

#[test]
fn sdk_evidence_json_verifies() {
    let Some(dir) = vectors() else { return };
    let items =
        spdm::parse_sdk_evidence(&read(&dir, &format!("{SDK}/evidence_hopper_590_12.json")))
            .unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    let ev = GpuEvidence {
        report: SpdmReport::parse(&item.report).unwrap(),
        chain: x509chain::parse_bundle(&item.certificate, "evidence json").unwrap(),
        rims: Vec::new(),
    };
    let nonce = hex::decode(&item.nonce).unwrap();
    let appraisal = spdm::verify(&ev, Some(&nonce), &GpuPolicy::default(), AT_2026).unwrap();
    assert!(appraisal.verified(), "{}", appraisal.to_human());
    assert_eq!(
        ev.report.driver_version().as_deref(),
        Some("590.12"),
        "driver version from opaque data"
    );
    let fwid = appraisal
        .checks
        .iter()
        .find(|c| c.name == "gpu.fwid")
        .unwrap();
    assert_eq!(fwid.status, CheckStatus::Pass, "{}", fwid.detail);
}

#[test]
fn invalid_signature_sample_fails() {
    let Some(dir) = vectors() else { return };
    let ev = evidence(
        &dir,
        &format!("{SDK}/sample_attestation_data/gpu/hopperAttestationReportInvalidSignature.txt"),
        &format!("{NVTRUST}/hopperCertChain.txt"),
    );
    let appraisal = spdm::verify(&ev, None, &GpuPolicy::default(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert!(
        fail.contains(&"gpu.signature".to_owned()),
        "{}",
        appraisal.to_human()
    );
}

#[test]
fn every_byte_flip_is_rejected() {
    let Some(dir) = vectors() else { return };
    // Every byte of every report (request, response and signature) is
    // flipped. The certificate chain does not depend on the report bytes, so
    // each flip goes through the parser and the report signature check with
    // the leaf key (what `spdm::verify` runs for `gpu.signature`); one flip
    // per report also goes through the full `spdm::verify`.
    for (report, chain, _) in pairs() {
        let ev = evidence(&dir, &report, &chain);
        let leaf = x509chain::parse_cert(&ev.chain[0], "leaf", 0).unwrap();
        let key = x509chain::raw_public_key(leaf.public_key(), "leaf").unwrap();
        let raw = ev.report.raw.clone();
        let mut full = raw.clone();
        full[raw.len() / 2] ^= 0x01;
        let parsed = SpdmReport::parse_binary(&full).unwrap();
        let flipped_ev = GpuEvidence {
            report: parsed,
            chain: ev.chain.clone(),
            rims: Vec::new(),
        };
        assert!(
            !spdm::verify(&flipped_ev, None, &GpuPolicy::default(), AT_2026)
                .unwrap()
                .verified()
        );
        for idx in 0..raw.len() {
            let mut flipped = raw.clone();
            flipped[idx] ^= 0x01;
            let accepted = match SpdmReport::parse_binary(&flipped) {
                Err(_) => false,
                Ok(parsed) => spdm::verify_report_signature(&parsed, &key).is_ok(),
            };
            assert!(!accepted, "{report}: flipping byte {idx} was accepted");
        }
    }
}

#[test]
fn chain_to_wrong_root_or_swapped_leaf_fails() {
    let Some(dir) = vectors() else { return };
    let p = pairs();
    // Hopper report with the Blackwell chain: signature and FWID fail.
    let mut ev = evidence(&dir, &p[0].0, &p[2].1);
    let appraisal = spdm::verify(&ev, None, &GpuPolicy::default(), AT_2026).unwrap();
    assert!(!appraisal.verified());
    // Chain without its intermediates cannot reach the root.
    let full = x509chain::parse_bundle(&read(&dir, &p[0].1), "chain").unwrap();
    ev = evidence(&dir, &p[0].0, &p[0].1);
    ev.chain = vec![full[0].clone(), full[4].clone()];
    let appraisal = spdm::verify(&ev, None, &GpuPolicy::default(), AT_2026).unwrap();
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["gpu.cert_chain"]);
}

#[test]
fn rim_measurements_compare() {
    let Some(dir) = vectors() else { return };
    let p = pairs();
    // The SDK's H100 report runs the production VBIOS 96.00.5E.00.01: all 12
    // active VBIOS measurements match that RIM.
    let mut ev = evidence(&dir, &p[1].0, &p[1].1);
    ev.rims.push(
        Rim::parse(&read(
            &dir,
            &format!("{NVTRUST}/1010_0200_882_96005E0001_PROD.swidtag"),
        ))
        .unwrap(),
    );
    let appraisal = spdm::verify(&ev, None, &GpuPolicy::default(), AT_2026).unwrap();
    let rim = appraisal
        .checks
        .iter()
        .find(|c| c.name == "gpu.rim")
        .unwrap();
    assert_eq!(rim.status, CheckStatus::Pass, "{}", rim.detail);
    assert!(
        rim.detail.starts_with("12 active measurements match"),
        "{}",
        rim.detail
    );
    // A driver RIM for another driver version: mismatching blocks are named.
    ev.rims.push(
        Rim::parse(&read(
            &dir,
            &format!("{SDK}/NV_GPU_DRIVER_GH100_550.144.03.xml"),
        ))
        .unwrap(),
    );
    let appraisal = spdm::verify(&ev, None, &GpuPolicy::default(), AT_2026).unwrap();
    let rim = appraisal
        .checks
        .iter()
        .find(|c| c.name == "gpu.rim")
        .unwrap();
    assert_eq!(rim.status, CheckStatus::Fail, "{}", rim.detail);
    assert!(
        rim.detail.contains("RIM GH100 550.144.03"),
        "{}",
        rim.detail
    );
    assert!(!rim.detail.contains("96.00.5E.00.01"), "{}", rim.detail);
    // The test-mode RIMs parse.
    for rim in [
        "1010_0200_882_96005E0001_test_no_gpu.swidtag",
        "Driver_RIM_test_no_gpu.swidtag",
    ] {
        let parsed = Rim::parse(&read(&dir, &format!("{NVTRUST}/{rim}"))).unwrap();
        assert!(
            parsed.measurements.iter().filter(|m| m.active).count() >= 12,
            "{rim}"
        );
    }
}

/// The SDK ships reference parses of a GET_MEASUREMENTS request and response
/// (of a capture not included in the vectors): our parses of the real H100
/// reports must agree with them on every field the captures share (request
/// header, block layout, value types and sizes), and every opaque field name
/// in the reference must be one our parser produces.
#[test]
fn parses_agree_with_sdk_reference_parses() {
    let Some(dir) = vectors() else { return };
    let req: serde_json::Value =
        serde_json::from_slice(&read(&dir, &format!("{SDK}/spdm_req_parsed_output.json"))).unwrap();
    let resp: serde_json::Value =
        serde_json::from_slice(&read(&dir, &format!("{SDK}/spdm_parsed_output.json"))).unwrap();
    let hex_u8 = |v: &serde_json::Value| {
        u8::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let ref_blocks = resp["MeasurementRecord"]["MeasurementBlocks"]
        .as_object()
        .unwrap();
    for (report, chain, _) in pairs().into_iter().take(2) {
        let ev = evidence(&dir, &report, &chain);
        let r = &ev.report;
        assert_eq!(r.version, hex_u8(&req["SPDMVersion"]), "{report}");
        assert_eq!(r.raw[1], hex_u8(&req["RequestResponseCode"]));
        assert_eq!(
            r.request_params,
            (hex_u8(&req["Param1"]), hex_u8(&req["Param2"]))
        );
        assert_eq!(r.slot_id, hex_u8(&req["SlotIDParam"]));
        assert_eq!(r.raw[38], hex_u8(&resp["RequestResponseCode"]));
        assert_eq!(
            r.blocks.len() as u64,
            resp["NumberOfBlocks"].as_u64().unwrap()
        );
        let record_len = u32::from_le_bytes([r.raw[42], r.raw[43], r.raw[44], 0]);
        assert_eq!(
            u64::from(record_len),
            resp["MeasurementRecordLength"].as_u64().unwrap()
        );
        assert_eq!(
            r.signature.len() * 2 + 2,
            resp["Signature"].as_str().unwrap().len()
        );
        for block in &r.blocks {
            let reference = &ref_blocks[&block.index.to_string()];
            assert_eq!(
                u64::from(block.value_type),
                reference["DMTFSpecMeasurementValueType"].as_u64().unwrap()
            );
            assert_eq!(
                block.value.len() as u64,
                reference["DMTFSpecMeasurementValueSize"].as_u64().unwrap()
            );
        }
    }
    let ours: Vec<String> = (0..=255u16).map(spdm::opaque_field_name).collect();
    for name in resp["OpaqueData"]["OpaqueDataField"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            ours.contains(name),
            "reference opaque field {name} unknown to the parser"
        );
    }
}

/// The Confidential Containers stack records the H100 report with one 0x00
/// byte after the signature. Built here from the real reports: the
/// signature covers exactly the bytes before it, so it still verifies; the
/// padding is noted in `gpu.trailing_data`, a non-zero byte instead fails it,
/// and `strict_length` refuses even zero padding.
#[test]
fn trailing_zero_padding_verifies_and_is_noted() {
    let Some(dir) = vectors() else { return };
    for (report, chain, nonce) in pairs() {
        let ev = evidence(&dir, &report, &chain);
        let nonce = hex::decode(nonce).unwrap();
        let judge = |bytes: &[u8], policy: &GpuPolicy| {
            let parsed = SpdmReport::parse_binary(bytes).unwrap();
            let ev = GpuEvidence {
                report: parsed,
                chain: ev.chain.clone(),
                rims: Vec::new(),
            };
            spdm::verify(&ev, Some(&nonce), policy, AT_2026).unwrap()
        };
        let trailing = |appraisal: &plinth_attestation::Appraisal| {
            appraisal
                .checks
                .iter()
                .find(|c| c.name == "gpu.trailing_data")
                .cloned()
                .unwrap()
        };
        let unpadded = judge(&ev.report.raw, &GpuPolicy::default());
        assert_eq!(trailing(&unpadded).detail, "no bytes after the signature");

        let mut padded = ev.report.raw.clone();
        padded.push(0x00);
        let parsed = SpdmReport::parse_binary(&padded).unwrap();
        assert_eq!(parsed.trailing, vec![0u8]);
        assert_eq!(parsed.signed_bytes(), ev.report.signed_bytes());
        let appraisal = judge(&padded, &GpuPolicy::default());
        assert!(appraisal.verified(), "{report}:\n{}", appraisal.to_human());
        let check = trailing(&appraisal);
        assert_eq!(check.status, CheckStatus::Pass);
        assert!(
            check.detail.contains("note: 1 byte(s) of zero padding"),
            "{}",
            check.detail
        );
        // As hex text, the way CoCo records it.
        let text = format!("{}00\n", hex::encode(&ev.report.raw));
        assert_eq!(
            SpdmReport::parse(text.as_bytes()).unwrap().trailing,
            vec![0u8]
        );

        let strict = GpuPolicy {
            strict_length: true,
            ..GpuPolicy::default()
        };
        let appraisal = judge(&padded, &strict);
        let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
        assert_eq!(fail, vec!["gpu.trailing_data"], "{report}");
        // strict_length accepts an exact report.
        assert!(judge(&ev.report.raw, &strict).verified());

        for junk in [&[0x01u8][..], &[0x00, 0x00, 0x7f][..]] {
            let mut bad = ev.report.raw.clone();
            bad.extend_from_slice(junk);
            let appraisal = judge(&bad, &GpuPolicy::default());
            let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
            assert_eq!(fail, vec!["gpu.trailing_data"], "{report} + {junk:?}");
            let check = trailing(&appraisal);
            assert!(
                check.detail.contains("not zero padding"),
                "{}",
                check.detail
            );
        }
    }
}
