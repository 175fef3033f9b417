//! Metering: CPU time, memory and pids from the job's cgroup (v1 and v2),
//! and GPU usage through the [`GpuMeter`] trait.
//!
//! cgroup v1 (and the hybrid layout, where runc uses the v1 controllers):
//! `cpuacct.usage` (ns), `memory.max_usage_in_bytes`, `memory.usage_in_bytes`,
//! `memory.oom_control` (`oom_kill`), `pids.current`. cgroup v2 (unified):
//! `cpu.stat` (`usage_usec`), `memory.peak` (kernel >= 5.19) or sampled
//! `memory.current`, `memory.events` (`oom_kill`), `pids.peak` or sampled
//! `pids.current`. Peaks the kernel does not keep are the maximum of samples
//! taken by the supervisor, so they are lower bounds; `docs/jobs.md` says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where cgroups are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Errors from reading cgroup files.
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// A cgroup file could not be read.
    #[error("cannot read cgroup file {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A cgroup file has unexpected content.
    #[error("cannot parse cgroup file {path}: {content:?}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Content (capped).
        content: String,
    },
}

/// cgroup hierarchy in use for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Legacy or hybrid: per-controller hierarchies.
    V1,
    /// Unified hierarchy.
    V2,
}

/// Detects the cgroup version from the file system type of `/sys/fs/cgroup`.
pub fn detect_cgroup_version() -> CgroupVersion {
    match nix::sys::statfs::statfs(CGROUP_ROOT) {
        Ok(stat) if stat.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {
            CgroupVersion::V2
        }
        _ => CgroupVersion::V1,
    }
}

/// The cgroup directories of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCgroup {
    /// Hierarchy version.
    pub version: CgroupVersion,
    /// The `cgroupsPath` given to the runtime, e.g. `/plinth/job-1`.
    pub path: String,
    /// Mount point of the cgroup file systems.
    pub root: PathBuf,
}

/// One reading of a job's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSample {
    /// CPU time used so far, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use now, bytes.
    pub memory_bytes: u64,
    /// Peak memory the kernel recorded, if it keeps one.
    pub memory_peak_bytes: Option<u64>,
    /// Tasks now.
    pub pids: u64,
    /// Peak tasks the kernel recorded, if it keeps one.
    pub pids_peak: Option<u64>,
    /// OOM kills in the cgroup.
    pub oom_kills: u64,
}

/// Usage of a job, as billed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock milliseconds from start to end (or to now).
    pub wall_ms: u64,
    /// CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// Peak memory, bytes.
    pub peak_memory_bytes: u64,
    /// Peak number of tasks.
    pub peak_pids: u64,
    /// OOM kills.
    pub oom_kills: u64,
    /// GPU usage.
    pub gpu: GpuUsage,
}

impl Usage {
    /// Folds a sample into the running maxima (CPU is a counter: latest wins).
    pub fn absorb(&mut self, sample: &CgroupSample) {
        self.cpu_ns = self.cpu_ns.max(sample.cpu_ns);
        self.peak_memory_bytes = self
            .peak_memory_bytes
            .max(sample.memory_bytes)
            .max(sample.memory_peak_bytes.unwrap_or(0));
        self.peak_pids = self
            .peak_pids
            .max(sample.pids)
            .max(sample.pids_peak.unwrap_or(0));
        self.oom_kills = self.oom_kills.max(sample.oom_kills);
    }
}

/// GPU usage of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum GpuUsage {
    /// Not measured, and why (no GPU assigned, no NVML, ...).
    Absent {
        /// Why there is no measurement.
        reason: String,
    },
    /// Measured per GPU.
    Measured {
        /// One entry per assigned GPU.
        gpus: Vec<GpuUsageEntry>,
    },
}

impl Default for GpuUsage {
    fn default() -> Self {
        GpuUsage::Absent {
            reason: "no GPU assigned".to_string(),
        }
    }
}

