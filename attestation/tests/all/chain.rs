//! Certificate chain rules (issuer/subject names, basicConstraints CA,
//! pathLenConstraint, keyUsage keyCertSign) on crafted chains, through the
//! library and through `plinth-verify tpm-quote --ek-cert --ek-ca`.

use std::process::Command;

use plinth_attestation::x509chain::{X509ChainError, verify_chain};

use crate::certgen::{self, KU_CRL_SIGN, KU_DIGITAL_SIGNATURE, Key, Spec};
use crate::common::{AT_2026, vectors};

/// A root -> intermediate -> leaf chain built from three specs.
struct Crafted {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    leaf: Vec<u8>,
}

fn crafted(root: &Spec, intermediate: &Spec, leaf: &Spec) -> Crafted {
    let (root_key, int_key, leaf_key) = (Key::new(), Key::new(), Key::new());
    Crafted {
        root: certgen::cert(root, &root_key, &root_key),
        intermediate: certgen::cert(intermediate, &int_key, &root_key),
        leaf: certgen::cert(leaf, &leaf_key, &int_key),
    }
}

fn specs() -> (Spec, Spec, Spec) {
    (
        Spec::root("Test Root CA"),
        Spec {
            basic_constraints: Some((true, Some(0))),
            ..Spec::ca("Test Intermediate CA", "Test Root CA")
        },
        Spec::leaf("Test EK", "Test Intermediate CA"),
    )
}

fn verify(c: &Crafted) -> Result<Vec<String>, X509ChainError> {
    verify_chain(
        &[c.leaf.clone(), c.intermediate.clone()],
        std::slice::from_ref(&c.root),
        AT_2026,
    )
    .map(|summary| summary.subjects)
}

#[test]
fn well_formed_crafted_chain_verifies() {
    let (root, int, leaf) = specs();
    let c = crafted(&root, &int, &leaf);
    assert_eq!(
        verify(&c).unwrap(),
        vec!["Test EK", "Test Intermediate CA", "Test Root CA"]
    );
    // With the root inside the chain too.
    verify_chain(
        &[c.leaf.clone(), c.intermediate.clone(), c.root.clone()],
        std::slice::from_ref(&c.root),
        AT_2026,
    )
    .unwrap();
    // A CA without keyUsage is unrestricted (RFC 5280 4.2.1.3).
    let c = crafted(
        &root,
        &Spec {
            key_usage: None,
            ..int.clone()
        },
        &leaf,
    );
    verify(&c).unwrap();
}

#[test]
fn issuer_without_basic_constraints_is_refused() {
    let (root, int, leaf) = specs();
    let c = crafted(
        &root,
        &Spec {
            basic_constraints: None,
            ..int
        },
        &leaf,
    );
    let err = verify(&c).unwrap_err();
    assert!(
        matches!(&err, X509ChainError::NotCa { subject, .. } if subject == "Test Intermediate CA"),
        "{err}"
    );
    assert!(err.to_string().contains("no basicConstraints"), "{err}");
}

#[test]
fn issuer_with_ca_false_is_refused() {
    let (root, int, leaf) = specs();
    let c = crafted(
        &root,
        &Spec {
            basic_constraints: Some((false, None)),
            ..int
        },
        &leaf,
    );
    let err = verify(&c).unwrap_err();
    assert!(err.to_string().contains("cA = FALSE"), "{err}");
}

#[test]
fn issuer_without_key_cert_sign_is_refused() {
    let (root, int, leaf) = specs();
    let c = crafted(
        &root,
        &Spec {
            key_usage: Some(KU_DIGITAL_SIGNATURE | KU_CRL_SIGN),
            ..int
        },
        &leaf,
    );
    let err = verify(&c).unwrap_err();
    assert!(
        matches!(&err, X509ChainError::KeyUsage { subject, .. } if subject == "Test Intermediate CA"),
        "{err}"
    );
}

#[test]
fn chain_longer_than_path_len_is_refused() {
    let (root, int, leaf) = specs();
    // The root allows no intermediate below it, but there is one.
    let c = crafted(
        &Spec {
            basic_constraints: Some((true, Some(0))),
            ..root.clone()
        },
        &int,
        &leaf,
    );
    let err = verify(&c).unwrap_err();
    assert!(
        matches!(
            &err,
            X509ChainError::PathLen { subject, path_len: 0, below: 1 } if subject == "Test Root CA"
        ),
        "{err}"
    );
    // pathLen 1 on the root allows it.
    let c = crafted(
        &Spec {
            basic_constraints: Some((true, Some(1))),
            ..root.clone()
        },
        &int,
        &leaf,
    );
    verify(&c).unwrap();
    // An intermediate with pathLen 0 cannot have another CA below it.
    let (root_key, k1, k2, leaf_key) = (Key::new(), Key::new(), Key::new(), Key::new());
    let root_der = certgen::cert(&root, &root_key, &root_key);
    let int1 = certgen::cert(&int, &k1, &root_key); // pathLen 0
    let int2 = certgen::cert(&Spec::ca("Test Sub CA", "Test Intermediate CA"), &k2, &k1);
    let leaf_der = certgen::cert(&Spec::leaf("Test EK", "Test Sub CA"), &leaf_key, &k2);
    let err = verify_chain(&[leaf_der, int2, int1], &[root_der], AT_2026).unwrap_err();
    assert!(
        matches!(&err, X509ChainError::PathLen { subject, .. } if subject == "Test Intermediate CA"),
        "{err}"
    );
}

