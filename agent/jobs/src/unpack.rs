//! Safe extraction of OCI image layers (tar, uncompressed, gzip or zstd) into a rootfs.
//!
//! Layers are untrusted. Every entry path is split into components; absolute
//! paths and `..` components are refused. Parent directories are opened one
//! component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)` relative to the
//! rootfs directory descriptor, so an existing symlink anywhere in a path
//! refuses the entry instead of being followed out of the rootfs. Final
//! components are created with `O_CREAT | O_EXCL | O_NOFOLLOW`, hard links are
//! resolved inside the rootfs and must name regular files, device nodes and
//! FIFOs are refused, and setuid/setgid bits are stripped. OCI whiteouts
//! (`.wh.NAME`) and opaque markers (`.wh..wh..opq`) are honoured. Limits bound
//! the entry count and the bytes written.
//!
//! The same core also extracts image *archives* (OCI archives, `docker save`
//! tars) into a private staging directory, with the same checks and the same
//! limits, and [`open_beneath`] is the one way files are then read back from
//! such a directory (or from an OCI layout): resolved by the kernel beneath
//! the directory (`openat2` with `RESOLVE_BENEATH`), so a symlink stored in
//! an archive can never lead a reader out of it.
//!
//! The extraction directory must be private to the caller while layers are
//! applied (the image cache extracts into a fresh `0700` staging directory):
//! removals for whiteouts use paths below descriptors already checked to be
//! symlink-free.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

/// Prefix of an OCI whiteout file.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Deepest path accepted.
const MAX_DEPTH: usize = 128;
/// Longest path accepted, in bytes.
const MAX_PATH_BYTES: usize = 4096;
/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Errors from extracting a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading the layer stream failed.
    #[error("cannot read layer {layer}")]
    Read {
        /// Layer being read.
        layer: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A file system operation in the rootfs failed.
    #[error("cannot {op} {path:?} in the rootfs")]
    Fs {
        /// Operation that failed.
        op: &'static str,
        /// Path inside the rootfs.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An entry has an absolute path.
    #[error("layer entry {path:?} is an absolute path")]
    AbsolutePath {
        /// Entry path.
        path: String,
    },
    /// An entry path has a `..` component.
    #[error("layer entry {path:?} has a `..` component")]
    ParentComponent {
        /// Entry path.
        path: String,
    },
    /// An entry path is too long or too deep.
    #[error(
        "layer entry {path:?} is longer than {MAX_PATH_BYTES} bytes or deeper than {MAX_DEPTH}"
    )]
    PathTooLong {
        /// Entry path (truncated).
        path: String,
    },
    /// A component of an entry path is an existing symlink.
    #[error("layer entry {path:?} goes through the symlink {component:?}")]
    SymlinkComponent {
        /// Entry path.
        path: String,
        /// The component that is a symlink.
        component: String,
    },
    /// A component of an entry path is not a directory.
    #[error("layer entry {path:?} goes through the non-directory {component:?}")]
    NotADirectory {
        /// Entry path.
        path: String,
        /// The component that is not a directory.
        component: String,
    },
    /// A device node or FIFO.
    #[error("layer entry {path:?} is a {kind}, which is refused")]
    SpecialFile {
        /// Entry path.
        path: String,
        /// Kind of node.
        kind: &'static str,
    },
    /// An entry type the extractor does not handle.
    #[error("layer entry {path:?} has unsupported tar type {kind}")]
    UnsupportedEntry {
        /// Entry path.
        path: String,
        /// Raw type byte.
        kind: u8,
    },
    /// A hard link whose target is missing, escapes or is not a regular file.
    #[error("hard link {path:?} to {target:?} refused: {reason}")]
    HardLink {
        /// Link path.
        path: String,
        /// Link target.
        target: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A regular file's data was shorter than its header said.
    #[error("layer entry {path:?} is truncated: {got} of {expected} bytes")]
    Truncated {
        /// Entry path.
        path: String,
        /// Bytes read.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// More entries than allowed.
    #[error("image has more than {max} layer entries")]
    TooManyEntries {
        /// Limit.
        max: u64,
    },
    /// More bytes than allowed.
    #[error("image unpacks to more than {max} bytes")]
    TooLarge {
        /// Limit.
        max: u64,
    },
    /// The uncompressed layer does not have the digest the image config says.
    #[error("layer {layer} has diff digest sha256:{actual}, expected {expected}")]
    DiffIdMismatch {
        /// Layer.
        layer: String,
        /// Digest from the image config.
        expected: String,
        /// Digest computed.
        actual: String,
    },
}

/// Bounds on what an image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Maximum number of tar entries across all layers.
    pub max_entries: u64,
    /// Maximum bytes of regular-file data across all layers.
    pub max_total_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entries: 1_000_000,
            max_total_bytes: 64 * 1024 * 1024 * 1024,
        }
    }
}

