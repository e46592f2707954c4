//! `rl_create` with `backend=shm` on a region file of arbitrary bytes, then a
//! few checks, resets, stats, rl_top and sweeps on it, then the same file
//! attached by name (no rate=): whatever the file holds, the
//! library answers with a status (an error, or decisions that may be odd for
//! the keys whose slots are garbage) and never crashes, hangs, or touches
//! memory outside the mapping.
//!
//! To get past the header checks, most inputs are a real region (made once
//! per process with the same configuration, holding a few keys) with patches
//! applied: `[0x01 | flags] [length] ([offset u32] [len u8] [bytes])...`.
//! Others are the raw file (`[0x00] bytes...`). A file whose header says
//! "not initialised yet" makes `rl_create` wait 2 s for its creator, by
//! design; the harness gives those the real header's first 16 bytes instead.

#![no_main]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ratelimit::clock::fuzz_set_now;
use ratelimit::ffi::*;

const NOW: u64 = 1_700_000_000_000_000_000;

static NAME: LazyLock<String> = LazyLock::new(|| format!("/rl-fuzz-region-{}", std::process::id()));
static CONFIG: LazyLock<String> =
    LazyLock::new(|| format!("rate=5/s,100/min backend=shm name={} capacity=16 timeout_ms=1", *NAME));
const KEYS: [&[u8]; 6] = [b"a", b"b", b"user:1", b"", b"\xff\x00", b"0123456789012345678901234567890123456789"];

fn last_error() -> String {
    // SAFETY: rl_last_error returns a NUL-terminated string, never NULL.
    unsafe { std::ffi::CStr::from_ptr(rl_last_error()) }.to_string_lossy().into_owned()
}

fn path() -> String {
    format!("/dev/shm/{}", &NAME[1..])
}

fn unlink() {
    let name = std::ffi::CString::new(NAME.as_str()).unwrap();
    rl_shm_unlink(name.as_ptr());
}

fn create() -> (i32, *mut rl_limiter) {
    let config = std::ffi::CString::new(CONFIG.as_str()).unwrap();
    let mut lim = std::ptr::null_mut();
    let rc = rl_create(config.as_ptr(), &mut lim);
    assert!(
        [RL_OK, RL_ERR_IO, RL_ERR_INCOMPATIBLE, RL_ERR_CONFIG].contains(&rc),
        "rl_create = {rc} on a region of arbitrary bytes: {}",
        last_error()
    );
    assert_eq!(rc == RL_OK, !lim.is_null());
    (rc, lim)
}

fn check(lim: *mut rl_limiter, key: &[u8], cost: u64) {
    let mut d = rl_decision { allowed: 7, ..Default::default() };
    let rc = rl_check(lim, key.as_ptr().cast(), key.len(), cost, &mut d);
    assert!([RL_OK, RL_ERR_BACKEND].contains(&rc), "rl_check = {rc}: {}", last_error());
    assert!(d.allowed <= 1, "*out not written, or garbage: {d:?}");
}

/// A real region holding a few keys, with the configuration the harness uses.
static TEMPLATE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    unlink();
    fuzz_set_now(NOW);
    let (rc, lim) = create();
    assert_eq!(rc, RL_OK, "creating the template region");
    for (i, key) in KEYS.iter().enumerate() {
        for _ in 0..=i {
            check(lim, key, 1);
        }
    }
    rl_destroy(lim);
    let bytes = std::fs::read(path()).expect("reading the template region");
    unlink();
    bytes
});

fn input_u32(data: &mut &[u8]) -> u32 {
    let n = data.len().min(4);
    let mut b = [0u8; 4];
    b[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    u32::from_le_bytes(b)
}

fn file_from(data: &[u8]) -> Option<Vec<u8>> {
    let template = &*TEMPLATE;
    let (&mode, mut rest) = data.split_first()?;
    let mut file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut file = template.clone();
        let len = input_u32(&mut rest) as usize;
        match (mode >> 1) & 3 {
            0 => {}
            1 => file.truncate(len % template.len()),
            2 => file.resize(template.len() + len % 65536, 0),
            _ => file.resize(template.len() + len % 65536, 0xff),
        }
        while !rest.is_empty() && !file.is_empty() {
            let at = input_u32(&mut rest) as usize % file.len();
            let (&n, tail) = rest.split_first()?;
            let n = (n as usize % 16).min(tail.len()).min(file.len() - at);
            file[at..at + n].copy_from_slice(&tail[..n]);
            rest = &tail[n..];
        }
        file
    };
    if file.is_empty() {
        return None; // an empty object is a creator between shm_open and ftruncate: waited for
    }
    if file.len() >= 16 {
        let magic = u64::from_le_bytes(file[0..8].try_into().unwrap());
        let real = u64::from_le_bytes(template[0..8].try_into().unwrap());
        let version_ready = file[8..16] == template[8..16];
        if magic == 0 || (magic == real && !version_ready && file[8..12] == template[8..12]) {
            file[..16].copy_from_slice(&template[..16]);
        }
    }
    Some(file)
}

