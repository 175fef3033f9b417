//! Image import: hostile layers are refused and nothing lands outside the
//! cache; whiteouts, setuid stripping, digests, caching and archive formats.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use plinth_jobs::image::{ImageError, ImageStore, ImportProgress};
use plinth_jobs::spec::{ImageRef, ImageSource};
use plinth_jobs::unpack::{UnpackError, UnpackLimits};

use crate::common::{Entry, layer, sha256, tar_dir, write_layout};

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
    sentinel: PathBuf,
}

impl Fixture {
    fn new(limits: UnpackLimits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(&dir.path().join("cache"), limits).unwrap();
        let sentinel = dir.path().join("outside");
        fs::create_dir(&sentinel).unwrap();
        Fixture {
            dir,
            store,
            sentinel,
        }
    }

    fn import_layers(
        &self,
        name: &str,
        layers: Vec<Vec<u8>>,
    ) -> Result<plinth_jobs::image::ImportedImage, ImageError> {
        let layout = self.dir.path().join(name);
        fs::create_dir(&layout).unwrap();
        write_layout(
            &layout,
            &layers.into_iter().map(|l| (l, false)).collect::<Vec<_>>(),
            None,
        );
        self.store
            .import(&image_ref(&layout, ImageSource::OciLayout), &mut |_| {})
    }

    /// Nothing was written outside the cache, and no failed import left
    /// anything in it.
    fn assert_clean(&self) {
        assert_eq!(
            fs::read_dir(&self.sentinel).unwrap().count(),
            0,
            "sentinel directory was written"
        );
        assert_eq!(
            fs::read_dir(self.store.root().join("images"))
                .unwrap()
                .count(),
            0,
            "a failed import was cached"
        );
        assert_eq!(
            fs::read_dir(self.store.root().join("tmp")).unwrap().count(),
            0,
            "staging left behind"
        );
    }
}

fn image_ref(path: &Path, source: ImageSource) -> ImageRef {
    ImageRef {
        source,
        path: path.to_path_buf(),
        reference: None,
        digest: None,
    }
}

fn unpack_error(result: Result<plinth_jobs::image::ImportedImage, ImageError>) -> UnpackError {
    match result {
        Err(ImageError::Unpack { source, .. }) => source,
        other => panic!("expected an unpack error, got {other:?}"),
    }
}

