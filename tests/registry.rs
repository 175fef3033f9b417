//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF Distribution
//! server) started on a free loopback port with a configuration written by the test,
//! plain or with TLS from a test CA (openssl CLI) and htpasswd basic auth (bcrypt),
//! stopped when dropped. Images are built as OCI layouts (layers uncompressed, gzip or
//! zstd; multi-platform indexes; cosign-style signature artifacts) and pushed with
//! `skopeo`; hostile documents `skopeo` would not produce are pushed with a minimal
//! HTTP/1.1 client of the distribution API. Test support only.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why registry tests cannot run here, if they cannot (`docker-registry`, `skopeo`,
/// `openssl` missing).
pub fn unavailable() -> Option<String> {
    ["docker-registry", "skopeo", "openssl"]
        .into_iter()
        .find(|tool| !crate::on_path(tool))
        .map(|tool| {
            format!("{tool} is not installed (apt-get install docker-registry skopeo openssl)")
        })
}

/// Whether registry tests can run; prints why `what` is skipped when not.
pub fn available(what: &str) -> bool {
    match unavailable() {
        Some(reason) => {
            eprintln!("SKIP {what}: {reason}");
            false
        }
        None => true,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn run(command: &mut Command, what: &str) -> io::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// TLS material of a registry started with [`Registry::start_tls`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The test CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// A directory with `ca.crt`, for skopeo's `--dest-cert-dir`.
    pub cert_dir: PathBuf,
}

/// A running `docker-registry`.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The storage root (`rootdirectory`).
    pub storage: PathBuf,
    /// TLS files when it serves HTTPS.
    pub tls: Option<TlsFiles>,
    /// Basic-auth user and password when it requires them.
    pub creds: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a plain-HTTP registry storing under `work`.
    pub fn start_plain(work: &Path) -> io::Result<Registry> {
        Self::start(work, None, None)
    }

    /// Starts an HTTPS registry (certificate for `127.0.0.1` from a fresh test CA)
    /// requiring basic auth as `user`/`password` (htpasswd, bcrypt).
    pub fn start_tls(work: &Path, user: &str, password: &str) -> io::Result<Registry> {
        let tls = make_tls(work)?;
        Self::start(
            work,
            Some(tls),
            Some((user.to_owned(), password.to_owned())),
        )
    }

    fn start(
        work: &Path,
        tls: Option<TlsFiles>,
        creds: Option<(String, String)>,
    ) -> io::Result<Registry> {
        std::fs::create_dir_all(work)?;
        let storage = work.join("storage");
        std::fs::create_dir_all(&storage)?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some(tls) = &tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                work.join("tls/server.crt").display(),
                work.join("tls/server.key").display()
            ));
            let _ = &tls.ca_cert;
        }
        if let Some((user, password)) = &creds {
            let hash = bcrypt::hash(password, 5).map_err(io::Error::other)?;
            let htpasswd = work.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: plinth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = work.join("registry.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(work.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let registry = Registry {
            child,
            addr,
            storage,
            tls,
            creds,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.addr).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "docker-registry did not listen on {} within 20 s: {}",
                    registry.addr,
                    std::fs::read_to_string(work.join("registry.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// `docker://ADDR/DEST` with the flags skopeo needs to reach this registry.
    fn skopeo_dest(&self, command: &mut Command, dest: &str) {
        match &self.tls {
            Some(tls) => command.arg("--dest-cert-dir").arg(&tls.cert_dir),
            None => command.arg("--dest-tls-verify=false"),
        };
        if let Some((user, password)) = &self.creds {
            command
                .arg("--dest-creds")
                .arg(format!("{user}:{password}"));
        }
        command.arg(format!("docker://{}/{dest}", self.addr));
    }

    /// Pushes the image tagged `tag` in the OCI layout `layout` to `dest`
    /// (`REPO:TAG`) with `skopeo copy` (`--all` keeps a whole index).
    pub fn push(&self, layout: &Path, tag: &str, dest: &str) -> io::Result<()> {
        let mut command = Command::new("skopeo");
        command
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--preserve-digests",
                "-q",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()));
        self.skopeo_dest(&mut command, dest);
        run(&mut command, "skopeo copy")
    }

    /// The file the registry serves blob `sha256:<hex>` from.
    pub fn blob_data(&self, hex_digest: &str) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex_digest[..2])
            .join(hex_digest)
            .join("data")
    }

    /// One plain-HTTP request to the registry (no TLS, no auth); returns the status and
    /// the `Location` header.
    fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> io::Result<(u16, Option<String>)> {
        if self.tls.is_some() {
            return Err(io::Error::other("raw pushes are for the plain registry"));
        }
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )?;
        stream.write_all(body)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let location = text
            .lines()
            .find(|line| line.to_ascii_lowercase().starts_with("location:"))
            .map(|line| line[9..].trim().to_owned());
        Ok((status, location))
    }

    /// Uploads a blob to `repo` (monolithic upload); returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> io::Result<String> {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let (status, location) = self.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            "application/octet-stream",
            b"",
        )?;
        let location = location
            .filter(|_| status == 202)
            .ok_or_else(|| io::Error::other(format!("upload start answered {status}")))?;
        let path = location
            .strip_prefix(&format!("http://{}", self.addr))
            .unwrap_or(&location)
            .to_owned();
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, _) = self.request(
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            "application/octet-stream",
            bytes,
        )?;
        if status != 201 {
            return Err(io::Error::other(format!("blob upload answered {status}")));
        }
        Ok(digest)
    }

    /// Puts a manifest document at `repo:reference`; returns the HTTP status.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> io::Result<u16> {
        Ok(self
            .request(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                media_type,
                bytes,
            )?
            .0)
    }
}

