//! On-disk cache of compiled plugin code.
//!
//! Deserializing compiled code runs it as native code, so the host must only ever load
//! bytes it produced itself. Three layers make sure of that:
//!
//! 1. the cache directory is created with mode 0700 and refused unless it is owned by
//!    the current user and not accessible to group or others;
//! 2. the file name is the key: SHA-256 of the wasm, the wasmtime version and the
//!    engine's compatibility hash (compiler settings, target features);
//! 3. every file starts with an HMAC-SHA256 tag over the key and the compiled bytes,
//!    made with a 256-bit secret generated on first use and stored in the directory
//!    with mode 0600. A file that fails the tag (tampered, truncated, written by
//!    someone else) is deleted and the wasm recompiled; it is never deserialized.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use plinth_toolbox::durable::{self, WriteOptions};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use wasmtime::Engine;
use wasmtime::component::Component;

const KEY_FILE: &str = "cache-hmac.key";
const TAG_LEN: usize = 32;

/// Errors of the compiled-code cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory could not be created or inspected.
    #[error("cannot prepare cache directory {path}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache directory is not private to this user.
    #[error(
        "cache directory {path} is insecure: owner uid {owner}, mode {mode:o} (want our uid {uid}, mode 0700)"
    )]
    Insecure {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// Our uid.
        uid: u32,
    },
    /// The HMAC key file could not be written.
    #[error("cannot create the cache key file")]
    KeyWrite(#[source] durable::DurableError),
    /// The HMAC key file could not be read or written.
    #[error("cannot use cache key file {path}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HMAC key file has the wrong size.
    #[error("cache key file {path} holds {len} bytes, want 32")]
    KeyLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The system random generator failed.
    #[error("cannot generate the cache key")]
    Random,
}

/// A private directory of compiled components.
pub struct CompileCache {
    dir: PathBuf,
    key: hmac::Key,
    compat: u64,
}

/// Our effective uid: `/proc/self` is owned by it (avoids a libc dependency). When
/// procfs is missing this yields `u32::MAX`, which matches no directory: the cache is
/// then refused rather than trusted.
fn current_uid() -> u32 {
    fs::metadata("/proc/self")
        .map(|meta| meta.uid())
        .unwrap_or(u32::MAX)
}

impl CompileCache {
    /// Open (creating if needed) the cache in `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<CompileCache, CacheError> {
        let directory_error = |source: std::io::Error| CacheError::Directory {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(directory_error)?;
        }
        let meta = fs::metadata(dir).map_err(directory_error)?;
        let uid = current_uid();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.uid() != uid || mode & 0o077 != 0 || !meta.is_dir() {
            return Err(CacheError::Insecure {
                path: dir.to_path_buf(),
                owner: meta.uid(),
                mode,
                uid,
            });
        }
        let key_path = dir.join(KEY_FILE);
        let key_error = |source: std::io::Error| CacheError::KeyFile {
            path: key_path.clone(),
            source,
        };
        let secret = match fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut fresh)
                    .map_err(|_| CacheError::Random)?;
                // Written once, never replaced: the loser of a race between two hosts
                // starting on one directory reads the winner's key.
                match durable::write_with(&key_path, &fresh, WriteOptions::PRIVATE_NEW) {
                    Ok(()) => fresh.to_vec(),
                    Err(durable::DurableError::Exists { .. }) => {
                        fs::read(&key_path).map_err(key_error)?
                    }
                    Err(error) => return Err(CacheError::KeyWrite(error)),
                }
            }
            Err(error) => return Err(key_error(error)),
        };
        if secret.len() != 32 {
            return Err(CacheError::KeyLength {
                path: key_path,
                len: secret.len(),
            });
        }
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            compat: hasher.finish(),
        })
    }

    fn entry_name(&self, wasm_sha256: &str) -> String {
        format!(
            "{wasm_sha256}-wasmtime{}-{:016x}.cwasm",
            wasmtime_version(),
            self.compat
        )
    }

    /// Path of the entry for a wasm with this SHA-256 (hex).
    pub fn entry_path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir.join(self.entry_name(wasm_sha256))
    }

    fn tag(&self, name: &str, compiled: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(name.as_bytes());
        context.update(&[0]);
        context.update(compiled);
        context.sign()
    }

    /// The cached component for this wasm, if a valid entry exists. Entries that fail
    /// their HMAC are deleted.
    pub fn load(&self, engine: &Engine, wasm_sha256: &str) -> Option<Component> {
        let name = self.entry_name(wasm_sha256);
        let path = self.dir.join(&name);
        let bytes = fs::read(&path).ok()?;
        let (tag, compiled) = bytes.split_at_checked(TAG_LEN)?;
        if hmac::verify(&self.key, &[name.as_bytes(), &[0], compiled].concat(), tag).is_err() {
            tracing::warn!(path = %path.display(), "compiled-code cache entry failed its HMAC; deleting it");
            let _ = fs::remove_file(&path);
            return None;
        }
        // SAFETY: `compiled` was produced by `Component::serialize` in this host (the
        // HMAC under our private key proves it), for the same wasmtime version and engine
        // settings (both part of the file name that the tag covers); wasmtime checks the
        // version and settings again while deserializing.
        match unsafe { Component::deserialize(engine, compiled) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot deserialize cache entry; deleting it");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Store `component` for this wasm. Failures are logged, not returned: the cache is
    /// an optimisation.
    pub fn store(&self, wasm_sha256: &str, component: &Component) {
        let compiled = match component.serialize() {
            Ok(compiled) => compiled,
            Err(error) => {
                tracing::warn!(%error, "cannot serialize compiled component");
                return;
            }
        };
        let name = self.entry_name(wasm_sha256);
        let tag = self.tag(&name, &compiled);
        let mut entry = Vec::with_capacity(tag.as_ref().len() + compiled.len());
        entry.extend_from_slice(tag.as_ref());
        entry.extend_from_slice(&compiled);
        let path = self.dir.join(&name);
        if let Err(error) = durable::write_with(&path, &entry, WriteOptions::PRIVATE) {
            tracing::warn!(error = %plinth_toolbox::error_chain(&error), "cannot write compiled-code cache entry");
        }
    }
}

/// A temporary file name no other writer (process or thread) uses.
/// The wasmtime version compiled into this host.
pub fn wasmtime_version() -> &'static str {
    // The workspace pins wasmtime 48.0.x; the engine compatibility hash in every cache
    // key covers the exact patch release and settings.
    "48"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_directory_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("cache");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let engine = Engine::default();
        let error = CompileCache::open(&dir, &engine).err().unwrap();
        assert!(
            matches!(error, CacheError::Insecure { mode: 0o755, .. }),
            "{error}"
        );
    }

    #[test]
    fn fresh_directory_is_private_and_keyed() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("a/b");
        let engine = Engine::default();
        let cache = CompileCache::open(&dir, &engine).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let key_mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(key_mode, 0o600);
        assert!(cache.load(&engine, "00").is_none());
        // A forged entry (no valid tag) is deleted, never deserialized.
        let forged = cache.entry_path("ab");
        fs::write(&forged, vec![7u8; 100]).unwrap();
        assert!(cache.load(&engine, "ab").is_none());
        assert!(!forged.exists());
    }
}
