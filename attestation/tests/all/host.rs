//! A test host with a real TPM: a swtpm (from `plinth_tests::swtpm`) driven by
//! tpm2-tools, with an EK and an AK persisted, and the node key. It builds
//! enrollment requests, answers challenges with `tpm2_activatecredential`,
//! measures a TCG event log into the TPM and quotes with a bundle's binding,
//! so the tests see what a verifier sees from a real host.

use std::path::{Path, PathBuf};
use std::process::Command;

use plinth_attestation::bundle::model::{
    AgentClaims, Base64Bytes, Evidence, EvidenceBundle, Hex, HexVec, NodeClaims, Piece,
    PluginClaim, TpmEvidence, UnsignedBundle, binding_digest,
};
use plinth_attestation::enroll::{
    self, AkRecord, EnrollmentChallenge, EnrollmentRequest, EnrollmentResponse, REQUEST_FORMAT,
    RESPONSE_FORMAT,
};
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::credential::Credential;
use plinth_attestation::tpm::eventlog::LogBuilder;
use plinth_attestation::tpm::pcrs;
use plinth_attestation::tpm::quote::Attest;
use plinth_tests::swtpm::Swtpm;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The persistent handles the host uses.
pub const EK_HANDLE: &str = "0x81018001";
/// The AK's persistent handle.
pub const AK_HANDLE: u32 = 0x8101_8002;

/// The PCRs quoted: the event log measures into 8, 9 and 14.
pub const QUOTED_PCRS: &str = "sha256:0,8,9,14";

/// One host: its TPM, a work directory, its keys.
pub struct Host {
    /// The TPM.
    pub swtpm: Swtpm,
    /// Files of tpm2-tools.
    pub dir: tempfile::TempDir,
    /// The node key.
    pub node_key: Ed25519KeyPair,
    /// EK public area (TPM2B_PUBLIC).
    pub ek_public: Vec<u8>,
    /// EK certificate (DER) from NV, for RSA EKs of a manufactured TPM.
    pub ek_certificate: Option<Vec<u8>>,
    /// AK public area (TPM2B_PUBLIC).
    pub ak_public: Vec<u8>,
    /// AK Name.
    pub ak_name: Vec<u8>,
    /// The event log measured into the TPM so far.
    pub log: LogBuilder,
}

/// Runs a bash script of tpm2-tools commands against `swtpm` in `dir`, then
/// flushes transient objects (sessions the script made are its business).
pub fn script(swtpm: &Swtpm, dir: &Path, text: &str) -> std::process::Output {
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", text])
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", swtpm.tcti())
        .output()
        .unwrap();
    let _ = Command::new("tpm2_flushcontext")
        .arg("-t")
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", swtpm.tcti())
        .output();
    output
}

