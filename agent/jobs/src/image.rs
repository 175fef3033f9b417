//! Image import: local OCI layouts, OCI archives and `docker save` archives
//! into a content-addressed cache of unpacked root file systems.
//!
//! Cache layout under the store root:
//!
//! ```text
//! images/<hex>/image.json   ImageRecord (config, digests), written last
//! images/<hex>/rootfs/      the unpacked layers
//! tmp/<unique>/             staging (archives, unpacking); renamed into images/
//! ```
//!
//! `<hex>` is the SHA-256 of the OCI image manifest (for legacy `docker save`
//! archives without an OCI index: of the image config). A second job on the
//! same image finds `images/<hex>/image.json` and does not unpack again.
//! Every blob read is checked against its descriptor's size and SHA-256 and
//! every layer against the config's `diff_ids`; layer blobs are hashed while
//! they stream into the safe unpacker and the staging directory is discarded
//! on any mismatch, so nothing unverified ever reaches the cache.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::spec::{ImageRef, ImageSource};
use crate::unpack::{HashingReader, UnpackError, UnpackLimits, Unpacker};

/// Largest manifest, index or config blob read into memory.
const MAX_JSON_BLOB: u64 = 4 * 1024 * 1024;
/// Deepest nesting of image indexes followed.
const MAX_INDEX_DEPTH: usize = 4;
/// Annotation naming a manifest's tag in an OCI index.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Errors from importing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// File system error on the host side (store or image source).
    #[error("cannot {op} {path}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A JSON document of the image could not be parsed.
    #[error("cannot parse {what} {path}")]
    Parse {
        /// Which document.
        what: &'static str,
        /// Where it was.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A blob's content does not match its digest or size.
    #[error("blob {digest} does not match its descriptor: {reason}")]
    BlobMismatch {
        /// The descriptor's digest.
        digest: String,
        /// What differed.
        reason: String,
    },
    /// A digest that is not `sha256:<64 hex>`.
    #[error("unsupported or malformed digest {digest:?}")]
    BadDigest {
        /// The digest string.
        digest: String,
    },
    /// The layout's `oci-layout` marker is missing or of another version.
    #[error("{path} is not an OCI image layout 1.0.0")]
    NotALayout {
        /// Layout directory.
        path: PathBuf,
    },
    /// No manifest matches the requested reference, digest or platform.
    #[error("no image manifest in {path} matches {wanted}")]
    NoMatch {
        /// Layout or archive.
        path: PathBuf,
        /// What was asked for.
        wanted: String,
    },
    /// Several manifests match and nothing chose one.
    #[error("{path} holds {count} images; name one with image.reference or image.digest")]
    Ambiguous {
        /// Layout or archive.
        path: PathBuf,
        /// Number of candidates.
        count: usize,
    },
    /// A media type this importer does not handle.
    #[error("unsupported media type {media_type} for {digest}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// The blob.
        digest: String,
    },
    /// The config's diff_ids do not line up with the manifest's layers.
    #[error("image config lists {diff_ids} diff_ids for {layers} layers")]
    LayerCountMismatch {
        /// Entries in rootfs.diff_ids.
        diff_ids: usize,
        /// Layers in the manifest.
        layers: usize,
    },
    /// A path inside an archive is unsafe or unexpected.
    #[error("archive {archive} has an unsafe entry {entry:?}")]
    UnsafeArchiveEntry {
        /// Archive file.
        archive: PathBuf,
        /// Entry name.
        entry: String,
    },
    /// Unpacking a layer failed.
    #[error("cannot unpack layer {layer}")]
    Unpack {
        /// Layer digest.
        layer: String,
        /// Cause.
        #[source]
        source: UnpackError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What the cache keeps about an unpacked image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the manifest (or of the config for legacy docker archives).
    pub image_id: String,
    /// `sha256:<hex>` of the image config.
    pub config_digest: String,
    /// The image configuration (entrypoint, env, user, ...).
    pub config: ImageConfiguration,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    /// The cache record.
    pub record: ImageRecord,
    /// The unpacked root file system (shared, mounted read-only by jobs).
    pub rootfs: PathBuf,
    /// True when the cache already held it.
    pub cached: bool,
}

