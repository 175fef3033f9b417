//! A bounds-checked cursor over untrusted bytes, shared by the binary parsers.
//!
//! Every read names the field it is reading so that a truncated input produces an
//! error that says which field ran past the end.

use thiserror::Error;

/// A read ran past the end of the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "input truncated reading {field} at offset {offset}: need {needed} bytes, {available} left"
)]
pub struct BytesError {
    /// The field being read.
    pub field: &'static str,
    /// Offset of the read.
    pub offset: usize,
    /// Bytes the read needed.
    pub needed: usize,
    /// Bytes that were left.
    pub available: usize,
}

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf` at offset 0.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], BytesError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len());
        match end.and_then(|end| self.buf.get(self.pos..end).map(|s| (s, end))) {
            Some((slice, end)) => {
                self.pos = end;
                Ok(slice)
            }
            None => Err(BytesError {
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], BytesError> {
        let slice = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, BytesError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a big-endian u16 (TPM byte order).
    pub fn u16_be(&mut self, field: &'static str) -> Result<u16, BytesError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian u32.
    pub fn u32_be(&mut self, field: &'static str) -> Result<u32, BytesError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian u64.
    pub fn u64_be(&mut self, field: &'static str) -> Result<u64, BytesError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Reads a little-endian u16 (event logs, SPDM).
    pub fn u16_le(&mut self, field: &'static str) -> Result<u16, BytesError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian 24-bit integer (SPDM lengths).
    pub fn u24_le(&mut self, field: &'static str) -> Result<u32, BytesError> {
        let b: [u8; 3] = self.array(field)?;
        Ok(u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16))
    }

    /// Reads a little-endian u32.
    pub fn u32_le(&mut self, field: &'static str) -> Result<u32, BytesError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian u64.
    pub fn u64_le(&mut self, field: &'static str) -> Result<u64, BytesError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Reads a TPM2B: a big-endian u16 size followed by that many bytes.
    pub fn tpm2b(&mut self, field: &'static str) -> Result<&'a [u8], BytesError> {
        let size = self.u16_be(field)?;
        self.take(usize::from(size), field)
    }
}

/// Decodes hex text (whitespace, `0x` prefix and line breaks ignored).
pub fn decode_hex_text(text: &str) -> Result<Vec<u8>, hex::FromHexError> {
    let trimmed = text.trim();
    let without_prefix = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let compact: String = without_prefix
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_reports_truncation() {
        let mut reader = Reader::new(&[0, 2, 0xaa, 0xbb, 1]);
        assert_eq!(reader.tpm2b("blob").unwrap(), &[0xaa, 0xbb]);
        let err = reader.u32_be("count").unwrap_err();
        assert_eq!(err.field, "count");
        assert_eq!(err.offset, 4);
        assert_eq!(err.available, 1);
    }

    #[test]
    fn hex_text_with_prefix_and_newlines() {
        assert_eq!(decode_hex_text("0xab\ncd \n").unwrap(), vec![0xab, 0xcd]);
        assert!(decode_hex_text("zz").is_err());
    }
}
