//! Signed packages end to end: trusted, unsigned, wrong signature, tampered wasm, and
//! hot reload through the policy set (success, and failure keeping the old plugin).

use std::collections::BTreeMap;

use plinth_plugin_host::fallback::FallbackConfig;
use plinth_plugin_host::package::{self, Manifest, Package, PackageError};
use plinth_plugin_host::tools;
use plinth_plugin_host::{
    DecisionSource, HostConfig, PluginHost, PluginKind, PluginLoadError, PolicySet, PriceDecision,
    ReloadError, SelfTest, TrustPolicy,
};

use crate::support::{examples_dir, host, pricing_state, request, wasm};

fn manifest(name: &str, version: &str, kind: PluginKind, wit: &str) -> Manifest {
    Manifest {
        name: name.to_string(),
        version: version.to_string(),
        kind,
        wit: wit.to_string(),
        wasm_sha256: String::new(),
        limits: None,
        config: BTreeMap::new(),
    }
}

struct Author {
    _dir: tempfile::TempDir,
    key: std::path::PathBuf,
    trust: TrustPolicy,
}

fn author() -> Author {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("author.pk8");
    let public_hex = tools::keygen(&key).unwrap();
    let trust = TrustPolicy::from_hex_keys(&[public_hex], false).unwrap();
    Author {
        _dir: dir,
        key,
        trust,
    }
}

fn pricing_package(author: &Author, version: &str) -> Option<Vec<u8>> {
    let bytes = wasm("plinth_example_pricing")?;
    let manifest = manifest(
        "example-pricing",
        version,
        PluginKind::Pricing,
        "plinth:policy@0.1.2",
    );
    Some(tools::sign(manifest, bytes, Some(&author.key)).unwrap())
}

#[test]
fn trusted_package_loads_and_prices() {
    let author = author();
    let Some(bytes) = pricing_package(&author, "1.0.0") else {
        return;
    };
    let host = host();
    let plugin = host
        .load_package(&bytes, &author.trust, &BTreeMap::new())
        .unwrap();
    assert_eq!(plugin.info().signer.as_deref().map(str::len), Some(64));
    assert!(matches!(
        plugin.price(&request(1), &pricing_state()).unwrap(),
        PriceDecision::Offer(_)
    ));
    let report = tools::inspect(&host, &bytes).unwrap();
    assert_eq!(report.signature_valid, Some(true));
    assert_eq!(report.wasm_digest_matches, Some(true));
    assert_eq!(report.plugin.kind, PluginKind::Pricing);
    assert_eq!(report.plugin.wit, "plinth:policy@0.1.2");
    assert!(
        report
            .plugin
            .imports
            .iter()
            .any(|import| import.starts_with("plinth:policy/host@"))
    );
}

#[test]
fn unsigned_package_is_refused_unless_allowed() {
    let Some(bytes) = wasm("plinth_example_pricing") else {
        return;
    };
    let manifest = manifest(
        "example-pricing",
        "1.0.0",
        PluginKind::Pricing,
        "plinth:policy@0.1.2",
    );
    let unsigned = tools::sign(manifest, bytes, None).unwrap();
    let host = host();
    let error = host
        .load_package(&unsigned, &author().trust, &BTreeMap::new())
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            PluginLoadError::Package(PackageError::Unsigned { .. })
        ),
        "{error:?}"
    );
    let permissive = TrustPolicy {
        trusted_keys: Vec::new(),
        allow_unsigned: true,
    };
    host.load_package(&unsigned, &permissive, &BTreeMap::new())
        .unwrap();
}

#[test]
fn wrong_signature_and_untrusted_key_are_refused() {
    let author = author();
    let stranger = author_key_only();
    let Some(bytes) = pricing_package(&author, "1.0.0") else {
        return;
    };
    let host = host();
    // Signed by a key the agent does not trust.
    let error = host
        .load_package(&bytes, &stranger, &BTreeMap::new())
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            PluginLoadError::Package(PackageError::UntrustedKey { .. })
        ),
        "{error:?}"
    );
    // Manifest changed after signing: the signature no longer verifies.
    let mut package = Package::parse(&bytes).unwrap();
    package.manifest_bytes = String::from_utf8(package.manifest_bytes)
        .unwrap()
        .replace("1.0.0", "9.9.9")
        .into_bytes();
    let forged = package.to_bytes();
    let error = host
        .load_package(&forged, &author.trust, &BTreeMap::new())
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            PluginLoadError::Package(PackageError::BadSignature { .. })
        ),
        "{error:?}"
    );
    assert!(
        error
            .source()
            .unwrap()
            .to_string()
            .contains("example-pricing")
    );
}

