//! TPM quotes from a real GCP Shielded VM (go-attestation's dump).

use plinth_attestation::policy::{HexBytes, TpmPolicy};
use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::eventlog::{self, EventLog};
use plinth_attestation::tpm::public::TpmPublic;
use plinth_attestation::tpm::quote::{self, Attest, QuoteEvidence, TpmSignature};

use crate::common::vectors;

pub use crate::vectors::{Gcp, gcp};

fn evidence(g: &Gcp, quote_bytes: &[u8], sig_bytes: &[u8]) -> Option<QuoteEvidence> {
    Some(QuoteEvidence {
        ak: TpmPublic::parse(&g.ak).unwrap().key,
        attest: Attest::parse(quote_bytes).ok()?,
        signature: TpmSignature::parse(sig_bytes).ok()?,
        pcrs: Some(g.pcrs.clone()),
    })
}

#[test]
fn gcp_quote_verifies_with_empty_nonce() {
    let Some(dir) = vectors() else { return };
    let g = gcp(&dir);
    let ev = evidence(&g, &g.quote, &g.sig).unwrap();
    let appraisal = quote::verify(&ev, Some(&[]), &TpmPolicy::default());
    assert!(appraisal.verified(), "{}", appraisal.to_human());
    assert_eq!(ev.signature.scheme_name(), "RSASSA-sha1");
    // A wrong nonce is rejected.
    let appraisal = quote::verify(&ev, Some(b"fresh"), &TpmPolicy::default());
    let fail: Vec<_> = appraisal.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fail, vec!["tpm.nonce"]);
}

#[test]
fn gcp_quote_every_byte_flip_rejected() {
    let Some(dir) = vectors() else { return };
    let g = gcp(&dir);
    for (which, len) in [("quote", g.quote.len()), ("sig", g.sig.len())] {
        for idx in 0..len {
            let mut q = g.quote.clone();
            let mut s = g.sig.clone();
            if which == "quote" {
                q[idx] ^= 0x01
            } else {
                s[idx] ^= 0x01
            }
            let accepted = evidence(&g, &q, &s)
                .is_some_and(|ev| quote::verify(&ev, Some(&[]), &TpmPolicy::default()).verified());
            assert!(!accepted, "flipping {which} byte {idx} was accepted");
        }
    }
}

#[test]
fn gcp_pcr_values_and_golden_policy() {
    let Some(dir) = vectors() else { return };
    let g = gcp(&dir);
    let mut ev = evidence(&g, &g.quote, &g.sig).unwrap();
    // A changed PCR value no longer matches the quoted digest.
    ev.pcrs
        .as_mut()
        .unwrap()
        .get_mut(&HashAlg::Sha1)
        .unwrap()
        .get_mut(&7)
        .unwrap()[0] ^= 1;
    let fail: Vec<_> = quote::verify(&ev, Some(&[]), &TpmPolicy::default())
        .failures()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(fail, vec!["tpm.pcr_digest"]);
    let ev = evidence(&g, &g.quote, &g.sig).unwrap();
    let mut policy = TpmPolicy::default();
    policy
        .pcrs
        .entry("sha1".into())
        .or_default()
        .insert("0".into(), HexBytes(g.pcrs[&HashAlg::Sha1][&0].clone()));
    assert!(quote::verify(&ev, Some(&[]), &policy).verified());
    policy
        .pcrs
        .entry("sha1".into())
        .or_default()
        .insert("1".into(), HexBytes(vec![0xab; 20]));
    let fail: Vec<_> = quote::verify(&ev, Some(&[]), &policy)
        .failures()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(fail, vec!["tpm.policy.pcrs"]);
}

#[test]
fn gcp_event_log_replays_to_quoted_pcrs() {
    let Some(dir) = vectors() else { return };
    let g = gcp(&dir);
    let log = EventLog::parse(&g.log).unwrap();
    let replayed = log.replay();
    let checks = eventlog::compare(&log, &replayed, &g.pcrs);
    assert_eq!(checks.len(), 1);
    assert_eq!(
        checks[0].status,
        plinth_attestation::CheckStatus::Pass,
        "{}",
        checks[0].detail
    );
    // Tampering with one PCR names the events behind it.
    let mut tampered = g.pcrs.clone();
    tampered
        .get_mut(&HashAlg::Sha1)
        .unwrap()
        .get_mut(&4)
        .unwrap()[0] ^= 1;
    let checks = eventlog::compare(&log, &replayed, &tampered);
    assert_eq!(checks[0].status, plinth_attestation::CheckStatus::Fail);
    assert!(checks[0].detail.contains("PCR 4:"), "{}", checks[0].detail);
    assert!(
        checks[0]
            .detail
            .contains("EV_EFI_BOOT_SERVICES_APPLICATION"),
        "{}",
        checks[0].detail
    );
}

/// tpm2-tools (`tpm2_quote -m/-s`, `tpm2_createak -u`) and go-tpm /
/// go-attestation (whose output the GCP vector is) write each structure
/// exactly, so a trailing byte is refused; the size-prefixed TPM2B forms
/// are the only other framing accepted.
#[test]
fn tpm_structures_accept_exact_and_size_prefixed_framing_only() {
    let Some(dir) = vectors() else { return };
    let g = gcp(&dir);
    let mut tpm2b_attest = (g.quote.len() as u16).to_be_bytes().to_vec();
    tpm2b_attest.extend(&g.quote);
    assert_eq!(Attest::parse(&tpm2b_attest).unwrap().raw, g.quote);
    for pad in [0x00u8, 0x01] {
        let mut quote_padded = g.quote.clone();
        quote_padded.push(pad);
        let err = Attest::parse(&quote_padded).unwrap_err();
        assert!(
            err.to_string().contains("TPMS_ATTEST: 1 trailing bytes"),
            "{err}"
        );
        let mut sig_padded = g.sig.clone();
        sig_padded.push(pad);
        let err = TpmSignature::parse(&sig_padded).unwrap_err();
        assert!(
            err.to_string().contains("TPMT_SIGNATURE: 1 trailing bytes"),
            "{err}"
        );
        let mut ak_padded = g.ak.clone();
        ak_padded.push(pad);
        assert!(TpmPublic::parse(&ak_padded).is_err());
    }
}