#[test]
fn path_traversal_is_refused() {
    let fixture = Fixture::new(UnpackLimits::default());
    let depth = fixture.dir.path().components().count() + 2;
    let escape = format!(
        "{}{}/pwned",
        "../".repeat(depth),
        fixture
            .sentinel
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    let err =
        unpack_error(fixture.import_layers("l", vec![layer(&[Entry::File(&escape, b"x", 0o644)])]));
    assert!(matches!(err, UnpackError::ParentComponent { .. }), "{err}");
    fixture.assert_clean();
}

#[test]
fn absolute_paths_are_refused() {
    let fixture = Fixture::new(UnpackLimits::default());
    let target = format!("{}/pwned", fixture.sentinel.display());
    let err =
        unpack_error(fixture.import_layers("l", vec![layer(&[Entry::File(&target, b"x", 0o644)])]));
    assert!(matches!(err, UnpackError::AbsolutePath { .. }), "{err}");
    fixture.assert_clean();
}

#[test]
fn writes_through_symlinks_are_refused() {
    let fixture = Fixture::new(UnpackLimits::default());
    let sentinel = fixture.sentinel.display().to_string();
    // Same layer.
    let err = unpack_error(fixture.import_layers(
        "same",
        vec![layer(&[
            Entry::Symlink("escape", &sentinel),
            Entry::File("escape/pwned", b"x", 0o644),
        ])],
    ));
    assert!(matches!(err, UnpackError::SymlinkComponent { .. }), "{err}");
    // A later layer writing through an earlier layer's symlink, relative target.
    let err = unpack_error(fixture.import_layers(
        "later",
        vec![
            layer(&[
                Entry::Dir("a/"),
                Entry::Symlink("a/up", "../../../../../../../../../../"),
            ]),
            layer(&[Entry::File(&format!("a/up{sentinel}/pwned"), b"x", 0o644)]),
        ],
    ));
    assert!(matches!(err, UnpackError::SymlinkComponent { .. }), "{err}");
    // A symlink that is then replaced by a directory entry name is fine, but a
    // directory entry through a symlink parent is not.
    let err = unpack_error(fixture.import_layers(
        "dir",
        vec![layer(&[
            Entry::Symlink("d", &sentinel),
            Entry::Dir("d/sub/"),
        ])],
    ));
    assert!(matches!(err, UnpackError::SymlinkComponent { .. }), "{err}");
    fixture.assert_clean();
}

#[test]
fn hard_links_out_are_refused() {
    let fixture = Fixture::new(UnpackLimits::default());
    for (name, entries) in [
        (
            "dotdot",
            vec![Entry::HardLink("h", "../../../../../../etc/passwd")],
        ),
        ("absolute", vec![Entry::HardLink("h", "/etc/passwd")]),
        (
            "via-symlink",
            vec![
                Entry::Symlink("s", "/etc/passwd"),
                Entry::HardLink("h", "s"),
            ],
        ),
        (
            "through-symlink-dir",
            vec![
                Entry::Symlink("etc", "/etc"),
                Entry::HardLink("h", "etc/passwd"),
            ],
        ),
        ("missing", vec![Entry::HardLink("h", "nothing")]),
    ] {
        let err = unpack_error(fixture.import_layers(name, vec![layer(&entries)]));
        assert!(
            matches!(
                err,
                UnpackError::HardLink { .. } | UnpackError::SymlinkComponent { .. }
            ),
            "{name}: {err}"
        );
    }
    fixture.assert_clean();
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    let fixture = Fixture::new(UnpackLimits::default());
    let err =
        unpack_error(fixture.import_layers("dev", vec![layer(&[Entry::CharDevice("dev/mem")])]));
    assert!(
        matches!(
            err,
            UnpackError::SpecialFile {
                kind: "character device",
                ..
            }
        ),
        "{err}"
    );
    let err = unpack_error(fixture.import_layers("fifo", vec![layer(&[Entry::Fifo("f")])]));
    assert!(
        matches!(err, UnpackError::SpecialFile { kind: "fifo", .. }),
        "{err}"
    );
    fixture.assert_clean();
}

#[test]
fn huge_file_counts_and_sizes_are_refused() {
    let fixture = Fixture::new(UnpackLimits {
        max_entries: 1000,
        max_total_bytes: 1024 * 1024,
    });
    let names: Vec<String> = (0..5000).map(|i| format!("f{i}")).collect();
    let entries: Vec<Entry<'_>> = names.iter().map(|n| Entry::File(n, b"", 0o644)).collect();
    let err = unpack_error(fixture.import_layers("many", vec![layer(&entries)]));
    assert!(
        matches!(err, UnpackError::TooManyEntries { max: 1000 }),
        "{err}"
    );
    let big = vec![0u8; 2 * 1024 * 1024];
    let err =
        unpack_error(fixture.import_layers("big", vec![layer(&[Entry::File("big", &big, 0o644)])]));
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    fixture.assert_clean();
}

#[test]
fn whiteouts_opaque_dirs_and_setuid_are_handled() {
    let fixture = Fixture::new(UnpackLimits::default());
    let image = fixture
        .import_layers(
            "ok",
            vec![
                layer(&[
                    Entry::Dir("a/"),
                    Entry::File("a/b", b"b", 0o644),
                    Entry::File("a/c", b"c", 0o644),
                    Entry::File("d", b"d", 0o644),
                    Entry::Dir("x/"),
                    Entry::File("x/old", b"old", 0o644),
                    Entry::File("suid", b"#!", 0o4755),
                    Entry::File("sgid", b"#!", 0o2755),
                    Entry::Dir("sticky/"),
                ]),
                layer(&[
                    Entry::File("a/.wh.b", b"", 0o644),
                    Entry::File(".wh.d", b"", 0o644),
                    Entry::File("x/new", b"new", 0o644),
                    Entry::File("x/.wh..wh..opq", b"", 0o644),
                    Entry::HardLink("a/c-link", "a/c"),
                ]),
            ],
        )
        .unwrap();
    let root = &image.rootfs;
    assert!(!root.join("a/b").exists());
    assert_eq!(fs::read(root.join("a/c")).unwrap(), b"c");
    assert_eq!(fs::read(root.join("a/c-link")).unwrap(), b"c");
    assert!(!root.join("d").exists());
    assert!(!root.join("x/old").exists());
    assert_eq!(fs::read(root.join("x/new")).unwrap(), b"new");
    assert!(!root.join("x/.wh..wh..opq").exists());
    assert_eq!(
        fs::metadata(root.join("suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(root.join("sgid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    for mount_point in ["proc", "sys", "dev", "tmp", "scratch"] {
        assert!(root.join(mount_point).is_dir(), "{mount_point}");
    }
}

#[test]
fn tampered_blobs_are_refused_and_not_cached() {
    let fixture = Fixture::new(UnpackLimits::default());
    let layout = fixture.dir.path().join("tampered");
    fs::create_dir(&layout).unwrap();
    let tar_bytes = layer(&[Entry::File("hello", b"hello", 0o644)]);
    write_layout(&layout, &[(tar_bytes.clone(), false)], None);
    let blob = layout.join("blobs/sha256").join(sha256(&tar_bytes));
    let mut bytes = fs::read(&blob).unwrap();
    let pos = bytes.windows(5).position(|w| w == b"hello").unwrap();
    // Flip the file content (past the header), keeping the size.
    let data_pos = bytes[pos + 5..]
        .windows(5)
        .position(|w| w == b"hello")
        .map(|p| p + pos + 5)
        .unwrap_or(pos);
    bytes[data_pos] = b'j';
    fs::write(&blob, &bytes).unwrap();
    let err = fixture
        .store
        .import(&image_ref(&layout, ImageSource::OciLayout), &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::BlobMismatch { .. }
                | ImageError::Unpack {
                    source: UnpackError::DiffIdMismatch { .. },
                    ..
                }
        ),
        "{err}"
    );
    fixture.assert_clean();
    // A manifest digest that does not match index.json's pin is refused too.
    let mut pinned = image_ref(&layout, ImageSource::OciLayout);
    pinned.digest = Some(format!("sha256:{}", "0".repeat(64)));
    assert!(matches!(
        fixture.store.import(&pinned, &mut |_| {}),
        Err(ImageError::NoMatch { .. })
    ));
}

#[test]
fn a_corrupted_gzip_layer_is_a_digest_mismatch() {
    let fixture = Fixture::new(UnpackLimits::default());
    let layout = fixture.dir.path().join("corrupt-gzip");
    fs::create_dir(&layout).unwrap();
    let tar_bytes = layer(&[Entry::File("hello", &[b'x'; 4096], 0o644)]);
    write_layout(&layout, &[(tar_bytes, true)], None);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_owned();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(manifest_hex)).unwrap())
            .unwrap();
    let digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob = layout.join("blobs/sha256").join(&digest[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    // Inside the deflate stream: gzip itself would report a bad header or checksum.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&blob, &bytes).unwrap();
    let err = fixture
        .store
        .import(&image_ref(&layout, ImageSource::OciLayout), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, ImageError::BlobMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "digest mismatch for blob {digest} (layer 1 of 1 of {})",
            layout.display()
        )),
        "{text}"
    );
    fixture.assert_clean();
}

#[test]
fn second_import_is_a_cache_hit() {
    let fixture = Fixture::new(UnpackLimits::default());
    let layout = fixture.dir.path().join("img");
    fs::create_dir(&layout).unwrap();
    let digest = write_layout(
        &layout,
        &[(layer(&[Entry::File("f", b"1", 0o644)]), true)],
        None,
    );
    let mut events = Vec::new();
    let first = fixture
        .store
        .import(&image_ref(&layout, ImageSource::OciLayout), &mut |e| {
            events.push(e)
        })
        .unwrap();
    assert!(!first.cached);
    assert_eq!(first.record.image_id, digest);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ImportProgress::Layer { .. }))
    );
    let mut events = Vec::new();
    let second = fixture
        .store
        .import(&image_ref(&layout, ImageSource::OciLayout), &mut |e| {
            events.push(e)
        })
        .unwrap();
    assert!(second.cached);
    assert_eq!(events, vec![ImportProgress::CacheHit]);
    assert_eq!(second.rootfs, first.rootfs);
}

