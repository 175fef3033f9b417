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
//!
//! There is one pipeline for the three formats: an archive is extracted by
//! the layer extractor itself ([`Unpacker`], same checks, same limits) into a
//! private staging directory; the layout or extracted archive is read only
//! through [`open_beneath`]; a format-specific *plan* (OCI index → manifest →
//! config, or docker `manifest.json` → config) lists the layers; and
//! [`ImageStore::unpack_layers`] verifies and unpacks them and commits the
//! rootfs (synced before its record is written durably).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use plinth_toolbox::durable::{self, DurableError};
use serde::{Deserialize, Serialize};

use crate::spec::{ImageRef, ImageSource};
use crate::unpack::{HashingReader, UnpackError, UnpackLimits, Unpacker, open_beneath, open_dir};

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
    #[error("digest mismatch for blob {digest} ({what}): {reason}")]
    BlobMismatch {
        /// The descriptor's digest.
        digest: String,
        /// Which blob of which image (`layer 2 of 127.0.0.1:5000/app:v1`).
        what: String,
        /// What differed.
        reason: String,
    },
    /// A blob or document is larger than its limit.
    #[error("{what} ({digest}) is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// Which blob of which image.
        what: String,
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A foreign or non-distributable layer (its content lives outside the image).
    #[error(
        "{what} ({digest}) is a foreign/non-distributable layer ({media_type}); its content is \
         fetched from outside the image store and is refused"
    )]
    ForeignLayer {
        /// Which layer of which image.
        what: String,
        /// Its digest.
        digest: String,
        /// Its media type.
        media_type: String,
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
    /// Extracting an image archive failed (unsafe entry, limits, I/O).
    #[error("cannot extract image archive {archive}")]
    Archive {
        /// Archive file.
        archive: PathBuf,
        /// Cause.
        #[source]
        source: UnpackError,
    },
    /// A file of an image source could not be opened beneath its directory.
    #[error("cannot open {path} in {source_dir}")]
    SourceFile {
        /// Path inside the source.
        path: PathBuf,
        /// The layout directory or archive.
        source_dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A registry image was given to the local importer.
    #[error("{reference} is a registry image; it is pulled by plinth_jobs::registry::Puller")]
    NotLocal {
        /// The reference.
        reference: String,
    },
    /// The image is used by a job that has not ended.
    #[error("image {image_id} is used by a job that has not ended")]
    InUse {
        /// The image.
        image_id: String,
    },
    /// Committing an image to the cache failed.
    #[error("cannot commit image to the cache")]
    Durable(#[from] DurableError),
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
    /// Where a registry image came from and who signed it (absent for local imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ImageOrigin>,
    /// Bytes of file data in the unpacked rootfs (0 in records written before it was kept).
    #[serde(default)]
    pub size_bytes: u64,
}

/// The registry provenance of a cached image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOrigin {
    /// The reference the image was pulled by (`HOST/REPO[:TAG][@DIGEST]`).
    pub reference: String,
    /// The digest the reference resolved to (an index's, for multi-platform images).
    pub resolved_digest: String,
    /// The registry endpoint that served it (the host or one of its mirrors).
    pub endpoint: String,
    /// The verified signature, when one was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<crate::signature::VerifiedSigner>,
}

/// Where a layer blob's media type puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// An uncompressed tar.
    Tar,
    /// gzip-compressed tar.
    Gzip,
    /// zstd-compressed tar.
    Zstd,
}

/// Checks a layer's media type: OCI and Docker tar layers, uncompressed, gzip or
/// zstd. Foreign and non-distributable layers are refused with their own reason;
/// anything else is an unsupported media type. `what` names the layer in errors.
pub fn check_layer_media_type(
    media_type: &str,
    digest: &str,
    what: &str,
) -> Result<LayerKind, ImageError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(LayerKind::Tar),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(LayerKind::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(LayerKind::Zstd),
        foreign if foreign.contains("foreign") || foreign.contains("nondistributable") => {
            Err(ImageError::ForeignLayer {
                what: what.to_owned(),
                digest: digest.to_owned(),
                media_type: foreign.to_owned(),
            })
        }
        other => Err(ImageError::UnsupportedMediaType {
            media_type: other.to_owned(),
            digest: digest.to_owned(),
        }),
    }
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
    /// A blob is being downloaded from a registry.
    Download {
        /// What it is (`layer 2/5`, `config`).
        what: String,
        /// Blob digest.
        digest: String,
        /// Bytes received so far.
        bytes: u64,
        /// Size of the blob.
        total: u64,
    },
    /// The image's signature was verified.
    SignatureVerified {
        /// The key (its configured name) that signed it.
        key: String,
    },
    /// The image is in the cache.
    Done,
}

