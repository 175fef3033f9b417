//! Event-log replay against the PCR values tpm2-tools recorded, and parsing of
//! the other real logs in the vectors.

use std::collections::BTreeMap;

use plinth_attestation::tpm::HashAlg;
use plinth_attestation::tpm::eventlog::EventLog;
use plinth_attestation::tpm::pcrs::PcrValues;

use crate::common::{read, vectors};

/// Reads the `pcrs:` section of a tpm2_eventlog YAML file.
fn yaml_pcrs(text: &str) -> PcrValues {
    let mut out = PcrValues::new();
    let mut in_pcrs = false;
    let mut bank = None;
    for line in text.lines() {
        if line.starts_with("pcrs:") {
            in_pcrs = true;
            continue;
        }
        if !in_pcrs {
            continue;
        }
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_suffix(':') {
            bank = HashAlg::from_name(name);
            assert!(bank.is_some(), "unknown bank {name}");
        } else if let Some((idx, value)) = trimmed.split_once(':') {
            let value = value.trim().trim_start_matches("0x");
            out.entry(bank.unwrap())
                .or_default()
                .insert(idx.trim().parse().unwrap(), hex::decode(value).unwrap());
        }
    }
    out
}

const TPM2_TOOLS: &[(&str, &str)] = &[
    ("event-arch-linux.bin", "event-arch-linux.bin.yaml"),
    ("event-postcode.bin", "event-postcode.bin.yaml"),
    (
        "event-sd-boot-fedora37.bin",
        "event-sd-boot-fedora37.bin.yaml",
    ),
    ("event-uefi-sha1-log.bin", "event-uefi-sha1-log.bin.yaml"),
];

#[test]
fn replay_matches_tpm2_tools_yaml() {
    let Some(dir) = vectors() else { return };
    for (bin, yaml) in TPM2_TOOLS {
        let fixtures = "tpm2-tools/test/integration/fixtures";
        let log = EventLog::parse(&read(&dir, &format!("{fixtures}/{bin}"))).unwrap();
        let expected = yaml_pcrs(
            &String::from_utf8(read(&dir, &format!("{fixtures}/event-pretty/{yaml}"))).unwrap(),
        );
        assert!(!expected.is_empty(), "{yaml} has no pcrs");
        let replayed = log.replay();
        for (bank, pcrs) in &expected {
            let got: BTreeMap<u32, Vec<u8>> = replayed.get(bank).cloned().unwrap_or_default();
            assert_eq!(&got, pcrs, "{bin} bank {}", bank.name());
        }
    }
}

#[test]
fn other_real_logs_parse_completely() {
    let Some(dir) = vectors() else { return };
    for rel in [
        "rust-keylime/keylime/test-data/uefi_log.bin",
        "keylime/test/data/create-mb-policy/binary_bios_measurements",
        "keylime/test/data/create-mb-policy/binary_bios_measurements-secureboot",
        "go-attestation/attest/testdata/crypto_agile_eventlog",
        "go-attestation/attest/testdata/ebs_event_missing_eventlog",
        "go-attestation/attest/testdata/option_rom_eventlog",
        "go-attestation/attest/testdata/sb_cert_eventlog",
        "go-attestation/attest/testdata/ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
    ] {
        let log = EventLog::parse(&read(&dir, rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(
            log.events.len() > 10,
            "{rel}: only {} events",
            log.events.len()
        );
        let replayed = log.replay();
        assert!(
            replayed.values().any(|bank| bank.contains_key(&0)),
            "{rel}: PCR 0 not replayed"
        );
    }
}

#[test]
fn keylime_base64_log_matches_binary() {
    use base64::Engine as _;
    let Some(dir) = vectors() else { return };
    let text = String::from_utf8(read(&dir, "keylime/test/data/mb_log.b64")).unwrap();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .unwrap();
    let log = EventLog::parse(&bytes).unwrap();
    assert!(log.crypto_agile);
    assert!(log.events.len() > 10);
}

/// The firmware's log area (ACPI TCPA/TPM2 LAML) is padded with 0x00 or
/// 0xFF after the last event, and the kernel's securityfs file ends at the
/// last event: both are read completely. Any other bytes after the last
/// event must form an event, or the log is refused.
#[test]
fn firmware_padding_is_accepted_and_other_trailing_bytes_are_not() {
    let Some(dir) = vectors() else { return };
    for rel in [
        "tpm2-tools/test/integration/fixtures/event-arch-linux.bin",
        "tpm2-tools/test/integration/fixtures/event-uefi-sha1-log.bin",
    ] {
        let log = read(&dir, rel);
        let exact = EventLog::parse(&log).unwrap();
        for pad in [0x00u8, 0xff] {
            let mut padded = log.clone();
            padded.extend(std::iter::repeat_n(pad, 4096));
            assert_eq!(EventLog::parse(&padded).unwrap(), exact, "{rel} + {pad:#x}");
        }
        for junk in [
            &[0x01u8][..],
            &[0x00, 0x00, 0x00, 0x00, 0x01][..],
            &[0xff, 0x00][..],
        ] {
            let mut bad = log.clone();
            bad.extend_from_slice(junk);
            assert!(EventLog::parse(&bad).is_err(), "{rel} + {junk:?} accepted");
        }
    }
}
