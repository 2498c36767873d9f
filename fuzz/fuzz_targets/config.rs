//! Configuration files: `Config::from_yaml` on any UTF-8 input.
#![no_main]

use harbor_pilot_core::invariants::check_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Err(violation) = check_config(input) {
        panic!("{violation}");
    }
});
