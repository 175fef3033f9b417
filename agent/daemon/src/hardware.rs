//! Detection of the hardware the agent can use: TPM, SEV-SNP guest device, NVIDIA GPUs.
//!
//! Detection only looks for device nodes and driver files; it opens nothing. The
//! collectors that talk to the devices live in the `attestation` crate and the GPU
//! module, and are chosen from what this finds. Nothing here pretends hardware exists.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What the agent found on this host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Hardware {
    /// The TPM resource manager device, when present.
    pub tpm: Option<PathBuf>,
    /// The SEV-SNP guest device, when the agent runs in an SEV-SNP guest.
    pub sev_snp: Option<PathBuf>,
    /// NVIDIA GPU device nodes (`/dev/nvidia0`, ...).
    pub nvidia_gpus: Vec<PathBuf>,
    /// A one-line summary for logs and `systemctl status`.
    pub summary: String,
}

impl Hardware {
    /// Probes the host's `/dev`.
    pub fn detect() -> Self {
        Self::detect_in(Path::new("/dev"))
    }

    /// Probes a given device directory (tests pass a temporary one).
    pub fn detect_in(dev: &Path) -> Self {
        let tpm = ["tpmrm0", "tpm0"]
            .iter()
            .map(|name| dev.join(name))
            .find(|path| path.exists());
        let sev_snp = Some(dev.join("sev-guest")).filter(|path| path.exists());
        let mut nvidia_gpus: Vec<PathBuf> = std::fs::read_dir(dev)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| is_nvidia_gpu_node(path))
                    .collect()
            })
            .unwrap_or_default();
        nvidia_gpus.sort();
        let summary = format!(
            "tpm: {}, sev-snp: {}, nvidia gpus: {}",
            tpm.as_ref()
                .map_or("absent".to_owned(), |p| p.display().to_string()),
            if sev_snp.is_some() { "guest" } else { "absent" },
            if nvidia_gpus.is_empty() {
                "none (cpu-only)".to_owned()
            } else {
                nvidia_gpus.len().to_string()
            },
        );
        Self {
            tpm,
            sev_snp,
            nvidia_gpus,
            summary,
        }
    }
}

fn is_nvidia_gpu_node(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix("nvidia"))
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_real_gpu_nodes() {
        let dev = tempfile::tempdir().unwrap();
        for name in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "tpmrm0"] {
            std::fs::write(dev.path().join(name), b"").unwrap();
        }
        let hardware = Hardware::detect_in(dev.path());
        assert_eq!(hardware.nvidia_gpus.len(), 2);
        assert_eq!(hardware.tpm, Some(dev.path().join("tpmrm0")));
        assert_eq!(hardware.sev_snp, None);
        assert!(hardware.summary.contains("nvidia gpus: 2"));
    }

    #[test]
    fn empty_host_is_cpu_only() {
        let dev = tempfile::tempdir().unwrap();
        let hardware = Hardware::detect_in(dev.path());
        assert!(hardware.tpm.is_none());
        assert!(hardware.summary.contains("cpu-only"));
    }
}
