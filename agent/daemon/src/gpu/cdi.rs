//! CDI device names mapped to GPUs, from the CDI specs `nvidia-ctk cdi generate` writes.
//!
//! nvidia-ctk names each GPU three ways under the kind `nvidia.com/gpu`: by index (`0`),
//! by uuid (`GPU-...`), and MIG devices as `INDEX:MIG` (`0:1`), plus `all`. A name maps
//! to the GPUs it reaches; names of other kinds are ignored. When no spec names a GPU,
//! [`CdiMap::hint`] says how to create one.

use std::path::PathBuf;

use plinth_jobs::cdi::CdiRegistry;

use super::nvml::GpuInventory;

/// The CDI kind of NVIDIA GPUs.
pub const GPU_KIND: &str = "nvidia.com/gpu";

/// Which GPUs (by uuid) each CDI device name reaches.
#[derive(Debug, Clone, Default)]
pub struct CdiMap {
    names: Vec<(String, Vec<String>)>,
    dirs: Vec<PathBuf>,
    has_gpus: bool,
}

impl CdiMap {
    /// Reads the specs in `dirs` and maps their `nvidia.com/gpu` devices onto
    /// `inventory`.
    pub fn load(dirs: &[PathBuf], inventory: &[GpuInventory]) -> Self {
        let registry = CdiRegistry::load(dirs);
        for (path, why) in &registry.skipped {
            tracing::warn!(path = %path.display(), %why, "CDI spec skipped");
        }
        Self::from_names(registry.device_names(), dirs, inventory)
    }

    /// Maps fully-qualified device names onto `inventory`.
    pub fn from_names(names: Vec<String>, dirs: &[PathBuf], inventory: &[GpuInventory]) -> Self {
        let mut mapped = Vec::new();
        for qualified in names {
            let Some(name) = qualified
                .strip_prefix(GPU_KIND)
                .and_then(|rest| rest.strip_prefix('='))
            else {
                continue;
            };
            let uuids: Vec<String> = if name == "all" {
                inventory.iter().map(|gpu| gpu.uuid.clone()).collect()
            } else {
                let parent = name.split_once(':').map_or(name, |(parent, _)| parent);
                inventory
                    .iter()
                    .filter(|gpu| {
                        gpu.uuid == name
                            || gpu.index.to_string() == parent
                            || gpu.mig_instances.iter().any(|mig| mig.uuid == name)
                    })
                    .map(|gpu| gpu.uuid.clone())
                    .collect()
            };
            if !uuids.is_empty() {
                mapped.push((qualified, uuids));
            }
        }
        Self {
            has_gpus: !inventory.is_empty(),
            names: mapped,
            dirs: dirs.to_vec(),
        }
    }

    /// The names that reach `gpu`.
    pub fn names_of(&self, gpu: &GpuInventory) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, uuids)| uuids.contains(&gpu.uuid))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The uuids of the GPUs a device name reaches (none for a name of another kind).
    pub fn uuids_of(&self, qualified: &str) -> Vec<String> {
        self.names
            .iter()
            .find(|(name, _)| name == qualified)
            .map(|(_, uuids)| uuids.clone())
            .unwrap_or_default()
    }

    /// How to create CDI specs, when the host has GPUs and no spec names them.
    pub fn hint(&self) -> Option<String> {
        (self.has_gpus && self.names.is_empty()).then(|| {
            format!(
                "no CDI spec in {} names an NVIDIA GPU, so jobs cannot be given one: create it with \
                 `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` (NVIDIA Container Toolkit)",
                self.dirs
                    .iter()
                    .map(|dir| dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::double::test_gpu;

    #[test]
    fn index_uuid_mig_and_all_names_map_and_other_kinds_are_ignored() {
        let inventory = vec![test_gpu(0), test_gpu(1)];
        let map = CdiMap::from_names(
            vec![
                "nvidia.com/gpu=0".to_owned(),
                "nvidia.com/gpu=GPU-test-1".to_owned(),
                "nvidia.com/gpu=1:0".to_owned(),
                "nvidia.com/gpu=all".to_owned(),
                "nvidia.com/gpu=7".to_owned(),
                "vendor.com/fpga=0".to_owned(),
            ],
            &[],
            &inventory,
        );
        assert_eq!(
            map.names_of(&inventory[0]),
            ["nvidia.com/gpu=0", "nvidia.com/gpu=all"]
        );
        assert_eq!(
            map.names_of(&inventory[1]),
            [
                "nvidia.com/gpu=GPU-test-1",
                "nvidia.com/gpu=1:0",
                "nvidia.com/gpu=all"
            ]
        );
        assert!(map.uuids_of("vendor.com/fpga=0").is_empty());
        assert_eq!(
            map.uuids_of("nvidia.com/gpu=all"),
            ["GPU-test-0", "GPU-test-1"]
        );
        assert!(map.hint().is_none());
        let empty = CdiMap::from_names(Vec::new(), &[PathBuf::from("/etc/cdi")], &inventory);
        assert!(empty.hint().unwrap().contains("nvidia-ctk cdi generate"));
    }
}
