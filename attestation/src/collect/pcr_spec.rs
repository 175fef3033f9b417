//! The PCR selection a collector quotes, written as tpm2-tools writes it:
//! `sha256:0-9,14`, or several banks joined by `+` (`sha1:0-7+sha256:0-9,14`).
//!
//! Pure Rust and always compiled, so the agent's configuration is checked (and the
//! error names the value) on hosts built without the TPM collector.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::tpm::HashAlg;

/// The highest PCR index a selection may name (a TPMS_PCR_SELECTION holds up to 32
/// bits; PC-client TPMs implement 24).
pub const MAX_PCR_INDEX: u32 = 31;

/// Why a PCR selection was refused; each names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PcrSpecError {
    /// The selection is empty.
    #[error("the PCR selection is empty; write it as bank:indices, e.g. sha256:0-9,14")]
    Empty,
    /// A bank is missing its `:` and indices.
    #[error("{part:?} is not bank:indices (e.g. sha256:0-9,14)")]
    NoIndices {
        /// The offending `+`-separated part.
        part: String,
    },
    /// An unknown bank name.
    #[error("unknown PCR bank {bank:?}; use sha1, sha256, sha384 or sha512")]
    UnknownBank {
        /// The name as written.
        bank: String,
    },
    /// The same bank twice.
    #[error("PCR bank {bank} is selected twice")]
    DuplicateBank {
        /// The bank's name.
        bank: &'static str,
    },
    /// An index or range that does not parse or is out of range.
    #[error("{item:?} in bank {bank} is not a PCR index or range between 0 and {MAX_PCR_INDEX}")]
    BadIndex {
        /// The bank's name.
        bank: &'static str,
        /// The offending item.
        item: String,
    },
}

/// One bank and its selected PCRs (ascending, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBankSelection {
    /// The bank's hash algorithm.
    pub bank: HashAlg,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
}

/// A parsed PCR selection: banks in the order written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PcrSpec {
    banks: Vec<PcrBankSelection>,
}

impl PcrSpec {
    /// The banks in the order written.
    pub fn banks(&self) -> &[PcrBankSelection] {
        &self.banks
    }

    /// The number of PCRs selected over all banks.
    pub fn len(&self) -> usize {
        self.banks.iter().map(|bank| bank.pcrs.len()).sum()
    }

    /// Whether nothing is selected (never true for a parsed spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for PcrSpec {
    /// `sha256:0-9,14`: firmware, boot loader and kernel (0-9) and the shim's MOK list
    /// (14), the PCRs a boot policy commonly pins.
    fn default() -> Self {
        Self {
            banks: vec![PcrBankSelection {
                bank: HashAlg::Sha256,
                pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14],
            }],
        }
    }
}

impl FromStr for PcrSpec {
    type Err = PcrSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PcrSpecError::Empty);
        }
        let mut banks: Vec<PcrBankSelection> = Vec::new();
        for part in text.split('+') {
            let part = part.trim();
            let Some((bank_name, indices)) = part.split_once(':') else {
                return Err(PcrSpecError::NoIndices {
                    part: part.to_owned(),
                });
            };
            let bank = HashAlg::from_name(bank_name.trim().to_ascii_lowercase().as_str())
                .filter(|alg| *alg != HashAlg::Sm3_256)
                .ok_or_else(|| PcrSpecError::UnknownBank {
                    bank: bank_name.to_owned(),
                })?;
            if banks.iter().any(|seen| seen.bank == bank) {
                return Err(PcrSpecError::DuplicateBank { bank: bank.name() });
            }
            let mut pcrs = parse_indices(bank, indices)?;
            pcrs.sort_unstable();
            pcrs.dedup();
            banks.push(PcrBankSelection { bank, pcrs });
        }
        Ok(Self { banks })
    }
}

