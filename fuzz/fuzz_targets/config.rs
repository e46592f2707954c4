//! The configuration parser on arbitrary text: it never panics, and every
//! configuration it accepts can be turned into rates (the limits that
//! `Rate::new` asserts are the parser's to enforce).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit::config::{Algorithm, Config};
use ratelimit::limiter::rates_in_ns;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text) {
        Ok(config) => {
            assert!(!config.rates.is_empty(), "accepted {text:?} without a rate");
            let rates = rates_in_ns(&config);
            for (spec, rate) in config.rates.iter().zip(&rates) {
                assert!(spec.limit > 0 && spec.period_ns > 0 && spec.burst > 0, "{text:?}: {spec:?}");
                assert!(rate.interval > 0, "{text:?}: {rate:?}");
                if config.algorithm == Algorithm::TokenBucket {
                    assert!(rate.capacity >= rate.interval, "{text:?}: {rate:?}");
                }
            }
            // Parsing is a pure function of the text.
            assert_eq!(Config::parse(text), Ok(config));
        }
        Err(e) => assert!(!e.0.is_empty(), "{text:?} refused without a message"),
    }
});
