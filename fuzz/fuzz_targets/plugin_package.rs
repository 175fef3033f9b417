//! Fuzz the plugin package parser (untrusted bytes from `plinthctl plugin install` and
//! the plugin directory): parsing must never panic, and whatever parses must survive a
//! serialize/parse round trip and a verification attempt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_plugin_host::package::{Package, TrustPolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(package) = Package::parse(data) else {
        return;
    };
    let bytes = package.to_bytes();
    assert_eq!(
        bytes.as_slice(),
        data,
        "a parsed package must re-serialize to the same bytes"
    );
    let again = Package::parse(&bytes).expect("re-parse of a serialized package");
    assert_eq!(again.manifest, package.manifest);
    let trust = TrustPolicy {
        trusted_keys: vec![[7u8; 32]],
        allow_unsigned: true,
    };
    let _ = package.verify(&trust);
});
