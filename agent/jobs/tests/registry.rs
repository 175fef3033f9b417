//! Registry pulls against a real registry (Debian's `docker-registry`, images pushed
//! with `skopeo`), plain and with TLS + basic auth, and against small loopback HTTP
//! servers for what a real registry will not do (redirect loops, stalls, dropped
//! connections). Every refusal is checked to leave nothing in the cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_jobs::image::{ImageStore, ImportProgress};
use plinth_jobs::registry::{Pulled, Puller, RegistryError, RegistryHost, RegistrySettings};
use plinth_tests::registry::{
    BuiltImage, Compression, Registry, SigningKey, available, free_port, host_arch, image_layout,
    index_layout, tar_of, write_image,
};

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(&dir.path().join("cache"), Default::default()).unwrap();
        Fixture { dir, store }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pull(&self, settings: &RegistrySettings, reference: &str) -> Result<Pulled, RegistryError> {
        self.pull_as(settings, reference, None)
    }

    fn pull_as(
        &self,
        settings: &RegistrySettings,
        reference: &str,
        tenant: Option<&str>,
    ) -> Result<Pulled, RegistryError> {
        Puller::new(settings.clone()).pull(&self.store, reference, None, tenant, &mut |_| {})
    }

    /// A refused pull left nothing in the cache and no staging behind.
    fn assert_empty(&self) {
        let count = |sub: &str| fs::read_dir(self.store.root().join(sub)).unwrap().count();
        assert_eq!(
            count("images"),
            0,
            "a refused pull left an image in the cache"
        );
        assert_eq!(count("tmp"), 0, "a refused pull left staging behind");
    }
}

