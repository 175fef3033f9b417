//! TCG PC Client event logs: parsing, replay and comparison with PCRs.
//!
//! Both formats are read: the legacy SHA-1 log (TCG_PCR_EVENT records) and the
//! crypto-agile log (a TCG_PCR_EVENT whose data is the "Spec ID Event03"
//! structure, followed by TCG_PCR_EVENT2 records with one digest per bank).
//! Event types are only named, never interpreted, so unknown or vendor types
//! cannot abort the parse. Replay starts every PCR at zero, except that a
//! StartupLocality EV_NO_ACTION event sets PCR 0's last byte to the locality;
//! EV_NO_ACTION events are never extended.
//!
//! [`LogBuilder`] writes crypto-agile logs (the inverse of the parser), so tests
//! can build a log, extend its events into a real TPM and quote them.

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;

use crate::bytes::{BytesError, Reader};
use crate::check::{Aspect, Check};
use crate::tpm::HashAlg;
use crate::tpm::pcrs::PcrValues;

/// Errors parsing an event log.
#[derive(Debug, Error)]
pub enum EventLogError {
    /// A record ran past the end of the log.
    #[error("event log truncated in event {event_index}")]
    Truncated {
        /// Index of the event being read.
        event_index: usize,
        /// The read that failed.
        #[source]
        source: BytesError,
    },
    /// The log is empty.
    #[error("event log is empty")]
    Empty,
    /// A crypto-agile event uses an algorithm the Spec ID event did not declare.
    #[error(
        "event {event_index} has a digest for algorithm {alg:#06x} that the Spec ID event does not declare"
    )]
    UndeclaredAlgorithm {
        /// Index of the event.
        event_index: usize,
        /// The TPM_ALG_ID.
        alg: u16,
    },
    /// An implausible count.
    #[error("event {event_index}: {field} is {value}, beyond any real log")]
    BadCount {
        /// Index of the event.
        event_index: usize,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
}

