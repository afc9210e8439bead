//! Fuzz `vt_manifest::parse`: it must never panic, and any manifest it
//! accepts must survive canonical formatting and re-parsing unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match vt_manifest::parse(src) {
        Ok(m) => {
            let text = m.to_canonical_toml();
            let again = vt_manifest::parse(&text).expect("canonical TOML must parse");
            assert_eq!(again, m, "parse(fmt(m)) != m for:\n{text}");
            assert_eq!(again.to_canonical_toml(), text, "fmt is not idempotent");
            assert_eq!(again.hash(), m.hash());
            let back = vt_manifest::from_normalized_json(&m.to_normalized_json())
                .expect("json round trip");
            assert_eq!(back, m);
        }
        Err(errs) => {
            assert!(!errs.0.is_empty());
            for e in &errs.0 {
                assert!(e.line >= 1 && e.column >= 1, "{e}");
            }
        }
    }
});