fn insecure(host: &str) -> RegistrySettings {
    RegistrySettings {
        registries: vec![RegistryHost {
            host: host.to_owned(),
            insecure: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn error_text(result: Result<Pulled, RegistryError>) -> String {
    match result {
        Ok(pulled) => panic!("pull succeeded: {:?}", pulled.image.record.image_id),
        Err(err) => plinth_toolbox::error_chain(&err),
    }
}

/// A plain registry holding the three-layer image of [`hello_layers`] at `dest`.
fn plain_registry_with(fixture: &Fixture, dest: &str) -> (Registry, BuiltImage) {
    let registry = Registry::start_plain(&fixture.path("registry")).unwrap();
    let layout = fixture.path("layout");
    let image = image_layout(&layout, "v1", &hello_layers()).unwrap();
    registry.push(&layout, "v1", dest).unwrap();
    (registry, image)
}

fn hello_layers() -> Vec<(Vec<u8>, Compression)> {
    vec![
        (
            tar_of(&[("etc/one", b"gzip layer\n", 0o644)]).unwrap(),
            Compression::Gzip,
        ),
        (
            tar_of(&[("etc/two", b"zstd layer\n", 0o644)]).unwrap(),
            Compression::Zstd,
        ),
        (
            tar_of(&[("etc/three", b"plain layer\n", 0o644)]).unwrap(),
            Compression::None,
        ),
    ]
}

#[test]
fn pulls_by_tag_and_digest_with_gzip_zstd_and_plain_layers() {
    if !available("pulls_by_tag_and_digest_with_gzip_zstd_and_plain_layers") {
        return;
    }
    let fixture = Fixture::new();
    let (registry, image) = plain_registry_with(&fixture, "team/hello:v1");
    let settings = insecure(&registry.addr);
    let reference = format!("{}/team/hello:v1", registry.addr);
    let mut events = Vec::new();
    let pulled = Puller::new(settings.clone())
        .pull(&fixture.store, &reference, None, None, &mut |event| {
            events.push(event)
        })
        .unwrap();
    assert_eq!(pulled.image.record.image_id, image.manifest_digest);
    assert!(!pulled.image.cached);
    for (file, text) in [
        ("one", "gzip layer\n"),
        ("two", "zstd layer\n"),
        ("three", "plain layer\n"),
    ] {
        assert_eq!(
            fs::read_to_string(pulled.image.rootfs.join("etc").join(file)).unwrap(),
            text
        );
    }
    assert_eq!(pulled.origin.reference, reference);
    assert_eq!(pulled.origin.endpoint, registry.addr);
    assert!(pulled.signer.is_none());
    let downloads = events
        .iter()
        .filter(|e| matches!(e, ImportProgress::Download { bytes, total, .. } if bytes == total))
        .count();
    assert_eq!(downloads, 3, "one completed download per layer: {events:?}");
    // By digest: the same image, from the cache, without the network.
    drop(registry);
    let by_digest = format!(
        "{}/team/hello@{}",
        settings.registries[0].host, image.manifest_digest
    );
    let again = fixture.pull(&settings, &by_digest).unwrap();
    assert!(again.image.cached);
    assert_eq!(again.image.rootfs, pulled.image.rootfs);
    // Tags need the registry: with it gone the pull says which endpoint failed.
    let err = error_text(fixture.pull(&settings, &reference));
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn a_pinned_digest_must_match() {
    if !available("a_pinned_digest_must_match") {
        return;
    }
    let fixture = Fixture::new();
    let (registry, _image) = plain_registry_with(&fixture, "team/hello:v1");
    let other = format!("sha256:{}", "0".repeat(64));
    let err = Puller::new(insecure(&registry.addr))
        .pull(
            &fixture.store,
            &format!("{}/team/hello:v1", registry.addr),
            Some(&other),
            None,
            &mut |_| {},
        )
        .map(|_| ())
        .unwrap_err();
    // Fetched by the pinned digest, which the registry does not have.
    assert!(
        err.to_string().contains("404"),
        "{}",
        plinth_toolbox::error_chain(&err)
    );
    fixture.assert_empty();
}

#[test]
fn multi_platform_index_picks_this_platform() {
    if !available("multi_platform_index_picks_this_platform") {
        return;
    }
    let fixture = Fixture::new();
    let registry = Registry::start_plain(&fixture.path("registry")).unwrap();
    let layout = fixture.path("layout");
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let mine = write_image(
        &layout,
        &[(
            tar_of(&[("arch", host_arch().as_bytes(), 0o644)]).unwrap(),
            Compression::Gzip,
        )],
        host_arch(),
    )
    .unwrap();
    let theirs = write_image(
        &layout,
        &[(
            tar_of(&[("arch", other_arch.as_bytes(), 0o644)]).unwrap(),
            Compression::Gzip,
        )],
        other_arch,
    )
    .unwrap();
    let index_digest = index_layout(
        &layout,
        "multi",
        &[(&theirs, other_arch), (&mine, host_arch())],
    )
    .unwrap();
    registry.push(&layout, "multi", "team/multi:v1").unwrap();
    let pinned = format!("{}/team/multi:v1@{index_digest}", registry.addr);
    let pulled = fixture.pull(&insecure(&registry.addr), &pinned).unwrap();
    assert_eq!(pulled.image.record.image_id, mine.manifest_digest);
    assert_eq!(pulled.origin.resolved_digest, index_digest);
    assert_eq!(
        fs::read_to_string(pulled.image.rootfs.join("arch")).unwrap(),
        host_arch()
    );
    // An index without this platform is refused, naming what it has.
    let lonely = fixture.path("lonely");
    let only_theirs = write_image(
        &lonely,
        &[(tar_of(&[("arch", b"x", 0o644)]).unwrap(), Compression::Gzip)],
        other_arch,
    )
    .unwrap();
    index_layout(&lonely, "other", &[(&only_theirs, other_arch)]).unwrap();
    registry.push(&lonely, "other", "team/other:v1").unwrap();
    let err = error_text(fixture.pull(
        &insecure(&registry.addr),
        &format!("{}/team/other:v1", registry.addr),
    ));
    assert!(
        err.contains(&format!("no manifest for linux/{}", host_arch())),
        "{err}"
    );
    assert!(err.contains(&format!("linux/{other_arch}")), "{err}");
}

fn credentials_file(fixture: &Fixture, name: &str, text: &str) -> PathBuf {
    let path = fixture.path(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn tls_registry_with_basic_auth() {
    if !available("tls_registry_with_basic_auth") {
        return;
    }
    let fixture = Fixture::new();
    let registry = Registry::start_tls(&fixture.path("registry"), "tenant", "s3cret").unwrap();
    let tls = registry.tls.clone().unwrap();
    let layout = fixture.path("layout");
    let image = image_layout(&layout, "v1", &hello_layers()).unwrap();
    registry.push(&layout, "v1", "team/private:v1").unwrap();
    let reference = format!("{}/team/private:v1", registry.addr);
    let settings = |creds: Option<PathBuf>, ca: bool| RegistrySettings {
        registries: vec![RegistryHost {
            host: registry.addr.clone(),
            credentials_file: creds,
            ca_file: ca.then(|| tls.ca_cert.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let good = credentials_file(
        &fixture,
        "good.toml",
        "username = \"tenant\"\npassword = \"s3cret\"\n",
    );
    let bad = credentials_file(
        &fixture,
        "bad.toml",
        "username = \"tenant\"\npassword = \"wrong\"\n",
    );
    // Without the test CA the server's certificate is not trusted.
    let err = error_text(fixture.pull(&settings(Some(good.clone()), false), &reference));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    fixture.assert_empty();
    // Anonymous: the registry asks for credentials.
    let err = error_text(fixture.pull(&settings(None, true), &reference));
    assert!(
        err.contains("401 Unauthorized: the registry requires credentials"),
        "{err}"
    );
    fixture.assert_empty();
    // Wrong password.
    let err = error_text(fixture.pull(&settings(Some(bad), true), &reference));
    assert!(
        err.contains("refused the credentials in credentials_file"),
        "{err}"
    );
    fixture.assert_empty();
    // A credentials file others can read is refused before it is used.
    fs::set_permissions(&good, fs::Permissions::from_mode(0o640)).unwrap();
    let err = error_text(fixture.pull(&settings(Some(good.clone()), true), &reference));
    assert!(err.contains("lets other users read"), "{err}");
    fs::set_permissions(&good, fs::Permissions::from_mode(0o600)).unwrap();
    let pulled = fixture
        .pull(&settings(Some(good), true), &reference)
        .unwrap();
    assert_eq!(pulled.image.record.image_id, image.manifest_digest);
    // `insecure` is only for loopback, and the TLS registry does not speak plain HTTP.
    let err = error_text(fixture.pull(&insecure(&registry.addr), &reference));
    assert!(!err.is_empty());
}

#[test]
fn mirrors_fail_over_in_order() {
    if !available("mirrors_fail_over_in_order") {
        return;
    }
    let fixture = Fixture::new();
    let (registry, image) = plain_registry_with(&fixture, "team/hello:v1");
    // The image's own host and the first mirror are down; the second mirror has it.
    let upstream = format!("127.0.0.1:{}", free_port().unwrap());
    let dead_mirror = format!("127.0.0.1:{}", free_port().unwrap());
    let mut settings = RegistrySettings {
        registries: vec![RegistryHost {
            host: upstream.clone(),
            mirrors: vec![dead_mirror.clone(), registry.addr.clone()],
            insecure: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    settings.retries = 0;
    let reference = format!("{upstream}/team/hello:v1");
    let pulled = fixture.pull(&settings, &reference).unwrap();
    assert_eq!(pulled.image.record.image_id, image.manifest_digest);
    assert_eq!(pulled.origin.endpoint, registry.addr);
    // With every endpoint down, each one is named.
    settings.registries[0].mirrors = vec![dead_mirror.clone()];
    let err = error_text(fixture.pull(&settings, &format!("{upstream}/team/hello:v2")));
    assert!(
        err.contains(&dead_mirror) && err.contains(&upstream),
        "{err}"
    );
}

#[test]
fn a_corrupted_blob_is_a_digest_mismatch_and_nothing_is_cached() {
    if !available("a_corrupted_blob_is_a_digest_mismatch_and_nothing_is_cached") {
        return;
    }
    let fixture = Fixture::new();
    let (registry, image) = plain_registry_with(&fixture, "team/hello:v1");
    let second = &image.layer_digests[1];
    let data = registry.blob_data(second.strip_prefix("sha256:").unwrap());
    let mut bytes = fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&data, &bytes).unwrap();
    let err = error_text(fixture.pull(
        &insecure(&registry.addr),
        &format!("{}/team/hello:v1", registry.addr),
    ));
    assert!(
        err.contains(&format!(
            "digest mismatch for blob {second} (layer 2 of 3 of {}/team/hello:v1)",
            registry.addr
        )),
        "{err}"
    );
    fixture.assert_empty();
}

#[test]
fn oversized_manifests_index_bombs_and_foreign_layers_are_refused() {
    if !available("oversized_manifests_index_bombs_and_foreign_layers_are_refused") {
        return;
    }
    let fixture = Fixture::new();
    let (registry, image) = plain_registry_with(&fixture, "team/hello:v1");
    let mut settings = insecure(&registry.addr);
    settings.max_manifest_bytes = 16 * 1024;
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    // A manifest of 64 KiB (annotations) over a 16 KiB limit.
    let mut big: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    big["annotations"] = serde_json::json!({"padding": "x".repeat(64 * 1024)});
    let big = serde_json::to_vec(&big).unwrap();
    assert_eq!(
        registry
            .put_manifest("team/hello", "big", oci_manifest, &big)
            .unwrap(),
        201
    );
    let err = error_text(fixture.pull(&settings, &format!("{}/team/hello:big", registry.addr)));
    assert!(
        err.contains("over the limit") && err.contains("images.max_manifest_bytes"),
        "{err}"
    );
    fixture.assert_empty();
    // An index listing 2000 manifests (all the same one).
    let entry = serde_json::json!({"mediaType": oci_manifest, "digest": image.manifest_digest,
        "size": image.manifest.len(), "platform": {"os": "linux", "architecture": host_arch()}});
    let bomb = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": vec![entry; 2000]
    }))
    .unwrap();
    settings.max_manifest_bytes = 4 * 1024 * 1024;
    assert_eq!(
        registry
            .put_manifest(
                "team/hello",
                "bomb",
                "application/vnd.oci.image.index.v1+json",
                &bomb
            )
            .unwrap(),
        201
    );
    let err = error_text(fixture.pull(&settings, &format!("{}/team/hello:bomb", registry.addr)));
    assert!(
        err.contains("lists 2000 manifests") && err.contains("images.max_index_entries"),
        "{err}"
    );
    fixture.assert_empty();
    // Too many layers, and foreign layers.
    settings.max_layers = 2;
    let err = error_text(fixture.pull(&settings, &format!("{}/team/hello:v1", registry.addr)));
    assert!(err.contains("3 layers, more than 2"), "{err}");
    settings.max_layers = 256;
    let mut foreign: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    foreign["layers"][0]["mediaType"] =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
    let foreign = serde_json::to_vec(&foreign).unwrap();
    assert_eq!(
        registry
            .put_manifest("team/hello", "foreign", oci_manifest, &foreign)
            .unwrap(),
        201
    );
    let err = error_text(fixture.pull(&settings, &format!("{}/team/hello:foreign", registry.addr)));
    assert!(err.contains("foreign/non-distributable layer"), "{err}");
    fixture.assert_empty();
}

#[test]
fn signature_policy_is_enforced_before_unpack() {
    if !available("signature_policy_is_enforced_before_unpack") {
        return;
    }
    let fixture = Fixture::new();
    let (registry, image) = plain_registry_with(&fixture, "team/app:v1");
    let other = image_layout(
        &fixture.path("other"),
        "v1",
        &[(tar_of(&[("x", b"x", 0o644)]).unwrap(), Compression::Gzip)],
    )
    .unwrap();
    let release = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let tenant_key = SigningKey::generate().unwrap();
    let key_file = |name: &str, key: &SigningKey| {
        let path = fixture.path(name);
        fs::write(&path, &key.public_pem).unwrap();
        path
    };
    let mut settings = insecure(&registry.addr);
    settings.keys = BTreeMap::from([
        ("release".to_owned(), key_file("release.pub", &release)),
        ("acme".to_owned(), key_file("acme.pub", &tenant_key)),
    ]);
    settings.registries[0].signed_by = vec!["release".to_owned()];
    settings.tenants = BTreeMap::from([("acme".to_owned(), vec!["acme".to_owned()])]);
    let reference = format!("{}/team/app:v1", registry.addr);
    let sig_tag = format!("{}.sig", image.manifest_digest.replace(':', "-"));
    let push_signature = |key: &SigningKey, signed: &str, dir: &str| {
        let sig_layout = fixture.path(dir);
        key.sign_into(
            &sig_layout,
            "sig",
            signed,
            &format!("{}/team/app", registry.addr),
        )
        .unwrap();
        registry
            .push(&sig_layout, "sig", &format!("team/app:{sig_tag}"))
            .unwrap();
    };
    // Unsigned.
    let err = error_text(fixture.pull(&settings, &reference));
    assert!(
        err.contains("is not signed by any of the required keys (release)"),
        "{err}"
    );
    assert!(err.contains(&format!("no signature at {sig_tag}")), "{err}");
    fixture.assert_empty();
    // Signed by a key that is not trusted.
    push_signature(&stranger, &image.manifest_digest, "sig-stranger");
    let err = error_text(fixture.pull(&settings, &reference));
    assert!(err.contains("signed by an unknown key"), "{err}");
    fixture.assert_empty();
    // Signed by the right key, but for another image.
    push_signature(&release, &other.manifest_digest, "sig-other");
    let err = error_text(fixture.pull(&settings, &reference));
    assert!(
        err.contains("is for another image") && err.contains(&other.manifest_digest),
        "{err}"
    );
    fixture.assert_empty();
    // Properly signed.
    push_signature(&release, &image.manifest_digest, "sig-good");
    let mut events = Vec::new();
    let pulled = Puller::new(settings.clone())
        .pull(&fixture.store, &reference, None, None, &mut |e| {
            events.push(e)
        })
        .unwrap();
    let signer = pulled.signer.clone().unwrap();
    assert_eq!(signer.key, "release");
    assert_eq!(signer.signed_digest, image.manifest_digest);
    // The signature was verified before the first layer download began.
    let verified_at = events
        .iter()
        .position(|e| matches!(e, ImportProgress::SignatureVerified { .. }))
        .unwrap();
    let first_download = events
        .iter()
        .position(|e| matches!(e, ImportProgress::Download { .. }))
        .unwrap();
    assert!(verified_at < first_download, "{events:?}");
    // The tenant's own policy replaces the registry's: acme needs its key.
    let err = error_text(fixture.pull_as(&settings, &reference, Some("acme")));
    assert!(err.contains("required keys (acme)"), "{err}");
}

// --- Small loopback HTTP servers for what a real registry does not do. ---

/// How the fake registry answers blob requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlobMode {
    /// Serves blobs normally (with `Range` support).
    Normal,
    /// Sends half of each layer blob, then holds the connection open.
    Stall,
    /// Sends half of a layer blob on the first request, then closes; later requests
    /// honour `Range` with `206`.
    DropOnce,
    /// Answers every manifest request with a redirect to itself.
    RedirectLoop,
}

struct FakeRegistry {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

impl FakeRegistry {
    /// Serves `team/app:v1` from the OCI layout `layout` (image `image`).
    fn start(layout: &Path, image: &BuiltImage, mode: BlobMode) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut docs: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
        let manifest = (
            "application/vnd.oci.image.manifest.v1+json".to_owned(),
            image.manifest.clone(),
        );
        docs.insert("/v2/team/app/manifests/v1".to_owned(), manifest.clone());
        docs.insert(
            format!("/v2/team/app/manifests/{}", image.manifest_digest),
            manifest,
        );
        for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            docs.insert(
                format!("/v2/team/app/blobs/sha256:{name}"),
                (
                    "application/octet-stream".to_owned(),
                    fs::read(entry.path()).unwrap(),
                ),
            );
        }
        let layers: Vec<String> = image
            .layer_digests
            .iter()
            .map(|d| format!("/v2/team/app/blobs/{d}"))
            .collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let docs = docs.clone();
                    let layers = layers.clone();
                    let requests = requests.clone();
                    let stop = stop.clone();
                    let dropped = dropped.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &docs, &layers, mode, &requests, &stop, &dropped);
                    });
                }
            });
        }
        FakeRegistry {
            addr,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    docs: &BTreeMap<String, (String, Vec<u8>)>,
    layers: &[String],
    mode: BlobMode,
    requests: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    dropped: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let mut range_start = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("range: bytes=") {
            range_start = value.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    requests.lock().unwrap().push(match range_start {
        Some(start) => format!("{path} range={start}"),
        None => path.clone(),
    });
    if path == "/v2/" {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")?;
        return Ok(());
    }
    if mode == BlobMode::RedirectLoop && path.contains("/manifests/") {
        write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let Some((content_type, body)) = docs.get(&path) else {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let is_layer = layers.contains(&path);
    if let (Some(start), BlobMode::DropOnce | BlobMode::Normal) = (range_start, mode) {
        let rest = &body[start.min(body.len())..];
        write!(
            stream,
            "HTTP/1.1 206 Partial Content\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
            rest.len(),
            body.len() - 1,
            body.len()
        )?;
        stream.write_all(rest)?;
        return Ok(());
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    let half = body.len() / 2;
    match mode {
        BlobMode::Stall if is_layer => {
            stream.write_all(&body[..half])?;
            stream.flush()?;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        BlobMode::DropOnce if is_layer && dropped.fetch_add(1, Ordering::SeqCst) == 0 => {
            stream.write_all(&body[..half])?;
            stream.flush()?;
            stream.shutdown(std::net::Shutdown::Both)?;
        }
        _ => stream.write_all(body)?,
    }
    let mut sink = [0u8; 1];
    let _ = stream.read(&mut sink);
    Ok(())
}

/// One layer big enough to be split (incompressible data, stored uncompressed).
fn big_layer_image(layout: &Path) -> BuiltImage {
    let mut data = vec![0u8; 512 * 1024];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut data).unwrap();
    image_layout(
        layout,
        "v1",
        &[(
            tar_of(&[("data.bin", &data, 0o644)]).unwrap(),
            Compression::None,
        )],
    )
    .unwrap()
}

#[test]
fn a_redirect_loop_is_bounded() {
    let fixture = Fixture::new();
    let layout = fixture.path("layout");
    let image = big_layer_image(&layout);
    let server = FakeRegistry::start(&layout, &image, BlobMode::RedirectLoop);
    let mut settings = insecure(&server.addr);
    settings.retries = 0;
    let err = error_text(fixture.pull(&settings, &format!("{}/team/app:v1", server.addr)));
    assert!(
        err.contains("more than 5 redirects (images.max_redirects)"),
        "{err}"
    );
    let manifest_requests = server
        .requests()
        .iter()
        .filter(|r| r.contains("/manifests/"))
        .count();
    assert_eq!(manifest_requests, 6, "the first request and 5 redirects");
    fixture.assert_empty();
}

#[test]
fn a_stalled_blob_times_out_and_a_dropped_one_resumes() {
    let fixture = Fixture::new();
    let layout = fixture.path("layout");
    let image = big_layer_image(&layout);
    let stalled = FakeRegistry::start(&layout, &image, BlobMode::Stall);
    let mut settings = insecure(&stalled.addr);
    settings.stall_timeout = Duration::from_millis(500);
    settings.retries = 1;
    let started = std::time::Instant::now();
    let err = error_text(fixture.pull(&settings, &format!("{}/team/app:v1", stalled.addr)));
    assert!(err.contains("stalled: no data for 500ms"), "{err}");
    assert!(err.contains("after 1 retries"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The retry resumed where the first attempt stalled.
    let layer = format!("/v2/team/app/blobs/{}", image.layer_digests[0]);
    assert!(
        stalled
            .requests()
            .iter()
            .any(|r| r.starts_with(&format!("{layer} range="))),
        "{:?}",
        stalled.requests()
    );
    fixture.assert_empty();
    drop(stalled);
    let dropping = FakeRegistry::start(&layout, &image, BlobMode::DropOnce);
    let settings = insecure(&dropping.addr);
    let pulled = fixture
        .pull(&settings, &format!("{}/team/app:v1", dropping.addr))
        .unwrap();
    assert_eq!(pulled.image.record.image_id, image.manifest_digest);
    let requests = dropping.requests();
    let ranged: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with(&format!("{layer} range=")))
        .collect();
    assert_eq!(ranged.len(), 1, "{requests:?}");
    assert_ne!(ranged[0], &format!("{layer} range=0"));
}

#[test]
fn concurrent_pulls_of_one_image_share_one_download() {
    let fixture = Arc::new(Fixture::new());
    let layout = fixture.path("layout");
    let image = big_layer_image(&layout);
    let server = FakeRegistry::start(&layout, &image, BlobMode::Normal);
    let settings = insecure(&server.addr);
    let reference = format!("{}/team/app:v1", server.addr);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let fixture = fixture.clone();
            let settings = settings.clone();
            let reference = reference.clone();
            std::thread::spawn(move || fixture.pull(&settings, &reference).unwrap())
        })
        .collect();
    let pulled: Vec<Pulled> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        pulled
            .iter()
            .all(|p| p.image.record.image_id == image.manifest_digest)
    );
    assert_eq!(pulled.iter().filter(|p| !p.image.cached).count(), 1);
    let layer = format!("/v2/team/app/blobs/{}", image.layer_digests[0]);
    let downloads = server.requests().iter().filter(|r| **r == layer).count();
    assert_eq!(downloads, 1, "{:?}", server.requests());
}

#[test]
fn the_cache_evicts_least_recently_used_images_no_job_uses() {
    use std::collections::HashSet;
    let fixture = Fixture::new();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let layout = fixture.path(name);
        let data = vec![name.as_bytes()[0]; 100_000];
        image_layout(
            &layout,
            "v1",
            &[(
                tar_of(&[("data", &data, 0o644)]).unwrap(),
                Compression::Gzip,
            )],
        )
        .unwrap();
        let imported = fixture
            .store
            .import(
                &plinth_jobs::spec::ImageRef {
                    source: plinth_jobs::spec::ImageSource::OciLayout,
                    path: layout,
                    reference: None,
                    digest: None,
                },
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(imported.record.size_bytes, 100_000);
        ids.push(imported.record.image_id);
        // Distinct last-use times (modification times have sub-second resolution).
        std::thread::sleep(Duration::from_millis(20));
    }
    // Using "a" again makes "b" the least recently used.
    fixture.store.lookup(&ids[0]).unwrap().unwrap();
    let listed = fixture.store.list(&HashSet::new()).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|i| i.image_id.clone())
            .collect::<Vec<_>>(),
        vec![ids[0].clone(), ids[2].clone(), ids[1].clone()]
    );
    // "b" is in use: the next least recently used, "c", goes instead; "a" is kept.
    let in_use = HashSet::from([ids[1].clone()]);
    let evicted = fixture.store.evict(250_000, &in_use, &ids[0]).unwrap();
    assert_eq!(evicted, vec![ids[2].clone()]);
    let left: Vec<String> = fixture
        .store
        .list(&in_use)
        .unwrap()
        .into_iter()
        .map(|i| i.image_id)
        .collect();
    assert_eq!(left, vec![ids[0].clone(), ids[1].clone()]);
    assert!(fixture.store.lookup(&ids[2]).unwrap().is_none());
    // Removal is refused while in use; prune removes the rest and leaves no staging.
    let err = fixture.store.remove(&ids[1], &in_use).unwrap_err();
    assert!(err.to_string().contains("used by a job"), "{err}");
    assert_eq!(fixture.store.prune(&in_use).unwrap(), vec![ids[0].clone()]);
    assert_eq!(
        fixture.store.prune(&HashSet::new()).unwrap(),
        vec![ids[1].clone()]
    );
    fixture.assert_empty();
}