#[test]
fn oci_and_docker_archives_import() {
    let fixture = Fixture::new(UnpackLimits::default());
    let layout = fixture.dir.path().join("img");
    fs::create_dir(&layout).unwrap();
    let tar_bytes = layer(&[Entry::File("from-archive", b"yes", 0o644)]);
    write_layout(&layout, &[(tar_bytes.clone(), true)], None);
    let archive = fixture.dir.path().join("img.tar");
    tar_dir(&layout, &archive);
    let image = fixture
        .store
        .import(&image_ref(&archive, ImageSource::OciArchive), &mut |_| {})
        .unwrap();
    assert_eq!(fs::read(image.rootfs.join("from-archive")).unwrap(), b"yes");

    // A legacy `docker save` archive: manifest.json, config, layer.tar.
    let docker = fixture.dir.path().join("docker");
    fs::create_dir_all(docker.join("abc")).unwrap();
    let docker_tar = layer(&[Entry::File("from-docker", b"yes", 0o644)]);
    fs::write(docker.join("abc/layer.tar"), &docker_tar).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&docker_tar))]}
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256(&config_bytes));
    fs::write(docker.join(&config_name), &config_bytes).unwrap();
    fs::write(
        docker.join("manifest.json"),
        serde_json::to_vec(&serde_json::json!([{"Config": config_name, "RepoTags": ["busy:1"], "Layers": ["abc/layer.tar"]}])).unwrap(),
    )
    .unwrap();
    let docker_archive = fixture.dir.path().join("docker.tar");
    tar_dir(&docker, &docker_archive);
    let mut reference = image_ref(&docker_archive, ImageSource::DockerArchive);
    reference.reference = Some("1".into());
    let image = fixture.store.import(&reference, &mut |_| {}).unwrap();
    assert_eq!(fs::read(image.rootfs.join("from-docker")).unwrap(), b"yes");
    assert_eq!(
        image.record.image_id,
        format!("sha256:{}", sha256(&config_bytes))
    );
}