use std::error::Error as _;

fn author_key_only() -> TrustPolicy {
    let (_, public_hex) = package::generate_key().unwrap();
    TrustPolicy::from_hex_keys(&[public_hex], false).unwrap()
}

#[test]
fn tampered_wasm_is_refused() {
    let author = author();
    let Some(bytes) = pricing_package(&author, "1.0.0") else {
        return;
    };
    let mut package = Package::parse(&bytes).unwrap();
    let last = package.wasm.len() - 1;
    package.wasm[last] ^= 0x01;
    let error = host()
        .load_package(&package.to_bytes(), &author.trust, &BTreeMap::new())
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            PluginLoadError::Package(PackageError::Tampered { .. })
        ),
        "{error:?}"
    );
}

#[test]
fn hot_reload_success_and_failure() {
    let author = author();
    let Some(v1) = pricing_package(&author, "1.0.0") else {
        return;
    };
    let v2 = pricing_package(&author, "2.0.0").unwrap();
    let host = host();
    let policies = PolicySet::new(FallbackConfig::default());
    let fixtures = examples_dir().join("pricing/fixtures");
    let config = tools::fixture_config(&fixtures).unwrap();

    let info = policies
        .reload_package(
            &host,
            &v1,
            &author.trust,
            &config,
            SelfTest::Fixtures(&fixtures),
        )
        .unwrap();
    assert_eq!(info.version, "1.0.0");
    let info = policies
        .reload_package(
            &host,
            &v2,
            &author.trust,
            &config,
            SelfTest::Fixtures(&fixtures),
        )
        .unwrap();
    assert_eq!(info.version, "2.0.0");

    // A new version whose configuration breaks it fails the fixtures: v2 keeps serving.
    let mut bad_config = config.clone();
    bad_config.insert("surcharge.pct".to_string(), "lots".to_string());
    let error = policies
        .reload_package(
            &host,
            &v1,
            &author.trust,
            &bad_config,
            SelfTest::Fixtures(&fixtures),
        )
        .unwrap_err();
    assert!(
        matches!(error, ReloadError::Fixtures { ref plugin, .. } if plugin == "example-pricing"),
        "{error}"
    );
    let decided = policies.price(&request(1), &pricing_state());
    assert_eq!(
        decided.source,
        DecisionSource::Plugin {
            name: "example-pricing".to_string(),
            version: "2.0.0".to_string()
        }
    );

    // A package that does not even load leaves v2 serving too.
    let mut tampered = Package::parse(&v1).unwrap();
    tampered.wasm.push(0);
    let error = policies
        .reload_package(
            &host,
            &tampered.to_bytes(),
            &author.trust,
            &config,
            SelfTest::Smoke,
        )
        .unwrap_err();
    assert!(matches!(error, ReloadError::Load(_)), "{error}");
    assert_eq!(
        policies.active(PluginKind::Pricing).unwrap().info().version,
        "2.0.0"
    );
    assert_eq!(policies.list().len(), 1);
}

#[test]
fn compiled_code_cache_is_reused_across_hosts() {
    let Some(bytes) = wasm("plinth_example_pricing") else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let cache_dir = temp.path().join("cache");
    let config = HostConfig {
        cache_dir: Some(cache_dir.clone()),
        pool_instances: 4,
        ..HostConfig::default()
    };
    let spec = crate::support::spec("cached", PluginKind::Pricing, &[]);
    let first = PluginHost::new(config.clone()).unwrap();
    first.load_component(spec.clone(), &bytes).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].starts_with(&package::sha256_hex(&bytes)));
    // A second host loads from the cache (same answer); a corrupted entry is replaced.
    let second = PluginHost::new(config.clone()).unwrap();
    let plugin = second.load_component(spec.clone(), &bytes).unwrap();
    assert!(matches!(
        plugin.price(&request(1), &pricing_state()).unwrap(),
        PriceDecision::Offer(_)
    ));
    let entry = cache_dir.join(&entries[0]);
    let mut corrupted = std::fs::read(&entry).unwrap();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0xff;
    std::fs::write(&entry, &corrupted).unwrap();
    let third = PluginHost::new(config).unwrap();
    let plugin = third.load_component(spec, &bytes).unwrap();
    assert!(matches!(
        plugin.price(&request(1), &pricing_state()).unwrap(),
        PriceDecision::Offer(_)
    ));
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        corrupted,
        "corrupted entry was rewritten"
    );
}