/// A reader that hashes (SHA-256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    context: ring::digest::Context,
    n_bytes: u64,
    max_bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; reading more than `max_bytes` fails.
    pub fn new(inner: R, max_bytes: u64) -> Self {
        HashingReader {
            inner,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            n_bytes: 0,
            max_bytes,
        }
    }

    /// Returns the lowercase hex SHA-256 and byte count of what was read.
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.context.finish().as_ref()), self.n_bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n_read = self.inner.read(buf)?;
        self.n_bytes += n_read as u64;
        if self.n_bytes > self.max_bytes {
            return Err(io::Error::other(format!(
                "stream is longer than {} bytes",
                self.max_bytes
            )));
        }
        self.context.update(&buf[..n_read]);
        Ok(n_read)
    }
}

/// Opens the regular file `relative` for reading, resolved beneath `dir`.
///
/// `..`, absolute paths and symlinks that would leave `dir` fail (the kernel
/// resolves the path with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`); symlinks
/// that stay inside are followed. Anything but a regular file (a FIFO, a
/// device, a directory) is refused without blocking.
///
/// Where `openat2` is missing (kernels before 5.6) or answers `ENOSYS` (systemd
/// does so under `RestrictSUIDSGID=`, which the packaged units set, because it
/// cannot inspect the flags `openat2` takes by pointer), the path is walked one
/// component at a time with `openat(O_NOFOLLOW)` instead: stricter, as it
/// follows no symlink at all.
pub fn open_beneath(dir: &OwnedFd, relative: &Path) -> io::Result<std::fs::File> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(dir.as_fd(), relative, how) {
        Ok(fd) => fd,
        Err(Errno::ENOSYS) => open_beneath_walk(dir, relative, flags)?,
        Err(errno) => return Err(io::Error::from(errno)),
    };
    regular_file(fd)
}

/// [`open_beneath`] without `openat2`: every component opened with `O_NOFOLLOW`
/// from the one before, so no symlink and no `..` is followed.
fn open_beneath_walk(dir: &OwnedFd, relative: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let mut components = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => components.push(name),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} leaves the directory", relative.display()),
                ));
            }
        }
    }
    let Some((last, parents)) = components.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty path names no file",
        ));
    };
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        let parent = current.as_ref().unwrap_or(dir);
        let next = openat(
            parent.as_fd(),
            *name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        current = Some(next);
    }
    let parent = current.as_ref().unwrap_or(dir);
    Ok(openat(
        parent.as_fd(),
        *last,
        flags | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?)
}

fn regular_file(fd: OwnedFd) -> io::Result<std::fs::File> {
    let file = std::fs::File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Opens a directory for [`open_beneath`] (following no symlink at its last
/// component).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Extraction state shared across the layers of one image.
pub struct Unpacker {
    root_fd: OwnedFd,
    root_path: PathBuf,
    limits: UnpackLimits,
    n_entries: u64,
    n_bytes: u64,
    is_root: bool,
}

fn fs_err(op: &'static str, path: &str, errno: Errno) -> UnpackError {
    UnpackError::Fs {
        op,
        path: path.to_string(),
        source: io::Error::from(errno),
    }
}

/// Splits an entry path into normal components, refusing escapes.
fn split_entry_path(raw: &[u8]) -> Result<Vec<OsString>, UnpackError> {
    let display = String::from_utf8_lossy(&raw[..raw.len().min(256)]).into_owned();
    if raw.len() > MAX_PATH_BYTES {
        return Err(UnpackError::PathTooLong { path: display });
    }
    let path = Path::new(OsStr::from_bytes(raw));
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::AbsolutePath { path: display });
            }
            Component::ParentDir => return Err(UnpackError::ParentComponent { path: display }),
            Component::Normal(name) => components.push(name.to_os_string()),
        }
    }
    if components.len() > MAX_DEPTH {
        return Err(UnpackError::PathTooLong { path: display });
    }
    Ok(components)
}

