//! Fuzzes what a registry pull parses from untrusted bytes before anything is
//! unpacked: manifest and image-index documents (media type sniffing, the typed
//! documents, layer/media-type/limit checks, platform choice), cosign signature
//! manifests, simple-signing payloads and signing-key files.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_jobs::registry::{RegistrySettings, parse_document};
use plinth_jobs::signature::{CosignKey, parse_payload, parse_signature_manifest};

fuzz_target!(|data: &[u8]| {
    let settings = RegistrySettings {
        max_index_entries: 8,
        max_layers: 8,
        ..RegistrySettings::default()
    };
    if let Ok(n) = parse_document(data, &settings) {
        // Accepted documents respect the limits they were checked against.
        assert!(n <= 8);
    }
    if let Ok(layers) = parse_signature_manifest(data, "fuzz.sig") {
        assert!(layers.len() <= plinth_jobs::signature::MAX_SIGNATURES);
        for layer in layers {
            assert!(layer.size <= plinth_jobs::signature::MAX_PAYLOAD_BYTES);
        }
    }
    let _ = parse_payload(data, "sha256:fuzz");
    let _ = CosignKey::parse("fuzz", data, "fuzz.pub");
});
