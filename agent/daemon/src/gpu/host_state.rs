//! The plugins' view of the GPUs: the `host-state` record a scheduling plugin gets and,
//! summarised by `plinth_plugin_host::summarize`, the `gpu-class` records of pricing
//! (so of quotes), filled from the inventory, the latest health and the drain state.
//!
//! A drained or lost GPU is `drained` (so it is neither scheduled nor quoted as free);
//! a GPU that a running job's CDI devices reach is `allocated`. NVLink domains are the
//! connected groups of the inventory's NVLink peers, each named by its lowest index.

use plinth_plugin_host::{Gpu, HostState};

use super::GpuService;
use super::nvml::GpuInventory;

/// The NVLink domain of every GPU: the lowest index among the GPUs it reaches over
/// NVLink, directly or through others.
pub fn nvlink_domains(inventory: &[GpuInventory]) -> Vec<u32> {
    let mut domain: Vec<u32> = inventory.iter().map(|gpu| gpu.index).collect();
    // Union by repeated relaxation (a host has at most a few dozen GPUs).
    let mut changed = true;
    while changed {
        changed = false;
        for (position, gpu) in inventory.iter().enumerate() {
            for peer_bus in &gpu.nvlink_peers {
                if let Some(peer) = inventory
                    .iter()
                    .position(|other| &other.pci_bus_id == peer_bus)
                {
                    let lowest = domain[position].min(domain[peer]);
                    if domain[position] != lowest || domain[peer] != lowest {
                        domain[position] = lowest;
                        domain[peer] = lowest;
                        changed = true;
                    }
                }
            }
        }
    }
    domain
}

impl GpuService {
    /// The plugins' `host-state`: every GPU in index order, the running jobs.
    pub fn host_state(&self) -> HostState {
        let report = self.report();
        let running: Vec<Vec<String>> =
            super::notices::running_job_devices(&self.store).unwrap_or_default();
        let domains = nvlink_domains(&self.inventory);
        let mut total_utilisation = 0u32;
        let gpus: Vec<Gpu> = report
            .gpus
            .iter()
            .zip(domains)
            .map(|(entry, nvlink_domain)| {
                let utilisation = entry
                    .health
                    .as_ref()
                    .and_then(|health| health.sm_utilisation_pct)
                    .unwrap_or(0)
                    .min(100);
                total_utilisation += utilisation;
                Gpu {
                    index: entry.inventory.index,
                    uuid: entry.inventory.uuid.clone(),
                    model: entry.inventory.name.clone(),
                    memory_mib: entry.inventory.memory_bytes >> 20,
                    numa_node: entry.inventory.numa_node.unwrap_or(0),
                    nvlink_domain,
                    utilisation_pct: utilisation as u8,
                    drained: entry.drain.is_some() || entry.lost,
                    allocated: running
                        .iter()
                        .any(|devices| devices.iter().any(|name| entry.cdi_names.contains(name))),
                }
            })
            .collect();
        let utilisation_pct = if gpus.is_empty() {
            0
        } else {
            (total_utilisation / gpus.len() as u32) as u8
        };
        HostState {
            running_jobs: running.len() as u32,
            utilisation_pct,
            gpus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::double::test_gpu;

    #[test]
    fn nvlink_peers_form_domains() {
        let mut gpus: Vec<GpuInventory> = (0..4).map(test_gpu).collect();
        // 0-1 and 2-3 are linked; 1 also lists 0 (links are seen from both ends).
        gpus[0].nvlink_peers = vec![gpus[1].pci_bus_id.clone()];
        gpus[1].nvlink_peers = vec![gpus[0].pci_bus_id.clone()];
        gpus[3].nvlink_peers = vec![gpus[2].pci_bus_id.clone()];
        assert_eq!(nvlink_domains(&gpus), [0, 0, 2, 2]);
        assert_eq!(nvlink_domains(&gpus[..1]), [0]);
    }
}
