//! Image pulls from OCI distribution registries.
//!
//! A job names `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`; the host must be one of
//! the configured registries ([`RegistrySettings::registries`]), tried through
//! its mirrors in order and then itself. The pull is bounded and verified
//! end to end before anything is unpacked:
//!
//! 1. the manifest (or image index, then this platform's manifest, at most
//!    [`MAX_INDEX_DEPTH`] deep and `max_index_entries` wide) is read with a
//!    size cap, hashed and compared with the digest asked for;
//! 2. the layer count, total size and media types are checked (gzip, zstd,
//!    uncompressed; foreign/non-distributable layers refused);
//! 3. when the host (or the job's tenant) requires signatures, the cosign
//!    signature at `sha256-<hex>.sig` is fetched and verified
//!    ([`crate::signature`]) — before a single layer byte is downloaded;
//! 4. the config and the layers are streamed into a private staging OCI
//!    layout, `concurrency` at a time, each hashed while it streams and
//!    compared with its digest and size (retries with backoff, resumed with
//!    `Range` where the registry answers `206`, a stall timeout per read);
//! 5. the staging layout goes through the same plan and safe unpack as a
//!    local layout ([`ImageStore`]) and is committed by rename.
//!
//! References and the bearer-token handshake are `oci-client`'s
//! (`oci_client::Reference`, `Client::auth`). Manifest and blob GETs are
//! driven here with `reqwest` (the HTTP client oci-client itself uses), because
//! oci-client reads manifests without a size bound and its redirect policy
//! cannot be set: here every body has a cap, redirects are limited to
//! `max_redirects` and never go from HTTPS to HTTP, and resumption is ours.
//!
//! Concurrent pulls of one image share one download ([`ImageStore::flight`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::image::{
    self, ImageError, ImageOrigin, ImageStore, ImportProgress, ImportedImage, sha256_hex,
};
use crate::signature::{self, CosignKey, SignatureError, VerifiedSigner};

/// Deepest nesting of image indexes followed.
pub const MAX_INDEX_DEPTH: usize = 4;

/// Media types asked for when fetching a manifest.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Bytes between two download progress reports of one blob.
const PROGRESS_STEP: u64 = 8 * 1024 * 1024;

/// One `[[images.registries]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryHost {
    /// The registry as references name it (`registry.example`, `127.0.0.1:5000`).
    pub host: String,
    /// Mirrors tried in order before the host itself (`HOST[:PORT]`).
    pub mirrors: Vec<String>,
    /// Root-only TOML file with `username` + `password`, or `token`.
    pub credentials_file: Option<PathBuf>,
    /// PEM CA bundle that alone is trusted for this registry's TLS.
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP: honoured only when the host and every mirror are loopback.
    pub insecure: bool,
    /// Names of `[images.keys]` one of which must have signed every image from here.
    pub signed_by: Vec<String>,
}

/// Pull settings (the agent's `[images]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// The registries this host may pull from; empty: no registry access.
    pub registries: Vec<RegistryHost>,
    /// Named cosign public keys (PEM files).
    pub keys: BTreeMap<String, PathBuf>,
    /// Per-tenant signature requirement: replaces the registry's `signed_by`
    /// for that tenant's jobs.
    pub tenants: BTreeMap<String, Vec<String>>,
    /// Layers downloaded at the same time.
    pub concurrency: usize,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response before the attempt fails.
    pub stall_timeout: Duration,
    /// Retries of a failed blob download (resumed where possible).
    pub retries: u32,
    /// Largest manifest or index.
    pub max_manifest_bytes: u64,
    /// Largest image config.
    pub max_config_bytes: u64,
    /// Most layers in one image.
    pub max_layers: usize,
    /// Largest total of config and layer sizes (compressed).
    pub max_image_bytes: u64,
    /// Most entries in one image index.
    pub max_index_entries: usize,
    /// Most redirects followed by one request.
    pub max_redirects: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            registries: Vec::new(),
            keys: BTreeMap::new(),
            tenants: BTreeMap::new(),
            concurrency: 4,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            retries: 3,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_config_bytes: 4 * 1024 * 1024,
            max_layers: 256,
            max_image_bytes: 64 * 1024 * 1024 * 1024,
            max_index_entries: 256,
            max_redirects: 5,
        }
    }
}