impl std::fmt::Display for ImportProgress {
    /// The line shown as a preparing job's reason and by `plinthctl images pull --progress`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportProgress::Resolved { image_id, n_layers } => {
                write!(f, "importing image {image_id} ({n_layers} layers)")
            }
            ImportProgress::CacheHit => f.write_str("image cached"),
            ImportProgress::Layer {
                layer_idx,
                n_layers,
                digest,
            } => write!(f, "unpacking layer {}/{n_layers} {digest}", layer_idx + 1),
            ImportProgress::Download {
                what,
                digest,
                bytes,
                total,
            } => {
                let percent = if *total == 0 {
                    100
                } else {
                    bytes.saturating_mul(100) / total
                };
                write!(
                    f,
                    "downloading {what} {digest}: {bytes} of {total} bytes ({percent}%)"
                )
            }
            ImportProgress::SignatureVerified { key } => {
                write!(f, "signature verified (key {key})")
            }
            ImportProgress::Done => f.write_str("image imported"),
        }
    }
}

/// The content-addressed image cache.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: UnpackLimits,
    /// One lock per image id being fetched, so that concurrent pulls of one
    /// image share one download (see [`ImageStore::flight`]).
    flights: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, FlightLock>>>,
}

type FlightLock = std::sync::Arc<std::sync::Mutex<()>>;

/// Held while one image is fetched; others wanting it wait in
/// [`ImageStore::flight`] and then find it in the cache.
pub struct Flight {
    key: String,
    lock: FlightLock,
    flights: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, FlightLock>>>,
}

impl Flight {
    /// Waits for the flight's lock (blocking the calling thread).
    pub fn wait(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's entry and this one: nobody else waits, forget the key.
        if std::sync::Arc::strong_count(&self.lock) <= 2 {
            flights.remove(&self.key);
        }
    }
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A staging directory removed on drop.
pub(crate) struct Staging {
    pub(crate) path: PathBuf,
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

/// Parses one JSON document of an image, naming the document and its file in
/// errors.
fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    path: &Path,
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Parse {
        what,
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn sha256_of(bytes: &[u8]) -> String {
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

/// Path of a blob inside an OCI layout.
fn blob_path(hex_part: &str) -> PathBuf {
    Path::new("blobs").join("sha256").join(hex_part)
}

/// Where an image's files are read from: an OCI layout directory, or an
/// archive extracted into staging. Every file is opened beneath it with
/// [`open_beneath`].
struct Source {
    /// The layout directory or the archive (for messages).
    path: PathBuf,
    /// How errors name the image (its path, or its registry reference).
    name: String,
    /// The directory files are resolved beneath.
    fd: OwnedFd,
    /// Every blob was already verified against its digest while it was written
    /// into this private staging directory (registry pulls), so layers are not
    /// hashed a second time before they are decompressed.
    verified: bool,
}

impl Source {
    fn open_dir(dir: &Path) -> Result<Source, ImageError> {
        Ok(Source {
            path: dir.to_path_buf(),
            name: dir.display().to_string(),
            fd: open_dir(dir).map_err(io_err("open", dir))?,
            verified: false,
        })
    }

    fn open(&self, relative: &Path) -> Result<File, ImageError> {
        open_beneath(&self.fd, relative).map_err(|source| ImageError::SourceFile {
            path: relative.to_path_buf(),
            source_dir: self.path.clone(),
            source,
        })
    }

    fn has_file(&self, name: &str) -> bool {
        open_beneath(&self.fd, Path::new(name)).is_ok()
    }

    fn read_capped(&self, relative: &Path, max: u64) -> Result<Vec<u8>, ImageError> {
        let file = self.open(relative)?;
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ImageError::SourceFile {
                path: relative.to_path_buf(),
                source_dir: self.path.clone(),
                source,
            })?;
        if bytes.len() as u64 > max {
            return Err(ImageError::SourceFile {
                path: relative.to_path_buf(),
                source_dir: self.path.clone(),
                source: io::Error::other(format!("larger than {max} bytes")),
            });
        }
        Ok(bytes)
    }
}

/// One layer to unpack.
struct LayerPlan {
    /// Its file, relative to the source.
    path: PathBuf,
    /// How progress and errors name it (blob digest, or diff_id).
    label: String,
    /// Which layer of which image (`layer 2 of IMAGE`), for errors.
    what: String,
    /// Hex SHA-256 and size of the blob, when the format gives them (OCI).
    blob: Option<(String, u64)>,
}

/// A resolved image: what [`ImageStore::unpack_layers`] needs.
struct ImagePlan {
    image_id: String,
    config_digest: String,
    config: ImageConfiguration,
    layers: Vec<LayerPlan>,
    origin: Option<ImageOrigin>,
}

/// What resolving an image found.
enum Planned {
    /// The cache has it.
    Cached(ImportedImage),
    /// It must be unpacked.
    Unpack(ImagePlan),
}

fn current_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub(crate) fn current_platform() -> (&'static str, &'static str) {
    ("linux", current_arch())
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
            flights: Default::default(),
        })
    }

