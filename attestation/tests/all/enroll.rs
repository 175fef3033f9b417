//! AK enrollment against real swtpm TPMs: credentials made by the Rust
//! TPM2_MakeCredential (RSA and ECC EKs) are recovered by
//! `tpm2_activatecredential`, agree in shape with `tpm2_makecredential`'s,
//! and cannot be recovered by a second TPM; requests with an untrusted EK, a
//! wrong AK Name or an AK that may leave its TPM are refused by name.

use plinth_attestation::bundle::model::{Base64Bytes, HexVec};
use plinth_attestation::check::CheckStatus;
use plinth_attestation::enroll::{self, EkAnchors, EkTrust, EnrollmentResponse, RESPONSE_FORMAT};
use plinth_attestation::tpm::credential::{self, Credential};
use plinth_attestation::tpm::public::TpmPublic;
use plinth_tests::swtpm::{self, Swtpm};

use crate::host::{self, Host};

fn status(appraisal: &plinth_attestation::Appraisal, name: &str) -> CheckStatus {
    appraisal
        .checks
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {}", appraisal.to_human()))
        .status
}

#[test]
fn rsa_ek_certificate_enrollment_round_trips_through_a_real_tpm() {
    if !swtpm::available("AK enrollment") {
        return;
    }
    let host = Host::new(Swtpm::start().unwrap(), "rsa", "rsa", 1);
    assert!(
        host.ek_certificate.is_some(),
        "swtpm_setup certified the RSA EK"
    );
    let record = host::enroll(&host, &host::local_ca_anchors());
    assert_eq!(record.ek.trust, EkTrust::Certificate);
    assert_eq!(record.ak_name.0, host.ak_name);
    assert_eq!(record.node_public_key, host.node_public_key());
    assert!(record.ek.ek_certificate_sha256.is_some());
    // The record survives its own serialisation.
    let text = serde_json::to_vec_pretty(&record).unwrap();
    assert_eq!(enroll::AkRecord::parse(&text).unwrap(), record);
}

#[test]
fn ecc_ek_pinned_enrollment_round_trips_through_a_real_tpm() {
    if !swtpm::available("AK enrollment") {
        return;
    }
    let host = Host::new(Swtpm::start().unwrap(), "ecc", "ecc", 2);
    let ek_name = TpmPublic::parse(&host.ek_public).unwrap().name().unwrap();
    // Without a certificate and without a pin the EK is not trusted.
    let request = host.enrollment_request();
    let refused = enroll::appraise_request(&request, &EkAnchors::default(), 0);
    assert_eq!(
        status(&refused.appraisal, "enroll.ek_trust"),
        CheckStatus::Fail
    );
    assert!(refused.ek.is_none());
    let anchors = EkAnchors {
        cas: Vec::new(),
        pinned_names: vec![ek_name.clone()],
    };
    let record = host::enroll(&host, &anchors);
    assert_eq!(record.ek.trust, EkTrust::Pinned);
    assert_eq!(record.ek.ek_name.0, ek_name);
}

