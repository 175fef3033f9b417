//! PCR values: the files `tpm2_quote -o` / `tpm2_pcrread -o` write, and the
//! digest a quote commits to.
//!
//! tpm2-tools writes two formats. `values` is the selected digests back to
//! back, in selection order. `serialized` (the default for tpm2_quote) is a
//! little-endian dump of C structures: a TPML_PCR_SELECTION (132 bytes: a u32
//! count and 16 TPMS_PCR_SELECTION slots of 8 bytes: u16 hash, u8 sizeofSelect,
//! 4 select bytes, 1 pad byte), a u32 count of TPML_DIGESTs, then that many
//! TPML_DIGESTs of 532 bytes each (u32 count and 8 TPM2B_DIGEST slots of a
//! u16 size and a 64-byte buffer).

use std::collections::BTreeMap;

use thiserror::Error;

use crate::bytes::{BytesError, Reader};
use crate::tpm::HashAlg;

/// Errors reading PCR files.
#[derive(Debug, Error)]
pub enum PcrsError {
    /// A field ran past the end.
    #[error("pcr file truncated")]
    Truncated(#[from] BytesError),
    /// The file matches neither tpm2-tools format for this selection.
    #[error(
        "pcr file is {len} bytes: neither the 'values' layout ({values_len} bytes for this selection) nor the 'serialized' layout"
    )]
    UnknownLayout {
        /// File length.
        len: usize,
        /// Length the values layout would have.
        values_len: usize,
    },
    /// A hash algorithm we do not know.
    #[error("pcr file names unknown hash algorithm {id:#06x}")]
    UnknownAlg {
        /// The TPM_ALG_ID.
        id: u16,
    },
    /// Counts that do not fit the structure.
    #[error("pcr file field {field} is {value}, more than the structure holds")]
    BadCount {
        /// Which count.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// The file holds fewer digests than its selection names.
    #[error("pcr file selects {selected} PCRs but holds {present} digests")]
    Mismatch {
        /// PCRs selected.
        selected: usize,
        /// Digests present.
        present: usize,
    },
}

/// One bank's selection in a TPML_PCR_SELECTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's TPM_ALG_ID.
    pub hash_id: u16,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
}

impl PcrSelection {
    /// Decodes a selection bitmap.
    pub fn from_bitmap(hash_id: u16, bitmap: &[u8]) -> Self {
        let mut pcrs = Vec::new();
        for (byte_idx, byte) in bitmap.iter().enumerate() {
            for bit in 0..8u32 {
                if byte & (1 << bit) != 0 {
                    pcrs.push(byte_idx as u32 * 8 + bit);
                }
            }
        }
        Self { hash_id, pcrs }
    }
}

/// PCR values by bank and index.
pub type PcrValues = BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>;

/// Parses a tpm2-tools PCR file, using `selection` (from the quote) for the
/// `values` layout.
pub fn parse_pcr_file(bytes: &[u8], selection: &[PcrSelection]) -> Result<PcrValues, PcrsError> {
    let mut values_len = 0usize;
    for sel in selection {
        let alg = HashAlg::from_id(sel.hash_id).ok_or(PcrsError::UnknownAlg { id: sel.hash_id })?;
        values_len += alg.size() * sel.pcrs.len();
    }
    if bytes.len() == values_len && values_len > 0 {
        return split_values(bytes, selection);
    }
    if bytes.len() >= 136 {
        return parse_serialized(bytes);
    }
    Err(PcrsError::UnknownLayout {
        len: bytes.len(),
        values_len,
    })
}

fn split_values(bytes: &[u8], selection: &[PcrSelection]) -> Result<PcrValues, PcrsError> {
    let mut reader = Reader::new(bytes);
    let mut out = PcrValues::new();
    for sel in selection {
        let alg = HashAlg::from_id(sel.hash_id).ok_or(PcrsError::UnknownAlg { id: sel.hash_id })?;
        for pcr in &sel.pcrs {
            let digest = reader.take(alg.size(), "pcr value")?;
            out.entry(alg).or_default().insert(*pcr, digest.to_vec());
        }
    }
    Ok(out)
}