/// A `docker save` archive (manifest.json, config, layer tars) built from
/// raw entries, so tests can add links and hostile names.
fn docker_archive(extra: Vec<Entry<'_>>, layers: &[&str], diff_ids: &[String]) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256(&config_bytes));
    let manifest = serde_json::to_vec(
        &serde_json::json!([{"Config": config_name, "RepoTags": ["busy:1"], "Layers": layers}]),
    )
    .unwrap();
    let mut entries = vec![
        Entry::File("manifest.json", &manifest, 0o644),
        Entry::File(&config_name, &config_bytes, 0o644),
    ];
    entries.extend(extra);
    layer(&entries)
}

#[test]
fn duplicate_layers_linked_inside_an_archive_import() {
    let fixture = Fixture::new(UnpackLimits::default());
    let first = layer(&[Entry::File("one", b"1", 0o644)]);
    let diff_id = format!("sha256:{}", sha256(&first));
    // Old `docker save` links a repeated layer to the first copy.
    let archive = docker_archive(
        vec![
            Entry::Dir("abc/"),
            Entry::File("abc/layer.tar", &first, 0o644),
            Entry::Dir("def/"),
            Entry::Symlink("def/layer.tar", "../abc/layer.tar"),
            Entry::Dir("ghi/"),
            Entry::HardLink("ghi/layer.tar", "abc/layer.tar"),
        ],
        &["abc/layer.tar", "def/layer.tar", "ghi/layer.tar"],
        &[diff_id.clone(), diff_id.clone(), diff_id],
    );
    let path = fixture.dir.path().join("dup.tar");
    fs::write(&path, archive).unwrap();
    let image = fixture
        .store
        .import(&image_ref(&path, ImageSource::DockerArchive), &mut |_| {})
        .unwrap();
    assert_eq!(fs::read(image.rootfs.join("one")).unwrap(), b"1");
    assert_eq!(
        fs::read_dir(fixture.store.root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// Writes a docker-style archive named `name` into the fixture and imports it as
/// `source`; the importer's error (the import must fail).
fn refused_archive(
    fixture: &Fixture,
    name: &str,
    source: ImageSource,
    entries: Vec<Entry<'_>>,
    layers: &[&str],
    diff_ids: &[String],
) -> ImageError {
    let path = fixture.dir.path().join(name);
    fs::write(&path, docker_archive(entries, layers, diff_ids)).unwrap();
    fixture
        .store
        .import(&image_ref(&path, source), &mut |_| {})
        .unwrap_err()
}

#[test]
fn hostile_archives_are_refused_and_nothing_escapes() {
    let unknown_diff_id = [format!("sha256:{}", "0".repeat(64))];
    // 1. `..` in an archive entry.
    let fixture = Fixture::new(UnpackLimits::default());
    let err = refused_archive(
        &fixture,
        "dotdot.tar",
        ImageSource::DockerArchive,
        vec![Entry::File("../outside/escaped", b"x", 0o644)],
        &["escaped"],
        &unknown_diff_id,
    );
    assert!(
        matches!(
            err,
            ImageError::Archive {
                source: UnpackError::ParentComponent { .. },
                ..
            }
        ),
        "{err:?}"
    );
    fixture.assert_clean();

    // 2. A layer that is a symlink out of the archive (absolute and relative):
    //    opened beneath the extracted directory, it is refused, never read.
    for target in ["/etc/passwd", "../../../../../../etc/passwd"] {
        let fixture = Fixture::new(UnpackLimits::default());
        let secret = fixture.sentinel.join("secret");
        fs::write(&secret, b"secret").unwrap();
        let layer_bytes = layer(&[Entry::File("x", b"x", 0o644)]);
        let err = refused_archive(
            &fixture,
            "link.tar",
            ImageSource::DockerArchive,
            vec![Entry::Symlink("layer.tar", target)],
            &["layer.tar"],
            &[format!("sha256:{}", sha256(&layer_bytes))],
        );
        assert!(matches!(err, ImageError::SourceFile { .. }), "{err:?}");
        fs::remove_file(&secret).unwrap();
        fixture.assert_clean();
    }

    // 3. Writing through a symlink stored earlier in the archive.
    let fixture = Fixture::new(UnpackLimits::default());
    let escape_target = fixture.sentinel.display().to_string();
    let err = refused_archive(
        &fixture,
        "through.tar",
        ImageSource::DockerArchive,
        vec![
            Entry::Symlink("escape", &escape_target),
            Entry::File("escape/planted", b"x", 0o644),
        ],
        &["escape/planted"],
        &unknown_diff_id,
    );
    assert!(
        matches!(
            err,
            ImageError::Archive {
                source: UnpackError::SymlinkComponent { .. },
                ..
            }
        ),
        "{err:?}"
    );
    fixture.assert_clean();

    // 4. Devices and FIFOs in an archive, and the one entry cap.
    let fixture = Fixture::new(UnpackLimits {
        max_entries: 3,
        max_total_bytes: 1 << 20,
    });
    for (name, extra) in [
        ("fifo.tar", vec![Entry::Fifo("manifest.fifo")]),
        ("dev.tar", vec![Entry::CharDevice("null")]),
        (
            "many.tar",
            vec![Entry::Dir("a/"), Entry::Dir("b/"), Entry::Dir("c/")],
        ),
    ] {
        let err = refused_archive(
            &fixture,
            name,
            ImageSource::OciArchive,
            extra,
            &["x"],
            &unknown_diff_id,
        );
        assert!(
            matches!(
                err,
                ImageError::Archive {
                    source: UnpackError::SpecialFile { .. } | UnpackError::TooManyEntries { .. },
                    ..
                }
            ),
            "{name}: {err:?}"
        );
    }
    fixture.assert_clean();
}

/// The invariants of the `jobs_image_import` fuzz target, on a few hundred
/// deterministic mutations of valid archives: the importer errs or imports,
/// never panics, writes nothing beside its store and leaves no staging.
#[test]
fn mutated_archives_never_escape_or_leave_staging() {
    let fixture = Fixture::new(UnpackLimits {
        max_entries: 256,
        max_total_bytes: 1 << 20,
    });
    let layout = fixture.dir.path().join("seed-layout");
    fs::create_dir(&layout).unwrap();
    write_layout(
        &layout,
        &[(layer(&[Entry::File("a", b"a", 0o644)]), false)],
        None,
    );
    let oci_seed = fixture.dir.path().join("seed-oci.tar");
    tar_dir(&layout, &oci_seed);
    let layer_bytes = layer(&[Entry::File("b", b"b", 0o644)]);
    let diff_id = format!("sha256:{}", sha256(&layer_bytes));
    let docker_seed = docker_archive(
        vec![Entry::File("layer.tar", &layer_bytes, 0o644)],
        &["layer.tar"],
        &[diff_id],
    );
    let seeds = [
        (fs::read(&oci_seed).unwrap(), ImageSource::OciArchive),
        (docker_seed, ImageSource::DockerArchive),
    ];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut n_imported = 0;
    for round in 0..300 {
        let (seed, source) = &seeds[round % seeds.len()];
        let mut bytes = seed.clone();
        for _ in 0..(1 + next() % 8) {
            let idx = (next() % bytes.len() as u64) as usize;
            bytes[idx] = next() as u8;
        }
        if next() % 4 == 0 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        }
        let path = fixture.dir.path().join("mutant.tar");
        fs::write(&path, &bytes).unwrap();
        if let Ok(image) = fixture
            .store
            .import(&image_ref(&path, *source), &mut |_| {})
        {
            assert!(image.rootfs.starts_with(fixture.store.root()));
            n_imported += 1;
        }
        assert_eq!(fs::read_dir(&fixture.sentinel).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(fixture.store.root().join("tmp"))
                .unwrap()
                .count(),
            0,
            "round {round} left staging behind"
        );
    }
    // Mutations inside file data or padding leave the archive importable.
    assert!(n_imported > 0);
}