/// The Rust credential and tpm2-tools' for the same EK and Name: both
/// activate on the TPM, and their parts have the same sizes.
#[test]
fn credentials_match_tpm2_makecredential_in_shape_and_both_activate() {
    if !swtpm::available("MakeCredential cross-check") {
        return;
    }
    for (ek_alg, seed) in [("rsa", 3u8), ("ecc", 4u8)] {
        let host = Host::new(Swtpm::start().unwrap(), ek_alg, "rsa", seed);
        let ek = TpmPublic::parse(&host.ek_public).unwrap();
        let secret = [0x5au8; 32];
        let ours = credential::make_credential(&ek, &host.ak_name, &secret).unwrap();
        assert_eq!(
            host.activate_file(&ours.to_tpm2_tools()).as_deref(),
            Some(&secret[..]),
            "{ek_alg}: the TPM recovers the Rust credential"
        );
        std::fs::write(host.path("secret.in"), secret).unwrap();
        let output = std::process::Command::new("tpm2_makecredential")
            .args([
                "-T",
                "none",
                "-e",
                "ek.pub",
                "-s",
                "secret.in",
                "-o",
                "tools.cred",
                "-n",
            ])
            .arg(hex::encode(&host.ak_name))
            .current_dir(host.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let tools_file = std::fs::read(host.path("tools.cred")).unwrap();
        let tools = Credential::from_tpm2_tools(&tools_file).unwrap();
        assert_eq!(
            tools.id_object.len(),
            ours.id_object.len(),
            "{ek_alg} credentialBlob"
        );
        assert_eq!(
            tools.encrypted_secret.len(),
            ours.encrypted_secret.len(),
            "{ek_alg} secret"
        );
        assert_eq!(
            host.activate_file(&tools_file).as_deref(),
            Some(&secret[..])
        );
        // A blob changed in one byte fails the TPM's integrity HMAC.
        let mut tampered = ours.clone();
        tampered.id_object[5] ^= 1;
        assert_eq!(host.activate_file(&tampered.to_tpm2_tools()), None);
    }
}

#[test]
fn a_second_tpm_cannot_answer_and_a_wrong_secret_is_refused() {
    if !swtpm::available("AK enrollment") {
        return;
    }
    let host = Host::new(Swtpm::start().unwrap(), "rsa", "rsa", 5);
    let other = Host::new(Swtpm::start_distinct().unwrap(), "rsa", "rsa", 5);
    let anchors = host::local_ca_anchors();
    let now = time::OffsetDateTime::now_utc();
    let request = host.enrollment_request();
    let checked = enroll::appraise_request(&request, &anchors, now.unix_timestamp());
    let (ek, identity) = checked.ek.unwrap();
    let issued = enroll::issue_challenge(&request, &ek, identity, now).unwrap();
    // The second TPM has another EK seed: it cannot unwrap the credential.
    assert_eq!(other.activate(&issued.challenge), None);
    // A response with any other secret fails enroll.credential.
    let response = EnrollmentResponse {
        format: RESPONSE_FORMAT.to_owned(),
        ak_name: request.ak_name.clone(),
        secret: HexVec(vec![0; 32]),
    };
    let (appraisal, record) = enroll::finish(&issued.state, &response, now, 600);
    assert_eq!(status(&appraisal, "enroll.credential"), CheckStatus::Fail);
    assert!(record.is_none());
    // The right secret, too late, fails enroll.freshness.
    let secret = host.activate(&issued.challenge).unwrap();
    let late = EnrollmentResponse {
        secret: HexVec(secret),
        ..response
    };
    let (appraisal, record) = enroll::finish(
        &issued.state,
        &late,
        now + time::Duration::seconds(601),
        600,
    );
    assert_eq!(status(&appraisal, "enroll.freshness"), CheckStatus::Fail);
    assert_eq!(status(&appraisal, "enroll.credential"), CheckStatus::Pass);
    assert!(record.is_none());
}

#[test]
fn requests_with_a_wrong_name_or_a_weak_ak_are_refused() {
    if !swtpm::available("AK enrollment") {
        return;
    }
    let host = Host::new(Swtpm::start().unwrap(), "rsa", "rsa", 6);
    let anchors = host::local_ca_anchors();
    let at = time::OffsetDateTime::now_utc().unix_timestamp();

    let mut wrong_name = host.enrollment_request();
    wrong_name.ak_name.0[5] ^= 1;
    let checked = enroll::appraise_request(&wrong_name, &anchors, at);
    assert_eq!(
        status(&checked.appraisal, "enroll.ak_name"),
        CheckStatus::Fail
    );
    assert!(checked.ek.is_none());

    // An ordinary signing key (not restricted) is no AK.
    let output = host::script(
        &host.swtpm,
        host.dir.path(),
        "tpm2_createprimary -C o -G rsa2048:rsassa-sha256:null -a 'sign|userwithauth|sensitivedataorigin|fixedtpm|fixedparent' -c weak.ctx >/dev/null
         tpm2_readpublic -c weak.ctx -o weak.pub >/dev/null",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let weak_public = std::fs::read(host.path("weak.pub")).unwrap();
    let weak = TpmPublic::parse(&weak_public).unwrap();
    let mut weak_request = host.enrollment_request();
    weak_request.ak_public = Base64Bytes(weak_public);
    weak_request.ak_name = HexVec(weak.name().unwrap());
    let checked = enroll::appraise_request(&weak_request, &anchors, at);
    assert_eq!(
        status(&checked.appraisal, "enroll.ak_name"),
        CheckStatus::Pass
    );
    let attributes = checked
        .appraisal
        .checks
        .iter()
        .find(|check| check.name == "enroll.ak_attributes")
        .unwrap();
    assert_eq!(attributes.status, CheckStatus::Fail);
    assert!(
        attributes.detail.contains("restricted"),
        "{}",
        attributes.detail
    );
    assert!(checked.ek.is_none());
}
