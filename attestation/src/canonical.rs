//! Canonical JSON: the one byte form that plinth signs and hashes.
//!
//! `canonical(v)` is the JSON text of `v` with no insignificant whitespace,
//! object members sorted by the UTF-8 bytes of their keys at every level,
//! integers in decimal, and strings escaped as `serde_json` escapes them (only
//! `"`, `\` and control characters; `\n`, `\t`, `\r`, `\b`, `\f` by name and
//! the rest as `\u00XX`; everything else, non-ASCII included, as UTF-8).
//! Numbers that are not integers are refused: a float's text is not stable
//! across JSON implementations, and nothing plinth signs needs one.
//!
//! Receipts (`plinth-receipt/1`) and evidence bundles (`plinth-evidence/1`)
//! both sign and hash this form, through [`to_canonical_json`] and
//! [`canonical_value`], on the producing and on the verifying side.

use std::io::Write as _;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// Errors producing the canonical form.
#[derive(Debug, Error)]
pub enum CanonicalError {
    /// The value could not be turned into JSON.
    #[error("value cannot be represented as JSON")]
    Serialize(#[source] serde_json::Error),
    /// A number that is not an integer.
    #[error("number {number} is not an integer: the canonical form holds integers only")]
    Float {
        /// The number as serde_json prints it.
        number: String,
    },
}

/// Canonical JSON bytes of any serialisable value.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value).map_err(CanonicalError::Serialize)?;
    canonical_value(&value)
}

/// Canonical JSON bytes of a JSON value.
pub fn canonical_value(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(1024);
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical form of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if !(n.is_i64() || n.is_u64()) {
                return Err(CanonicalError::Float {
                    number: n.to_string(),
                });
            }
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(s, out)?,
        Value::Array(items) => {
            out.push(b'[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (idx, (key, item)) in members.into_iter().enumerate() {
                if idx > 0 {
                    out.push(b',');
                }
                write_string(key, out)?;
                out.push(b':');
                write_canonical(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    serde_json::to_writer(out, s).map_err(CanonicalError::Serialize)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_sorted_by_bytes_no_whitespace() {
        let value = json!({"b": 1, "a": {"z": [true, null], "B": "x\ny\u{1}é"}, "A": -3});
        assert_eq!(
            String::from_utf8(canonical_value(&value).unwrap()).unwrap(),
            r#"{"A":-3,"a":{"B":"x\ny\u0001é","z":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn floats_are_refused() {
        let err = canonical_value(&json!({"capacity": {"tflops": 1.5}})).unwrap_err();
        assert!(err.to_string().contains("1.5"), "{err}");
        assert!(canonical_value(&json!({"n": u64::MAX})).is_ok());
    }
}
