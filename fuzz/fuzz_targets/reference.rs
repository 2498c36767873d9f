//! Image strings: `ImageRef::parse` and the rule decision on any UTF-8 input.
#![no_main]

use harbor_pilot_core::invariants::check_reference;
use harbor_pilot_core::rules::CachedRules;
use libfuzzer_sys::fuzz_target;

fn rules() -> &'static CachedRules {
    static RULES: std::sync::OnceLock<CachedRules> = std::sync::OnceLock::new();
    RULES.get_or_init(example_rules)
}

fn example_rules() -> CachedRules {
    match harbor_pilot_core::config::Config::from_yaml(include_str!("../../config/example.yaml")) {
        Ok(config) => config.rules,
        Err(error) => panic!("config/example.yaml: {error}"),
    }
}

fuzz_target!(|input: &str| {
    if let Err(violation) = check_reference(input, rules()) {
        panic!("{violation}");
    }
});
