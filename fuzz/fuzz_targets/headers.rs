//! `rl_format_headers` on arbitrary decisions, flags and buffer lengths.
//!
//! snprintf semantics must hold: the result is the length of the whole text
//! (without the NUL), at most `buf_len` bytes are written and the last of them
//! is a NUL, a truncated text is a prefix of the whole one, and nothing past
//! `buf_len` is touched (the buffer is followed by guard bytes). Unknown flags
//! are RL_ERR_INVALID and write nothing. The whole text is the one the C API
//! documents, which this harness writes again on its own.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit::ffi::{
    rl_decision, rl_format_headers, RL_ERR_INVALID, RL_ERR_NULL, RL_HEADERS_IETF, RL_HEADERS_LEGACY,
    RL_HEADERS_RETRY_AFTER,
};

const GUARD: usize = 64;
const FILL: u8 = 0xA5;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u64(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }

    /// A u64 that is often one of the values at the edges.
    fn edgy(&mut self) -> u64 {
        let v = self.u64();
        match v & 7 {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - 1,
            3 => (v >> 3) % 2000,
            _ => v >> (v & 63),
        }
    }
}

fn expected(d: &rl_decision, flags: u32) -> String {
    let flags = if flags == 0 { RL_HEADERS_LEGACY | RL_HEADERS_RETRY_AFTER } else { flags };
    let secs = |ms: u64| ms / 1000 + u64::from(ms % 1000 != 0);
    let mut s = String::new();
    if flags & RL_HEADERS_LEGACY != 0 {
        s += &format!("X-RateLimit-Limit: {}\r\n", d.limit);
        s += &format!("X-RateLimit-Remaining: {}\r\n", d.remaining);
        s += &format!("X-RateLimit-Reset: {}\r\n", secs(d.reset_ms));
    }
    if flags & RL_HEADERS_IETF != 0 {
        s += &format!("RateLimit-Policy: \"default\";q={};w={}\r\n", d.limit, secs(d.window_ms));
        s += &format!("RateLimit: \"default\";r={};t={}\r\n", d.remaining, secs(d.reset_ms));
    }
    if flags & RL_HEADERS_RETRY_AFTER != 0 && d.allowed == 0 && d.retry_after_ms != u64::MAX {
        s += &format!("Retry-After: {}\r\n", secs(d.retry_after_ms));
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let head = b.u64();
    let d = rl_decision {
        allowed: match head & 3 {
            0 => 0,
            1 => 1,
            _ => (head >> 32) as u32,
        },
        rate_index: (head >> 8) as u32 & 7,
        limit: b.edgy(),
        remaining: b.edgy(),
        reset_ms: b.edgy(),
        retry_after_ms: b.edgy(),
        window_ms: b.edgy(),
    };
    let flags = match (head >> 16) & 15 {
        0..=7 => ((head >> 16) & 7) as u32,
        8 => (head >> 20) as u32,
        _ => ((head >> 16) & 7) as u32 | (1 << ((head >> 24) & 31)),
    };
    let buf_len = match (head >> 2) & 3 {
        0 => 0,
        1 => ((head >> 40) % 64) as usize,
        _ => ((head >> 40) % 600) as usize,
    };
    let null_buf = buf_len == 0 && head & (1 << 63) != 0;
    let mut buf = vec![FILL; buf_len + GUARD];
    let ptr = if null_buf { std::ptr::null_mut() } else { buf.as_mut_ptr().cast() };
    let n = rl_format_headers(&d, flags, ptr, buf_len);

    assert!(buf[buf_len..].iter().all(|&c| c == FILL), "wrote past buf_len {buf_len}: {d:?} flags {flags}");
    if flags & !(RL_HEADERS_LEGACY | RL_HEADERS_IETF | RL_HEADERS_RETRY_AFTER) != 0 {
        assert_eq!(n, i64::from(RL_ERR_INVALID), "unknown flags 0x{flags:x}");
        assert!(empty_string(&buf, buf_len), "an error must leave the empty string");
        return;
    }
    let want = expected(&d, flags);
    assert_eq!(n, want.len() as i64, "{d:?} flags {flags}: returned {n}, the text is {want:?}");
    assert!(n <= 511, "longer than the documented 511 bytes: {n}");
    if buf_len > 0 {
        let written = (n as usize).min(buf_len - 1);
        assert_eq!(&buf[..written], &want.as_bytes()[..written], "{d:?} flags {flags} buf_len {buf_len}");
        assert_eq!(buf[written], 0, "no NUL at {written} (buf_len {buf_len})");
        assert!(buf[written + 1..buf_len].iter().all(|&c| c == FILL), "wrote past the NUL");
    } else {
        assert!(buf.iter().all(|&c| c == FILL), "wrote into a buffer of length 0");
    }
    // Text only, never a NUL or a bare CR/LF inside a line.
    assert!(want.split("\r\n").all(|l| l.bytes().all(|c| (0x20..0x7f).contains(&c))));

    // Argument errors leave the empty string.
    let mut guard = [FILL; 16];
    assert_eq!(rl_format_headers(std::ptr::null(), flags, guard.as_mut_ptr().cast(), 16), i64::from(RL_ERR_NULL));
    assert_eq!(rl_format_headers(&d, flags, std::ptr::null_mut(), 1), i64::from(RL_ERR_NULL));
    assert!(empty_string(&guard, 16));
});

/// What an error leaves in a buffer of `len` bytes: the empty string (nothing if `len` is 0).
fn empty_string(buf: &[u8], len: usize) -> bool {
    let skip = usize::from(len > 0);
    (len == 0 || buf[0] == 0) && buf[skip..].iter().all(|&c| c == FILL)
}