fn make_tls(work: &Path) -> io::Result<TlsFiles> {
    let dir = work.join("tls");
    std::fs::create_dir_all(&dir)?;
    let p = |name: &str| dir.join(name);
    run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=plinth test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")),
        "openssl (test CA)",
    )?;
    run(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")),
        "openssl (server key)",
    )?;
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    run(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .arg("-out")
            .arg(p("server.crt")),
        "openssl (server certificate)",
    )?;
    let cert_dir = dir.join("certs.d");
    std::fs::create_dir_all(&cert_dir)?;
    std::fs::copy(p("ca.pem"), cert_dir.join("ca.crt"))?;
    Ok(TlsFiles {
        ca_cert: p("ca.pem"),
        cert_dir,
    })
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`.
    None,
    /// `...tar+gzip`.
    Gzip,
    /// `...tar+zstd`.
    Zstd,
}

/// What [`write_image`] wrote.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of each layer blob.
    pub layer_digests: Vec<String>,
    /// `sha256:<hex>` of the config.
    pub config_digest: String,
}

fn put_blob(layout: &Path, bytes: &[u8]) -> io::Result<String> {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let hex_part = sha256_hex(bytes);
    std::fs::write(blobs.join(&hex_part), bytes)?;
    Ok(format!("sha256:{hex_part}"))
}

/// This machine's OCI architecture name.
pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Writes an image (config for `arch`, the given uncompressed layer tars compressed as
/// asked) into the OCI layout `layout` without tagging it; returns its digests.
pub fn write_image(
    layout: &Path,
    layers: &[(Vec<u8>, Compression)],
    arch: &str,
) -> io::Result<BuiltImage> {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for (tar, compression) in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(tar)));
        let (bytes, media_type) = match compression {
            Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(tar)?;
                (
                    encoder.finish()?,
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(&tar[..], 3)?,
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        let digest = put_blob(layout, &bytes)?;
        descriptors.push(
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}),
        );
        layer_digests.push(digest);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .map_err(io::Error::other)?;
    let config_digest = put_blob(layout, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors
    }))
    .map_err(io::Error::other)?;
    let manifest_digest = put_blob(layout, &manifest)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(BuiltImage {
        manifest_digest,
        manifest,
        layer_digests,
        config_digest,
    })
}

/// Tags `(media type, digest, size)` in the layout's `index.json` as `tag` (replacing an
/// entry of that tag).
pub fn tag(
    layout: &Path,
    tag: &str,
    media_type: &str,
    digest: &str,
    size: usize,
) -> io::Result<()> {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
        Err(_) => serde_json::json!({"schemaVersion": 2, "manifests": []}),
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| io::Error::other("index.json without manifests"))?;
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    manifests.push(serde_json::json!({
        "mediaType": media_type, "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag}
    }));
    std::fs::write(
        &index_path,
        serde_json::to_vec(&index).map_err(io::Error::other)?,
    )
}

/// Writes an image and tags it `tag_name` in the layout.
pub fn image_layout(
    layout: &Path,
    tag_name: &str,
    layers: &[(Vec<u8>, Compression)],
) -> io::Result<BuiltImage> {
    let image = write_image(layout, layers, host_arch())?;
    tag(
        layout,
        tag_name,
        "application/vnd.oci.image.manifest.v1+json",
        &image.manifest_digest,
        image.manifest.len(),
    )?;
    Ok(image)
}

/// Writes a multi-platform image index over `images` (each `(image, arch)`) and tags it
/// `tag_name`; returns the index digest.
pub fn index_layout(
    layout: &Path,
    tag_name: &str,
    images: &[(&BuiltImage, &str)],
) -> io::Result<String> {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(image, arch)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest_digest, "size": image.manifest.len(),
                "platform": {"os": "linux", "architecture": arch}
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests
    }))
    .map_err(io::Error::other)?;
    let digest = put_blob(layout, &index)?;
    tag(
        layout,
        tag_name,
        "application/vnd.oci.image.index.v1+json",
        &digest,
        index.len(),
    )?;
    Ok(digest)
}

/// Archives the directory `dir` as an uncompressed tar (numeric owners; `root_owned`
/// stores every entry as owned by 0:0).
fn tar_dir(dir: &Path, root_owned: bool) -> io::Result<Vec<u8>> {
    let out = dir.with_extension("tar");
    let mut command = Command::new("tar");
    command.arg("--numeric-owner");
    if root_owned {
        command.args(["--owner=0", "--group=0"]);
    }
    run(
        command.arg("-C").arg(dir).arg("-cf").arg(&out).arg("."),
        "tar",
    )?;
    let bytes = std::fs::read(&out)?;
    let _ = std::fs::remove_file(&out);
    Ok(bytes)
}

/// A tar of `files` (`(path, contents, mode)`, parents created), uncompressed.
pub fn tar_of(files: &[(&str, &[u8], u32)]) -> io::Result<Vec<u8>> {
    let work = scratch_dir()?;
    for (path, contents, mode) in files {
        let full = work.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, contents)?;
        std::fs::set_permissions(
            &full,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(*mode),
        )?;
    }
    let bytes = tar_dir(&work, true);
    let _ = std::fs::remove_dir_all(&work);
    bytes
}

fn scratch_dir() -> io::Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "plinth-tar-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The busybox root file system of the job tests, built under `work`, as one
/// uncompressed layer tar: `/bin/busybox`, the given applets as symlinks to it, and an
/// `/etc/passwd` with root.
pub fn busybox_tar(work: &Path, applets: &[&str]) -> io::Result<Vec<u8>> {
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::create_dir_all(rootfs.join("etc"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    for applet in applets {
        std::os::unix::fs::symlink("/bin/busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n")?;
    tar_dir(&rootfs, false)
}

/// A cosign-style signing key: ECDSA P-256, the public half as `cosign.pub` writes it
/// (PEM `PUBLIC KEY`, SubjectPublicKeyInfo).
pub struct SigningKey {
    pair: ring::signature::EcdsaKeyPair,
    /// The public key PEM.
    pub public_pem: String,
}

impl SigningKey {
    /// A fresh key.
    pub fn generate() -> io::Result<SigningKey> {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| io::Error::other("key generation"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| io::Error::other("key parse"))?;
        // SubjectPublicKeyInfo: the fixed DER header of id-ecPublicKey + prime256v1.
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
        Ok(SigningKey { pair, public_pem })
    }

    /// Writes a cosign signature artifact for `signed_digest` (the payload names it) into
    /// the OCI layout `layout`, tagged `tag_name` (cosign's is `sha256-<hex>.sig` of the
    /// image it signs).
    pub fn sign_into(
        &self,
        layout: &Path,
        tag_name: &str,
        signed_digest: &str,
        docker_reference: &str,
    ) -> io::Result<()> {
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": signed_digest},
                "type": "cosign container image signature"
            },
            "optional": null
        }))
        .map_err(io::Error::other)?;
        let signature = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), &payload)
            .map_err(|_| io::Error::other("signing"))?;
        let payload_digest = put_blob(layout, &payload)?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [payload_digest]}
        }))
        .map_err(io::Error::other)?;
        let config_digest = put_blob(layout, &config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "digest": payload_digest, "size": payload.len(),
                "annotations": {"dev.cosignproject.cosign/signature": base64_encode(signature.as_ref())}
            }]
        }))
        .map_err(io::Error::other)?;
        let digest = put_blob(layout, &manifest)?;
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        tag(
            layout,
            tag_name,
            "application/vnd.oci.image.manifest.v1+json",
            &digest,
            manifest.len(),
        )
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
