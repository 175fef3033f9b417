//! NVIDIA Reference Integrity Manifests (SWID tags, ISO/IEC 19770-2 XML).
//!
//! Only the measurements are read: every `Resource` of type `Measurement` with
//! its `index`, `active` flag and `HashN` alternatives. The XMLDSig signature
//! of the RIM is NOT verified (that needs XML canonicalisation, which no pure
//! Rust crate implements to the standard we would trust); auditors must get
//! RIMs over a trusted channel. `roxmltree` does not expand external entities
//! or DTDs, so a hostile RIM cannot reach files or the network.

use thiserror::Error;

/// Errors reading a RIM.
#[derive(Debug, Error)]
pub enum RimError {
    /// Not well-formed XML.
    #[error("rim is not well-formed xml")]
    Xml(#[source] roxmltree::Error),
    /// Not UTF-8.
    #[error("rim is not utf-8 text")]
    Utf8,
    /// No measurements found.
    #[error("rim has no Measurement resources")]
    NoMeasurements,
    /// A measurement with a bad attribute.
    #[error("rim measurement {name}: attribute {attribute} is invalid")]
    BadAttribute {
        /// The measurement's name.
        name: String,
        /// Which attribute.
        attribute: String,
    },
}

/// One reference measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RimMeasurement {
    /// Index from 0 (SPDM block index minus one).
    pub index: u32,
    /// The name attribute.
    pub name: String,
    /// Whether the verifier must compare it.
    pub active: bool,
    /// Acceptable values.
    pub alternatives: Vec<Vec<u8>>,
}

/// A parsed RIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rim {
    /// `SoftwareIdentity/@name` (e.g. "GH100").
    pub name: String,
    /// `SoftwareIdentity/@version`.
    pub version: String,
    /// `Meta/@colloquialVersion` (driver or VBIOS version).
    pub colloquial_version: String,
    /// The measurements.
    pub measurements: Vec<RimMeasurement>,
}

impl Rim {
    /// "name colloquialVersion", for messages.
    pub fn product_version(&self) -> String {
        format!("{} {}", self.name, self.colloquial_version)
    }

    /// Parses a RIM.
    pub fn parse(bytes: &[u8]) -> Result<Self, RimError> {
        let text = std::str::from_utf8(bytes).map_err(|_| RimError::Utf8)?;
        let doc = roxmltree::Document::parse(text).map_err(RimError::Xml)?;
        let root = doc.root_element();
        let attr = |node: roxmltree::Node<'_, '_>, name: &str| {
            node.attributes()
                .find(|a| a.name() == name)
                .map(|a| a.value().to_owned())
                .unwrap_or_default()
        };
        let colloquial_version = root
            .descendants()
            .find(|n| n.tag_name().name() == "Meta")
            .map(|n| attr(n, "colloquialVersion"))
            .unwrap_or_default();
        let mut measurements = Vec::new();
        for node in root
            .descendants()
            .filter(|n| n.tag_name().name() == "Resource" && attr(*n, "type") == "Measurement")
        {
            let name = attr(node, "name");
            let bad = |attribute: &str| RimError::BadAttribute {
                name: name.clone(),
                attribute: attribute.to_owned(),
            };
            let index: u32 = attr(node, "index").parse().map_err(|_| bad("index"))?;
            let active = attr(node, "active").eq_ignore_ascii_case("true");
            let n_alternatives: usize = attr(node, "alternatives")
                .parse()
                .map_err(|_| bad("alternatives"))?;
            if n_alternatives > 64 {
                return Err(bad("alternatives"));
            }
            let mut alternatives = Vec::new();
            for alt in 0..n_alternatives {
                let key = format!("Hash{alt}");
                let value = attr(node, &key);
                alternatives.push(hex::decode(value.trim()).map_err(|_| bad(&key))?);
            }
            measurements.push(RimMeasurement {
                index,
                name,
                active,
                alternatives,
            });
        }
        if measurements.is_empty() {
            return Err(RimError::NoMeasurements);
        }
        Ok(Self {
            name: attr(root, "name"),
            version: attr(root, "version"),
            colloquial_version,
            measurements,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_rim() {
        let xml = r#"<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" xmlns:h="http://www.w3.org/2001/04/xmlenc#sha384" name="GH100" version="1">
          <Meta colloquialVersion="96.00"/>
          <Payload><Resource type="Measurement" index="1" active="True" alternatives="2" h:Hash0="aa" h:Hash1="bb" name="m1"/></Payload>
        </SoftwareIdentity>"#;
        let rim = Rim::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            rim.measurements[0].alternatives,
            vec![vec![0xaa], vec![0xbb]]
        );
        assert_eq!(rim.product_version(), "GH100 96.00");
        assert!(Rim::parse(b"<a/>").is_err());
        assert!(Rim::parse(b"<a").is_err());
    }
}