/// Errors building an event log.
#[derive(Debug, Error)]
pub enum LogBuilderError {
    /// A bank whose digests cannot be computed here.
    #[error("event log writer cannot compute {bank} digests")]
    UnsupportedBank {
        /// The bank's name.
        bank: &'static str,
    },
    /// No bank at all.
    #[error("event log writer needs at least one bank")]
    NoBanks,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Position in the log, from 0.
    pub index: usize,
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// Digests: (TPM_ALG_ID, digest).
    pub digests: Vec<(u16, Vec<u8>)>,
    /// Event data.
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl Event {
    /// The event type's name.
    pub fn type_name(&self) -> String {
        event_type_name(self.event_type)
    }
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventLog {
    /// True for a crypto-agile log.
    pub crypto_agile: bool,
    /// Declared algorithms and digest sizes (SHA-1 only for legacy logs).
    pub algorithms: Vec<(u16, u16)>,
    /// All events, the header included.
    pub events: Vec<Event>,
}

const EV_NO_ACTION: u32 = 0x3;
const SPEC_ID_03: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";
const MAX_EVENT_DATA: u32 = 16 * 1024 * 1024;

/// Names a TCG event type.
pub fn event_type_name(event_type: u32) -> String {
    let name = match event_type {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x2 => "EV_UNUSED",
        0x3 => "EV_NO_ACTION",
        0x4 => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        0x6 => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xA => "EV_PLATFORM_CONFIG_FLAGS",
        0xB => "EV_TABLE_OF_DEVICES",
        0xC => "EV_COMPACT_HASH",
        0xD => "EV_IPL",
        0xE => "EV_IPL_PARTITION_DATA",
        0xF => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        other => return format!("EV_UNKNOWN({other:#010x})"),
    };
    name.to_owned()
}

fn known_size(alg: u16) -> Option<u16> {
    HashAlg::from_id(alg).map(|a| a.size() as u16)
}

impl EventLog {
    /// Parses a binary event log (as in /sys/kernel/security/tpm0/binary_bios_measurements).
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader::new(bytes);
        let truncated = |event_index: usize| {
            move |source| EventLogError::Truncated {
                event_index,
                source,
            }
        };
        if bytes.is_empty() {
            return Err(EventLogError::Empty);
        }
        // The first event is always in the legacy format.
        let first = read_legacy(&mut r, 0).map_err(truncated(0))?;
        let mut crypto_agile = false;
        let mut algorithms = vec![(HashAlg::Sha1.id(), 20u16)];
        if first.event_type == EV_NO_ACTION && first.data.starts_with(SPEC_ID_03) {
            crypto_agile = true;
            algorithms = parse_spec_id(&first.data).map_err(truncated(0))?;
            if algorithms.len() > 16 {
                return Err(EventLogError::BadCount {
                    event_index: 0,
                    field: "numberOfAlgorithms",
                    value: algorithms.len() as u32,
                });
            }
        }
        let mut events = vec![first];
        loop {
            let rest = r.rest();
            if rest.is_empty() || rest.iter().all(|b| *b == 0xff) || rest.iter().all(|b| *b == 0) {
                break;
            }
            let event_index = events.len();
            let event = if crypto_agile {
                read_agile(&mut r, event_index, &algorithms)?
            } else {
                read_legacy(&mut r, event_index).map_err(truncated(event_index))?
            };
            events.push(event);
        }
        Ok(Self {
            crypto_agile,
            algorithms,
            events,
        })
    }

    /// Replays the log into PCR values for every bank it carries (banks
    /// ring cannot compute, e.g. SM3, are left out).
    pub fn replay(&self) -> PcrValues {
        let mut values = PcrValues::new();
        let mut locality: u8 = 0;
        for event in &self.events {
            if event.event_type == EV_NO_ACTION && event.data.starts_with(STARTUP_LOCALITY) {
                locality = event.data.get(16).copied().unwrap_or(0);
            }
        }
        for (alg_id, _) in &self.algorithms {
            let Some(alg) = HashAlg::from_id(*alg_id) else {
                continue;
            };
            if alg.digest(b"").is_none() {
                continue;
            }
            let bank: &mut BTreeMap<u32, Vec<u8>> = values.entry(alg).or_default();
            for event in &self.events {
                if event.event_type == EV_NO_ACTION {
                    continue;
                }
                let Some((_, digest)) = event.digests.iter().find(|(id, _)| id == alg_id) else {
                    continue;
                };
                let current = bank.entry(event.pcr).or_insert_with(|| {
                    let mut initial = vec![0u8; alg.size()];
                    if event.pcr == 0
                        && let Some(last) = initial.last_mut()
                    {
                        *last = locality;
                    }
                    initial
                });
                if let Some(next) = alg.extend(current, digest) {
                    *current = next;
                }
            }
        }
        values
    }

    /// Events extended into `pcr` (EV_NO_ACTION excluded).
    pub fn events_for_pcr(&self, pcr: u32) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .filter(move |e| e.pcr == pcr && e.event_type != EV_NO_ACTION)
    }
}

fn read_legacy(r: &mut Reader<'_>, index: usize) -> Result<Event, BytesError> {
    let pcr = r.u32_le("pcrIndex")?;
    let event_type = r.u32_le("eventType")?;
    let digest = r.take(20, "digest")?.to_vec();
    let size = r.u32_le("eventDataSize")?;
    let data = r.take(size as usize, "event")?.to_vec();
    Ok(Event {
        index,
        pcr,
        event_type,
        digests: vec![(HashAlg::Sha1.id(), digest)],
        data,
    })
}

fn parse_spec_id(data: &[u8]) -> Result<Vec<(u16, u16)>, BytesError> {
    let mut r = Reader::new(data);
    r.take(16, "specIdEvent.signature")?;
    r.u32_le("specIdEvent.platformClass")?;
    r.take(4, "specIdEvent.version")?;
    let count = r.u32_le("specIdEvent.numberOfAlgorithms")?;
    let mut algorithms = Vec::new();
    for _ in 0..count.min(17) {
        let alg = r.u16_le("specIdEvent.algorithmId")?;
        let size = r.u16_le("specIdEvent.digestSize")?;
        algorithms.push((alg, size));
    }
    Ok(algorithms)
}