fn join_display(components: &[OsString]) -> String {
    let mut out = String::new();
    for component in components {
        out.push('/');
        out.push_str(&component.to_string_lossy());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Strips setuid and setgid; keeps the sticky bit only on directories.
fn safe_mode(mode: u32, is_dir: bool) -> Mode {
    let keep = if is_dir { 0o1777 } else { 0o777 };
    Mode::from_bits_truncate(mode & keep)
}

impl Unpacker {
    /// Opens `root` (an existing, private, empty directory) for extraction.
    pub fn new(root: &Path, limits: UnpackLimits) -> Result<Unpacker, UnpackError> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| fs_err("open", &root.display().to_string(), errno))?;
        Ok(Unpacker {
            root_fd,
            root_path: root.to_path_buf(),
            limits,
            n_entries: 0,
            n_bytes: 0,
            is_root: nix::unistd::geteuid().is_root(),
        })
    }

    /// The directory being extracted into, for [`open_beneath`].
    pub fn root_fd(&self) -> &OwnedFd {
        &self.root_fd
    }

    /// Number of entries processed so far.
    pub fn n_entries(&self) -> u64 {
        self.n_entries
    }

    /// Bytes of file data written so far.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }

    /// Creates the top-level directory `name` if it is missing (mount points).
    ///
    /// An existing symlink or file of that name is left alone and reported.
    pub fn ensure_dir(&self, name: &str) -> Result<(), UnpackError> {
        let components = vec![OsString::from(name)];
        self.open_dir(&components, name, true).map(drop)
    }

    /// Opens the directory `components` below the root without following
    /// symlinks, creating missing directories when `create` is set.
    fn open_dir(
        &self,
        components: &[OsString],
        entry_path: &str,
        create: bool,
    ) -> Result<OwnedFd, UnpackError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut current = self.root_fd.try_clone().map_err(|source| UnpackError::Fs {
            op: "duplicate",
            path: "/".to_string(),
            source,
        })?;
        for (idx, component) in components.iter().enumerate() {
            let opened = match openat(current.as_fd(), component.as_os_str(), flags, Mode::empty())
            {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(
                        current.as_fd(),
                        component.as_os_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => {
                            return Err(fs_err(
                                "create directory",
                                &join_display(&components[..=idx]),
                                errno,
                            ));
                        }
                    }
                    openat(current.as_fd(), component.as_os_str(), flags, Mode::empty())
                }
                other => other,
            };
            current = match opened {
                Ok(fd) => fd,
                Err(Errno::ELOOP) => {
                    return Err(UnpackError::SymlinkComponent {
                        path: entry_path.to_string(),
                        component: join_display(&components[..=idx]),
                    });
                }
                Err(Errno::ENOTDIR) => {
                    // O_NOFOLLOW + O_DIRECTORY on a symlink may also give ENOTDIR.
                    let is_link = fstatat(
                        current.as_fd(),
                        component.as_os_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map(|stat| {
                        SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                    })
                    .unwrap_or(false);
                    let component = join_display(&components[..=idx]);
                    return Err(if is_link {
                        UnpackError::SymlinkComponent {
                            path: entry_path.to_string(),
                            component,
                        }
                    } else {
                        UnpackError::NotADirectory {
                            path: entry_path.to_string(),
                            component,
                        }
                    });
                }
                Err(errno) => {
                    return Err(fs_err(
                        "open directory",
                        &join_display(&components[..=idx]),
                        errno,
                    ));
                }
            };
        }
        Ok(current)
    }

    /// Path (below the private root) of already-verified components.
    fn host_path(&self, components: &[OsString]) -> PathBuf {
        let mut path = self.root_path.clone();
        for component in components {
            path.push(component);
        }
        path
    }

    /// Removes whatever is at `name` in `parent_fd` (recursively for directories).
    fn remove_existing(
        &self,
        parent_fd: &OwnedFd,
        parent: &[OsString],
        name: &OsStr,
    ) -> Result<(), UnpackError> {
        let mut full = parent.to_vec();
        full.push(name.to_os_string());
        let display = join_display(&full);
        match fstatat(parent_fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(fs_err("stat", &display, errno)),
            Ok(stat) => {
                if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    // The parent was opened without following symlinks and the
                    // root is private, so this path names the same directory;
                    // remove_dir_all does not follow symlinks inside it.
                    std::fs::remove_dir_all(self.host_path(&full)).map_err(|source| {
                        UnpackError::Fs {
                            op: "remove directory",
                            path: display,
                            source,
                        }
                    })
                } else {
                    unlinkat(parent_fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                        .map_err(|errno| fs_err("remove", &display, errno))
                }
            }
        }
    }

    fn chown(
        &self,
        parent_fd: &OwnedFd,
        name: &OsStr,
        uid: u64,
        gid: u64,
        display: &str,
    ) -> Result<(), UnpackError> {
        if !self.is_root {
            return Ok(());
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Ok(());
        };
        fchownat(
            parent_fd.as_fd(),
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| fs_err("chown", display, errno))
    }

    /// Applies one layer (plain tar or gzip-compressed tar).
    ///
    /// `expected_diff_id` (`sha256:<hex>`), when given, is checked against the
    /// uncompressed stream; on any error the rootfs is left half-written and
    /// the caller must discard it.
    pub fn apply_layer<R: Read>(
        &mut self,
        layer_name: &str,
        reader: R,
        expected_diff_id: Option<&str>,
    ) -> Result<(), UnpackError> {
        let read_err = |source| UnpackError::Read {
            layer: layer_name.to_string(),
            source,
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, reader);
        let magic = buffered.fill_buf().map_err(read_err)?;
        let decompressed: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(buffered))
        } else if magic.starts_with(&ZSTD_MAGIC) {
            // libzstd's default decoding window limit (2^27 bytes) bounds the
            // memory a hostile frame can make the decoder allocate; the
            // decompressed stream is capped below like gzip's.
            let decoder = zstd::stream::read::Decoder::with_buffer(buffered).map_err(read_err)?;
            Box::new(decoder)
        } else {
            Box::new(buffered)
        };
        // Tar headers and padding add at most a few KiB per entry on top of data.
        let stream_cap = self
            .limits
            .max_total_bytes
            .saturating_add(self.limits.max_entries.saturating_mul(3 * 512))
            .saturating_add(1024 * 1024);
        let hashing = HashingReader::new(decompressed, stream_cap);
        let mut archive = tar::Archive::new(hashing);
        let mut written: HashSet<Vec<OsString>> = HashSet::new();
        let mut dir_modes: HashMap<Vec<OsString>, u32> = HashMap::new();
        let entries = archive.entries().map_err(read_err)?;
        for entry in entries {
            let entry = entry.map_err(read_err)?;
            self.n_entries += 1;
            if self.n_entries > self.limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    max: self.limits.max_entries,
                });
            }
            self.apply_entry(entry, &mut written, &mut dir_modes)?;
        }
        // Directory modes are applied last so read-only directories can be filled.
        for (components, mode) in dir_modes {
            let display = join_display(&components);
            // A later entry of the layer may have removed or replaced it.
            let Ok(fd) = self.open_dir(&components, &display, false) else {
                continue;
            };
            fchmod(fd.as_fd(), safe_mode(mode, true))
                .map_err(|errno| fs_err("chmod", &display, errno))?;
        }
        let mut hashing = archive.into_inner();
        io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
        let (actual, _) = hashing.finish();
        if let Some(expected) = expected_diff_id
            && expected.strip_prefix("sha256:") != Some(actual.as_str())
        {
            return Err(UnpackError::DiffIdMismatch {
                layer: layer_name.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        written: &mut HashSet<Vec<OsString>>,
        dir_modes: &mut HashMap<Vec<OsString>, u32>,
    ) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let components = split_entry_path(&raw_path)?;
        let display = join_display(&components);
        let entry_type = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        let uid = entry.header().uid().unwrap_or(0);
        let gid = entry.header().gid().unwrap_or(0);
        let Some((name, parent)) = components.split_last() else {
            // The root directory itself ("./"): keep our own root's mode.
            return Ok(());
        };
        if matches!(entry_type, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            let parent_fd = self.open_dir(parent, &display, true)?;
            let parent_host = self.host_path(parent);
            let children = std::fs::read_dir(&parent_host).map_err(|source| UnpackError::Fs {
                op: "list",
                path: join_display(parent),
                source,
            })?;
            for child in children {
                let child = child.map_err(|source| UnpackError::Fs {
                    op: "list",
                    path: join_display(parent),
                    source,
                })?;
                let mut child_components = parent.to_vec();
                child_components.push(child.file_name());
                if !written.contains(&child_components) {
                    self.remove_existing(&parent_fd, parent, &child.file_name())?;
                }
            }
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent_fd = self.open_dir(parent, &display, true)?;
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::ParentComponent { path: display });
            }
            return self.remove_existing(&parent_fd, parent, hidden);
        }
        match entry_type {
            EntryType::Directory => {
                let parent_fd = self.open_dir(parent, &display, true)?;
                let is_dir = match fstatat(
                    parent_fd.as_fd(),
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(stat) => {
                        SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                    }
                    Err(Errno::ENOENT) => false,
                    Err(errno) => return Err(fs_err("stat", &display, errno)),
                };
                if !is_dir {
                    self.remove_existing(&parent_fd, parent, name)?;
                    mkdirat(
                        parent_fd.as_fd(),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(|errno| fs_err("create directory", &display, errno))?;
                }
                self.chown(&parent_fd, name, uid, gid, &display)?;
                dir_modes.insert(components.clone(), mode);
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().map_err(|source| UnpackError::Read {
                    layer: display.clone(),
                    source,
                })?;
                self.n_bytes = self.n_bytes.saturating_add(size);
                if self.n_bytes > self.limits.max_total_bytes {
                    return Err(UnpackError::TooLarge {
                        max: self.limits.max_total_bytes,
                    });
                }
                let parent_fd = self.open_dir(parent, &display, true)?;
                self.remove_existing(&parent_fd, parent, name)?;
                let file_fd = openat(
                    parent_fd.as_fd(),
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|errno| fs_err("create", &display, errno))?;
                let mut file = std::fs::File::from(file_fd);
                let copied =
                    io::copy(&mut (&mut entry).take(size), &mut file).map_err(|source| {
                        UnpackError::Fs {
                            op: "write",
                            path: display.clone(),
                            source,
                        }
                    })?;
                if copied != size {
                    return Err(UnpackError::Truncated {
                        path: display,
                        got: copied,
                        expected: size,
                    });
                }
                file.flush().map_err(|source| UnpackError::Fs {
                    op: "write",
                    path: display.clone(),
                    source,
                })?;
                fchmod(file.as_fd(), safe_mode(mode, false))
                    .map_err(|errno| fs_err("chmod", &display, errno))?;
                self.chown(&parent_fd, name, uid, gid, &display)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|bytes| bytes.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains(&0) {
                    return Err(UnpackError::UnsupportedEntry {
                        path: display,
                        kind: b'2',
                    });
                }
                let parent_fd = self.open_dir(parent, &display, true)?;
                self.remove_existing(&parent_fd, parent, name)?;
                // The target is stored, never followed by the extractor.
                symlinkat(
                    OsStr::from_bytes(&target),
                    parent_fd.as_fd(),
                    name.as_os_str(),
                )
                .map_err(|errno| fs_err("create symlink", &display, errno))?;
                self.chown(&parent_fd, name, uid, gid, &display)?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|bytes| bytes.into_owned())
                    .unwrap_or_default();
                let target_display = String::from_utf8_lossy(&target_raw).into_owned();
                let refuse = |reason| UnpackError::HardLink {
                    path: display.clone(),
                    target: target_display.clone(),
                    reason,
                };
                let target = match split_entry_path(&target_raw) {
                    Ok(target) => target,
                    Err(_) => return Err(refuse("target escapes the rootfs")),
                };
                let Some((target_name, target_parent)) = target.split_last() else {
                    return Err(refuse("target is the root"));
                };
                let target_parent_fd = match self.open_dir(target_parent, &target_display, false) {
                    Ok(fd) => fd,
                    Err(UnpackError::Fs { .. }) => return Err(refuse("target does not exist")),
                    Err(other) => return Err(other),
                };
                match fstatat(
                    target_parent_fd.as_fd(),
                    target_name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(stat)
                        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFREG => {}
                    Ok(_) => return Err(refuse("target is not a regular file")),
                    Err(_) => return Err(refuse("target does not exist")),
                }
                let parent_fd = self.open_dir(parent, &display, true)?;
                if target == components {
                    return Ok(());
                }
                self.remove_existing(&parent_fd, parent, name)?;
                linkat(
                    target_parent_fd.as_fd(),
                    target_name.as_os_str(),
                    parent_fd.as_fd(),
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|errno| fs_err("create hard link", &display, errno))?;
            }
            EntryType::Char => {
                return Err(UnpackError::SpecialFile {
                    path: display,
                    kind: "character device",
                });
            }
            EntryType::Block => {
                return Err(UnpackError::SpecialFile {
                    path: display,
                    kind: "block device",
                });
            }
            EntryType::Fifo => {
                return Err(UnpackError::SpecialFile {
                    path: display,
                    kind: "fifo",
                });
            }
            other => {
                return Err(UnpackError::UnsupportedEntry {
                    path: display,
                    kind: other.as_byte(),
                });
            }
        }
        written.insert(components);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_split_and_escapes_refused() {
        assert_eq!(
            split_entry_path(b"./usr/bin/env").unwrap(),
            vec![
                OsString::from("usr"),
                OsString::from("bin"),
                OsString::from("env")
            ]
        );
        assert!(split_entry_path(b"./").unwrap().is_empty());
        assert!(matches!(
            split_entry_path(b"/etc/passwd"),
            Err(UnpackError::AbsolutePath { .. })
        ));
        assert!(matches!(
            split_entry_path(b"a/../../etc"),
            Err(UnpackError::ParentComponent { .. })
        ));
        assert!(matches!(
            split_entry_path(&vec![b'a'; MAX_PATH_BYTES + 1]),
            Err(UnpackError::PathTooLong { .. })
        ));
    }

    #[test]
    fn files_open_beneath_their_directory_only() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("src");
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::write(dir.join("blobs/a"), b"a").unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../blobs/a", dir.join("blobs/inside")).unwrap();
        std::os::unix::fs::symlink("../../secret", dir.join("blobs/up")).unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret"), dir.join("abs")).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let fd = open_dir(&dir).unwrap();
        let read = |name: &str| {
            open_beneath(&fd, Path::new(name)).map(|mut file| {
                let mut text = String::new();
                file.read_to_string(&mut text).unwrap();
                text
            })
        };
        assert_eq!(read("blobs/a").unwrap(), "a");
        assert_eq!(read("blobs/inside").unwrap(), "a");
        for refused in [
            "blobs/up",
            "abs",
            "../secret",
            "/etc/passwd",
            "fifo",
            "blobs",
        ] {
            assert!(read(refused).is_err(), "{refused} was opened");
        }
    }

    #[test]
    fn the_walk_without_openat2_opens_beneath_and_follows_no_symlink() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("src");
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256/a"), b"a").unwrap();
        std::fs::write(dir.join("top"), b"t").unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("sha256", dir.join("blobs/link")).unwrap();
        std::os::unix::fs::symlink("../../secret", dir.join("blobs/up")).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let fd = open_dir(&dir).unwrap();
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let read = |name: &str| {
            open_beneath_walk(&fd, Path::new(name), flags)
                .and_then(regular_file)
                .map(|mut file| {
                    let mut text = String::new();
                    file.read_to_string(&mut text).unwrap();
                    text
                })
        };
        assert_eq!(read("blobs/sha256/a").unwrap(), "a");
        assert_eq!(read("./blobs/./sha256/a").unwrap(), "a");
        assert_eq!(read("top").unwrap(), "t");
        for refused in [
            "blobs/link/a",
            "blobs/up",
            "../secret",
            "blobs/../top",
            "/etc/passwd",
            "fifo",
            "blobs",
            "",
            "missing",
        ] {
            assert!(read(refused).is_err(), "{refused} was opened");
        }
    }

    #[test]
    fn modes_lose_setuid_and_setgid() {
        assert_eq!(safe_mode(0o4755, false).bits(), 0o755);
        assert_eq!(safe_mode(0o2755, false).bits(), 0o755);
        assert_eq!(safe_mode(0o1777, true).bits(), 0o1777);
        assert_eq!(safe_mode(0o1777, false).bits(), 0o777);
    }
}