/// Usage of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUsageEntry {
    /// GPU UUID.
    pub uuid: String,
    /// GPU-milliseconds held.
    pub gpu_ms: u64,
    /// Mean utilisation, percent.
    pub utilisation_pct: u32,
    /// Energy, millijoules.
    pub energy_mj: u64,
}

/// A source of GPU usage (NVML on GPU hosts; a labelled double in tests).
pub trait GpuMeter: Send + Sync {
    /// Usage of `devices` (CDI names) between `start_ms` and `end_ms` (unix ms).
    fn usage(&self, devices: &[String], start_ms: u64, end_ms: u64) -> GpuUsage;
}

/// The GPU meter of hosts without NVML: always absent, saying why.
#[derive(Debug, Clone, Default)]
pub struct NoGpuMeter;

impl GpuMeter for NoGpuMeter {
    fn usage(&self, devices: &[String], _start_ms: u64, _end_ms: u64) -> GpuUsage {
        GpuUsage::Absent {
            reason: if devices.is_empty() {
                "no GPU assigned".to_string()
            } else {
                "no GPU metering on this host (NVML not available)".to_string()
            },
        }
    }
}

fn read_string(path: &Path) -> Result<String, MeterError> {
    fs::read_to_string(path).map_err(|source| MeterError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_u64(path: &Path) -> Result<u64, MeterError> {
    let content = read_string(path)?;
    let trimmed = content.trim();
    if trimmed == "max" {
        return Ok(u64::MAX);
    }
    trimmed.parse().map_err(|_| MeterError::Parse {
        path: path.to_path_buf(),
        content: trimmed.chars().take(100).collect(),
    })
}

fn read_optional_u64(path: &Path) -> Option<u64> {
    read_u64(path).ok()
}

/// Reads `key value` from a flat-keyed file (cpu.stat, memory.events, oom_control).
fn read_key(path: &Path, key: &str) -> Result<Option<u64>, MeterError> {
    let content = read_string(path)?;
    Ok(content.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next()?.parse().ok())?
    }))
}

impl JobCgroup {
    /// The cgroup of `path` under the host's cgroup mount.
    pub fn new(version: CgroupVersion, path: &str) -> JobCgroup {
        JobCgroup {
            version,
            path: path.to_string(),
            root: PathBuf::from(CGROUP_ROOT),
        }
    }

    /// The directory of `controller` (ignored on v2).
    pub fn dir(&self, controller: &str) -> PathBuf {
        let relative = self.path.trim_start_matches('/');
        match self.version {
            CgroupVersion::V2 => self.root.join(relative),
            CgroupVersion::V1 => self.root.join(controller).join(relative),
        }
    }

    /// Whether swap can be limited for this hierarchy.
    pub fn can_limit_swap(&self) -> bool {
        match self.version {
            CgroupVersion::V2 => true,
            CgroupVersion::V1 => self
                .root
                .join("memory/memory.memsw.limit_in_bytes")
                .exists(),
        }
    }

    /// Whether the job's cgroup exists (it is removed by `delete`).
    pub fn exists(&self) -> bool {
        match self.version {
            CgroupVersion::V2 => self.dir("").is_dir(),
            CgroupVersion::V1 => self.dir("memory").is_dir(),
        }
    }