fn read_agile(
    r: &mut Reader<'_>,
    event_index: usize,
    algorithms: &[(u16, u16)],
) -> Result<Event, EventLogError> {
    let truncated = |source| EventLogError::Truncated {
        event_index,
        source,
    };
    let pcr = r.u32_le("pcrIndex").map_err(truncated)?;
    let event_type = r.u32_le("eventType").map_err(truncated)?;
    let count = r.u32_le("digests.count").map_err(truncated)?;
    if count > 16 {
        return Err(EventLogError::BadCount {
            event_index,
            field: "digests.count",
            value: count,
        });
    }
    let mut digests = Vec::new();
    for _ in 0..count {
        let alg = r.u16_le("digests.hashAlg").map_err(truncated)?;
        let size = algorithms
            .iter()
            .find(|(id, _)| *id == alg)
            .map(|(_, size)| *size)
            .or_else(|| known_size(alg))
            .ok_or(EventLogError::UndeclaredAlgorithm { event_index, alg })?;
        let digest = r
            .take(usize::from(size), "digests.digest")
            .map_err(truncated)?;
        digests.push((alg, digest.to_vec()));
    }
    let size = r.u32_le("eventSize").map_err(truncated)?;
    if size > MAX_EVENT_DATA {
        return Err(EventLogError::BadCount {
            event_index,
            field: "eventSize",
            value: size,
        });
    }
    let data = r.take(size as usize, "event").map_err(truncated)?.to_vec();
    Ok(Event {
        index: event_index,
        pcr,
        event_type,
        digests,
        data,
    })
}

/// One event extended into a PCR by [`LogBuilder`]: what a TPM must be told
/// (`tpm2_pcrextend PCR:BANK=DIGEST`) for the log to replay to its PCRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// PCR index.
    pub pcr: u32,
    /// Bank.
    pub bank: HashAlg,
    /// The digest extended.
    pub digest: Vec<u8>,
}

/// Writes a TCG crypto-agile event log: the Spec ID Event03 header (as a
/// legacy TCG_PCR_EVENT), then one TCG_PCR_EVENT2 per event with a digest for
/// every bank.
#[derive(Debug, Clone)]
pub struct LogBuilder {
    banks: Vec<HashAlg>,
    out: Vec<u8>,
    extensions: Vec<Extension>,
}

impl LogBuilder {
    /// A log with digests for `banks` (SM3 is refused: it cannot be computed here).
    pub fn new(banks: &[HashAlg]) -> Result<Self, LogBuilderError> {
        if banks.is_empty() {
            return Err(LogBuilderError::NoBanks);
        }
        if let Some(bank) = banks.iter().find(|bank| bank.digest(b"").is_none()) {
            return Err(LogBuilderError::UnsupportedBank { bank: bank.name() });
        }
        let mut spec_id = SPEC_ID_03.to_vec();
        spec_id.extend(0u32.to_le_bytes()); // platformClass: client
        spec_id.extend([0, 2, 0, 2]); // specVersionMinor, Major, errata, uintnSize (UINT64)
        spec_id.extend((banks.len() as u32).to_le_bytes());
        for bank in banks {
            spec_id.extend(bank.id().to_le_bytes());
            spec_id.extend((bank.size() as u16).to_le_bytes());
        }
        spec_id.push(0); // vendorInfoSize
        let mut out = Vec::new();
        out.extend(0u32.to_le_bytes());
        out.extend(EV_NO_ACTION.to_le_bytes());
        out.extend([0u8; 20]);
        out.extend((spec_id.len() as u32).to_le_bytes());
        out.extend(spec_id);
        Ok(Self {
            banks: banks.to_vec(),
            out,
            extensions: Vec::new(),
        })
    }