fn parse_indices(bank: HashAlg, indices: &str) -> Result<Vec<u32>, PcrSpecError> {
    let bad = |item: &str| PcrSpecError::BadIndex {
        bank: bank.name(),
        item: item.to_owned(),
    };
    let index = |item: &str, text: &str| -> Result<u32, PcrSpecError> {
        text.trim()
            .parse::<u32>()
            .ok()
            .filter(|index| *index <= MAX_PCR_INDEX)
            .ok_or_else(|| bad(item))
    };
    let mut pcrs = Vec::new();
    for item in indices.split(',') {
        let item = item.trim();
        match item.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (index(item, low)?, index(item, high)?);
                if low > high {
                    return Err(bad(item));
                }
                pcrs.extend(low..=high);
            }
            None => pcrs.push(index(item, item)?),
        }
    }
    Ok(pcrs)
}

impl TryFrom<String> for PcrSpec {
    type Error = PcrSpecError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PcrSpec> for String {
    fn from(spec: PcrSpec) -> Self {
        spec.to_string()
    }
}

impl fmt::Display for PcrSpec {
    /// The canonical form: ranges collapsed (`sha256:0-9,14`).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bank_idx, bank) in self.banks.iter().enumerate() {
            if bank_idx > 0 {
                formatter.write_str("+")?;
            }
            write!(formatter, "{}:", bank.bank.name())?;
            let mut first = true;
            let mut run_start_idx = 0;
            while run_start_idx < bank.pcrs.len() {
                let mut run_end_idx = run_start_idx;
                while run_end_idx + 1 < bank.pcrs.len()
                    && bank.pcrs[run_end_idx + 1] == bank.pcrs[run_end_idx] + 1
                {
                    run_end_idx += 1;
                }
                if !first {
                    formatter.write_str(",")?;
                }
                first = false;
                let (low, high) = (bank.pcrs[run_start_idx], bank.pcrs[run_end_idx]);
                if run_end_idx - run_start_idx >= 2 {
                    write!(formatter, "{low}-{high}")?;
                } else if run_end_idx > run_start_idx {
                    write!(formatter, "{low},{high}")?;
                } else {
                    write!(formatter, "{low}")?;
                }
                run_start_idx = run_end_idx + 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, canonical: &str) {
        let spec: PcrSpec = text.parse().unwrap();
        assert_eq!(spec.to_string(), canonical, "{text}");
        assert_eq!(canonical.parse::<PcrSpec>().unwrap(), spec);
    }

    #[test]
    fn selections_parse_and_print_canonically() {
        check("sha256:0-9,14", "sha256:0-9,14");
        check("sha256:14,0,1,2,3,4,5,6,7,8,9", "sha256:0-9,14");
        check("SHA1:0,1 + sha256:7,7,8", "sha1:0,1+sha256:7,8");
        check("sha384:23", "sha384:23");
        let spec: PcrSpec = "sha1:0-7+sha256:0-9,14".parse().unwrap();
        assert_eq!(spec.banks().len(), 2);
        assert_eq!(spec.len(), 19);
        assert_eq!(PcrSpec::default().to_string(), "sha256:0-9,14");
    }

    #[test]
    fn bad_selections_name_the_part() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("sha256", "\"sha256\" is not bank:indices"),
            ("md5:0", "unknown PCR bank \"md5\""),
            ("sm3_256:0", "unknown PCR bank"),
            ("sha256:0+sha256:1", "selected twice"),
            ("sha256:32", "\"32\" in bank sha256"),
            ("sha256:9-2", "\"9-2\""),
            ("sha256:a", "\"a\""),
            ("sha256:", "\"\" in bank sha256"),
            ("sha256:1,,2", "\"\" in bank sha256"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<PcrSpec>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        #[derive(Deserialize, Serialize)]
        struct Holder {
            pcrs: PcrSpec,
        }
        let holder: Holder = toml::from_str("pcrs = \"sha256:0-2\"").unwrap();
        assert_eq!(holder.pcrs.banks()[0].pcrs, vec![0, 1, 2]);
        assert_eq!(
            toml::to_string(&holder).unwrap().trim(),
            "pcrs = \"sha256:0-2\""
        );
        let err = toml::from_str::<Holder>("pcrs = \"sha256:40\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"40\" in bank sha256"), "{err}");
    }
}
