//! NVIDIA GPU and NVSwitch evidence: SPDM measurement reports, the device
//! certificate chain (pinned NVIDIA Device Identity root), and RIM files.

pub mod rim;
pub mod spdm;

pub use spdm::{GpuEvidence, verify};