    /// Reads the job's counters now.
    pub fn sample(&self) -> Result<CgroupSample, MeterError> {
        match self.version {
            CgroupVersion::V1 => {
                let cpu_ns = read_u64(&self.dir("cpuacct").join("cpuacct.usage"))?;
                let memory = self.dir("memory");
                let memory_bytes = read_u64(&memory.join("memory.usage_in_bytes"))?;
                let memory_peak_bytes =
                    read_optional_u64(&memory.join("memory.max_usage_in_bytes"));
                let oom_kills = read_key(&memory.join("memory.oom_control"), "oom_kill")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let pids = read_u64(&self.dir("pids").join("pids.current"))?;
                Ok(CgroupSample {
                    cpu_ns,
                    memory_bytes,
                    memory_peak_bytes,
                    pids,
                    pids_peak: None,
                    oom_kills,
                })
            }
            CgroupVersion::V2 => {
                let dir = self.dir("");
                let cpu_path = dir.join("cpu.stat");
                let usage_usec =
                    read_key(&cpu_path, "usage_usec")?.ok_or_else(|| MeterError::Parse {
                        path: cpu_path.clone(),
                        content: "no usage_usec".to_string(),
                    })?;
                Ok(CgroupSample {
                    cpu_ns: usage_usec.saturating_mul(1000),
                    memory_bytes: read_u64(&dir.join("memory.current"))?,
                    memory_peak_bytes: read_optional_u64(&dir.join("memory.peak")),
                    pids: read_u64(&dir.join("pids.current"))?,
                    pids_peak: read_optional_u64(&dir.join("pids.peak")),
                    oom_kills: read_key(&dir.join("memory.events"), "oom_kill")
                        .ok()
                        .flatten()
                        .unwrap_or(0),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1(root: &Path) -> JobCgroup {
        let mut cgroup = JobCgroup::new(CgroupVersion::V1, "/plinth/j1");
        cgroup.root = root.to_path_buf();
        for (controller, file, content) in [
            ("cpuacct", "cpuacct.usage", "123456789\n"),
            ("memory", "memory.usage_in_bytes", "1000\n"),
            ("memory", "memory.max_usage_in_bytes", "5000\n"),
            (
                "memory",
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("pids", "pids.current", "7\n"),
        ] {
            let dir = cgroup.dir(controller);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), content).unwrap();
        }
        cgroup
    }

    #[test]
    fn v1_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = fake_v1(dir.path());
        assert!(cgroup.exists());
        let sample = cgroup.sample().unwrap();
        assert_eq!(sample.cpu_ns, 123456789);
        assert_eq!(sample.memory_peak_bytes, Some(5000));
        assert_eq!(sample.oom_kills, 2);
        assert_eq!(sample.pids, 7);
        let mut usage = Usage::default();
        usage.absorb(&sample);
        assert_eq!(usage.peak_memory_bytes, 5000);
        assert_eq!(usage.peak_pids, 7);
    }

    #[test]
    fn v2_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut cgroup = JobCgroup::new(CgroupVersion::V2, "/plinth/j2");
        cgroup.root = dir.path().to_path_buf();
        let job_dir = cgroup.dir("");
        fs::create_dir_all(&job_dir).unwrap();
        fs::write(
            job_dir.join("cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        )
        .unwrap();
        fs::write(job_dir.join("memory.current"), "4096\n").unwrap();
        fs::write(
            job_dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(job_dir.join("pids.current"), "3\n").unwrap();
        let sample = cgroup.sample().unwrap();
        assert_eq!(sample.cpu_ns, 2_500_000);
        assert_eq!(sample.memory_peak_bytes, None);
        assert_eq!(sample.oom_kills, 1);
        fs::write(job_dir.join("cpu.stat"), "user_usec 1\n").unwrap();
        assert!(matches!(cgroup.sample(), Err(MeterError::Parse { .. })));
    }

    #[test]
    fn no_gpu_meter_says_why() {
        let meter = NoGpuMeter;
        assert_eq!(
            meter.usage(&[], 0, 1),
            GpuUsage::Absent {
                reason: "no GPU assigned".into()
            }
        );
        assert!(matches!(
            meter.usage(&["nvidia.com/gpu=0".into()], 0, 1),
            GpuUsage::Absent { reason } if reason.contains("NVML")
        ));
    }

    #[test]
    fn host_cgroup_version_is_detected() {
        let version = detect_cgroup_version();
        let expected = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        };
        assert_eq!(version, expected);
    }
}