    /// Adds the StartupLocality EV_NO_ACTION event (PCR 0 starts at `locality`).
    pub fn startup_locality(&mut self, locality: u8) -> &mut Self {
        let mut data = STARTUP_LOCALITY.to_vec();
        data.push(locality);
        let zeros: Vec<(HashAlg, Vec<u8>)> = self
            .banks
            .iter()
            .map(|bank| (*bank, vec![0u8; bank.size()]))
            .collect();
        self.write_event(0, EV_NO_ACTION, &zeros, &data);
        self
    }

    /// Adds an event whose digest in every bank is the hash of `data` (the
    /// usual rule for EV_SEPARATOR, EV_EFI_ACTION, EV_IPL ...).
    pub fn measure(&mut self, pcr: u32, event_type: u32, data: &[u8]) -> &mut Self {
        let digests: Vec<(HashAlg, Vec<u8>)> = self
            .banks
            .iter()
            .map(|bank| (*bank, bank.digest(data).unwrap_or_default()))
            .collect();
        self.extend(pcr, event_type, &digests, data)
    }

    /// Adds an event with explicit digests (one per bank of the log, e.g. the
    /// hash of a PE image while `data` describes it).
    pub fn extend(
        &mut self,
        pcr: u32,
        event_type: u32,
        digests: &[(HashAlg, Vec<u8>)],
        data: &[u8],
    ) -> &mut Self {
        self.write_event(pcr, event_type, digests, data);
        if event_type != EV_NO_ACTION {
            for (bank, digest) in digests {
                self.extensions.push(Extension {
                    pcr,
                    bank: *bank,
                    digest: digest.clone(),
                });
            }
        }
        self
    }

    fn write_event(
        &mut self,
        pcr: u32,
        event_type: u32,
        digests: &[(HashAlg, Vec<u8>)],
        data: &[u8],
    ) {
        let out = &mut self.out;
        out.extend(pcr.to_le_bytes());
        out.extend(event_type.to_le_bytes());
        out.extend((digests.len() as u32).to_le_bytes());
        for (bank, digest) in digests {
            out.extend(bank.id().to_le_bytes());
            out.extend(digest);
        }
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
    }

    /// Every extension in log order (EV_NO_ACTION events excluded).
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }

    /// The log's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.out.clone()
    }
}

/// Parses `log` (from `source`, a file or bundle member named in errors),
/// replays it and compares it with `quoted`: a failing `eventlog.parse`
/// check, or the checks of [`compare`].
pub fn appraise_against(log: &[u8], quoted: &PcrValues, source: &str) -> Vec<Check> {
    match EventLog::parse(log) {
        Ok(log) => compare(&log, &log.replay(), quoted),
        Err(err) => vec![Check::fail(
            "eventlog.parse",
            Aspect::Executables,
            format!("{source}: {}", plinth_toolbox::error_chain(&err)),
        )],
    }
}

