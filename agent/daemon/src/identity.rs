//! The node identity: an Ed25519 key pair that signs evidence and receipts.
//!
//! The private key is created on first start in plinth's one key-file format
//! ([`plinth_toolbox::keyfile`]: PKCS#8 in PEM `PRIVATE KEY`, mode 0600), written
//! durably and never over an existing key, so a crash never leaves half a key behind. Later starts load it and refuse a file that
//! others can read, that belongs to another user, or that does not hold an Ed25519 key.
//! The public key is also written beside it (`node.pub`, hex) for sysadmins.

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};

/// Errors creating or loading the node key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("cannot {action} node key {path}")]
    Io {
        /// What was being done (`read`, `create`, ...).
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may access the key file.
    #[error(
        "node key {path} has mode {mode:04o}; it must be readable by its owner only (chmod 600 {path})"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file belongs to another user.
    #[error("node key {path} is owned by uid {owner}, not by the agent's uid {expected}")]
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The agent's effective uid.
        expected: u32,
    },
    /// The key file does not hold a usable Ed25519 key.
    #[error("node key {path} is not a PEM PKCS#8 Ed25519 private key: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The system random generator failed.
    #[error("cannot generate a node key: the system random generator failed")]
    Random,
    /// The new key could not be written (or a key appeared at `path` meanwhile).
    #[error("cannot create node key {path}")]
    Create {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: plinth_toolbox::keyfile::KeyFileError,
    },
    /// The public key file could not be written.
    #[error("cannot write the node's public key")]
    WritePublic {
        /// The cause.
        #[source]
        source: plinth_toolbox::durable::DurableError,
    },
}

/// The node's Ed25519 identity.
#[derive(Debug)]
pub struct NodeIdentity {
    key_pair: Ed25519KeyPair,
    path: PathBuf,
    created: bool,
}

impl NodeIdentity {
    /// Loads the key at `path`, creating it first if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(IdentityError::Io {
                action: "inspect",
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Loads an existing key, checking its permissions and contents.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |action| {
            move |source| IdentityError::Io {
                action,
                path: path.to_owned(),
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io("open"))?;
        let metadata = file.metadata().map_err(io("inspect"))?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if metadata.uid() != euid && euid != 0 {
            return Err(IdentityError::Owner {
                path: path.to_owned(),
                owner: metadata.uid(),
                expected: euid,
            });
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(io("read"))?;
        let key_pair = plinth_toolbox::keyfile::parse(&bytes, &path.display().to_string())
            .map_err(|err| IdentityError::Malformed {
                path: path.to_owned(),
                reason: plinth_toolbox::error_chain(&err),
            })?;
        Ok(Self {
            key_pair,
            path: path.to_owned(),
            created: false,
        })
    }

    /// Creates a new key at `path`; fails if a file already exists there.
    pub fn create(path: &Path) -> Result<Self, IdentityError> {
        let io = |action, at: &Path| {
            let at = at.to_owned();
            move |source| IdentityError::Io {
                action,
                path: at,
                source,
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("create the directory of", path))?;
        // The one key-file format, written durably (mode 0600) and never replacing a key
        // that appeared meanwhile.
        let key_pair = plinth_toolbox::keyfile::create(path).map_err(|err| match err {
            plinth_toolbox::keyfile::KeyFileError::Random => IdentityError::Random,
            other => IdentityError::Create {
                path: path.to_owned(),
                source: other,
            },
        })?;

        let identity = Self {
            key_pair,
            path: path.to_owned(),
            created: true,
        };
        let public_path = path.with_extension("pub");
        plinth_toolbox::durable::write(
            &public_path,
            format!("{}\n", identity.public_key_hex()).as_bytes(),
        )
        .map_err(|source| IdentityError::WritePublic { source })?;
        Ok(identity)
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.key_pair.public_key().as_ref()
    }

    /// The public key in lowercase hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// Signs `message` with the node key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.key_pair.sign(message).as_ref());
        signature
    }

    /// The key pair, for signers that take one (the evidence bundle).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this start created the key.
    pub fn was_created(&self) -> bool {
        self.created
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{ED25519, UnparsedPublicKey};

    use super::*;

    #[test]
    fn created_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/node.key");
        let created = NodeIdentity::load_or_create(&path).unwrap();
        assert!(created.was_created());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = NodeIdentity::load_or_create(&path).unwrap();
        assert!(!loaded.was_created());
        assert_eq!(created.public_key(), loaded.public_key());
        let signature = loaded.sign(b"receipt");
        UnparsedPublicKey::new(&ED25519, created.public_key())
            .verify(b"receipt", &signature)
            .unwrap();
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        assert_eq!(public.trim(), created.public_key_hex());
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary left behind: {names:?}");
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeIdentity::create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = NodeIdentity::load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, IdentityError::Permissions { mode: found, .. } if found == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"));
        }
    }

    #[test]
    fn bad_contents_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        for contents in [
            "not a key at all".to_owned(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
            plinth_toolbox::pem::encode("PRIVATE KEY", &[1u8, 2, 3]),
        ] {
            std::fs::write(&path, &contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = NodeIdentity::load_or_create(&path).unwrap_err();
            assert!(matches!(err, IdentityError::Malformed { .. }), "{err}");
            assert!(err.to_string().contains("node.key"));
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                contents,
                "never overwritten"
            );
        }
    }

    #[test]
    fn symlinked_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        NodeIdentity::create(&real).unwrap();
        let link = dir.path().join("node.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = NodeIdentity::load_or_create(&link).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }), "{err}");
    }

    #[test]
    fn create_refuses_to_replace_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = NodeIdentity::create(&path).unwrap();
        assert!(NodeIdentity::create(&path).is_err());
        assert_eq!(
            NodeIdentity::load(&path).unwrap().public_key(),
            first.public_key()
        );
    }
}