/// Parses the `serialized` layout on its own (it carries its selection).
pub fn parse_serialized(bytes: &[u8]) -> Result<PcrValues, PcrsError> {
    let mut r = Reader::new(bytes);
    let n_banks = r.u32_le("pcr_selection.count")?;
    if n_banks > 16 {
        return Err(PcrsError::BadCount {
            field: "pcr_selection.count",
            value: n_banks,
        });
    }
    let mut selection = Vec::new();
    for slot in 0..16u32 {
        let hash_id = r.u16_le("pcr_selection.hash")?;
        let size_of_select = r.u8("pcr_selection.sizeofSelect")?;
        let bitmap: [u8; 4] = r.array("pcr_selection.pcrSelect")?;
        let _pad = r.u8("pcr_selection.pad")?;
        if slot < n_banks {
            let len = usize::from(size_of_select).min(4);
            selection.push(PcrSelection::from_bitmap(hash_id, &bitmap[..len]));
        }
    }
    let n_lists = r.u32_le("pcrs.count")?;
    if n_lists > 32 {
        return Err(PcrsError::BadCount {
            field: "pcrs.count",
            value: n_lists,
        });
    }
    let mut digests = Vec::new();
    for _ in 0..n_lists {
        let count = r.u32_le("tpml_digest.count")?;
        if count > 8 {
            return Err(PcrsError::BadCount {
                field: "tpml_digest.count",
                value: count,
            });
        }
        for slot in 0..8u32 {
            let size = r.u16_le("tpm2b_digest.size")?;
            let buffer: [u8; 64] = r.array("tpm2b_digest.buffer")?;
            if slot < count {
                let len = usize::from(size).min(64);
                digests.push(buffer[..len].to_vec());
            }
        }
    }
    let selected: usize = selection.iter().map(|s| s.pcrs.len()).sum();
    if selected != digests.len() {
        return Err(PcrsError::Mismatch {
            selected,
            present: digests.len(),
        });
    }
    let mut out = PcrValues::new();
    let mut digest_iter = digests.into_iter();
    for sel in &selection {
        let alg = HashAlg::from_id(sel.hash_id).ok_or(PcrsError::UnknownAlg { id: sel.hash_id })?;
        for pcr in &sel.pcrs {
            if let Some(digest) = digest_iter.next() {
                out.entry(alg).or_default().insert(*pcr, digest);
            }
        }
    }
    Ok(out)
}

/// The digest a quote's pcrDigest must equal: `hash` over the selected PCR
/// values concatenated in selection order. Errors name a missing PCR.
pub fn composite_digest(
    values: &PcrValues,
    selection: &[PcrSelection],
    hash: HashAlg,
) -> Result<Vec<u8>, String> {
    let mut concat = Vec::new();
    for sel in selection {
        let alg = HashAlg::from_id(sel.hash_id)
            .ok_or_else(|| format!("unknown bank {:#06x}", sel.hash_id))?;
        for pcr in &sel.pcrs {
            let value = values
                .get(&alg)
                .and_then(|bank| bank.get(pcr))
                .ok_or_else(|| format!("no value supplied for {}:{pcr}", alg.name()))?;
            concat.extend_from_slice(value);
        }
    }
    hash.digest(&concat)
        .ok_or_else(|| format!("cannot compute {} digests", hash.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_decoding() {
        let sel = PcrSelection::from_bitmap(0x0b, &[0x81, 0x00, 0x01]);
        assert_eq!(sel.pcrs, vec![0, 7, 16]);
    }

    #[test]
    fn values_layout_splits_in_selection_order() {
        let sel = vec![PcrSelection {
            hash_id: 0x0004,
            pcrs: vec![0, 1],
        }];
        let mut bytes = vec![1u8; 20];
        bytes.extend([2u8; 20]);
        let values = parse_pcr_file(&bytes, &sel).unwrap();
        assert_eq!(values[&HashAlg::Sha1][&1], vec![2u8; 20]);
        assert!(parse_pcr_file(&bytes[..30], &sel).is_err());
    }
}