/// Progress reported while an image is imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportProgress {
    /// The manifest was found.
    Resolved {
        /// Image id (manifest digest).
        image_id: String,
        /// Number of layers.
        n_layers: usize,
    },
    /// The cache already has it; nothing to unpack.
    CacheHit,
    /// A layer is being verified and unpacked.
    Layer {
        /// Zero-based layer index.
        layer_idx: usize,
        /// Number of layers.
        n_layers: usize,
        /// Layer digest.
        digest: String,
    },
    /// The image is in the cache.
    Done,
}

/// The content-addressed image cache.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: UnpackLimits,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A staging directory removed on drop.
struct Staging {
    path: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.path.exists() {
            // Best effort: a leftover is cleaned by the next `ImageStore::new`.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Returns the hex part of a `sha256:<hex>` digest.
pub fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex_part)
            if hex_part.len() == 64
                && hex_part
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex_part)
        }
        _ => Err(ImageError::BadDigest {
            digest: digest.to_string(),
        }),
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() as u64 > max {
        return Err(ImageError::Io {
            op: "read",
            path: path.to_path_buf(),
            source: io::Error::other(format!("larger than {max} bytes")),
        });
    }
    Ok(bytes)
}

fn current_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn is_index(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex)
        || media_type.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

impl ImageStore {
    /// Opens (creating) the store at `root` and clears stale staging dirs.
    pub fn new(root: &Path, limits: UnpackLimits) -> Result<ImageStore, ImageError> {
        for sub in ["images", "tmp"] {
            let dir = root.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err("create", &dir))?;
        }
        let tmp = root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            let own_prefix = format!("{}-", std::process::id());
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with(&own_prefix) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            limits,
        })
    }

    /// Root directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn staging(&self) -> Result<Staging, ImageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = self.root.join("tmp").join(format!(
            "{}-{nanos}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("create", &path))?;
        Ok(Staging { path })
    }

    /// Looks an image up in the cache by id (`sha256:<hex>`).
    pub fn lookup(&self, image_id: &str) -> Result<Option<ImportedImage>, ImageError> {
        let dir = self.root.join("images").join(sha256_hex(image_id)?);
        let record_path = dir.join("image.json");
        if !record_path.exists() {
            return Ok(None);
        }
        let bytes = read_capped(&record_path, MAX_JSON_BLOB * 2)?;
        let record: ImageRecord =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
                what: "cached image record",
                path: record_path.clone(),
                source,
            })?;
        Ok(Some(ImportedImage {
            record,
            rootfs: dir.join("rootfs"),
            cached: true,
        }))
    }

    /// Imports `image` (or finds it in the cache).
    pub fn import(
        &self,
        image: &ImageRef,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        match image.source {
            ImageSource::OciLayout => self.import_layout(&image.path, image, progress),
            ImageSource::OciArchive | ImageSource::DockerArchive => {
                let staging = self.staging()?;
                let layout = staging.path.join("layout");
                self.extract_archive(&image.path, &layout)?;
                if layout.join("index.json").exists() {
                    self.import_layout(&layout, image, progress)
                } else if layout.join("manifest.json").exists() {
                    self.import_docker_legacy(&layout, image, progress)
                } else {
                    Err(ImageError::NotALayout {
                        path: image.path.clone(),
                    })
                }
            }
        }
    }

    /// Copies the regular files of an image archive into `dest`.
    fn extract_archive(&self, archive_path: &Path, dest: &Path) -> Result<(), ImageError> {
        let file = File::open(archive_path).map_err(io_err("open", archive_path))?;
        let mut archive = tar::Archive::new(io::BufReader::with_capacity(256 * 1024, file));
        fs::create_dir(dest).map_err(io_err("create", dest))?;
        let mut n_bytes = 0u64;
        let mut n_entries = 0u64;
        let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
        let unsafe_entry = |entry: &str| ImageError::UnsafeArchiveEntry {
            archive: archive_path.to_path_buf(),
            entry: entry.to_string(),
        };
        let entries = archive.entries().map_err(io_err("read", archive_path))?;
        for entry in entries {
            let mut entry = entry.map_err(io_err("read", archive_path))?;
            n_entries += 1;
            if n_entries > 100_000 {
                return Err(unsafe_entry("(more than 100000 entries)"));
            }
            if matches!(
                entry.header().entry_type(),
                tar::EntryType::Directory | tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
            ) {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            let Some(relative) = safe_archive_path(&name) else {
                return Err(unsafe_entry(&name));
            };
            match entry.header().entry_type() {
                tar::EntryType::Directory
                | tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry
                        .header()
                        .size()
                        .map_err(io_err("read", archive_path))?;
                    n_bytes = n_bytes.saturating_add(size);
                    if n_bytes > self.limits.max_total_bytes {
                        return Err(ImageError::Unpack {
                            layer: archive_path.display().to_string(),
                            source: UnpackError::TooLarge {
                                max: self.limits.max_total_bytes,
                            },
                        });
                    }
                    let target = dest.join(&relative);
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                    }
                    let mut out = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&target)
                        .map_err(io_err("create", &target))?;
                    io::copy(&mut (&mut entry).take(size), &mut out)
                        .map_err(io_err("write", &target))?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    // Legacy docker archives link duplicate layers; resolve
                    // inside the archive only.
                    let link_raw = entry
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .unwrap_or_default();
                    let link = String::from_utf8_lossy(&link_raw).into_owned();
                    let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                        relative.parent().map(Path::to_path_buf).unwrap_or_default()
                    } else {
                        PathBuf::new()
                    };
                    let Some(resolved) = resolve_inside(&base, &link) else {
                        return Err(unsafe_entry(&name));
                    };
                    links.push((relative, resolved));
                }
                _ => return Err(unsafe_entry(&name)),
            }
        }
        for (link, target) in links {
            let link_path = dest.join(&link);
            let target_path = dest.join(&target);
            if let Some(parent) = link_path.parent() {
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            }
            fs::hard_link(&target_path, &link_path).map_err(io_err("link", &link_path))?;
        }
        Ok(())
    }

    /// Reads and verifies a JSON blob of a layout.
    fn read_blob(&self, layout: &Path, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let digest = descriptor.digest().to_string();
        let hex_part = sha256_hex(&digest)?;
        if descriptor.size() > MAX_JSON_BLOB {
            return Err(ImageError::BlobMismatch {
                digest,
                reason: format!(
                    "size {} is over the {MAX_JSON_BLOB} byte limit for metadata",
                    descriptor.size()
                ),
            });
        }
        let path = layout.join("blobs").join("sha256").join(hex_part);
        let bytes = read_capped(&path, MAX_JSON_BLOB)?;
        if bytes.len() as u64 != descriptor.size() {
            return Err(ImageError::BlobMismatch {
                digest,
                reason: format!(
                    "size is {} bytes, descriptor says {}",
                    bytes.len(),
                    descriptor.size()
                ),
            });
        }
        let actual = sha256_of(&bytes);
        if actual != hex_part {
            return Err(ImageError::BlobMismatch {
                digest,
                reason: format!("content hashes to sha256:{actual}"),
            });
        }
        Ok(bytes)
    }

    /// Picks the manifest descriptor to run from an index.
    fn choose_manifest(
        &self,
        layout: &Path,
        index: &ImageIndex,
        image: &ImageRef,
        depth: usize,
    ) -> Result<Descriptor, ImageError> {
        let manifests = index.manifests();
        let candidates: Vec<&Descriptor> = if depth == 0 {
            if let Some(digest) = &image.digest {
                manifests
                    .iter()
                    .filter(|d| d.digest().to_string() == *digest)
                    .collect()
            } else if let Some(reference) = &image.reference {
                manifests
                    .iter()
                    .filter(|d| {
                        d.annotations()
                            .as_ref()
                            .and_then(|a| a.get(REF_NAME_ANNOTATION))
                            .is_some_and(|name| {
                                name == reference || name.ends_with(&format!(":{reference}"))
                            })
                    })
                    .collect()
            } else {
                manifests.iter().collect()
            }
        } else {
            // Inside a nested (multi-platform) index: pick this host's platform.
            manifests
                .iter()
                .filter(|d| {
                    d.platform().as_ref().is_none_or(|p| {
                        p.os().to_string() == "linux"
                            && p.architecture().to_string() == current_arch()
                    })
                })
                .collect()
        };
        let chosen = match candidates.as_slice() {
            [] => {
                return Err(ImageError::NoMatch {
                    path: image.path.clone(),
                    wanted: if depth > 0 {
                        format!("platform linux/{}", current_arch())
                    } else {
                        image
                            .digest
                            .clone()
                            .or_else(|| image.reference.clone())
                            .unwrap_or_else(|| "any image".to_string())
                    },
                });
            }
            [one] => (*one).clone(),
            many if depth > 0 => many[0].clone(),
            many => {
                return Err(ImageError::Ambiguous {
                    path: image.path.clone(),
                    count: many.len(),
                });
            }
        };
        if is_index(chosen.media_type()) {
            if depth + 1 >= MAX_INDEX_DEPTH {
                return Err(ImageError::NoMatch {
                    path: image.path.clone(),
                    wanted: "an index nested less deeply".to_string(),
                });
            }
            let bytes = self.read_blob(layout, &chosen)?;
            let nested: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
                    what: "image index",
                    path: layout.to_path_buf(),
                    source,
                })?;
            return self.choose_manifest(layout, &nested, image, depth + 1);
        }
        Ok(chosen)
    }

    fn import_layout(
        &self,
        layout: &Path,
        image: &ImageRef,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        let marker_path = layout.join("oci-layout");
        let marker = read_capped(&marker_path, 4096).map_err(|_| ImageError::NotALayout {
            path: layout.to_path_buf(),
        })?;
        let marker: serde_json::Value =
            serde_json::from_slice(&marker).map_err(|source| ImageError::Parse {
                what: "oci-layout",
                path: marker_path.clone(),
                source,
            })?;
        if marker.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(ImageError::NotALayout {
                path: layout.to_path_buf(),
            });
        }
        let index_path = layout.join("index.json");
        let index_bytes = read_capped(&index_path, MAX_JSON_BLOB)?;
        let index: ImageIndex =
            serde_json::from_slice(&index_bytes).map_err(|source| ImageError::Parse {
                what: "index.json",
                path: index_path.clone(),
                source,
            })?;
        let descriptor = self.choose_manifest(layout, &index, image, 0)?;
        let image_id = descriptor.digest().to_string();
        sha256_hex(&image_id)?;
        if let Some(wanted) = &image.digest
            && *wanted != image_id
        {
            return Err(ImageError::NoMatch {
                path: image.path.clone(),
                wanted: wanted.clone(),
            });
        }
        if let Some(found) = self.lookup(&image_id)? {
            progress(ImportProgress::CacheHit);
            return Ok(found);
        }
        if !matches!(descriptor.media_type(), MediaType::ImageManifest)
            && descriptor.media_type().to_string()
                != "application/vnd.docker.distribution.manifest.v2+json"
        {
            return Err(ImageError::UnsupportedMediaType {
                media_type: descriptor.media_type().to_string(),
                digest: image_id,
            });
        }
        let manifest_bytes = self.read_blob(layout, &descriptor)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|source| ImageError::Parse {
                what: "image manifest",
                path: layout.to_path_buf(),
                source,
            })?;
        let config_bytes = self.read_blob(layout, manifest.config())?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| ImageError::Parse {
                what: "image config",
                path: layout.to_path_buf(),
                source,
            })?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::LayerCountMismatch {
                diff_ids: diff_ids.len(),
                layers: manifest.layers().len(),
            });
        }
        let n_layers = manifest.layers().len();
        progress(ImportProgress::Resolved {
            image_id: image_id.clone(),
            n_layers,
        });
        let staging = self.staging()?;
        let rootfs = staging.path.join("rootfs");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&rootfs)
            .map_err(io_err("create", &rootfs))?;
        let mut unpacker =
            Unpacker::new(&rootfs, self.limits).map_err(|source| ImageError::Unpack {
                layer: "rootfs".to_string(),
                source,
            })?;
        for (layer_idx, (layer, diff_id)) in
            manifest.layers().iter().zip(diff_ids.iter()).enumerate()
        {
            let digest = layer.digest().to_string();
            let hex_part = sha256_hex(&digest)?;
            let media = layer.media_type().to_string();
            if media.contains("zstd")
                || media.contains("foreign")
                || media.contains("nondistributable")
            {
                return Err(ImageError::UnsupportedMediaType {
                    media_type: media,
                    digest,
                });
            }
            progress(ImportProgress::Layer {
                layer_idx,
                n_layers,
                digest: digest.clone(),
            });
            let blob_path = layout.join("blobs").join("sha256").join(hex_part);
            let file = File::open(&blob_path).map_err(io_err("open", &blob_path))?;
            let mut hashing = HashingReader::new(file, layer.size());
            unpacker
                .apply_layer(&digest, &mut hashing, Some(diff_id))
                .map_err(|source| ImageError::Unpack {
                    layer: digest.clone(),
                    source,
                })?;
            io::copy(&mut hashing, &mut io::sink()).map_err(|source| ImageError::BlobMismatch {
                digest: digest.clone(),
                reason: source.to_string(),
            })?;
            let (actual, n_bytes) = hashing.finish();
            if n_bytes != layer.size() || actual != hex_part {
                return Err(ImageError::BlobMismatch {
                    digest,
                    reason: format!("content is {n_bytes} bytes hashing to sha256:{actual}"),
                });
            }
        }
        let record = ImageRecord {
            image_id: image_id.clone(),
            config_digest: manifest.config().digest().to_string(),
            config,
        };
        self.commit(staging, &unpacker, record, progress)
    }

    fn import_docker_legacy(
        &self,
        dir: &Path,
        image: &ImageRef,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct DockerManifest {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let manifest_path = dir.join("manifest.json");
        let bytes = read_capped(&manifest_path, MAX_JSON_BLOB)?;
        let manifests: Vec<DockerManifest> =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
                what: "docker manifest.json",
                path: image.path.clone(),
                source,
            })?;
        let candidates: Vec<&DockerManifest> = match &image.reference {
            Some(reference) => manifests
                .iter()
                .filter(|m| {
                    m.repo_tags.as_ref().is_some_and(|tags| {
                        tags.iter()
                            .any(|tag| tag == reference || tag.ends_with(&format!(":{reference}")))
                    })
                })
                .collect(),
            None => manifests.iter().collect(),
        };
        let chosen = match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(ImageError::NoMatch {
                    path: image.path.clone(),
                    wanted: image
                        .reference
                        .clone()
                        .unwrap_or_else(|| "any image".to_string()),
                });
            }
            many => {
                return Err(ImageError::Ambiguous {
                    path: image.path.clone(),
                    count: many.len(),
                });
            }
        };
        let unsafe_entry = |entry: &str| ImageError::UnsafeArchiveEntry {
            archive: image.path.clone(),
            entry: entry.to_string(),
        };
        let config_rel =
            safe_archive_path(&chosen.config).ok_or_else(|| unsafe_entry(&chosen.config))?;
        let config_bytes = read_capped(&dir.join(&config_rel), MAX_JSON_BLOB)?;
        let config_hex = sha256_of(&config_bytes);
        let image_id = format!("sha256:{config_hex}");
        if let Some(wanted) = &image.digest
            && *wanted != image_id
        {
            return Err(ImageError::NoMatch {
                path: image.path.clone(),
                wanted: wanted.clone(),
            });
        }
        if let Some(found) = self.lookup(&image_id)? {
            progress(ImportProgress::CacheHit);
            return Ok(found);
        }
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| ImageError::Parse {
                what: "image config",
                path: image.path.clone(),
                source,
            })?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != chosen.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                diff_ids: diff_ids.len(),
                layers: chosen.layers.len(),
            });
        }
        let n_layers = chosen.layers.len();
        progress(ImportProgress::Resolved {
            image_id: image_id.clone(),
            n_layers,
        });
        let staging = self.staging()?;
        let rootfs = staging.path.join("rootfs");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&rootfs)
            .map_err(io_err("create", &rootfs))?;
        let mut unpacker =
            Unpacker::new(&rootfs, self.limits).map_err(|source| ImageError::Unpack {
                layer: "rootfs".to_string(),
                source,
            })?;
        for (layer_idx, (layer, diff_id)) in chosen.layers.iter().zip(diff_ids.iter()).enumerate() {
            let layer_rel = safe_archive_path(layer).ok_or_else(|| unsafe_entry(layer))?;
            progress(ImportProgress::Layer {
                layer_idx,
                n_layers,
                digest: diff_id.clone(),
            });
            let layer_path = dir.join(layer_rel);
            let file = File::open(&layer_path).map_err(io_err("open", &layer_path))?;
            // Legacy layers are verified by their diff_id (uncompressed digest).
            unpacker
                .apply_layer(diff_id, file, Some(diff_id))
                .map_err(|source| ImageError::Unpack {
                    layer: diff_id.clone(),
                    source,
                })?;
        }
        let record = ImageRecord {
            image_id,
            config_digest: format!("sha256:{config_hex}"),
            config,
        };
        self.commit(staging, &unpacker, record, progress)
    }

    /// Finishes an unpacked rootfs and moves it into the cache.
    fn commit(
        &self,
        staging: Staging,
        unpacker: &Unpacker,
        record: ImageRecord,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        // Mount points the runtime bundle uses, created now so that starting a
        // job never has to write into the shared rootfs.
        for mount_point in ["proc", "sys", "dev", "tmp", "scratch"] {
            let _ = unpacker.ensure_dir(mount_point);
        }
        let rootfs = staging.path.join("rootfs");
        // runc gives a tmpfs the mode of its mount point: /tmp must be 1777.
        let tmp_dir = rootfs.join("tmp");
        if fs::symlink_metadata(&tmp_dir).is_ok_and(|m| m.is_dir()) {
            fs::set_permissions(&tmp_dir, fs::Permissions::from_mode(0o1777))
                .map_err(io_err("chmod", &tmp_dir))?;
        }
        let mut permissions = fs::metadata(&rootfs)
            .map_err(io_err("stat", &rootfs))?
            .permissions();
        permissions.set_mode(0o755);
        fs::set_permissions(&rootfs, permissions).map_err(io_err("chmod", &rootfs))?;
        let record_path = staging.path.join("image.json");
        let record_bytes =
            serde_json::to_vec_pretty(&record).map_err(|source| ImageError::Parse {
                what: "image record",
                path: record_path.clone(),
                source,
            })?;
        fs::write(&record_path, record_bytes).map_err(io_err("write", &record_path))?;
        let hex_part = sha256_hex(&record.image_id)?.to_string();
        let final_dir = self.root.join("images").join(&hex_part);
        match fs::rename(&staging.path, &final_dir) {
            Ok(()) => {}
            Err(_) if final_dir.join("image.json").exists() => {
                // Another import of the same image won the race; use it.
                progress(ImportProgress::Done);
                return self
                    .lookup(&record.image_id)?
                    .ok_or_else(|| ImageError::NoMatch {
                        path: final_dir.clone(),
                        wanted: record.image_id.clone(),
                    });
            }
            Err(source) => {
                return Err(ImageError::Io {
                    op: "rename into cache",
                    path: final_dir,
                    source,
                });
            }
        }
        progress(ImportProgress::Done);
        Ok(ImportedImage {
            record,
            rootfs: final_dir.join("rootfs"),
            cached: false,
        })
    }
}