/// Errors from pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The host has no registry configured at all.
    #[error(
        "cannot pull {reference}: this host has no registry access ([[images.registries]] is \
         empty); use a local oci-layout or oci-archive image, or configure the registry"
    )]
    NoRegistryAccess {
        /// The reference asked for.
        reference: String,
    },
    /// The reference names a registry that is not configured.
    #[error(
        "cannot pull {reference}: registry {registry} is not configured in [[images.registries]] \
         (configured: {configured})"
    )]
    NotConfigured {
        /// The reference asked for.
        reference: String,
        /// Its registry.
        registry: String,
        /// The configured hosts.
        configured: String,
    },
    /// A reference that does not parse, or a pin that contradicts it.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A registry's settings are unusable (credentials, CA, insecure).
    #[error("registry {registry}: {key} is unusable: {reason}")]
    Settings {
        /// The registry host.
        registry: String,
        /// The setting (`credentials_file`, `ca_file`, `insecure`, `signed_by`).
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Every endpoint (mirrors, then the host) failed.
    #[error("cannot pull {reference}: {attempts}")]
    Unreachable {
        /// The reference.
        reference: String,
        /// What each endpoint answered.
        attempts: String,
    },
    /// A request failed after its retries.
    #[error("{what} from {endpoint}: {reason}")]
    Transfer {
        /// What was fetched (`layer 2 of 5 of IMAGE`).
        what: String,
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Content whose bytes do not match their digest.
    #[error("digest mismatch for blob {digest} ({what}): {reason}")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// Which blob of which image.
        what: String,
        /// What was received.
        reason: String,
    },
    /// A document or image over a configured limit.
    #[error("{what} is over the limit: {reason} ({key})")]
    Limit {
        /// What.
        what: String,
        /// By how much.
        reason: String,
        /// The `[images]` key that sets the limit.
        key: &'static str,
    },
    /// The manifest is of a kind that cannot be run here.
    #[error("{what}: {reason}")]
    Unsupported {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// The signature policy refused the image.
    #[error("signature policy refused the image")]
    Signature(#[from] SignatureError),
    /// Unpacking or committing the pulled image failed.
    #[error("cannot import the pulled image")]
    Image(#[from] ImageError),
    /// A local file operation of the pull failed.
    #[error("cannot {op} {path}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image, in the cache.
    pub image: ImportedImage,
    /// Where it came from.
    pub origin: ImageOrigin,
    /// Who signed it (when the policy required a signature).
    pub signer: Option<VerifiedSigner>,
}

/// Credentials file contents (`credentials_file`): TOML, root-only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Clone)]
enum Credentials {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

/// Whether `host` (`NAME[:PORT]`) is a loopback address or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|addr| addr.is_loopback())
}

/// Checks the settings that can be checked without touching the network:
/// `insecure` only for loopback endpoints, known key names, parseable keys.
pub fn check_settings(settings: &RegistrySettings) -> Result<(), RegistryError> {
    let known = |names: &[String], registry: &str| -> Result<(), RegistryError> {
        for name in names {
            if !settings.keys.contains_key(name) {
                return Err(RegistryError::Settings {
                    registry: registry.to_owned(),
                    key: "signed_by",
                    reason: format!("{name:?} is not a key in [images.keys]"),
                });
            }
        }
        Ok(())
    };
    for registry in &settings.registries {
        if registry.insecure {
            for endpoint in std::iter::once(&registry.host).chain(&registry.mirrors) {
                if !is_loopback_host(endpoint) {
                    return Err(RegistryError::Settings {
                        registry: registry.host.clone(),
                        key: "insecure",
                        reason: format!(
                            "plain HTTP is allowed only for loopback hosts, and {endpoint} is not one"
                        ),
                    });
                }
            }
        }
        known(&registry.signed_by, &registry.host)?;
    }
    for (tenant, names) in &settings.tenants {
        known(names, &format!("tenant {tenant}"))?;
    }
    for (name, path) in &settings.keys {
        CosignKey::load(name, path)?;
    }
    Ok(())
}

fn read_credentials(registry: &str, path: &Path) -> Result<Credentials, RegistryError> {
    let unusable = |reason: String| RegistryError::Settings {
        registry: registry.to_owned(),
        key: "credentials_file",
        reason: format!("{}: {reason}", path.display()),
    };
    let file = fs::File::open(path).map_err(|err| unusable(err.to_string()))?;
    let meta = file.metadata().map_err(|err| unusable(err.to_string()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(unusable(format!(
            "mode {:04o} lets other users read registry credentials; chmod 0600",
            meta.mode() & 0o7777
        )));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unusable(format!(
            "owned by uid {}, not by the agent's user",
            meta.uid()
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 64 * 1024), &mut text)
        .map_err(|err| unusable(err.to_string()))?;
    let parsed: CredentialsFile = toml::from_str(&text).map_err(|err| unusable(err.to_string()))?;
    match parsed {
        CredentialsFile {
            username: Some(user),
            password: Some(password),
            token: None,
        } => Ok(Credentials::Basic(user, password)),
        CredentialsFile {
            username: None,
            password: None,
            token: Some(token),
        } => Ok(Credentials::Bearer(token)),
        _ => Err(unusable(
            "set either username and password, or token".to_owned(),
        )),
    }
}

/// The image a job asked for, resolved against the settings.
struct Target {
    /// As the job wrote it.
    reference: String,
    /// Parsed.
    parsed: oci_client::Reference,
    /// What to fetch: the pinned digest, else the tag (default `latest`).
    fetch: String,
    /// The digest the image must have (its own, or its index's).
    pin: Option<String>,
    /// The registry's settings.
    host: RegistryHost,
    /// Keys one of which must have signed it.
    required_keys: Vec<CosignKey>,
}

/// How requests are authorised at one endpoint.
#[derive(Debug, Clone)]
enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

/// One endpoint (a mirror or the host) and its client.
struct Endpoint {
    name: String,
    base: String,
    client: reqwest::Client,
    credentials: Credentials,
    ca: Vec<oci_client::client::Certificate>,
    insecure: bool,
    authorization: Option<Authorization>,
}

/// Why one attempt failed, and whether retrying can help.
struct Failure {
    reason: String,
    retryable: bool,
    /// The error to report as is (no failover, no retry), boxed to keep results small.
    error: Option<Box<RegistryError>>,
}

impl Failure {
    fn transient(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            retryable: true,
            error: None,
        }
    }

    fn fatal(error: RegistryError) -> Failure {
        Failure {
            reason: error.to_string(),
            retryable: false,
            error: Some(Box::new(error)),
        }
    }

    fn permanent(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            retryable: false,
            error: None,
        }
    }
}

fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut text = if err.is_redirect() {
        "too many redirects or an unsafe redirect".to_owned()
    } else if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What a manifest fetch returned.
struct Document {
    bytes: Vec<u8>,
    digest: String,
    media_type: String,
}

/// The resolved image, before its layers are fetched.
struct Resolved {
    endpoint: usize,
    top_digest: String,
    manifest_digest: String,
    manifest_bytes: Vec<u8>,
    manifest: ImageManifest,
    config_bytes: Vec<u8>,
    signer: Option<VerifiedSigner>,
}

/// Pulls images from the configured registries into an [`ImageStore`].
#[derive(Debug, Clone)]
pub struct Puller {
    settings: RegistrySettings,
}

impl Puller {
    /// A puller with these settings (checked by [`check_settings`] when pulling).
    pub fn new(settings: RegistrySettings) -> Puller {
        // reqwest is built without a bundled crypto provider: use ring, as the
        // rest of the agent does. (Already installed is fine.)
        let _ = rustls::crypto::ring::default_provider().install_default();
        Puller { settings }
    }

    /// The settings.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// Pulls `reference` (pinned to `pin` if given) into `store` for a job of
    /// `tenant`, or finds it in the cache. Blocks the calling thread (which
    /// must not be inside an async runtime: use `spawn_blocking`).
    pub fn pull(
        &self,
        store: &ImageStore,
        reference: &str,
        pin: Option<&str>,
        tenant: Option<&str>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<Pulled, RegistryError> {
        let target = self.target(reference, pin, tenant)?;
        // A digest-pinned image already in the cache (and, under a signature
        // policy, recorded as signed by a required key) needs no network:
        // air-gapped hosts run what they pulled before.
        if let Some(pin) = &target.pin
            && let Some(found) = store.lookup(pin)?
        {
            let signer = found.record.origin.as_ref().and_then(|o| o.signer.clone());
            let signed_ok = target.required_keys.is_empty()
                || signer.as_ref().is_some_and(|signer| {
                    target
                        .required_keys
                        .iter()
                        .any(|key| key.fingerprint == signer.key_sha256)
                });
            if signed_ok && let Some(origin) = found.record.origin.clone() {
                progress(ImportProgress::CacheHit);
                return Ok(Pulled {
                    signer: if target.required_keys.is_empty() {
                        None
                    } else {
                        signer
                    },
                    image: found,
                    origin,
                });
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| RegistryError::Io {
                op: "start the pull runtime for",
                path: PathBuf::from(reference),
                source,
            })?;
        let mut endpoints = self.endpoints(&target)?;
        let progress = RefCell::new(progress);
        let resolved = runtime.block_on(self.resolve(&target, &mut endpoints, &progress))?;
        let origin = ImageOrigin {
            reference: target.reference.clone(),
            resolved_digest: resolved.top_digest.clone(),
            endpoint: endpoints[resolved.endpoint].name.clone(),
            signer: resolved.signer.clone(),
        };
        // One download per image: a second pull waits here for the first and
        // then finds the image in the cache.
        let flight = store.flight(&resolved.manifest_digest);
        let _guard = flight.wait();
        if let Some(found) = store.lookup(&resolved.manifest_digest)? {
            (progress.borrow_mut())(ImportProgress::CacheHit);
            return Ok(Pulled {
                image: found,
                signer: resolved.signer.clone(),
                origin,
            });
        }
        let staging = store.staging()?;
        let layout = staging.path.join("layout");
        let blobs = layout.join("blobs").join("sha256");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&blobs)
            .map_err(|source| RegistryError::Io {
                op: "create",
                path: blobs.clone(),
                source,
            })?;
        runtime.block_on(self.fetch_layers(
            &target,
            &endpoints[resolved.endpoint],
            &resolved,
            &blobs,
            &progress,
        ))?;
        write_file(
            &blobs.join(sha256_hex(&resolved.manifest_digest)?),
            &resolved.manifest_bytes,
        )?;
        write_file(
            &blobs.join(sha256_hex(resolved.manifest.config().digest().as_ref())?),
            &resolved.config_bytes,
        )?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": resolved.manifest_digest,
                "size": resolved.manifest_bytes.len(),
            }]
        });
        write_file(&layout.join("index.json"), index.to_string().as_bytes())?;
        write_file(
            &layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        drop(runtime);
        let image = store.import_pulled(
            &layout,
            &resolved.manifest_digest,
            origin.clone(),
            &mut *progress.borrow_mut(),
        )?;
        Ok(Pulled {
            image,
            signer: resolved.signer,
            origin,
        })
    }

    fn target(
        &self,
        reference: &str,
        pin: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Target, RegistryError> {
        let bad = |reason: String| RegistryError::BadReference {
            reference: reference.to_owned(),
            reason,
        };
        let parsed = crate::spec::check_registry_reference(reference).map_err(bad)?;
        let pinned = match (parsed.digest(), pin) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(format!("it pins {a} but image.digest is {b}")));
            }
            (Some(a), _) => Some(a.to_owned()),
            (None, Some(b)) => {
                sha256_hex(b).map_err(|_| bad(format!("{b:?} is not a sha256 digest")))?;
                Some(b.to_owned())
            }
            (None, None) => None,
        };
        if self.settings.registries.is_empty() {
            return Err(RegistryError::NoRegistryAccess {
                reference: reference.to_owned(),
            });
        }
        let registry = parsed.registry();
        let Some(host) = self
            .settings
            .registries
            .iter()
            .find(|candidate| candidate.host == registry)
        else {
            return Err(RegistryError::NotConfigured {
                reference: reference.to_owned(),
                registry: registry.to_owned(),
                configured: self
                    .settings
                    .registries
                    .iter()
                    .map(|r| r.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        check_settings(&RegistrySettings {
            registries: vec![host.clone()],
            tenants: BTreeMap::new(),
            ..self.settings.clone()
        })?;
        let key_names = tenant
            .and_then(|tenant| self.settings.tenants.get(tenant))
            .unwrap_or(&host.signed_by);
        let mut required_keys = Vec::new();
        for name in key_names {
            let Some(path) = self.settings.keys.get(name) else {
                return Err(RegistryError::Settings {
                    registry: host.host.clone(),
                    key: "signed_by",
                    reason: format!("{name:?} is not a key in [images.keys]"),
                });
            };
            required_keys.push(CosignKey::load(name, path)?);
        }
        let fetch = pinned
            .clone()
            .unwrap_or_else(|| parsed.tag().unwrap_or("latest").to_owned());
        Ok(Target {
            reference: reference.to_owned(),
            fetch,
            pin: pinned,
            host: host.clone(),
            parsed,
            required_keys,
        })
    }

    fn endpoints(&self, target: &Target) -> Result<Vec<Endpoint>, RegistryError> {
        let host = &target.host;
        let credentials = match &host.credentials_file {
            Some(path) => read_credentials(&host.host, path)?,
            None => Credentials::Anonymous,
        };
        let mut ca = Vec::new();
        let mut reqwest_ca = Vec::new();
        if let Some(path) = &host.ca_file {
            let unusable = |reason: String| RegistryError::Settings {
                registry: host.host.clone(),
                key: "ca_file",
                reason: format!("{}: {reason}", path.display()),
            };
            let pem = fs::read(path).map_err(|err| unusable(err.to_string()))?;
            let ders =
                plinth_toolbox::pem::parse_all(&pem, "CERTIFICATE", &path.display().to_string())
                    .map_err(|err| unusable(err.to_string()))?;
            for der in ders {
                reqwest_ca.push(
                    reqwest::Certificate::from_der(&der)
                        .map_err(|err| unusable(err.to_string()))?,
                );
                ca.push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Der,
                    data: der,
                });
            }
        }
        let max_redirects = self.settings.max_redirects;
        let mut out = Vec::new();
        for name in host.mirrors.iter().chain(std::iter::once(&host.host)) {
            let scheme = if host.insecure { "http" } else { "https" };
            let mut builder = reqwest::Client::builder()
                .connect_timeout(self.settings.connect_timeout)
                .read_timeout(self.settings.stall_timeout)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() > max_redirects {
                        attempt.error(format!(
                            "more than {max_redirects} redirects (images.max_redirects)"
                        ))
                    } else if attempt.url().scheme() != "https"
                        && attempt.previous().iter().any(|url| url.scheme() == "https")
                    {
                        attempt.error("redirect from HTTPS to plain HTTP refused")
                    } else {
                        attempt.follow()
                    }
                }));
            if !reqwest_ca.is_empty() {
                builder = builder.tls_certs_only(reqwest_ca.clone());
            }
            let client = builder.build().map_err(|err| RegistryError::Settings {
                registry: host.host.clone(),
                key: "ca_file",
                reason: describe_reqwest(&err),
            })?;
            out.push(Endpoint {
                name: name.clone(),
                base: format!("{scheme}://{name}"),
                client,
                credentials: credentials.clone(),
                ca: ca.clone(),
                insecure: host.insecure,
                authorization: None,
            });
        }
        Ok(out)
    }

    /// Resolves the image at the first endpoint that answers, verifies its
    /// signature if the policy asks, and fetches its config.
    async fn resolve(
        &self,
        target: &Target,
        endpoints: &mut [Endpoint],
        progress: &RefCell<&mut dyn FnMut(ImportProgress)>,
    ) -> Result<Resolved, RegistryError> {
        let mut attempts = Vec::new();
        for (idx, endpoint) in endpoints.iter_mut().enumerate() {
            match self.resolve_at(target, endpoint, progress).await {
                Ok(mut resolved) => {
                    resolved.endpoint = idx;
                    if !attempts.is_empty() {
                        tracing::warn!(image = %target.reference, failed = %attempts.join("; "), endpoint = %endpoint.name, "pulled through a later endpoint");
                    }
                    return Ok(resolved);
                }
                Err(failure) => match failure.error {
                    Some(error) => return Err(*error),
                    None => attempts.push(format!("{}: {}", endpoint.name, failure.reason)),
                },
            }
        }
        Err(RegistryError::Unreachable {
            reference: target.reference.clone(),
            attempts: attempts.join("; "),
        })
    }

    async fn resolve_at(
        &self,
        target: &Target,
        endpoint: &mut Endpoint,
        progress: &RefCell<&mut dyn FnMut(ImportProgress)>,
    ) -> Result<Resolved, Failure> {
        self.authorize(target, endpoint).await?;
        let repo = target.parsed.repository().to_owned();
        let image_name = &target.reference;
        let mut wanted = target.fetch.clone();
        let mut top_digest = None;
        let mut depth = 0;
        let (document, manifest) = loop {
            let what = if depth == 0 {
                format!("manifest of {image_name}")
            } else {
                format!("platform manifest of {image_name}")
            };
            let document = self.fetch_manifest(endpoint, &repo, &wanted, &what).await?;
            if top_digest.is_none() {
                top_digest = Some(document.digest.clone());
            }
            let media_type = if document.media_type.is_empty() {
                media_type_of(&document.bytes)
            } else {
                document.media_type.clone()
            };
            match media_type.as_str() {
                "application/vnd.oci.image.index.v1+json"
                | "application/vnd.docker.distribution.manifest.list.v2+json" => {
                    depth += 1;
                    if depth >= MAX_INDEX_DEPTH {
                        return Err(Failure::fatal(RegistryError::Limit {
                            what: format!("image index of {image_name}"),
                            reason: format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
                            key: "MAX_INDEX_DEPTH",
                        }));
                    }
                    let child = self.choose_platform(&document.bytes, image_name)?;
                    wanted = child;
                }
                "application/vnd.oci.image.manifest.v1+json"
                | "application/vnd.docker.distribution.manifest.v2+json" => {
                    let manifest: ImageManifest =
                        serde_json::from_slice(&document.bytes).map_err(|err| {
                            Failure::fatal(RegistryError::Unsupported {
                                what: what.clone(),
                                reason: format!("not an image manifest: {err}"),
                            })
                        })?;
                    break (document, manifest);
                }
                other => {
                    return Err(Failure::fatal(RegistryError::Unsupported {
                        what,
                        reason: format!(
                            "media type {other:?} is not an OCI or Docker v2 image manifest or index"
                        ),
                    }));
                }
            }
        };
        let top_digest = top_digest.unwrap_or_else(|| document.digest.clone());
        if let Some(pin) = &target.pin
            && *pin != top_digest
            && *pin != document.digest
        {
            return Err(Failure::fatal(RegistryError::DigestMismatch {
                digest: pin.clone(),
                what: format!("manifest of {image_name}"),
                reason: format!("the registry served {top_digest}"),
            }));
        }
        self.check_manifest(&manifest, image_name)
            .map_err(Failure::fatal)?;
        let signer = if target.required_keys.is_empty() {
            None
        } else {
            let signer = self
                .verify_signature(target, endpoint, &top_digest, &document.digest)
                .await?;
            (progress.borrow_mut())(ImportProgress::SignatureVerified {
                key: signer.key.clone(),
            });
            Some(signer)
        };
        let config = manifest.config();
        let config_what = format!("config of {image_name}");
        let config_bytes = self
            .fetch_small_blob(
                endpoint,
                &repo,
                config,
                self.settings.max_config_bytes,
                "images.max_config_bytes",
                &config_what,
            )
            .await?;
        Ok(Resolved {
            endpoint: 0,
            top_digest,
            manifest_digest: document.digest,
            manifest_bytes: document.bytes,
            manifest,
            config_bytes,
            signer,
        })
    }

    fn choose_platform(&self, bytes: &[u8], image_name: &str) -> Result<String, Failure> {
        let index: ImageIndex = serde_json::from_slice(bytes).map_err(|err| {
            Failure::fatal(RegistryError::Unsupported {
                what: format!("image index of {image_name}"),
                reason: format!("not an image index: {err}"),
            })
        })?;
        let entries = index.manifests();
        if entries.len() > self.settings.max_index_entries {
            return Err(Failure::fatal(RegistryError::Limit {
                what: format!("image index of {image_name}"),
                reason: format!(
                    "it lists {} manifests, more than {}",
                    entries.len(),
                    self.settings.max_index_entries
                ),
                key: "images.max_index_entries",
            }));
        }
        let (os, arch) = image::current_platform();
        let chosen = entries.iter().find(|entry| {
            entry.platform().as_ref().is_some_and(|platform| {
                platform.os().to_string() == os && platform.architecture().to_string() == arch
            })
        });
        match chosen {
            Some(entry) => {
                let digest = entry.digest().to_string();
                sha256_hex(&digest).map_err(|err| Failure::fatal(err.into()))?;
                Ok(digest)
            }
            None => Err(Failure::fatal(RegistryError::Unsupported {
                what: format!("image index of {image_name}"),
                reason: format!(
                    "no manifest for {os}/{arch} (it has: {})",
                    entries
                        .iter()
                        .filter_map(|e| e.platform().as_ref())
                        .map(|p| format!("{}/{}", p.os(), p.architecture()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })),
        }
    }

    /// The checks made before any layer is fetched: counts, sizes, media types.
    fn check_manifest(
        &self,
        manifest: &ImageManifest,
        image_name: &str,
    ) -> Result<(), RegistryError> {
        let layers = manifest.layers();
        if layers.len() > self.settings.max_layers {
            return Err(RegistryError::Limit {
                what: format!("manifest of {image_name}"),
                reason: format!(
                    "{} layers, more than {}",
                    layers.len(),
                    self.settings.max_layers
                ),
                key: "images.max_layers",
            });
        }
        let total = layers
            .iter()
            .map(Descriptor::size)
            .fold(manifest.config().size(), u64::saturating_add);
        if total > self.settings.max_image_bytes {
            return Err(RegistryError::Limit {
                what: format!("image {image_name}"),
                reason: format!(
                    "{total} bytes of config and layers, more than {}",
                    self.settings.max_image_bytes
                ),
                key: "images.max_image_bytes",
            });
        }
        sha256_hex(manifest.config().digest().as_ref())?;
        for (idx, layer) in layers.iter().enumerate() {
            let digest = layer.digest().to_string();
            let what = format!("layer {} of {} of {image_name}", idx + 1, layers.len());
            sha256_hex(&digest)?;
            image::check_layer_media_type(layer.media_type().as_ref(), &digest, &what)?;
        }
        Ok(())
    }

    async fn verify_signature(
        &self,
        target: &Target,
        endpoint: &Endpoint,
        top_digest: &str,
        manifest_digest: &str,
    ) -> Result<VerifiedSigner, Failure> {
        let repo = target.parsed.repository();
        let mut digests = vec![top_digest];
        if manifest_digest != top_digest {
            digests.push(manifest_digest);
        }
        let mut reasons = Vec::new();
        for digest in &digests {
            let tag = signature::signature_tag(digest);
            let document = match self
                .fetch_manifest(endpoint, repo, &tag, &format!("signature {tag}"))
                .await
            {
                Ok(document) => document,
                Err(failure) if failure.reason.contains("404") => {
                    reasons.push(format!("no signature at {tag}"));
                    continue;
                }
                Err(failure) => return Err(failure),
            };
            let layers = signature::parse_signature_manifest(&document.bytes, &tag)
                .map_err(|err| Failure::fatal(err.into()))?;
            if layers.is_empty() {
                reasons.push(format!("{tag} holds no cosign signature"));
            }
            for layer in layers {
                let descriptor = Descriptor::new(
                    oci_spec::image::MediaType::Other(
                        signature::SIMPLESIGNING_MEDIA_TYPE.to_owned(),
                    ),
                    layer.size,
                    oci_spec::image::Digest::try_from(layer.digest.as_str()).map_err(|err| {
                        Failure::fatal(RegistryError::Unsupported {
                            what: format!("signature {tag}"),
                            reason: err.to_string(),
                        })
                    })?,
                );
                let payload = self
                    .fetch_small_blob(
                        endpoint,
                        repo,
                        &descriptor,
                        signature::MAX_PAYLOAD_BYTES,
                        "signature payload size",
                        &format!("signature payload of {tag}"),
                    )
                    .await?;
                match signature::check_signature(&layer, &payload, &target.required_keys, &digests)
                {
                    Ok(signer) => return Ok(signer),
                    Err(reason) => reasons.push(reason),
                }
            }
        }
        Err(Failure::fatal(
            SignatureError::NotSigned {
                image: format!("{} ({manifest_digest})", target.reference),
                keys: target
                    .required_keys
                    .iter()
                    .map(|key| key.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reasons: reasons.join("; "),
            }
            .into(),
        ))
    }

    /// Finds how to authorise requests at `endpoint`: one `GET /v2/` ping;
    /// a Bearer challenge goes through oci-client's token handshake.
    async fn authorize(&self, target: &Target, endpoint: &mut Endpoint) -> Result<(), Failure> {
        if endpoint.authorization.is_some() {
            return Ok(());
        }
        if let Credentials::Bearer(token) = &endpoint.credentials {
            endpoint.authorization = Some(Authorization::Bearer(token.clone()));
            return Ok(());
        }
        let url = format!("{}/v2/", endpoint.base);
        let response = tokio::time::timeout(
            self.settings.stall_timeout,
            endpoint.client.get(&url).send(),
        )
        .await
        .map_err(|_| {
            Failure::transient(format!(
                "no answer within {:?} (images.stall_timeout_seconds)",
                self.settings.stall_timeout
            ))
        })?
        .map_err(|err| Failure::transient(describe_reqwest(&err)))?;
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let status = response.status();
        drop(response);
        let basic = |credentials: &Credentials| match credentials {
            Credentials::Basic(user, password) => {
                Authorization::Basic(user.clone(), password.clone())
            }
            _ => Authorization::None,
        };
        if status == reqwest::StatusCode::UNAUTHORIZED
            && challenge.to_ascii_lowercase().starts_with("bearer")
        {
            let config = oci_client::client::ClientConfig {
                protocol: if endpoint.insecure {
                    oci_client::client::ClientProtocol::Http
                } else {
                    oci_client::client::ClientProtocol::Https
                },
                tls_certs_only: endpoint.ca.clone(),
                connect_timeout: Some(self.settings.connect_timeout),
                read_timeout: Some(self.settings.stall_timeout),
                platform_resolver: None,
                ..Default::default()
            };
            let client = oci_client::Client::try_from(config).map_err(|err| {
                Failure::permanent(format!("cannot build the token client: {err}"))
            })?;
            let reference = oci_client::Reference::with_tag(
                endpoint.name.clone(),
                target.parsed.repository().to_owned(),
                "latest".to_owned(),
            );
            let auth = match &endpoint.credentials {
                Credentials::Basic(user, password) => {
                    oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
                }
                _ => oci_client::secrets::RegistryAuth::Anonymous,
            };
            let token = tokio::time::timeout(
                self.settings.stall_timeout,
                client.auth(&reference, &auth, oci_client::RegistryOperation::Pull),
            )
            .await
            .map_err(|_| Failure::transient("the token service did not answer"))?
            .map_err(|err| Failure::permanent(format!("token handshake refused: {err}")))?;
            endpoint.authorization = Some(match token {
                Some(token) => Authorization::Bearer(token),
                None => basic(&endpoint.credentials),
            });
        } else {
            endpoint.authorization = Some(basic(&endpoint.credentials));
        }
        Ok(())
    }

    /// Sends one GET with the endpoint's authorisation.
    async fn send(
        &self,
        endpoint: &Endpoint,
        path: &str,
        accept: Option<&str>,
        offset: u64,
    ) -> Result<reqwest::Response, Failure> {
        let url = format!("{}{path}", endpoint.base);
        let mut request = endpoint.client.get(&url);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        request = match &endpoint.authorization {
            Some(Authorization::Basic(user, password)) => request.basic_auth(user, Some(password)),
            Some(Authorization::Bearer(token)) => request.bearer_auth(token),
            _ => request,
        };
        let response = tokio::time::timeout(self.settings.stall_timeout, request.send())
            .await
            .map_err(|_| {
                Failure::transient(format!(
                    "no answer within {:?} (images.stall_timeout_seconds)",
                    self.settings.stall_timeout
                ))
            })?
            .map_err(|err| {
                let reason = describe_reqwest(&err);
                if err.is_redirect() {
                    Failure::permanent(reason)
                } else {
                    Failure::transient(reason)
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let detail = match status.as_u16() {
            401 => match &endpoint.credentials {
                Credentials::Anonymous => {
                    "401 Unauthorized: the registry requires credentials (set credentials_file)"
                        .to_owned()
                }
                _ => "401 Unauthorized: the registry refused the credentials in credentials_file"
                    .to_owned(),
            },
            403 => "403 Forbidden: the credentials may not pull this repository".to_owned(),
            404 => "404 Not Found".to_owned(),
            _ => format!("HTTP {status}"),
        };
        if status.is_server_error() || status.as_u16() == 429 {
            Err(Failure::transient(detail))
        } else {
            Err(Failure::permanent(detail))
        }
    }

    /// Reads a whole body of at most `max` bytes, waiting at most the stall
    /// timeout for each chunk.
    async fn read_bounded(
        &self,
        response: reqwest::Response,
        max: u64,
        key: &'static str,
        what: &str,
    ) -> Result<Vec<u8>, Failure> {
        let too_large = |size: String| {
            Failure::fatal(RegistryError::Limit {
                what: what.to_owned(),
                reason: format!("{size} bytes, more than {max}"),
                key,
            })
        };
        if let Some(length) = response.content_length()
            && length > max
        {
            return Err(too_large(length.to_string()));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.settings.stall_timeout, stream.next())
                .await
                .map_err(|_| {
                    Failure::transient(format!(
                        "stalled: no data for {:?} (images.stall_timeout_seconds)",
                        self.settings.stall_timeout
                    ))
                })?;
            let Some(chunk) = next else {
                break;
            };
            let chunk = chunk.map_err(|err| {
                Failure::transient(if err.is_timeout() {
                    format!(
                        "stalled: no data for {:?} (images.stall_timeout_seconds)",
                        self.settings.stall_timeout
                    )
                } else {
                    describe_reqwest(&err)
                })
            })?;
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large(format!("more than {}", body.len() + chunk.len())));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Fetches a manifest by tag or digest, retrying transient failures.
    async fn fetch_manifest(
        &self,
        endpoint: &Endpoint,
        repo: &str,
        reference: &str,
        what: &str,
    ) -> Result<Document, Failure> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut attempt = 0;
        loop {
            let result = async {
                let response = self.send(endpoint, &path, Some(MANIFEST_ACCEPT), 0).await?;
                let media_type = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
                    .unwrap_or_default();
                let bytes = self
                    .read_bounded(
                        response,
                        self.settings.max_manifest_bytes,
                        "images.max_manifest_bytes",
                        what,
                    )
                    .await?;
                Ok::<_, Failure>((bytes, media_type))
            }
            .await;
            match result {
                Ok((bytes, media_type)) => {
                    let digest = format!("sha256:{}", image::sha256_of(&bytes));
                    if reference.starts_with("sha256:") && digest != reference {
                        return Err(Failure::fatal(RegistryError::DigestMismatch {
                            digest: reference.to_owned(),
                            what: what.to_owned(),
                            reason: format!("content is {} bytes hashing to {digest}", bytes.len()),
                        }));
                    }
                    // Generic types (`application/json`) say nothing: use the document's.
                    let media_type = if media_type.starts_with("application/vnd.") {
                        media_type
                    } else {
                        String::new()
                    };
                    return Ok(Document {
                        bytes,
                        digest,
                        media_type,
                    });
                }
                Err(failure) if failure.retryable && attempt < self.settings.retries => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Fetches a small blob (config, signature payload) into memory, verified.
    async fn fetch_small_blob(
        &self,
        endpoint: &Endpoint,
        repo: &str,
        descriptor: &Descriptor,
        max: u64,
        key: &'static str,
        what: &str,
    ) -> Result<Vec<u8>, Failure> {
        let digest = descriptor.digest().to_string();
        sha256_hex(&digest).map_err(|err| Failure::fatal(err.into()))?;
        if descriptor.size() > max {
            return Err(Failure::fatal(RegistryError::Limit {
                what: what.to_owned(),
                reason: format!("{} bytes, more than {max}", descriptor.size()),
                key,
            }));
        }
        let path = format!("/v2/{repo}/blobs/{digest}");
        let mut attempt = 0;
        loop {
            let result = async {
                let response = self.send(endpoint, &path, None, 0).await?;
                self.read_bounded(response, descriptor.size(), key, what)
                    .await
            }
            .await;
            match result {
                Ok(bytes) => {
                    image::verify_bytes(&bytes, &digest, descriptor.size(), what).map_err(
                        |err| match err {
                            ImageError::BlobMismatch {
                                digest,
                                what,
                                reason,
                            } => Failure::fatal(RegistryError::DigestMismatch {
                                digest,
                                what,
                                reason,
                            }),
                            other => Failure::fatal(other.into()),
                        },
                    )?;
                    return Ok(bytes);
                }
                Err(failure) if failure.retryable && attempt < self.settings.retries => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(failure) => {
                    return Err(match failure.error {
                        Some(_) => failure,
                        None => Failure::fatal(RegistryError::Transfer {
                            what: what.to_owned(),
                            endpoint: endpoint.name.clone(),
                            reason: failure.reason,
                        }),
                    });
                }
            }
        }
    }

    /// Downloads every layer into `blobs/`, `concurrency` at a time.
    async fn fetch_layers(
        &self,
        target: &Target,
        endpoint: &Endpoint,
        resolved: &Resolved,
        blobs: &Path,
        progress: &RefCell<&mut dyn FnMut(ImportProgress)>,
    ) -> Result<(), RegistryError> {
        let layers = resolved.manifest.layers();
        let n_layers = layers.len();
        let repo = target.parsed.repository();
        let mut downloads =
            futures_util::stream::iter(layers.iter().enumerate().map(|(idx, layer)| async move {
                let what = format!("layer {} of {n_layers} of {}", idx + 1, target.reference);
                self.fetch_blob_to_file(
                    endpoint, repo, layer, blobs, &what, idx, n_layers, progress,
                )
                .await
            }))
            .buffer_unordered(self.settings.concurrency.max(1));
        while let Some(result) = downloads.next().await {
            result?;
        }
        Ok(())
    }

    /// Streams one blob into `blobs/<hex>`, hashing as it goes; resumes with
    /// `Range` after a failure when the registry answers `206`.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob_to_file(
        &self,
        endpoint: &Endpoint,
        repo: &str,
        layer: &Descriptor,
        blobs: &Path,
        what: &str,
        idx: usize,
        n_layers: usize,
        progress: &RefCell<&mut dyn FnMut(ImportProgress)>,
    ) -> Result<(), RegistryError> {
        let digest = layer.digest().to_string();
        let hex_part = sha256_hex(&digest)?.to_owned();
        let size = layer.size();
        let path = blobs.join(&hex_part);
        let io_err = |op: &'static str| {
            let path = path.clone();
            move |source| RegistryError::Io { op, path, source }
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create"))?;
        let url_path = format!("/v2/{repo}/blobs/{digest}");
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut written: u64 = 0;
        let mut reported: u64 = 0;
        let label = format!("layer {}/{n_layers}", idx + 1);
        let report = |bytes: u64| {
            (progress.borrow_mut())(ImportProgress::Download {
                what: label.clone(),
                digest: digest.clone(),
                bytes,
                total: size,
            });
        };
        report(0);
        let mut attempt = 0;
        loop {
            let outcome: Result<(), Failure> = async {
                let response = self.send(endpoint, &url_path, None, written).await?;
                if written > 0 {
                    let resumed = response.status() == reqwest::StatusCode::PARTIAL_CONTENT
                        && response
                            .headers()
                            .get(reqwest::header::CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.starts_with(&format!("bytes {written}-")));
                    if !resumed {
                        // The registry sent the whole blob again: start over.
                        file.set_len(0).map_err(|e| Failure::fatal(io_err("truncate")(e)))?;
                        std::io::Seek::rewind(&mut file)
                            .map_err(|e| Failure::fatal(io_err("rewind")(e)))?;
                        hasher = ring::digest::Context::new(&ring::digest::SHA256);
                        written = 0;
                    }
                }
                let mut stream = response.bytes_stream();
                loop {
                    let next = tokio::time::timeout(self.settings.stall_timeout, stream.next())
                        .await
                        .map_err(|_| {
                            Failure::transient(format!(
                                "stalled: no data for {:?} after {written} of {size} bytes (images.stall_timeout_seconds)",
                                self.settings.stall_timeout
                            ))
                        })?;
                    let Some(chunk) = next else {
                        return Ok(());
                    };
                    let chunk = chunk.map_err(|err| {
                        Failure::transient(if err.is_timeout() {
                            format!(
                                "stalled: no data for {:?} after {written} of {size} bytes (images.stall_timeout_seconds)",
                                self.settings.stall_timeout
                            )
                        } else {
                            describe_reqwest(&err)
                        })
                    })?;
                    if written + chunk.len() as u64 > size {
                        return Err(Failure::fatal(RegistryError::DigestMismatch {
                            digest: digest.clone(),
                            what: what.to_owned(),
                            reason: format!("the registry sent more than the {size} bytes of the descriptor"),
                        }));
                    }
                    hasher.update(&chunk);
                    file.write_all(&chunk)
                        .map_err(|e| Failure::fatal(io_err("write")(e)))?;
                    written += chunk.len() as u64;
                    if written - reported >= PROGRESS_STEP {
                        reported = written;
                        report(written);
                    }
                }
            }
            .await;
            match outcome {
                Ok(()) if written == size => break,
                Ok(()) => {
                    if attempt >= self.settings.retries {
                        return Err(RegistryError::Transfer {
                            what: what.to_owned(),
                            endpoint: endpoint.name.clone(),
                            reason: format!("the body ended after {written} of {size} bytes"),
                        });
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(failure) if failure.retryable && attempt < self.settings.retries => {
                    attempt += 1;
                    tracing::info!(blob = %digest, attempt, reason = %failure.reason, "retrying a blob download");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(failure) => {
                    return Err(failure.error.map(|e| *e).unwrap_or_else(|| {
                        RegistryError::Transfer {
                            what: what.to_owned(),
                            endpoint: endpoint.name.clone(),
                            reason: if attempt > 0 {
                                format!("{} (after {attempt} retries)", failure.reason)
                            } else {
                                failure.reason
                            },
                        }
                    }));
                }
            }
        }
        let actual = hex::encode(hasher.finish().as_ref());
        if actual != hex_part {
            return Err(RegistryError::DigestMismatch {
                digest,
                what: what.to_owned(),
                reason: format!("content is {written} bytes hashing to sha256:{actual}"),
            });
        }
        file.sync_data().map_err(io_err("sync"))?;
        report(written);
        Ok(())
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

/// The `mediaType` a manifest document declares (empty if none).
fn media_type_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Versioned {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Versioned>(bytes) {
        Ok(Versioned {
            media_type: Some(media_type),
            ..
        }) => media_type,
        // An OCI index may omit mediaType; `manifests` gives it away.
        Ok(Versioned {
            manifests: Some(_), ..
        }) => "application/vnd.oci.image.index.v1+json".to_owned(),
        _ => "application/vnd.oci.image.manifest.v1+json".to_owned(),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    fs::write(path, bytes).map_err(|source| RegistryError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    })
}

/// Parses a manifest or index document the way a pull does (media type, then
/// the typed document, then the limits that apply without the network); for
/// the fuzz target and tests. Returns the number of layers or index entries.
pub fn parse_document(bytes: &[u8], settings: &RegistrySettings) -> Result<usize, RegistryError> {
    let puller = Puller {
        settings: settings.clone(),
    };
    match media_type_of(bytes).as_str() {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => {
            let index: ImageIndex =
                serde_json::from_slice(bytes).map_err(|err| RegistryError::Unsupported {
                    what: "image index".to_owned(),
                    reason: err.to_string(),
                })?;
            match puller.choose_platform(bytes, "fuzz") {
                Ok(_) => Ok(index.manifests().len()),
                Err(failure) => {
                    Err(failure
                        .error
                        .map(|e| *e)
                        .unwrap_or(RegistryError::Unsupported {
                            what: "image index".to_owned(),
                            reason: failure.reason,
                        }))
                }
            }
        }
        _ => {
            let manifest: ImageManifest =
                serde_json::from_slice(bytes).map_err(|err| RegistryError::Unsupported {
                    what: "image manifest".to_owned(),
                    reason: err.to_string(),
                })?;
            puller.check_manifest(&manifest, "fuzz")?;
            Ok(manifest.layers().len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "registry.example",
            "10.0.0.1:5000",
            "[2001:db8::1]:5000",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn insecure_is_refused_for_remote_hosts_and_unknown_keys_are_named() {
        let mut settings = RegistrySettings {
            registries: vec![RegistryHost {
                host: "127.0.0.1:5000".to_owned(),
                mirrors: vec!["mirror.example".to_owned()],
                insecure: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = check_settings(&settings).unwrap_err().to_string();
        assert!(err.contains("mirror.example is not one"), "{err}");
        settings.registries[0].mirrors.clear();
        check_settings(&settings).unwrap();
        settings.registries[0].signed_by = vec!["nope".to_owned()];
        let err = check_settings(&settings).unwrap_err().to_string();
        assert!(err.contains("\"nope\" is not a key"), "{err}");
    }

    #[test]
    fn air_gapped_and_unlisted_registries_say_so() {
        let puller = Puller::new(RegistrySettings::default());
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path(), Default::default()).unwrap();
        let err = puller
            .pull(&store, "r.example/app:v1", None, None, &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::NoRegistryAccess { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no registry access"), "{err}");
        let puller = Puller::new(RegistrySettings {
            registries: vec![RegistryHost {
                host: "other.example".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let err = puller
            .pull(&store, "r.example/app:v1", None, None, &mut |_| {})
            .unwrap_err();
        assert!(
            err.to_string().contains("r.example is not configured"),
            "{err}"
        );
    }

    #[test]
    fn credentials_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        fs::write(&path, "username = \"u\"\npassword = \"p\"\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_credentials("r", &path).unwrap_err().to_string();
        assert!(err.contains("lets other users read"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_credentials("r", &path).unwrap(),
            Credentials::Basic(user, _) if user == "u"
        ));
        fs::write(&path, "username = \"u\"\ntoken = \"t\"\n").unwrap();
        assert!(read_credentials("r", &path).is_err());
    }
}
