//! Fuzz the checks on a component's import/export names and WIT versions (names come
//! from untrusted components): never panic, and never accept an import outside the
//! allow-lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_plugin_host::PluginKind;
use plinth_plugin_host::version::{
    ALLOWED_PLINTH, ALLOWED_WASI, check_interfaces, parse_wit_package, split_versioned,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut names = text.split('\n');
    let exports: Vec<String> = names
        .next()
        .unwrap_or_default()
        .split(' ')
        .map(str::to_string)
        .collect();
    let imports: Vec<String> = names.map(str::to_string).collect();
    let _ = parse_wit_package(&text);
    for kind in PluginKind::ALL {
        if check_interfaces(kind, &imports, &exports).is_ok() {
            for import in &imports {
                let base = split_versioned(import).0;
                assert!(
                    ALLOWED_PLINTH.contains(&base) || ALLOWED_WASI.contains(&base),
                    "{import}"
                );
            }
        }
    }
});