fuzz_target!(|data: &[u8]| {
    let Some(file) = file_from(data) else { return };
    unlink();
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path())
            .expect("creating the region file");
        f.write_all(&file).expect("writing the region file");
    }
    fuzz_set_now(NOW + data.len() as u64 * 37_000_000);
    let (rc, lim) = create();
    if rc == RL_OK {
        let ops = data.last().copied().unwrap_or(0);
        for (i, key) in KEYS.iter().enumerate() {
            check(lim, key, u64::from(ops >> i & 1) + (i as u64 & 1));
        }
        let mut s = rl_stats::default();
        let rc = rl_stats_get(lim, &mut s);
        assert!([RL_OK, RL_ERR_BACKEND].contains(&rc), "rl_stats_get = {rc}: {}", last_error());
        // The heavy-hitter sketches live in the region too: whatever their
        // words hold, rl_top lists sane entries or fails with a status.
        for which in [RL_TOP_LIMITED, RL_TOP_ACTIVE] {
            let mut top = [rl_top_entry { key: [0; 64], key_len: 0, truncated: 0, count: 0, error: 0 }; 8];
            let n = rl_top(lim, which, top.as_mut_ptr(), top.len());
            assert!((0..=8).contains(&n) || n == i64::from(RL_ERR_BACKEND), "rl_top = {n}: {}", last_error());
            for e in &top[..n.max(0) as usize] {
                assert!(e.key_len <= 64 && e.truncated <= 1 && e.error <= e.count, "{e:?}");
            }
        }
        let swept = rl_sweep(lim);
        assert!(swept >= 0 || swept == i64::from(RL_ERR_BACKEND), "rl_sweep = {swept}: {}", last_error());
        let rc = rl_reset(lim, KEYS[0].as_ptr().cast(), KEYS[0].len());
        assert!([RL_OK, RL_ERR_BACKEND].contains(&rc), "rl_reset = {rc}: {}", last_error());
        fuzz_set_now(NOW + 3_600_000_000_000);
        check(lim, KEYS[1], 1);
        check(lim, KEYS[0], 0);
        rl_destroy(lim);
    }
    // The same file attached by name (no rate=): the configuration text in
    // it is used only if it is exactly the canonical one of the region it is
    // in (its hash and whole geometry agree), so an attach that succeeds has
    // the harness's configuration, top= included.
    let attach = std::ffi::CString::new(format!("backend=shm name={} timeout_ms=1", *NAME)).unwrap();
    let mut lim = std::ptr::null_mut();
    let rc = rl_create(attach.as_ptr(), &mut lim);
    assert!(
        [RL_OK, RL_ERR_IO, RL_ERR_INCOMPATIBLE].contains(&rc),
        "attaching: rl_create = {rc} on a region of arbitrary bytes: {}",
        last_error()
    );
    assert_eq!(rc == RL_OK, !lim.is_null());
    if rc == RL_OK {
        let mut text = [0u8; 512];
        let n = rl_describe(lim, text.as_mut_ptr().cast(), text.len());
        assert!(n > 0 && (n as usize) < text.len(), "rl_describe = {n}: {}", last_error());
        let text = std::str::from_utf8(&text[..n as usize]).expect("ASCII");
        let want = "rate=5/s,100/min algorithm=token_bucket capacity=16 top=32 backend=shm ";
        assert!(text.starts_with(want), "attached with {text:?}");
        check(lim, KEYS[2], 1);
        rl_destroy(lim);
    }
    unlink();
});
