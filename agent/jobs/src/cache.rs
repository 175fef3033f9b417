//! The bounded image cache: listing, removal, pruning and least-recently-used
//! eviction of the unpacked images under `images/`.
//!
//! An image's last use is the modification time of its `image.json`, set
//! whenever the store finds it ([`touch`]). Eviction removes the least
//! recently used images that no job uses until the cache fits
//! `cache_max_bytes`; an image is removed by renaming its directory into the
//! store's `tmp/` first (one atomic step: it is either complete in `images/`
//! or gone) and then deleting it, so a crash mid-removal leaves nothing that
//! looks like an image.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::image::{ImageError, ImageOrigin, ImageStore, sha256_hex};

/// One cached image, as `plinthctl images list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    /// `sha256:<hex>` of the manifest.
    pub image_id: String,
    /// Registry provenance (absent for local imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ImageOrigin>,
    /// Bytes of file data.
    pub size_bytes: u64,
    /// Last use (unix ms).
    pub last_used_ms: u64,
    /// Whether a job that has not ended uses it.
    pub in_use: bool,
}

/// Marks an image as used now (best effort: a read-only cache still works).
pub(crate) fn touch(record_path: &Path) {
    if let Ok(file) = fs::OpenOptions::new().write(true).open(record_path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

fn mtime_ms(path: &Path) -> u64 {
    fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |duration| duration.as_millis() as u64)
}

/// Bytes of regular-file data under `dir` (for records written before the
/// size was kept); symlinks are not followed.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file() {
                total += entry.metadata().map_or(0, |meta| meta.len());
            }
        }
    }
    total
}

impl ImageStore {
    /// Every complete image in the cache (directories without `image.json`
    /// are not images), most recently used first.
    pub fn list(&self, in_use: &HashSet<String>) -> Result<Vec<CachedImage>, ImageError> {
        let images_dir = self.root().join("images");
        let entries = fs::read_dir(&images_dir).map_err(|source| ImageError::Io {
            op: "list",
            path: images_dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let image_id = format!("sha256:{name}");
            if sha256_hex(&image_id).is_err() || !entry.path().join("image.json").is_file() {
                continue;
            }
            let record_path = entry.path().join("image.json");
            let last_used_ms = mtime_ms(&record_path);
            // Read without touching: listing is not a use.
            let Ok(bytes) = fs::read(&record_path) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<crate::image::ImageRecord>(&bytes) else {
                continue;
            };
            let size_bytes = if record.size_bytes > 0 {
                record.size_bytes
            } else {
                du(&entry.path().join("rootfs"))
            };
            out.push(CachedImage {
                in_use: in_use.contains(&image_id),
                image_id,
                origin: record.origin,
                size_bytes,
                last_used_ms,
            });
        }
        out.sort_by(|a, b| {
            b.last_used_ms
                .cmp(&a.last_used_ms)
                .then(a.image_id.cmp(&b.image_id))
        });
        Ok(out)
    }

    /// Removes one image; refused while a job uses it. Returns whether it was
    /// there.
    pub fn remove(&self, image_id: &str, in_use: &HashSet<String>) -> Result<bool, ImageError> {
        let hex_part = sha256_hex(image_id)?;
        if in_use.contains(image_id) {
            return Err(ImageError::InUse {
                image_id: image_id.to_owned(),
            });
        }
        let dir = self.root().join("images").join(hex_part);
        if !dir.exists() {
            return Ok(false);
        }
        let staging = self.staging()?;
        let doomed = staging.path.join("removed");
        fs::rename(&dir, &doomed).map_err(|source| ImageError::Io {
            op: "remove from cache",
            path: dir.clone(),
            source,
        })?;
        plinth_toolbox::durable::sync_dir(&self.root().join("images"))?;
        // `staging` deletes the renamed directory when dropped.
        drop(staging);
        Ok(true)
    }

    /// Removes every image no job uses; returns the ids removed.
    pub fn prune(&self, in_use: &HashSet<String>) -> Result<Vec<String>, ImageError> {
        let mut removed = Vec::new();
        for image in self.list(in_use)? {
            if !image.in_use && self.remove(&image.image_id, in_use)? {
                removed.push(image.image_id);
            }
        }
        Ok(removed)
    }

    /// Evicts least-recently-used images that no job uses (and that are not
    /// `keep`) until the cache holds at most `max_bytes`; returns the ids
    /// evicted. `max_bytes == 0` means unbounded.
    pub fn evict(
        &self,
        max_bytes: u64,
        in_use: &HashSet<String>,
        keep: &str,
    ) -> Result<Vec<String>, ImageError> {
        if max_bytes == 0 {
            return Ok(Vec::new());
        }
        let images = self.list(in_use)?;
        let mut total: u64 = images.iter().map(|image| image.size_bytes).sum();
        let mut evicted = Vec::new();
        // Least recently used first.
        for image in images.iter().rev() {
            if total <= max_bytes {
                break;
            }
            if image.in_use || image.image_id == keep {
                continue;
            }
            if self.remove(&image.image_id, in_use)? {
                total = total.saturating_sub(image.size_bytes);
                tracing::info!(image = %image.image_id, bytes = image.size_bytes, "evicted from the image cache");
                evicted.push(image.image_id.clone());
            }
        }
        Ok(evicted)
    }
}
