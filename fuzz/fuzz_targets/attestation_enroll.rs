//! Fuzz the enrollment documents: requests and responses come from nodes,
//! credential files from tpm2-tools. Any bytes parse or give an error; a
//! parsed request is appraised (with no trusted EK CA) without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_attestation::enroll::{
    self, AkRecord, EkAnchors, EnrollmentChallenge, EnrollmentRequest, EnrollmentResponse,
    EnrollmentState,
};
use plinth_attestation::tpm::credential::Credential;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = EnrollmentRequest::parse(data) {
        let checked = enroll::appraise_request(&request, &EkAnchors::default(), 1_767_225_600);
        assert!(checked.ek.is_none() || checked.appraisal.verified());
    }
    let _ = EnrollmentResponse::parse(data);
    let _ = EnrollmentChallenge::parse(data);
    let _ = EnrollmentState::parse(data);
    let _ = AkRecord::parse(data);
    if let Ok(credential) = Credential::from_tpm2_tools(data) {
        assert_eq!(credential.to_tpm2_tools(), data);
    }
});
