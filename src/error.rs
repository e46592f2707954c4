//! The library's errors. Each maps to one `RL_ERR_*` status at the C boundary
//! and carries the message `rl_last_error()` returns.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A required pointer was NULL; names the argument.
    Null(&'static str),
    /// The configuration string is invalid; names the token.
    Config(String),
    /// An OS call failed (shm open/map/permissions).
    Io(String),
    /// The backend (Redis) failed: unreachable, timed out, script error.
    Backend(String),
    /// An existing shared region has another layout or configuration.
    Incompatible(String),
    /// Any other bad argument.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Null(arg) => write!(f, "argument \"{arg}\" is NULL"),
            Error::Config(m) => write!(f, "config: {m}"),
            Error::Io(m) | Error::Backend(m) | Error::Incompatible(m) | Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Error {
        Error::Config(e.0)
    }
}

/// The most bytes of a caller's text a message quotes; longer text is cut
/// there and marked with `...`.
pub(crate) const QUOTE_MAX: usize = 64;

/// The mask that stands for credentials in messages and `Debug` output.
pub(crate) const MASK: &str = "***";

/// `text` (a token of the configuration string, a `url=` value, a name) as
/// an error message quotes it: between double quotes, with any credentials
/// masked ([`redact`]), cut to its first [`QUOTE_MAX`] bytes (then followed
/// by `...` inside the quotes), and with control characters escaped, so that
/// `rl_last_error()` is always short, printable, one line and free of secrets
/// whatever the caller passed. Escapes: `\"`, `\\`, ASCII control bytes and
/// DEL as `\xHH`, other invisible or direction-changing characters as
/// `\u{HHHH}`.
pub fn quoted(text: &str) -> String {
    use std::fmt::Write;

    let text = redact(text);
    let mut cut = text.len().min(QUOTE_MAX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 8);
    out.push('"');
    for c in text[..cut].chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_invisible(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if cut < text.len() {
        out.push_str("...");
    }
    out.push('"');
    out
}

/// C1 controls, zero-width and bidirectional-override characters: text that
/// would print as something other than what it is.
pub(crate) fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `text` with the credentials it may hold replaced by [`MASK`]: the one
/// redaction every message (and every `Debug` of a configuration) goes
/// through.
///
/// The `url=` grammar puts credentials before the LAST `@` (a raw `@` may be
/// part of a password), so everything before the last `@` is treated as
/// secret, except what cannot be: a leading `key=` (letters, digits, `_`), a
/// leading `scheme://`, and after that scheme a user name (the text before
/// the first `:`, which the grammar reads as the user). So
/// `url=redis://alice:s3cret@h:1` reads `url=redis://alice:***@h:1`,
/// `redis://:s3cret@h` reads `redis://:***@h`, `redis://s3cret@h` (a password
/// without a user) reads `redis://***@h`, and `url=redis:/:s3cret@h` (no
/// `://`) reads `url=***@h`. Text without `@` is returned unchanged.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let Some(at) = text.rfind('@') else { return std::borrow::Cow::Borrowed(text) };
    let head = &text[..at];
    let key_end = match head.find('=') {
        Some(i) if i > 0 && head[..i].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => i + 1,
        _ => 0,
    };
    let rest = &head[key_end..];
    let scheme_end = match rest.find("://") {
        Some(i) if i > 0 && rest[..i].bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)) => Some(i + 3),
        _ => None,
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&head[..key_end]);
    if let Some(s) = scheme_end {
        out.push_str(&rest[..s]);
        if let Some((user, _)) = rest[s..].split_once(':') {
            out.push_str(user);
            out.push(':');
        }
    }
    out.push_str(MASK);
    out.push_str(&text[at..]);
    std::borrow::Cow::Owned(out)
}

/// `message` with every occurrence of `secret` replaced by [`MASK`]: for
/// text the library did not write itself (a Redis client or server error)
/// that might echo a password it was given. Secrets shorter than 4 bytes
/// are left alone: they are guessable anyway, and masking them would mangle
/// ordinary words of the message.
pub fn scrub(message: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 4 => message.replace(s, MASK),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_key_scheme_and_user() {
        for (text, want) in [
            ("url=redis://alice:s3cret@h:1", "url=redis://alice:***@h:1"),
            ("url=redis://:s3cret@h:1/2", "url=redis://:***@h:1/2"),
            ("redis://s3cret@h", "redis://***@h"),
            ("redis://a:p@ss@h", "redis://a:***@h"),
            ("redis://a:p:q@h", "redis://a:***@h"),
            ("redis+cluster://u:pw@a:1,b:2", "redis+cluster://u:***@a:1,b:2"),
            ("url=redis:/:s3cret@h", "url=***@h"),
            ("ulr=redis://:s3cret@h", "ulr=redis://:***@h"),
            ("redis://:sec=ret@h", "redis://:***@h"),
            (":pw://x@h", "***@h"),
            ("name=/a@b", "name=***@b"),
            ("@", "***@"),
            ("url=redis://h:1", "url=redis://h:1"),
            ("", ""),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }

    #[test]
    fn quoting_bounds_and_escapes() {
        assert_eq!(quoted("rate=5/s"), "\"rate=5/s\"");
        assert_eq!(quoted("a\"b\\c\x01\x1b[31m\x7f"), "\"a\\\"b\\\\c\\x01\\x1b[31m\\x7f\"");
        assert_eq!(quoted("\u{202e}x\u{85}é"), "\"\\u{202e}x\\u{0085}é\"");
        let long = "x".repeat(1 << 20);
        let q = quoted(&long);
        assert_eq!(q, format!("\"{}...\"", "x".repeat(QUOTE_MAX)));
        // A cut never splits a character.
        let q = quoted(&"é".repeat(100));
        assert!(q.ends_with("...\"") && q.len() <= QUOTE_MAX + 5, "{q}");
        // Credentials are masked before the text is cut.
        let q = quoted(&format!("url=redis://:{}@h", "p".repeat(200)));
        assert_eq!(q, "\"url=redis://:***@h\"");
        assert_eq!(scrub("AUTH hunter22 refused", Some("hunter22")), "AUTH *** refused");
        assert_eq!(scrub("connection refused", Some("e")), "connection refused");
    }
}
