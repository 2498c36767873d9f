//! Request bodies: body → `parse_review` → `review` → `encode_review`, on any bytes.
#![no_main]

use harbor_pilot_core::invariants::check_review;
use harbor_pilot_core::rules::CachedRules;
use libfuzzer_sys::fuzz_target;

fn rules() -> &'static CachedRules {
    static RULES: std::sync::OnceLock<CachedRules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        match harbor_pilot_core::config::Config::from_yaml(include_str!(
            "../../config/example.yaml"
        )) {
            Ok(config) => config.rules,
            Err(error) => panic!("config/example.yaml: {error}"),
        }
    })
}

fuzz_target!(|body: &[u8]| {
    if let Err(violation) = check_review(body, rules()) {
        panic!("{violation}");
    }
});