fn script_ok(swtpm: &Swtpm, dir: &Path, text: &str) {
    let output = script(swtpm, dir, text);
    assert!(
        output.status.success(),
        "script failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Host {
    /// A host on `swtpm` with an EK of `ek_alg` (`rsa` or `ecc`) and an AK
    /// of `ak_alg` (`rsa` or `ecc`), both persisted; `seed` makes the node key.
    pub fn new(swtpm: Swtpm, ek_alg: &str, ak_alg: &str, seed: u8) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scheme = if ak_alg == "rsa" { "rsassa" } else { "ecdsa" };
        script_ok(
            &swtpm,
            dir.path(),
            &format!(
                "tpm2_createek -c ek.ctx -G {ek_alg} -u ek.pub >/dev/null
                 tpm2_flushcontext -t
                 tpm2_evictcontrol -C o -c ek.ctx {EK_HANDLE} >/dev/null
                 tpm2_flushcontext -t
                 tpm2_createak -C {EK_HANDLE} -c ak.ctx -G {ak_alg} -g sha256 -s {scheme} -u ak.pub -n ak.name >/dev/null
                 tpm2_flushcontext -t
                 tpm2_evictcontrol -C o -c ak.ctx {AK_HANDLE:#x} >/dev/null"
            ),
        );
        // swtpm_setup certifies the RSA 2048 EK at its TCG NV index.
        let ek_certificate = if ek_alg == "rsa" {
            let output = script(&swtpm, dir.path(), "tpm2_nvread -C o 0x01c00002 -o ek.der");
            output
                .status
                .success()
                .then(|| std::fs::read(dir.path().join("ek.der")).unwrap())
        } else {
            None
        };
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        Self {
            ek_public: read("ek.pub"),
            ak_public: read("ak.pub"),
            ak_name: read("ak.name"),
            ek_certificate,
            node_key: Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap(),
            log: LogBuilder::new(&[HashAlg::Sha256]).unwrap(),
            swtpm,
            dir,
        }
    }

    /// A path in the work directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The node's public key.
    pub fn node_public_key(&self) -> Hex<32> {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.node_key.public_key().as_ref());
        Hex(key)
    }

    /// The enrollment request `plinthctl attest enroll` would print.
    pub fn enrollment_request(&self) -> EnrollmentRequest {
        EnrollmentRequest {
            format: REQUEST_FORMAT.to_owned(),
            node_public_key: self.node_public_key(),
            hostname: "gpu-host-1".to_owned(),
            ek_public: Base64Bytes(self.ek_public.clone()),
            ek_certificate: self.ek_certificate.clone().map(Base64Bytes),
            ek_chain: Vec::new(),
            ak_public: Base64Bytes(self.ak_public.clone()),
            ak_name: HexVec(self.ak_name.clone()),
            ak_handle: AK_HANDLE,
        }
    }

    /// TPM2_ActivateCredential of a challenge; None when the TPM refuses.
    pub fn activate(&self, challenge: &EnrollmentChallenge) -> Option<Vec<u8>> {
        let credential = Credential {
            id_object: challenge.id_object.0.clone(),
            encrypted_secret: challenge.encrypted_secret.0.clone(),
        };
        self.activate_file(&credential.to_tpm2_tools())
    }

    /// TPM2_ActivateCredential of a `tpm2_makecredential` file.
    pub fn activate_file(&self, file: &[u8]) -> Option<Vec<u8>> {
        std::fs::write(self.path("cred.bin"), file).unwrap();
        let _ = std::fs::remove_file(self.path("secret.out"));
        let output = script(
            &self.swtpm,
            self.dir.path(),
            &format!(
                "tpm2_startauthsession --policy-session -S session.ctx
                 tpm2_policysecret -S session.ctx -c e >/dev/null
                 status=0
                 tpm2_activatecredential -c {AK_HANDLE:#x} -C {EK_HANDLE} -i cred.bin -o secret.out -P session:session.ctx || status=$?
                 tpm2_flushcontext session.ctx
                 exit $status"
            ),
        );
        output
            .status
            .success()
            .then(|| std::fs::read(self.path("secret.out")).unwrap())
    }

    /// Measures boot-like events into the log and extends them into the TPM.
    pub fn boot(&mut self) {
        self.log
            .measure(8, 0xD, b"grub_cmd linux /vmlinuz root=/dev/sda1")
            .measure(9, 0xD, b"/boot/vmlinuz-6.1.0")
            .measure(14, 0xD, b"MokList");
        self.extend_pending(0);
    }

    /// Extends into the TPM every log extension from `from` on.
    pub fn extend_pending(&self, from: usize) {
        for extension in &self.log.extensions()[from..] {
            script_ok(
                &self.swtpm,
                self.dir.path(),
                &format!(
                    "tpm2_pcrextend {}:{}={}",
                    extension.pcr,
                    extension.bank.name(),
                    hex::encode(&extension.digest)
                ),
            );
        }
    }

    /// Extends PCR `pcr` (sha256) with `digest` without logging it.
    pub fn extend_unlogged(&self, pcr: u32, digest: [u8; 32]) {
        script_ok(
            &self.swtpm,
            self.dir.path(),
            &format!("tpm2_pcrextend {pcr}:sha256={}", hex::encode(digest)),
        );
    }

    /// Quotes [`QUOTED_PCRS`] with `qualifying` as qualifying data: TPMS_ATTEST,
    /// TPMT_SIGNATURE and the PCR values of the quote.
    pub fn quote(&self, qualifying: &[u8]) -> (Vec<u8>, Vec<u8>, pcrs::PcrValues) {
        script_ok(
            &self.swtpm,
            self.dir.path(),
            &format!(
                "tpm2_quote -c {AK_HANDLE:#x} -l {QUOTED_PCRS} -q {} -m quote.msg -s quote.sig -o quote.pcrs -g sha256 >/dev/null",
                hex::encode(qualifying)
            ),
        );
        let attest_bytes = std::fs::read(self.path("quote.msg")).unwrap();
        let attest = Attest::parse(&attest_bytes).unwrap();
        let values = pcrs::parse_pcr_file(
            &std::fs::read(self.path("quote.pcrs")).unwrap(),
            &attest.pcr_select,
        )
        .unwrap();
        (
            attest_bytes,
            std::fs::read(self.path("quote.sig")).unwrap(),
            values,
        )
    }

    /// Reads the quoted PCRs now (`tpm2_pcrread`).
    pub fn read_pcrs(&self, selection: &[pcrs::PcrSelection]) -> pcrs::PcrValues {
        script_ok(
            &self.swtpm,
            self.dir.path(),
            &format!("tpm2_pcrread {QUOTED_PCRS} -o now.pcrs >/dev/null"),
        );
        pcrs::parse_pcr_file(&std::fs::read(self.path("now.pcrs")).unwrap(), selection).unwrap()
    }

    /// The node's claims.
    pub fn claims(&self) -> NodeClaims {
        NodeClaims {
            node_public_key: self.node_public_key(),
            hostname: "gpu-host-1".to_owned(),
            boot_id: "5a1f0e2c-7d1b-4f0a-9c33-0d5e8c1a2b3c".to_owned(),
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
            gpus: Vec::new(),
        }
    }

    /// A bundle for `nonce`, collected as the agent does: the binding first,
    /// then a quote over it, the PCRs and the event log.
    pub fn bundle(&self, nonce: &[u8]) -> EvidenceBundle {
        let claims = self.claims();
        let binding = binding_digest(nonce, &claims).unwrap();
        let (quote, signature, values) = self.quote(&binding);
        let evidence = self.tpm_evidence(quote, signature, &values);
        self.sign(nonce, claims, evidence)
    }

    /// TPM evidence from a quote.
    pub fn tpm_evidence(
        &self,
        quote: Vec<u8>,
        signature: Vec<u8>,
        values: &pcrs::PcrValues,
    ) -> Evidence {
        Evidence {
            tpm: Piece::Present(TpmEvidence {
                ak_public: Base64Bytes(self.ak_public.clone()),
                ak_handle: AK_HANDLE,
                quote: Base64Bytes(quote),
                signature: Base64Bytes(signature),
                pcrs: TpmEvidence::banks_from(values),
                event_log: Some(Base64Bytes(self.log.to_bytes())),
                ek_certificate: self.ek_certificate.clone().map(Base64Bytes),
                ek_chain: Vec::new(),
                ek_public: Some(Base64Bytes(self.ek_public.clone())),
            }),
            snp: Piece::absent("no /dev/sev-guest: not an SEV-SNP guest"),
            gpus: Vec::new(),
            capacity: None,
        }
    }

    /// Signs a bundle with the node key.
    pub fn sign(&self, nonce: &[u8], claims: NodeClaims, evidence: Evidence) -> EvidenceBundle {
        let unsigned =
            UnsignedBundle::new(nonce, time::OffsetDateTime::now_utc(), claims, evidence).unwrap();
        EvidenceBundle::sign(unsigned, &self.node_key).unwrap()
    }
}

/// The EK CAs of every manufactured swtpm (the local CA's intermediate and root).
pub fn local_ca_anchors() -> enroll::EkAnchors {
    let bundle = Swtpm::ca().unwrap().bundle().unwrap();
    enroll::EkAnchors {
        cas: plinth_attestation::x509chain::parse_bundle(&bundle, "local ca").unwrap(),
        pinned_names: Vec::new(),
    }
}

/// Enrolls `host`'s AK with the library's verifier half (challenge, real
/// ActivateCredential, finish) and returns the AK record.
pub fn enroll(host: &Host, anchors: &enroll::EkAnchors) -> AkRecord {
    let now = time::OffsetDateTime::now_utc();
    let request = host.enrollment_request();
    let checked = enroll::appraise_request(&request, anchors, now.unix_timestamp());
    assert!(
        checked.appraisal.verified(),
        "{}",
        checked.appraisal.to_human()
    );
    let (ek, identity) = checked.ek.unwrap();
    let issued = enroll::issue_challenge(&request, &ek, identity, now).unwrap();
    let secret = host
        .activate(&issued.challenge)
        .expect("ActivateCredential");
    let response = EnrollmentResponse {
        format: RESPONSE_FORMAT.to_owned(),
        ak_name: request.ak_name.clone(),
        secret: HexVec(secret),
    };
    let (appraisal, record) = enroll::finish(&issued.state, &response, now, 600);
    assert!(appraisal.verified(), "{}", appraisal.to_human());
    record.unwrap()
}
