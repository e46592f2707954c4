//! The configuration parser on arbitrary text: it never panics, every
//! configuration it accepts can be turned into rates (the limits that
//! `Rate::new` asserts are the parser's to enforce), and its canonical
//! description (rl_describe) parses back to the same configuration.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit::config::{Algorithm, Backend, Config};
use ratelimit::limiter::rates_in_ns;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text) {
        Ok(config) => {
            // Only a concurrency limiter and an attach (backend=shm name=...
            // without rate= or concurrency=) have no rate; never both kinds.
            assert!(
                !config.rates.is_empty() || config.concurrency.is_some() || config.attaches(),
                "accepted {text:?} without a rate"
            );
            assert!(config.rates.is_empty() || config.concurrency.is_none(), "{text:?}");
            if let Some(c) = config.concurrency {
                assert!((1..=1024).contains(&c.slots) && c.lease_ns > 0, "{text:?}: {c:?}");
            }
            assert!(!config.attaches() || config.backend == Backend::Shm, "{text:?}");
            let rates = rates_in_ns(&config);
            for (spec, rate) in config.rates.iter().zip(&rates) {
                assert!(spec.limit > 0 && spec.period_ns > 0 && spec.burst > 0, "{text:?}: {spec:?}");
                assert!(rate.interval > 0, "{text:?}: {rate:?}");
                if config.algorithm == Algorithm::TokenBucket {
                    assert!(rate.bucket_ticks >= rate.interval, "{text:?}: {rate:?}");
                }
            }
            // Parsing is a pure function of the text.
            assert_eq!(Config::parse(text).as_ref(), Ok(&config));
            // The description is canonical: it parses back to the same
            // configuration, unless a password had to be masked.
            let described = config.describe();
            match Config::parse(&described) {
                Ok(again) => {
                    assert_eq!(again, config, "{text:?} -> {described:?}");
                    assert_eq!(again.describe(), described, "{text:?}");
                }
                Err(e) => assert!(e.0.contains("the mask rl_describe() prints"), "{text:?} -> {described:?}: {e}"),
            }
        }
        Err(e) => assert!(!e.0.is_empty(), "{text:?} refused without a message"),
    }
});
