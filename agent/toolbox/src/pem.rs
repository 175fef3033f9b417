//! The one PEM reader. Certificates, certificate bundles and keys arrive as PEM or as
//! DER; this module decodes PEM blocks of an expected label and passes DER through, so
//! every caller gives the same answer and the same errors for the same file.

/// Errors reading PEM.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The text looks like PEM but does not decode.
    #[error("{origin}: malformed PEM")]
    Malformed {
        /// The file or field the text came from.
        origin: String,
        /// The cause.
        #[source]
        source: ::pem::PemError,
    },
    /// No block with the expected label.
    #[error("{origin}: no PEM block labelled {label:?} (found {found})")]
    NoBlock {
        /// The file or field the text came from.
        origin: String,
        /// The label wanted.
        label: String,
        /// The labels present, or `none`.
        found: String,
    },
    /// Exactly one block was expected.
    #[error("{origin}: {count} PEM blocks labelled {label:?}, expected one")]
    TooMany {
        /// The file or field the text came from.
        origin: String,
        /// The label wanted.
        label: String,
        /// How many there were.
        count: usize,
    },
}

/// Whether `bytes` look like PEM text (a `-----BEGIN ` line after optional white space).
pub fn is_pem(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|byte| !byte.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes[start..].starts_with(b"-----BEGIN ")
}

/// Every block labelled `label`, in order; blocks with other labels are skipped.
pub fn parse_all(bytes: &[u8], label: &str, origin: &str) -> Result<Vec<Vec<u8>>, PemError> {
    let blocks = ::pem::parse_many(bytes).map_err(|source| PemError::Malformed {
        origin: origin.to_owned(),
        source,
    })?;
    let found: Vec<String> = blocks.iter().map(|block| block.tag().to_owned()).collect();
    let matching: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|block| block.tag() == label)
        .map(|block| block.into_contents())
        .collect();
    if matching.is_empty() {
        return Err(PemError::NoBlock {
            origin: origin.to_owned(),
            label: label.to_owned(),
            found: if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            },
        });
    }
    Ok(matching)
}

/// The one block labelled `label`.
pub fn parse_one(bytes: &[u8], label: &str, origin: &str) -> Result<Vec<u8>, PemError> {
    let mut blocks = parse_all(bytes, label, origin)?;
    if blocks.len() != 1 {
        return Err(PemError::TooMany {
            origin: origin.to_owned(),
            label: label.to_owned(),
            count: blocks.len(),
        });
    }
    Ok(blocks.remove(0))
}

/// DER as given, or the one PEM block labelled `label` when the bytes are PEM.
pub fn der_or_pem(bytes: &[u8], label: &str, origin: &str) -> Result<Vec<u8>, PemError> {
    if is_pem(bytes) {
        parse_one(bytes, label, origin)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Encodes DER as one PEM block (64-column base64, `\n` line ends).
pub fn encode(label: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(label, der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_labels() {
        let text = format!(
            "{}{}",
            encode("CERTIFICATE", b"one"),
            encode("PRIVATE KEY", b"two")
        );
        assert!(is_pem(format!("\n  {text}").as_bytes()));
        assert_eq!(
            parse_all(text.as_bytes(), "CERTIFICATE", "t").unwrap(),
            vec![b"one".to_vec()]
        );
        assert_eq!(
            parse_one(text.as_bytes(), "PRIVATE KEY", "t").unwrap(),
            b"two"
        );
        let err = parse_one(text.as_bytes(), "PUBLIC KEY", "bundle.pem").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bundle.pem: no PEM block labelled \"PUBLIC KEY\" (found CERTIFICATE, PRIVATE KEY)"
        );
    }

    #[test]
    fn der_passes_through_and_two_blocks_are_refused_where_one_is_wanted() {
        assert_eq!(
            der_or_pem(&[0x30, 0x03], "CERTIFICATE", "d").unwrap(),
            [0x30, 0x03]
        );
        let two = format!(
            "{}{}",
            encode("CERTIFICATE", b"a"),
            encode("CERTIFICATE", b"b")
        );
        let err = der_or_pem(two.as_bytes(), "CERTIFICATE", "vcek.pem").unwrap_err();
        assert!(matches!(err, PemError::TooMany { count: 2, .. }), "{err}");
    }

    #[test]
    fn malformed_pem_names_the_origin() {
        let err = parse_all(
            b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
            "CERTIFICATE",
            "ek.pem",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("ek.pem: malformed PEM"),
            "{err}"
        );
    }
}
