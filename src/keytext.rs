//! Keys as text: the one unambiguous encoding of a key's bytes that
//! `rl_metrics` puts in its `key` label and `rlctl` prints and reads back.
//!
//! - printable ASCII (0x20 to 0x7e) other than `\` stands for itself;
//! - `\` is written `\\`;
//! - every other byte (control, DEL, non-ASCII) is written `\xHH`, two
//!   lower-case hex digits.
//!
//! The text is printable ASCII on one line, every key has exactly one
//! encoding, and `decode` accepts exactly the encodings: `decode(encode(k))
//! == k` for every byte string `k`, and `encode(decode(t)) == t` for every
//! text `t` that `decode` accepts. (The Prometheus format escapes the text
//! once more, see `metrics.rs`.)

use std::fmt;

/// Appends the encoding of `key` to `out`.
pub fn encode_into(key: &[u8], out: &mut impl fmt::Write) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in key.iter().enumerate() {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            continue;
        }
        // key[start..i] is printable ASCII, hence UTF-8.
        out.write_str(std::str::from_utf8(&key[start..i]).map_err(|_| fmt::Error)?)?;
        if b == b'\\' {
            out.write_str("\\\\")?;
        } else {
            let esc = [b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]];
            out.write_str(std::str::from_utf8(&esc).map_err(|_| fmt::Error)?)?;
        }
        start = i + 1;
    }
    out.write_str(std::str::from_utf8(&key[start..]).map_err(|_| fmt::Error)?)
}

/// The encoding of `key`.
pub fn encode(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    // Writing to a String cannot fail.
    let _ = encode_into(key, &mut s);
    s
}

/// Why a text is not the encoding of any key: the byte offset of the
/// problem and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// The key whose encoding is `text`, or where and why `text` is not one.
pub fn decode(text: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut key = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b != b'\\' {
            if !(0x20..0x7f).contains(&b) {
                return Err(DecodeError { at: i, what: "a byte that is not printable ASCII (write it as \\xHH)" });
            }
            key.push(b);
            i += 1;
            continue;
        }
        match text.get(i + 1) {
            Some(b'\\') => {
                key.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let digits =
                    (text.get(i + 2).copied().and_then(hex_digit), text.get(i + 3).copied().and_then(hex_digit));
                let (Some(hi), Some(lo)) = digits else {
                    return Err(DecodeError { at: i, what: "\\x not followed by two lower-case hex digits" });
                };
                let byte = hi << 4 | lo;
                if (0x20..0x7f).contains(&byte) {
                    return Err(DecodeError { at: i, what: "\\xHH of a printable character (write it, \\ as \\\\)" });
                }
                key.push(byte);
                i += 4;
            }
            Some(_) => return Err(DecodeError { at: i, what: "an escape other than \\\\ or \\xHH" }),
            None => return Err(DecodeError { at: i, what: "a lone \\ at the end" }),
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"api-key 1"), "api-key 1");
        assert_eq!(encode(b"a\\b\"c}"), "a\\\\b\"c}");
        assert_eq!(encode(b"\n\0\x7f\xff\x1f"), "\\x0a\\x00\\x7f\\xff\\x1f");
        assert_eq!(encode("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(decode(b"a\\\\b\\x0a\\xff").unwrap(), b"a\\b\n\xff");
        for (bad, at) in [
            (&b"\\"[..], 0),
            (b"ab\\x", 2),
            (b"\\xf", 0),
            (b"\\xFF", 0),
            (b"\\x41", 0),
            (b"\\x5c", 0),
            (b"\\n", 0),
            (b"a\nb", 1),
            (b"\xff", 0),
            (b"x\\\\\\", 3),
        ] {
            assert_eq!(decode(bad).map_err(|e| e.at), Err(at), "{bad:?}");
        }
    }

    /// A xorshift stream: the tests need no crate for randomness.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn round_trip_of_every_byte_string() {
        // Every string of up to two bytes, exhaustively.
        for a in 0..=255u8 {
            assert_eq!(decode(encode(&[a]).as_bytes()).unwrap(), [a]);
            for b in 0..=255u8 {
                let k = [a, b];
                let t = encode(&k);
                assert!(t.bytes().all(|c| (0x20..0x7f).contains(&c)), "{t}");
                assert_eq!(decode(t.as_bytes()).unwrap(), k);
            }
        }
        // Random strings, biased towards the bytes that need escaping.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let len = (next(&mut s) % 80) as usize;
            let k: Vec<u8> = (0..len)
                .map(|_| match next(&mut s) % 4 {
                    0 => b"\\x\"}\n{0aff"[(next(&mut s) % 10) as usize],
                    _ => next(&mut s) as u8,
                })
                .collect();
            let t = encode(&k);
            assert_eq!(decode(t.as_bytes()).unwrap(), k, "{t}");
        }
    }

    #[test]
    fn decode_accepts_only_encodings() {
        // Random texts over the characters of the encoding: whatever decode
        // accepts encodes back to the same text, so each key has one text.
        let alphabet = b"\\x0af9Fgz\" \n";
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut accepted = 0;
        for _ in 0..50_000 {
            let len = (next(&mut s) % 12) as usize;
            let t: Vec<u8> = (0..len).map(|_| alphabet[(next(&mut s) % alphabet.len() as u64) as usize]).collect();
            if let Ok(k) = decode(&t) {
                assert_eq!(encode(&k).as_bytes(), &t[..], "{t:?}");
                accepted += 1;
            }
        }
        assert!(accepted > 1000, "{accepted}");
    }
}
