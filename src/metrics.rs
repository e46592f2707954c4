//! `rl_metrics`: a limiter's counters in the Prometheus text exposition
//! format 0.0.4, with the caller's labels on every sample and, if asked, the
//! most denied keys as `ratelimit_top_limited{key="..."}`.
//!
//! The caller's labels are validated strictly (`Labels::parse`) and then
//! copied as given; keys go through `keytext` (printable ASCII, `\\`,
//! `\xHH`) and then the format's own escaping, so nothing a client sends as
//! a key can end a label value, a line or a sample. The text is written
//! straight into the caller's buffer (`Sink`), counting what does not fit:
//! no allocation for the text itself.

use std::fmt::{self, Write};
use std::mem::MaybeUninit;

use crate::error::{quoted, Error};
use crate::keytext;
use crate::top::TopEntry;

/// Label names rl_metrics puts on its own samples.
const OWN_LABELS: [&str; 2] = ["decision", "key"];

/// The caller's labels, validated: `name="value"[,name="value"...]`, kept
/// as the text given (it is already in the format's syntax).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Labels<'a>(&'a str);

fn invalid(what: String) -> Error {
    Error::Invalid(format!("argument \"labels\": {what}"))
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Labels<'a> {
    /// No labels.
    pub const NONE: Labels<'static> = Labels("");

    /// Validates `text`: label names `[a-zA-Z_][a-zA-Z0-9_]*`, none starting
    /// with `__` (Prometheus reserves them), none twice, neither `decision`
    /// nor `key`; values in double quotes, any UTF-8 except control
    /// characters, with the escapes `\\`, `\"` and `\n` only; pairs separated
    /// by single commas, no spaces, nothing after the last. The empty string
    /// is no labels.
    pub fn parse(text: &'a [u8]) -> Result<Labels<'a>, Error> {
        let text = std::str::from_utf8(text)
            .map_err(|e| invalid(format!("not valid UTF-8 (byte {} of {})", e.valid_up_to(), quoted_bytes(text))))?;
        let b = text.as_bytes();
        let mut names: Vec<&str> = Vec::new();
        let mut i = 0;
        while i < b.len() {
            // A name.
            let start = i;
            while i < b.len() && is_name_byte(b[i]) {
                i += 1;
            }
            let name = &text[start..i];
            if name.is_empty() {
                let what = if b[i] == b',' { "an empty label (two commas, or a leading one)" } else { "no label name" };
                return Err(invalid(format!("{what} at byte {start} of {}", quoted(text))));
            }
            if !is_name_start(b[start]) {
                return Err(invalid(format!(
                    "label name {} does not start with a letter or '_' ({})",
                    quoted(name),
                    quoted(text)
                )));
            }
            if name.starts_with("__") {
                return Err(invalid(format!(
                    "label name {} starts with \"__\", which Prometheus reserves",
                    quoted(name)
                )));
            }
            if OWN_LABELS.contains(&name) {
                return Err(invalid(format!("label name {} is one rl_metrics uses itself", quoted(name))));
            }
            if names.contains(&name) {
                return Err(invalid(format!("label {} given twice", quoted(name))));
            }
            names.push(name);
            // ="value"
            if b.get(i) != Some(&b'=') {
                return Err(invalid(format!("label {}: expected '=' after the name at byte {i}", quoted(name))));
            }
            i += 1;
            if b.get(i) != Some(&b'"') {
                return Err(invalid(format!("label {}: the value is not a double-quoted string", quoted(name))));
            }
            i += 1;
            loop {
                let Some(&c) = b.get(i) else {
                    return Err(invalid(format!("label {}: the value has no closing '\"'", quoted(name))));
                };
                match c {
                    b'"' => break,
                    b'\\' => match b.get(i + 1) {
                        Some(b'\\' | b'"' | b'n') => i += 2,
                        _ => {
                            return Err(invalid(format!(
                                "label {}: bad escape at byte {i} (only \\\\, \\\" and \\n)",
                                quoted(name)
                            )))
                        }
                    },
                    c if c < 0x20 || c == 0x7f => {
                        return Err(invalid(format!(
                            "label {}: a control character in the value at byte {i} (write a newline as \\n)",
                            quoted(name)
                        )))
                    }
                    _ => i += 1,
                }
            }
            i += 1;
            match b.get(i) {
                None => break,
                Some(b',') if i + 1 < b.len() => i += 1,
                Some(b',') => return Err(invalid(format!("a trailing ',' in {}", quoted(text)))),
                Some(_) => {
                    return Err(invalid(format!(
                        "unexpected text after label {} at byte {i} (pairs are separated by ',', without spaces)",
                        quoted(name)
                    )))
                }
            }
        }
        Ok(Labels(text))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

fn quoted_bytes(text: &[u8]) -> String {
    quoted(&String::from_utf8_lossy(&text[..text.len().min(256)]))
}

/// What rl_metrics reports, read from a limiter.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub allowed: u64,
    pub limited: u64,
    pub errors: u64,
    pub keys: u64,
    pub evictions: u64,
    /// Memory and shm: the configured capacity.
    pub capacity: Option<u64>,
    /// Redis: the checks denied by the over-limit cache.
    pub local_denials: Option<u64>,
    /// With RL_METRICS_TOP_KEYS: rl_top(RL_TOP_LIMITED), highest count first.
    pub top_limited: Option<Vec<TopEntry>>,
}

/// One metric family's header.
fn family(out: &mut impl Write, name: &str, kind: &str, help: &str) -> fmt::Result {
    write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n")
}

/// One sample: `name{labels[,extra]} value`.
fn sample(out: &mut impl Write, name: &str, labels: Labels, extra: Option<(&str, &str)>, value: u64) -> fmt::Result {
    out.write_str(name)?;
    let own = labels.as_str();
    if !own.is_empty() || extra.is_some() {
        out.write_char('{')?;
        out.write_str(own)?;
        if let Some((k, v)) = extra {
            if !own.is_empty() {
                out.write_char(',')?;
            }
            write!(out, "{k}=\"{v}\"")?;
        }
        out.write_char('}')?;
    }
    writeln!(out, " {value}")
}

/// A writer that escapes for a label value: `\` doubled, `"` as `\"`,
/// newline as `\n` (the key encoding leaves no newline; kept for safety).
struct LabelValue<'w, W: Write>(&'w mut W);

impl<W: Write> Write for LabelValue<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.bytes().enumerate() {
            let esc = match c {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                b'\n' => "\\n",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            self.0.write_str(esc)?;
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// Writes the exposition of `snap` with `labels` on every sample.
pub fn write(out: &mut impl Write, snap: &Snapshot, labels: Labels) -> fmt::Result {
    family(out, "ratelimit_checks_total", "counter", "Checks answered, by decision.")?;
    sample(out, "ratelimit_checks_total", labels, Some(("decision", "allowed")), snap.allowed)?;
    sample(out, "ratelimit_checks_total", labels, Some(("decision", "limited")), snap.limited)?;
    family(out, "ratelimit_errors_total", "counter", "Checks that hit a backend error.")?;
    sample(out, "ratelimit_errors_total", labels, None, snap.errors)?;
    family(out, "ratelimit_keys", "gauge", "Keys currently tracked (0 if the backend cannot tell).")?;
    sample(out, "ratelimit_keys", labels, None, snap.keys)?;
    if let Some(capacity) = snap.capacity {
        family(out, "ratelimit_capacity", "gauge", "Most keys the limiter tracks.")?;
        sample(out, "ratelimit_capacity", labels, None, capacity)?;
    }
    family(out, "ratelimit_evictions_total", "counter", "Live entries dropped to make room for new keys.")?;
    sample(out, "ratelimit_evictions_total", labels, None, snap.evictions)?;
    if let Some(local) = snap.local_denials {
        family(out, "ratelimit_local_denials_total", "counter", "Checks denied by the local over-limit cache.")?;
        sample(out, "ratelimit_local_denials_total", labels, None, local)?;
    }
    if let Some(top) = &snap.top_limited {
        family(out, "ratelimit_top_limited", "gauge", "Denied checks of the most denied keys (upper bounds).")?;
        for (key, count) in merged(top) {
            out.write_str("ratelimit_top_limited{")?;
            if !labels.as_str().is_empty() {
                out.write_str(labels.as_str())?;
                out.write_char(',')?;
            }
            out.write_str("key=\"")?;
            keytext::encode_into(key, &mut LabelValue(out))?;
            writeln!(out, "\"}} {count}")?;
        }
    }
    Ok(())
}

/// The entries' keys (their first 64 bytes) with their counts, highest
/// first; long keys that share their first 64 bytes, which would be the
/// same series, are one sample with the sum of their counts (still an upper
/// bound on the denied checks of the keys with that prefix).
fn merged(top: &[TopEntry]) -> Vec<(&[u8], u64)> {
    let mut out: Vec<(&[u8], u64)> = Vec::with_capacity(top.len());
    for e in top {
        let key = &e.key[..(e.key_len as usize).min(e.key.len())];
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count = count.saturating_add(e.count),
            None => out.push((key, e.count)),
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.1));
    out
}

/// A `fmt::Write` into a caller's buffer of `buf.len()` bytes with snprintf
/// semantics: it keeps the first `buf.len() - 1` bytes of the text and
/// counts all of it; `finish` NUL-terminates what it kept.
pub struct Sink<'b> {
    buf: &'b mut [MaybeUninit<u8>],
    len: usize,
}

impl<'b> Sink<'b> {
    pub fn new(buf: &'b mut [MaybeUninit<u8>]) -> Sink<'b> {
        Sink { buf, len: 0 }
    }

    /// NUL-terminates the text kept (when the buffer has a byte) and returns
    /// the length of the whole text.
    pub fn finish(self) -> usize {
        if let Some(room) = self.buf.len().checked_sub(1) {
            self.buf[self.len.min(room)].write(0);
        }
        self.len
    }
}

impl Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(1);
        if self.len < room {
            let n = s.len().min(room - self.len);
            for (dst, &src) in self.buf[self.len..self.len + n].iter_mut().zip(s.as_bytes()) {
                dst.write(src);
            }
        }
        self.len += s.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::sketch::KEY_BYTES;

    fn entry(key: &[u8], count: u64) -> TopEntry {
        let mut k = [0u8; KEY_BYTES];
        let n = key.len().min(KEY_BYTES);
        k[..n].copy_from_slice(&key[..n]);
        TopEntry { fp: 0, key: k, key_len: n as u32, truncated: key.len() > KEY_BYTES, count, error: 0 }
    }

    fn text(snap: &Snapshot, labels: &str) -> String {
        let mut s = String::new();
        write(&mut s, snap, Labels::parse(labels.as_bytes()).unwrap()).unwrap();
        s
    }

    #[test]
    fn every_family_with_and_without_labels() {
        let snap = Snapshot {
            allowed: 7,
            limited: 3,
            errors: 1,
            keys: 2,
            evictions: 0,
            capacity: Some(100),
            local_denials: None,
            top_limited: None,
        };
        assert_eq!(
            text(&snap, ""),
            "# HELP ratelimit_checks_total Checks answered, by decision.\n\
             # TYPE ratelimit_checks_total counter\n\
             ratelimit_checks_total{decision=\"allowed\"} 7\n\
             ratelimit_checks_total{decision=\"limited\"} 3\n\
             # HELP ratelimit_errors_total Checks that hit a backend error.\n\
             # TYPE ratelimit_errors_total counter\n\
             ratelimit_errors_total 1\n\
             # HELP ratelimit_keys Keys currently tracked (0 if the backend cannot tell).\n\
             # TYPE ratelimit_keys gauge\n\
             ratelimit_keys 2\n\
             # HELP ratelimit_capacity Most keys the limiter tracks.\n\
             # TYPE ratelimit_capacity gauge\n\
             ratelimit_capacity 100\n\
             # HELP ratelimit_evictions_total Live entries dropped to make room for new keys.\n\
             # TYPE ratelimit_evictions_total counter\n\
             ratelimit_evictions_total 0\n"
        );
        let redis = Snapshot { capacity: None, local_denials: Some(5), top_limited: Some(vec![]), ..snap };
        let t = text(&redis, "zone=\"a\\\"b\",x=\"\"");
        assert!(t.contains("ratelimit_checks_total{zone=\"a\\\"b\",x=\"\",decision=\"limited\"} 3\n"), "{t}");
        assert!(t.contains("ratelimit_local_denials_total{zone=\"a\\\"b\",x=\"\"} 5\n"), "{t}");
        assert!(!t.contains("capacity"), "{t}");
        assert!(t.ends_with("# TYPE ratelimit_top_limited gauge\n"), "{t}");
    }

    #[test]
    fn hostile_keys_stay_inside_their_label() {
        let long = [b'L'; 100];
        let snap = Snapshot {
            top_limited: Some(vec![
                entry(b"\"} 1\nfake_metric 2", 9),
                entry(b"a\\b\xff\0", 8),
                entry(&long, 3),
                entry(&[&long[..64], b"other"].concat(), 2),
            ]),
            ..Snapshot::default()
        };
        let t = text(&snap, "z=\"1\"");
        let samples: Vec<&str> = t.lines().filter(|l| l.starts_with("ratelimit_top_limited")).collect();
        assert_eq!(
            samples,
            [
                "ratelimit_top_limited{z=\"1\",key=\"\\\"} 1\\\\x0afake_metric 2\"} 9",
                "ratelimit_top_limited{z=\"1\",key=\"a\\\\\\\\b\\\\xff\\\\x00\"} 8",
                &format!("ratelimit_top_limited{{z=\"1\",key=\"{}\"}} 5", "L".repeat(64)),
            ]
        );
        assert!(!t.lines().any(|l| l.starts_with("fake_metric")));
    }

    #[test]
    fn labels_are_validated_strictly() {
        for good in ["", "a=\"\"", "zone=\"x\"", "_a=\"1\",B9=\"é \\\\ \\\" \\n\"", "a=\"}\",b=\",\""] {
            assert_eq!(Labels::parse(good.as_bytes()).map(|l| l.as_str()), Ok(good), "{good}");
        }
        for (bad, says) in [
            ("a=b", "not a double-quoted"),
            ("a=\"x", "no closing"),
            ("1a=\"x\"", "does not start with a letter"),
            ("__x=\"y\"", "Prometheus reserves"),
            ("a=\"1\",a=\"2\"", "given twice"),
            ("decision=\"x\"", "uses itself"),
            ("key=\"x\"", "uses itself"),
            ("a=\"1\",", "trailing ','"),
            ("a=\"1\",,b=\"2\"", "empty label"),
            (",a=\"1\"", "empty label"),
            ("a=\"1\" ,b=\"2\"", "unexpected text"),
            ("a=\"1\"x", "unexpected text"),
            ("a = \"1\"", "expected '='"),
            ("a", "expected '='"),
            ("a=", "not a double-quoted"),
            ("a=\"\\t\"", "bad escape"),
            ("a=\"x\\\"", "no closing"),
            ("a=\"line\nbreak\"", "control character"),
            ("a-b=\"1\"", "expected '='"),
            ("=\"1\"", "no label name"),
            ("é=\"1\"", "no label name"),
        ] {
            match Labels::parse(bad.as_bytes()) {
                Err(Error::Invalid(m)) => {
                    assert!(m.contains(says) && m.starts_with("argument \"labels\""), "{bad}: {m}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(Labels::parse(b"a=\"\xff\""), Err(Error::Invalid(m)) if m.contains("UTF-8")));
    }
}
