//! The Redis URL parser (`url=`) on arbitrary text: it never panics; what it
//! accepts has at least one node (several only for a cluster) and turns into
//! connection parameters for each; and no password ever shows, neither in a
//! refusal nor in the parsed target's `Debug`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit::store::redis::url::Target;

/// The password part of `url` as typed, if it has one.
fn raw_password(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("redis://").or_else(|| url.strip_prefix("redis+cluster://"))?;
    let userinfo = &rest[..rest.rfind('@')?];
    Some(userinfo.split_once(':').map_or(userinfo, |(_, p)| p))
}

/// A secret long enough, and found nowhere else in the URL, so that seeing it
/// in a message means the message shows the password.
fn telltale<'a>(url: &str, secret: &'a str) -> Option<&'a str> {
    (secret.len() >= 6 && url.matches(secret).count() == 1).then_some(secret)
}

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else { return };
    match Target::parse(url) {
        Ok(target) => {
            assert!(!target.nodes.is_empty(), "{url:?}: no node");
            assert!(target.cluster || target.nodes.len() == 1, "{url:?}: several nodes without redis+cluster");
            assert!(target.db >= 0, "{url:?}: db {}", target.db);
            for (i, (host, port)) in target.nodes.iter().enumerate() {
                assert!(!host.is_empty() && *port > 0, "{url:?}: node {host:?}:{port}");
                let _ = target.connection_info(i);
            }
            if let Some(p) = target.password.as_deref() {
                let elsewhere = target.username.as_deref().is_some_and(|u| u.contains(p))
                    || target.nodes.iter().any(|(h, _)| h.contains(p));
                if p.len() >= 6 && !elsewhere {
                    assert!(!format!("{target:?}").contains(p), "{url:?}: the Debug shows the password");
                }
            }
            assert_eq!(Target::parse(url), Ok(target));
        }
        Err(e) => {
            assert!(!e.is_empty(), "{url:?} refused without a message");
            if let Some(p) = raw_password(url).and_then(|p| telltale(url, p)) {
                assert!(!e.contains(p), "{url:?}: the refusal shows the password: {e}");
            }
        }
    }
});