#[test]
fn wrong_issuer_name_is_refused_even_with_a_good_signature() {
    let (root, int, leaf) = specs();
    // Signed by the intermediate's key, but naming another issuer.
    let c = crafted(
        &root,
        &int,
        &Spec {
            issuer: "Someone Else".to_owned(),
            ..leaf
        },
    );
    let err = verify(&c).unwrap_err();
    assert!(
        matches!(&err, X509ChainError::IssuerMismatch { subject, .. } if subject == "Test EK"),
        "{err}"
    );
}

#[test]
fn leaf_used_as_an_issuer_fails() {
    let (root, int, leaf) = specs();
    let (root_key, int_key, leaf_key, child_key) = (Key::new(), Key::new(), Key::new(), Key::new());
    let root_der = certgen::cert(&root, &root_key, &root_key);
    let int_der = certgen::cert(
        &Spec {
            basic_constraints: Some((true, None)),
            ..int
        },
        &int_key,
        &root_key,
    );
    for leaf_spec in [
        leaf.clone(),
        // A leaf without basicConstraints at all.
        Spec {
            basic_constraints: None,
            ..leaf.clone()
        },
    ] {
        let leaf_der = certgen::cert(&leaf_spec, &leaf_key, &int_key);
        let child = certgen::cert(&Spec::leaf("Child", "Test EK"), &child_key, &leaf_key);
        let err = verify_chain(
            &[child, leaf_der, int_der.clone()],
            std::slice::from_ref(&root_der),
            AT_2026,
        )
        .unwrap_err();
        assert!(
            matches!(&err, X509ChainError::NotCa { subject, .. } if subject == "Test EK"),
            "{err}"
        );
    }
}

/// The same crafted chains through `plinth-verify tpm-quote --ek-cert
/// --ek-ca`, with the GCP quote as the (verifying) quote.
#[test]
fn crafted_ek_chains_through_the_binary() {
    let Some(dir) = vectors() else { return };
    let g = crate::tpm::gcp(&dir);
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ak.pub"), &g.ak).unwrap();
    std::fs::write(path("quote.msg"), &g.quote).unwrap();
    std::fs::write(path("quote.sig"), &g.sig).unwrap();
    let (root, int, leaf) = specs();
    let cases: Vec<(&str, Crafted, Option<&str>)> = vec![
        ("good", crafted(&root, &int, &leaf), None),
        (
            "no basicConstraints",
            crafted(
                &root,
                &Spec {
                    basic_constraints: None,
                    ..int.clone()
                },
                &leaf,
            ),
            Some("no basicConstraints"),
        ),
        (
            "no keyCertSign",
            crafted(
                &root,
                &Spec {
                    key_usage: Some(KU_DIGITAL_SIGNATURE),
                    ..int.clone()
                },
                &leaf,
            ),
            Some("lacks keyCertSign"),
        ),
        (
            "pathLen",
            crafted(
                &Spec {
                    basic_constraints: Some((true, Some(0))),
                    ..root.clone()
                },
                &int,
                &leaf,
            ),
            Some("pathLenConstraint 0"),
        ),
        (
            "CA:FALSE",
            crafted(
                &root,
                &Spec {
                    basic_constraints: Some((false, None)),
                    ..int.clone()
                },
                &leaf,
            ),
            Some("cA = FALSE"),
        ),
    ];
    for (label, c, refusal) in cases {
        std::fs::write(path("ek.der"), &c.leaf).unwrap();
        std::fs::write(path("ca.pem"), certgen::pem(&[&c.intermediate, &c.root])).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_plinth-verify"))
            .args([
                "tpm-quote",
                "--ak",
                &path("ak.pub"),
                "--quote",
                &path("quote.msg"),
                "--sig",
                &path("quote.sig"),
                "--ek-cert",
                &path("ek.der"),
                "--ek-ca",
                &path("ca.pem"),
                "--at",
                "2026-01-01T00:00:00Z",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout);
        let code = output.status.code().unwrap();
        match refusal {
            None => {
                assert_eq!(code, 0, "{label}: {out}");
                assert!(
                    out.contains(
                        "[pass] tpm.ek_chain: Test EK -> Test Intermediate CA -> Test Root CA"
                    ),
                    "{label}: {out}"
                );
            }
            Some(reason) => {
                assert_eq!(code, 1, "{label}: {out}");
                let line = out
                    .lines()
                    .find(|l| l.contains("tpm.ek_chain"))
                    .unwrap_or_default();
                assert!(
                    line.contains("[FAIL]") && line.contains(reason),
                    "{label}: {out}"
                );
            }
        }
    }
}