    /// The single-flight entry for `key` (an image id): hold it, and call
    /// [`Flight::wait`], while fetching the image, so that a second caller
    /// waits for the first and then finds the image in the cache.
    pub fn flight(&self, key: &str) -> Flight {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lock = flights.entry(key.to_owned()).or_default().clone();
        Flight {
            key: key.to_owned(),
            lock,
            flights: self.flights.clone(),
        }
    }

    /// The unpacking limits of this store.
    pub fn limits(&self) -> UnpackLimits {
        self.limits
    }

    /// Root directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn staging(&self) -> Result<Staging, ImageError> {
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
        crate::cache::touch(&record_path);
        Ok(Some(ImportedImage {
            record,
            rootfs: dir.join("rootfs"),
            cached: true,
        }))
    }

    /// Imports `image` (or finds it in the cache).
    ///
    /// OCI layouts are read in place; archives are first extracted into a
    /// private staging directory by the same safe extractor that unpacks
    /// layers ([`Unpacker`], one set of [`UnpackLimits`]). Either way the
    /// source is then read only through [`open_beneath`], and one pipeline
    /// ([`ImageStore::unpack_layers`]) verifies and unpacks the layers.
    pub fn import(
        &self,
        image: &ImageRef,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        match image.source {
            ImageSource::Registry => Err(ImageError::NotLocal {
                reference: image.reference.clone().unwrap_or_default(),
            }),
            ImageSource::OciLayout => {
                let source = Source::open_dir(&image.path)?;
                self.import_from(&source, image, None, progress)
            }
            ImageSource::OciArchive | ImageSource::DockerArchive => {
                let staging = self.staging()?;
                let extracted = staging.path.join("archive");
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&extracted)
                    .map_err(io_err("create", &extracted))?;
                let mut unpacker = Unpacker::new(&extracted, self.limits).map_err(|source| {
                    ImageError::Archive {
                        archive: image.path.clone(),
                        source,
                    }
                })?;
                let file = File::open(&image.path).map_err(io_err("open", &image.path))?;
                unpacker
                    .apply_layer(&image.path.display().to_string(), file, None)
                    .map_err(|source| ImageError::Archive {
                        archive: image.path.clone(),
                        source,
                    })?;
                let source = Source {
                    path: image.path.clone(),
                    name: image.path.display().to_string(),
                    fd: unpacker
                        .root_fd()
                        .try_clone()
                        .map_err(io_err("open", &extracted))?,
                    verified: false,
                };
                self.import_from(&source, image, None, progress)
            }
        }
    }

    /// Resolves the image in `source` (an OCI layout, or a legacy `docker
    /// save` directory), then unpacks it unless the cache has it.
    fn import_from(
        &self,
        source: &Source,
        image: &ImageRef,
        origin: Option<ImageOrigin>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        let planned = if source.has_file("index.json") {
            self.plan_layout(source, image, progress)?
        } else if source.has_file("manifest.json") {
            self.plan_docker_legacy(source, image, progress)?
        } else {
            return Err(ImageError::NotALayout {
                path: source.path.clone(),
            });
        };
        match planned {
            Planned::Cached(found) => Ok(found),
            Planned::Unpack(mut plan) => {
                plan.origin = origin;
                self.unpack_layers(source, plan, progress)
            }
        }
    }

    /// Imports an OCI layout a registry pull wrote into the private staging
    /// directory `dir` (every blob already verified against its digest): the
    /// same plan and unpack steps as a local layout, recording `origin`.
    pub(crate) fn import_pulled(
        &self,
        dir: &Path,
        image_id: &str,
        origin: ImageOrigin,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        let mut source = Source::open_dir(dir)?;
        source.name = origin.reference.clone();
        source.verified = true;
        let image = ImageRef {
            source: ImageSource::OciLayout,
            path: dir.to_path_buf(),
            reference: None,
            digest: Some(image_id.to_owned()),
        };
        self.import_from(&source, &image, Some(origin), progress)
    }

    /// Refuses an image whose id is not the digest the spec pins; then the
    /// cached image `image_id`, reported as a cache hit, if the cache has it.
    fn pinned_cache_hit(
        &self,
        image: &ImageRef,
        image_id: &str,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<Option<Planned>, ImageError> {
        if let Some(wanted) = &image.digest
            && wanted != image_id
        {
            return Err(ImageError::NoMatch {
                path: image.path.clone(),
                wanted: wanted.clone(),
            });
        }
        Ok(self.lookup(image_id)?.map(|found| {
            progress(ImportProgress::CacheHit);
            Planned::Cached(found)
        }))
    }

    /// Reads and verifies a JSON blob of a layout (`what`: "manifest", ...).
    fn read_blob(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<Vec<u8>, ImageError> {
        let digest = descriptor.digest().to_string();
        let hex_part = sha256_hex(&digest)?;
        let what = format!("{what} of {}", source.name);
        if descriptor.size() > MAX_JSON_BLOB {
            return Err(ImageError::TooLarge {
                what,
                digest,
                size: descriptor.size(),
                max: MAX_JSON_BLOB,
            });
        }
        let bytes = source.read_capped(&blob_path(hex_part), MAX_JSON_BLOB)?;
        verify_bytes(&bytes, &digest, descriptor.size(), &what)?;
        Ok(bytes)
    }

    /// Picks the manifest descriptor to run from an index.
    fn choose_manifest(
        &self,
        source: &Source,
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
            let bytes = self.read_blob(source, &chosen, "image index")?;
            let nested: ImageIndex = parse_json(&bytes, "image index", &source.path)?;
            return self.choose_manifest(source, &nested, image, depth + 1);
        }
        Ok(chosen)
    }

    /// Resolves an OCI layout (`oci-layout`, `index.json`, manifest, config)
    /// to the layers to unpack.
    fn plan_layout(
        &self,
        source: &Source,
        image: &ImageRef,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<Planned, ImageError> {
        let not_a_layout = || ImageError::NotALayout {
            path: source.path.clone(),
        };
        // No marker: not a layout. Any other failure (permissions, a symlink out of the
        // layout, a marker too large) is reported as it is.
        let marker =
            source
                .read_capped(Path::new("oci-layout"), 4096)
                .map_err(|err| match &err {
                    ImageError::SourceFile { source, .. }
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        not_a_layout()
                    }
                    _ => err,
                })?;
        let marker: serde_json::Value =
            parse_json(&marker, "oci-layout", &source.path.join("oci-layout"))?;
        if marker.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(not_a_layout());
        }
        let index_bytes = source.read_capped(Path::new("index.json"), MAX_JSON_BLOB)?;
        let index: ImageIndex =
            parse_json(&index_bytes, "index.json", &source.path.join("index.json"))?;
        let descriptor = self.choose_manifest(source, &index, image, 0)?;
        let image_id = descriptor.digest().to_string();
        sha256_hex(&image_id)?;
        if let Some(cached) = self.pinned_cache_hit(image, &image_id, progress)? {
            return Ok(cached);
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
        let manifest_bytes = self.read_blob(source, &descriptor, "manifest")?;
        let manifest: ImageManifest = parse_json(&manifest_bytes, "image manifest", &source.path)?;
        let config_bytes = self.read_blob(source, manifest.config(), "config")?;
        let config: ImageConfiguration = parse_json(&config_bytes, "image config", &source.path)?;
        let n_layers = manifest.layers().len();
        let mut layers = Vec::with_capacity(n_layers);
        for (layer_idx, layer) in manifest.layers().iter().enumerate() {
            let digest = layer.digest().to_string();
            let hex_part = sha256_hex(&digest)?.to_string();
            let what = layer_what(layer_idx, n_layers, &source.name);
            check_layer_media_type(layer.media_type().as_ref(), &digest, &what)?;
            layers.push(LayerPlan {
                path: blob_path(&hex_part),
                label: digest,
                what,
                blob: Some((hex_part, layer.size())),
            });
        }
        Ok(Planned::Unpack(ImagePlan {
            image_id,
            config_digest: manifest.config().digest().to_string(),
            config,
            layers,
            origin: None,
        }))
    }

    /// Resolves a legacy `docker save` directory (`manifest.json`, config
    /// and layer tars by path) to the layers to unpack.
    fn plan_docker_legacy(
        &self,
        source: &Source,
        image: &ImageRef,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<Planned, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct DockerManifest {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let bytes = source.read_capped(Path::new("manifest.json"), MAX_JSON_BLOB)?;
        let manifests: Vec<DockerManifest> =
            parse_json(&bytes, "docker manifest.json", &image.path)?;
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
        let config_bytes = source.read_capped(&config_rel, MAX_JSON_BLOB)?;
        let config_hex = sha256_of(&config_bytes);
        let image_id = format!("sha256:{config_hex}");
        if let Some(cached) = self.pinned_cache_hit(image, &image_id, progress)? {
            return Ok(cached);
        }
        let config: ImageConfiguration = parse_json(&config_bytes, "image config", &image.path)?;
        let mut layers = Vec::with_capacity(chosen.layers.len());
        for (layer_idx, layer) in chosen.layers.iter().enumerate() {
            let path = safe_archive_path(layer).ok_or_else(|| unsafe_entry(layer))?;
            // Legacy layers are verified by their diff_id (uncompressed digest)
            // alone; they are labelled by it too.
            let label = config
                .rootfs()
                .diff_ids()
                .get(layer_idx)
                .cloned()
                .unwrap_or_else(|| layer.clone());
            layers.push(LayerPlan {
                path,
                label,
                what: layer_what(layer_idx, chosen.layers.len(), &source.name),
                blob: None,
            });
        }
        Ok(Planned::Unpack(ImagePlan {
            image_id,
            config_digest: format!("sha256:{config_hex}"),
            config,
            layers,
            origin: None,
        }))
    }

    /// The one manifest-to-rootfs pipeline: checks the config's `diff_ids`
    /// against the layers, reports progress, unpacks every layer in order into
    /// a fresh staging rootfs (verifying each blob's size and digest while it
    /// streams, and each uncompressed layer against its `diff_id`), and
    /// commits the result to the cache.
    fn unpack_layers(
        &self,
        source: &Source,
        plan: ImagePlan,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportedImage, ImageError> {
        let diff_ids = plan.config.rootfs().diff_ids().clone();
        if diff_ids.len() != plan.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                diff_ids: diff_ids.len(),
                layers: plan.layers.len(),
            });
        }
        let n_layers = plan.layers.len();
        progress(ImportProgress::Resolved {
            image_id: plan.image_id.clone(),
            n_layers,
        });
        let staging = self.staging()?;
        let rootfs = staging.path.join("rootfs");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&rootfs)
            .map_err(io_err("create", &rootfs))?;
        let mut unpacker =
            Unpacker::new(&rootfs, self.limits).map_err(|source_err| ImageError::Unpack {
                layer: "rootfs".to_string(),
                source: source_err,
            })?;
        for (layer_idx, (layer, diff_id)) in plan.layers.iter().zip(diff_ids.iter()).enumerate() {
            progress(ImportProgress::Layer {
                layer_idx,
                n_layers,
                digest: layer.label.clone(),
            });
            let unpack_err = |source_err| ImageError::Unpack {
                layer: layer.label.clone(),
                source: source_err,
            };
            let Some((hex_part, size)) = &layer.blob else {
                let file = source.open(&layer.path)?;
                unpacker
                    .apply_layer(&layer.label, file, Some(diff_id))
                    .map_err(unpack_err)?;
                continue;
            };
            let mismatch = |reason: String| ImageError::BlobMismatch {
                digest: layer.label.clone(),
                what: layer.what.clone(),
                reason,
            };
            if !source.verified {
                // Verify the compressed blob before a byte of it is decompressed,
                // so corruption is reported as what it is (a digest mismatch),
                // and no decompressor ever parses unverified input.
                let mut hashing = HashingReader::new(source.open(&layer.path)?, *size);
                io::copy(&mut hashing, &mut io::sink())
                    .map_err(|source_err| mismatch(source_err.to_string()))?;
                let (actual, n_bytes) = hashing.finish();
                if n_bytes != *size || actual != *hex_part {
                    return Err(mismatch(format!(
                        "content is {n_bytes} bytes hashing to sha256:{actual}, descriptor says {size} bytes"
                    )));
                }
            }
            // Hashed again while it streams: the file cannot have changed
            // between the two reads without being noticed.
            let mut hashing = HashingReader::new(source.open(&layer.path)?, *size);
            unpacker
                .apply_layer(&layer.label, &mut hashing, Some(diff_id))
                .map_err(unpack_err)?;
            io::copy(&mut hashing, &mut io::sink())
                .map_err(|source_err| mismatch(source_err.to_string()))?;
            let (actual, n_bytes) = hashing.finish();
            if n_bytes != *size || actual != *hex_part {
                return Err(mismatch(format!(
                    "content is {n_bytes} bytes hashing to sha256:{actual}"
                )));
            }
        }
        let record = ImageRecord {
            image_id: plan.image_id,
            config_digest: plan.config_digest,
            config: plan.config,
            origin: plan.origin,
            size_bytes: unpacker.n_bytes(),
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
        // The record says "this rootfs is complete": everything unpacked must
        // be on disk before it is. One syncfs flushes the whole rootfs (far
        // cheaper than an fsync per file), then the record is written durably
        // and the directory renamed into the cache and the cache synced.
        nix::unistd::syncfs(unpacker.root_fd()).map_err(|errno| ImageError::Io {
            op: "sync",
            path: rootfs.clone(),
            source: io::Error::from(errno),
        })?;
        let record_path = staging.path.join("image.json");
        let record_bytes =
            serde_json::to_vec_pretty(&record).map_err(|source| ImageError::Parse {
                what: "image record",
                path: record_path.clone(),
                source,
            })?;
        durable::write(&record_path, &record_bytes)?;
        let hex_part = sha256_hex(&record.image_id)?.to_string();
        let images_dir = self.root.join("images");
        let final_dir = images_dir.join(&hex_part);
        match fs::rename(&staging.path, &final_dir) {
            Ok(()) => durable::sync_dir(&images_dir)?,
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

/// How errors name layer `layer_idx` (zero-based) of `image`.
fn layer_what(layer_idx: usize, n_layers: usize, image: &str) -> String {
    format!("layer {} of {n_layers} of {image}", layer_idx + 1)
}

/// Checks `bytes` against a descriptor's digest and size; `what` names the
/// blob in the error.
pub(crate) fn verify_bytes(
    bytes: &[u8],
    digest: &str,
    size: u64,
    what: &str,
) -> Result<(), ImageError> {
    let hex_part = sha256_hex(digest)?;
    let actual = sha256_of(bytes);
    if bytes.len() as u64 != size || actual != hex_part {
        return Err(ImageError::BlobMismatch {
            digest: digest.to_owned(),
            what: what.to_owned(),
            reason: format!(
                "content is {} bytes hashing to sha256:{actual}, descriptor says {size} bytes",
                bytes.len()
            ),
        });
    }
    Ok(())
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
    }

    #[test]
    fn digests_are_validated() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(sha256_hex(&good).is_ok());
        assert!(sha256_hex("sha512:abc").is_err());
        assert!(sha256_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