/// Compares replayed values with quoted (or recorded) PCR values, one check
/// per bank; a mismatch names the events extended into each differing PCR.
/// Only PCRs that the log extends are compared.
pub fn compare(log: &EventLog, replayed: &PcrValues, quoted: &PcrValues) -> Vec<Check> {
    let mut checks = Vec::new();
    for (bank, quoted_bank) in quoted {
        let name = format!("eventlog.replay.{}", bank.name());
        let Some(replayed_bank) = replayed.get(bank) else {
            checks.push(Check::skip(
                &name,
                Aspect::Executables,
                "the log has no digests for this bank",
            ));
            continue;
        };
        let mut matched = Vec::new();
        let mut problems = Vec::new();
        for (pcr, replayed_value) in replayed_bank {
            let Some(quoted_value) = quoted_bank.get(pcr) else {
                continue;
            };
            if quoted_value == replayed_value {
                matched.push(pcr.to_string());
            } else {
                let events: Vec<String> = log
                    .events_for_pcr(*pcr)
                    .map(|e| format!("#{} {}", e.index, e.type_name()))
                    .collect();
                problems.push(format!(
                    "PCR {pcr}: replay {} != quoted {} (events: {})",
                    hex::encode(replayed_value),
                    hex::encode(quoted_value),
                    events.join(", ")
                ));
            }
        }
        if problems.is_empty() && matched.is_empty() {
            checks.push(Check::skip(
                &name,
                Aspect::Executables,
                "no quoted PCR is extended by the log",
            ));
        } else if problems.is_empty() {
            checks.push(Check::pass(
                &name,
                Aspect::Executables,
                format!("replay matches PCRs {}", matched.join(",")),
            ));
        } else {
            checks.push(Check::fail(&name, Aspect::Executables, problems.join("; ")));
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_event(pcr: u32, event_type: u32, digest: [u8; 20], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(pcr.to_le_bytes());
        out.extend(event_type.to_le_bytes());
        out.extend(digest);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn legacy_log_replays_and_tolerates_unknown_types() {
        let mut log = legacy_event(0, 0x8, [1; 20], b"v");
        log.extend(legacy_event(0, 0xdead_beef, [2; 20], b""));
        log.extend([0xff; 7]);
        let parsed = EventLog::parse(&log).unwrap();
        assert!(!parsed.crypto_agile);
        assert_eq!(parsed.events.len(), 2);
        assert_eq!(parsed.events[1].type_name(), "EV_UNKNOWN(0xdeadbeef)");
        let sha1 = HashAlg::Sha1;
        let step1 = sha1.extend(&[0; 20], &[1; 20]).unwrap();
        let step2 = sha1.extend(&step1, &[2; 20]).unwrap();
        assert_eq!(parsed.replay()[&sha1][&0], step2);
    }

    #[test]
    fn builder_round_trips_through_the_parser_and_replays() {
        let banks = [HashAlg::Sha1, HashAlg::Sha256];
        let mut builder = LogBuilder::new(&banks).unwrap();
        builder
            .startup_locality(3)
            .measure(0, 0x8, b"crtm version")
            .measure(7, 0x8000_0001, b"SecureBoot=1")
            .measure(4, 0x4, &[0, 0, 0, 0])
            .extend(
                4,
                0xD,
                &[
                    (HashAlg::Sha1, vec![0x11; 20]),
                    (HashAlg::Sha256, vec![0x22; 32]),
                ],
                b"grub",
            );
        let parsed = EventLog::parse(&builder.to_bytes()).unwrap();
        assert!(parsed.crypto_agile);
        assert_eq!(parsed.algorithms, vec![(0x0004, 20), (0x000B, 32)]);
        assert_eq!(parsed.events.len(), 6);
        assert_eq!(parsed.events[5].type_name(), "EV_IPL");
        assert_eq!(parsed.events[5].data, b"grub");
        assert_eq!(builder.extensions().len(), 8, "four events in two banks");
        // Replay by hand from the extensions: PCR 0 starts at locality 3.
        let replayed = parsed.replay();
        for bank in banks {
            let mut pcr0 = vec![0u8; bank.size()];
            *pcr0.last_mut().unwrap() = 3;
            let pcr0 = bank
                .extend(&pcr0, &bank.digest(b"crtm version").unwrap())
                .unwrap();
            assert_eq!(replayed[&bank][&0], pcr0);
            let step = bank
                .extend(&vec![0; bank.size()], &bank.digest(&[0; 4]).unwrap())
                .unwrap();
            let last = if bank == HashAlg::Sha1 {
                vec![0x11; 20]
            } else {
                vec![0x22; 32]
            };
            assert_eq!(replayed[&bank][&4], bank.extend(&step, &last).unwrap());
        }
        assert!(matches!(
            LogBuilder::new(&[HashAlg::Sm3_256]),
            Err(LogBuilderError::UnsupportedBank { .. })
        ));
        assert!(matches!(
            LogBuilder::new(&[]),
            Err(LogBuilderError::NoBanks)
        ));
    }

    #[test]
    fn truncation_is_reported_with_event_index() {
        let mut log = legacy_event(0, 0x8, [1; 20], b"v");
        log.extend(&legacy_event(1, 0x8, [1; 20], b"abc")[..30]);
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::Truncated { event_index: 1, .. })
        ));
    }
}
