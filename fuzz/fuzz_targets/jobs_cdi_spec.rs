//! Fuzz the CDI spec parser (JSON and YAML) and device-name parser.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use plinth_jobs::cdi::{CdiSpec, parse_device_name};

fuzz_target!(|data: &[u8]| {
    let _ = CdiSpec::parse(Path::new("fuzz.json"), data);
    let _ = CdiSpec::parse(Path::new("fuzz.yaml"), data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_device_name(text);
    }
});
