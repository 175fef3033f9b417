//! Evidence bundles (`plinth-evidence/1`): one signed document that binds the
//! TPM quote, the SEV-SNP report and every GPU's SPDM report to one verifier
//! nonce and to the node's claims (agent binary, configuration, plugins, GPU
//! inventory).
//!
//! [`model`] is the wire format, shared by the agent's collector and the
//! verifier: the serde types, the binding digest, the node signature and the
//! strict parser. [`verify`] runs every check of every piece; [`capacity`] the
//! optional capacity-challenge transcript's. See
//! docs/attestation.md, "Evidence bundles".

pub mod capacity;
pub mod model;
pub mod verify;

pub use model::{
    Base64Bytes, BundleError, CcMode, Evidence, EvidenceBundle, GpuClaim, GpuEvidence, Hex, HexVec,
    NodeClaims, Piece, PluginClaim, SnpEvidence, TpmEvidence, UnsignedBundle, binding_digest,
};

#[cfg(test)]
mod tests;