/// Validates a path inside an image archive: relative, no `..`, plain names.
fn safe_archive_path(name: &str) -> Option<PathBuf> {
    let trimmed = name.trim_start_matches("./");
    if trimmed.is_empty() || trimmed.len() > 1024 || trimmed.starts_with('/') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in trimmed.split('/') {
        if part.is_empty() {
            continue;
        }
        if part == "."
            || part == ".."
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:+".contains(&b))
        {
            return None;
        }
        out.push(part);
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Resolves a link target relative to `base` lexically, staying inside.
fn resolve_inside(base: &Path, target: &str) -> Option<PathBuf> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<String> = base
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other.to_string()),
        }
    }
    safe_archive_path(&parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_checked() {
        assert_eq!(
            safe_archive_path("./blobs/sha256/ab"),
            Some(PathBuf::from("blobs/sha256/ab"))
        );
        assert_eq!(safe_archive_path("../x"), None);
        assert_eq!(safe_archive_path("/etc/passwd"), None);
        assert_eq!(safe_archive_path("a/../../b"), None);
        assert_eq!(safe_archive_path("a b"), None);
        assert_eq!(
            resolve_inside(Path::new("abc"), "../def/layer.tar"),
            Some(PathBuf::from("def/layer.tar"))
        );
        assert_eq!(resolve_inside(Path::new("abc"), "../../etc/passwd"), None);
    }

    #[test]
    fn digests_are_validated() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(sha256_hex(&good).is_ok());
        assert!(sha256_hex("sha512:abc").is_err());
        assert!(sha256_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
