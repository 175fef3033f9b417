//! Bundles built from the recorded real evidence in the vectors: the Milan
//! SNP report with its VCEK, the H100 SPDM report with its 5-certificate
//! chain, the GCP Shielded VM TPM quote with its PCRs, and a real event log.
//! Recorded evidence cannot carry a binding we compute, so such bundles fail
//! the report-data checks by name; they exercise every other check, and their
//! size and cost are those of a real host. Shared by the tests and by the
//! batch benchmark (`benches/batch.rs` includes this file).

use std::path::Path;

use base64::Engine as _;
use plinth_attestation::bundle::model::{
    AgentClaims, Base64Bytes, CcMode, Evidence, EvidenceBundle, GpuClaim, GpuEvidence, Hex,
    NodeClaims, Piece, PluginClaim, SnpEvidence, TpmEvidence, UnsignedBundle,
};
use plinth_attestation::gpu::spdm::SpdmReport;
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::pcrs::PcrValues;
use plinth_attestation::x509chain;
use ring::signature::{Ed25519KeyPair, KeyPair};

const GPU_DIR: &str =
    "nv-attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata/sample_attestation_data/gpu";

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|err| panic!("reading vector {rel}: {err}"))
}

fn hex_text(bytes: &[u8]) -> Vec<u8> {
    plinth_attestation::bytes::decode_hex_text(std::str::from_utf8(bytes).unwrap()).unwrap()
}

/// The recorded Milan SNP report + VCEK, and the H100 report + chain, as
/// bundle pieces (GPU index 0).
pub fn snp_and_gpu(dir: &Path) -> (SnpEvidence, GpuEvidence) {
    let snp = SnpEvidence {
        report: Base64Bytes(hex_text(&read(
            dir,
            "virtee-sev/tests/certs_data/report_milan.hex",
        ))),
        vcek: Base64Bytes(read(dir, "virtee-sev/tests/certs_data/vcek_milan.der")),
        chain: Vec::new(),
    };
    (snp, gpu(dir, 0))
}

/// The recorded H100 report + chain as the evidence of GPU `index`.
pub fn gpu(dir: &Path, index: u32) -> GpuEvidence {
    let report = hex_text(&read(
        dir,
        &format!("{GPU_DIR}/hopperAttestationReport.txt"),
    ));
    let parsed = SpdmReport::parse(&report).unwrap();
    let chain = x509chain::parse_bundle(
        &read(dir, &format!("{GPU_DIR}/hopperCertChain.txt")),
        "chain",
    )
    .unwrap();
    GpuEvidence {
        index,
        uuid: format!("GPU-{index:08x}-0000-0000-0000-000000000000"),
        arch: "hopper".to_owned(),
        report: Base64Bytes(report),
        certificates: chain.into_iter().map(Base64Bytes).collect(),
        cc_mode: CcMode::On,
        driver_version: parsed.driver_version().unwrap_or_default(),
        vbios_version: parsed.vbios_version().unwrap_or_default(),
    }
}

/// The recorded GCP Shielded VM quote (RSA AK, SHA-1 PCRs) and a real event log.
pub fn tpm(dir: &Path) -> TpmEvidence {
    let gcp: serde_json::Value = serde_json::from_slice(&read(
        dir,
        "go-attestation/attest/testdata/windows_gcp_shielded_vm.json",
    ))
    .unwrap();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let mut pcrs = PcrValues::new();
    for pcr in gcp["Log"]["PCRs"].as_array().unwrap() {
        pcrs.entry(HashAlg::Sha1)
            .or_default()
            .insert(pcr["Index"].as_u64().unwrap() as u32, b64(&pcr["Digest"]));
    }
    TpmEvidence {
        ak_public: Base64Bytes(b64(&gcp["AK"]["Public"])),
        ak_handle: 0x8101_0002,
        quote: Base64Bytes(b64(&gcp["Quote"]["Quote"])),
        signature: Base64Bytes(b64(&gcp["Quote"]["Signature"])),
        pcrs: TpmEvidence::banks_from(&pcrs),
        event_log: Some(Base64Bytes(b64(&gcp["Log"]["Raw"]))),
        ek_certificate: None,
        ek_chain: Vec::new(),
        ek_public: None,
    }
}

/// Claims for a host with one GPU claim per evidence entry.
pub fn claims(key: &Ed25519KeyPair, hostname: &str, gpus: &[GpuEvidence]) -> NodeClaims {
    let mut node_public_key = [0u8; 32];
    node_public_key.copy_from_slice(key.public_key().as_ref());
    NodeClaims {
        node_public_key: Hex(node_public_key),
        hostname: hostname.to_owned(),
        boot_id: "0b5e1c7a-9a51-4a8e-8f0e-3c2d1b0a9f87".to_owned(),
        agent: AgentClaims {
            version: "0.1.0".to_owned(),
            binary_sha256: Hex([0xa1; 32]),
        },
        config_sha256: Hex([0xc0; 32]),
        plugins: vec![PluginClaim {
            kind: "pricing".to_owned(),
            name: "flat-rate".to_owned(),
            version: "1.0.0".to_owned(),
            sha256: Hex([0x51; 32]),
        }],
        gpus: gpus
            .iter()
            .map(|gpu| GpuClaim {
                index: gpu.index,
                uuid: gpu.uuid.clone(),
                model: "NVIDIA H100 80GB HBM3".to_owned(),
                driver_version: gpu.driver_version.clone(),
                vbios_version: gpu.vbios_version.clone(),
                cc_mode: gpu.cc_mode,
            })
            .collect(),
    }
}

/// A signed bundle with the given SNP and GPU pieces (no TPM).
pub fn bundle_with(
    key: &Ed25519KeyPair,
    nonce: &[u8],
    snp: Option<SnpEvidence>,
    gpus: Vec<GpuEvidence>,
) -> EvidenceBundle {
    let claims = claims(key, "recorded-host", &gpus);
    let evidence = Evidence {
        tpm: Piece::absent("recorded evidence: no TPM"),
        snp: snp.map_or_else(|| Piece::absent("not an SNP guest"), Piece::Present),
        gpus: gpus.into_iter().map(Piece::Present).collect(),
        capacity: None,
    };
    let unsigned =
        UnsignedBundle::new(nonce, time::OffsetDateTime::now_utc(), claims, evidence).unwrap();
    EvidenceBundle::sign(unsigned, key).unwrap()
}

/// An eight-GPU host's bundle: TPM quote and event log, SNP report, eight
/// GPU reports with chains, signed claims.
pub fn eight_gpu_bundle(
    dir: &Path,
    key: &Ed25519KeyPair,
    nonce: &[u8],
    hostname: &str,
) -> EvidenceBundle {
    let (snp, _) = snp_and_gpu(dir);
    let gpus: Vec<GpuEvidence> = (0..8).map(|index| gpu(dir, index)).collect();
    let claims = claims(key, hostname, &gpus);
    let evidence = Evidence {
        tpm: Piece::Present(tpm(dir)),
        snp: Piece::Present(snp),
        gpus: gpus.into_iter().map(Piece::Present).collect(),
        capacity: None,
    };
    let unsigned =
        UnsignedBundle::new(nonce, time::OffsetDateTime::now_utc(), claims, evidence).unwrap();
    EvidenceBundle::sign(unsigned, key).unwrap()
}

/// The unsigned form of an edited bundle, its binding recomputed.
pub fn unsign(bundle: EvidenceBundle) -> UnsignedBundle {
    UnsignedBundle::new(
        &bundle.nonce.0,
        time::OffsetDateTime::now_utc(),
        bundle.claims,
        bundle.evidence,
    )
    .unwrap()
}
