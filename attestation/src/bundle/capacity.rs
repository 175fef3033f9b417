//! The capacity claim of a bundle: `evidence.capacity`, an optional saved
//! capacity-challenge transcript (`plinth-challenge/1`, integers and hex strings
//! only, so canonical JSON holds it).
//!
//! It is bound as the rest of the evidence is: the node signature covers the
//! whole unsigned bundle, so the transcript is the node key's statement, at the
//! bundle's nonce, of its latest completed challenge (the challenge's own seed
//! was the challenger's, so the transcript's freshness is the challenge's, not
//! the nonce's). [`appraise`] re-checks it with the challenge verifier: every
//! check keeps its `challenge.*` name under the subject `capacity`; a member
//! that is not a transcript fails `capacity.parse`. No member: no appraisal
//! (bundles without one verify as before).

use crate::bundle::model::{Evidence, EvidenceBundle};
use crate::challenge::{self, ChallengePolicy, Transcript};
use crate::check::{Appraisal, Aspect, Check};

/// The subject of the capacity appraisal.
pub const SUBJECT: &str = "capacity";

/// Puts `transcript` into `evidence` as its capacity claim.
pub fn include(evidence: &mut Evidence, transcript: &Transcript) -> Result<(), serde_json::Error> {
    evidence.capacity = Some(serde_json::to_value(transcript)?);
    Ok(())
}

/// The capacity appraisal of `bundle` under `policy`, or None when the bundle has
/// no capacity claim.
pub fn appraise(bundle: &EvidenceBundle, policy: &ChallengePolicy) -> Option<Appraisal> {
    let value = bundle.evidence.capacity.as_ref()?;
    let mut appraisal = match serde_json::from_value::<Transcript>(value.clone()) {
        Ok(transcript) => challenge::verify(&transcript, policy),
        Err(err) => {
            let mut appraisal = Appraisal::new(SUBJECT);
            appraisal.push(Check::fail(
                "capacity.parse",
                Aspect::Hardware,
                format!("evidence.capacity is not a capacity-challenge transcript: {err}"),
            ));
            appraisal
        }
    };
    appraisal.subject = SUBJECT.to_owned();
    Some(appraisal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::{key, unsigned};
    use crate::bundle::verify::{BundleContext, verify};
    use crate::bundle::{EvidenceBundle, UnsignedBundle};
    use crate::challenge::{CpuProver, DEFAULT_ROWS, run_local};
    use crate::check::CheckStatus;
    use crate::policy::Policy;

    fn signed(edit: impl FnOnce(&mut Evidence)) -> EvidenceBundle {
        let key = key();
        let mut unsigned: UnsignedBundle = unsigned(&key);
        edit(&mut unsigned.evidence);
        EvidenceBundle::sign(unsigned, &key).unwrap()
    }

    fn capacity_of(bundle: &EvidenceBundle) -> Option<Appraisal> {
        let policy = Policy::default();
        let context = BundleContext {
            nonce: Some(&[0x42; 32]),
            policy: &policy,
            ak_records: &[],
            at: 0,
        };
        let report = verify(bundle, &context);
        // The node signature covers the claim, whatever it holds.
        let head = &report.appraisals[0];
        assert!(
            head.checks
                .iter()
                .any(|check| check.name == "bundle.signature" && check.status == CheckStatus::Pass),
            "{head:?}"
        );
        report
            .appraisals
            .into_iter()
            .find(|appraisal| appraisal.subject == SUBJECT)
    }

    #[test]
    fn an_honest_transcript_verifies_a_bad_one_fails_a_named_check_and_absent_is_fine() {
        let transcript = run_local(&CpuProver, 64, 60_000, DEFAULT_ROWS).unwrap();

        // Absent: no capacity appraisal, as for bundles made before the claim.
        assert!(capacity_of(&signed(|_| {})).is_none());

        let bundle = signed(|evidence| include(evidence, &transcript).unwrap());
        let appraisal = capacity_of(&bundle).unwrap();
        assert!(appraisal.verified(), "{appraisal:?}");
        assert!(
            appraisal
                .checks
                .iter()
                .any(|check| check.name == "challenge.freivalds")
        );
        // It survives the wire: parse the signed JSON back and verify again.
        let reparsed = EvidenceBundle::parse(&serde_json::to_vec(&bundle).unwrap()).unwrap();
        assert!(capacity_of(&reparsed).unwrap().verified());

        // One wrong entry of C·r: the Freivalds check fails, by name.
        let mut forged = transcript.clone();
        forged.response.cr[3] = forged.response.cr[3].wrapping_add(1);
        let appraisal =
            capacity_of(&signed(|evidence| include(evidence, &forged).unwrap())).unwrap();
        assert!(!appraisal.verified());
        assert!(
            appraisal
                .failures()
                .any(|check| check.name == "challenge.freivalds"),
            "{appraisal:?}"
        );

        // Not a transcript at all: capacity.parse.
        let appraisal = capacity_of(&signed(|evidence| {
            evidence.capacity = Some(serde_json::json!({"n": 4096}));
        }))
        .unwrap();
        assert_eq!(
            appraisal.failures().next().map(|check| check.name.as_str()),
            Some("capacity.parse")
        );
    }
}
