//! The keyed hash that turns a client-chosen key into a table fingerprint.
//!
//! Keys come from clients (API keys, IPs), so the table must not let anyone
//! aim keys at one slot: the hash is SipHash-1-3 (the variant Rust's own
//! `HashMap` uses) under a secret 128-bit seed drawn at random per table (for
//! shared memory the seed lives in the region header, so every process of the
//! region hashes alike). SipHash is a PRF: without the seed, fingerprints of
//! chosen keys are unpredictable.
//!
//! A table stores the 64-bit fingerprint, never the key, so keys of any length
//! take the same room. Two distinct live keys share a slot only if their
//! fingerprints collide: about n²/2⁶⁵ for n live keys (3·10⁻⁸ for a million).

/// A 128-bit hash seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed(pub [u64; 2]);

impl Seed {
    /// A fresh secret seed from the operating system's random source.
    pub fn random() -> std::io::Result<Seed> {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let lo = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let hi = u64::from_le_bytes(bytes[8..].try_into().unwrap());
        Ok(Seed([lo, hi]))
    }

    /// The key's fingerprint: SipHash-1-3, never 0 (0 marks an empty slot).
    #[inline]
    pub fn fingerprint(&self, key: &[u8]) -> u64 {
        siphash::<1, 3>(self.0, key) | 1
    }
}

/// One SipRound on the four state words.
#[inline(always)]
fn round(v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64) {
    *v0 = v0.wrapping_add(*v1);
    *v1 = v1.rotate_left(13) ^ *v0;
    *v0 = v0.rotate_left(32);
    *v2 = v2.wrapping_add(*v3);
    *v3 = v3.rotate_left(16) ^ *v2;
    *v0 = v0.wrapping_add(*v3);
    *v3 = v3.rotate_left(21) ^ *v0;
    *v2 = v2.wrapping_add(*v1);
    *v1 = v1.rotate_left(17) ^ *v2;
    *v2 = v2.rotate_left(32);
}

/// The last `tail.len()` (< 8) bytes of a message as a little-endian word,
/// read with at most three loads instead of a loop over the bytes: 4..=7
/// bytes as two overlapping 4-byte loads, 1..=3 as the first, middle and
/// last bytes (which overlap the same way). The overlapping bytes are the
/// same bytes, so OR-ing them in twice changes nothing.
#[inline(always)]
fn tail_word(tail: &[u8]) -> u64 {
    let n = tail.len();
    let u32_at = |i: usize| u32::from_le_bytes([tail[i], tail[i + 1], tail[i + 2], tail[i + 3]]) as u64;
    if n >= 4 {
        u32_at(0) | u32_at(n - 4) << (8 * (n - 4))
    } else if n > 0 {
        tail[0] as u64 | (tail[n / 2] as u64) << (8 * (n / 2)) | (tail[n - 1] as u64) << (8 * (n - 1))
    } else {
        0
    }
}

/// SipHash-C-D with a 64-bit output, as specified by Aumasson and Bernstein.
/// The state is four locals (registers), not an array.
#[inline(always)]
fn siphash<const C: usize, const D: usize>(key: [u64; 2], data: &[u8]) -> u64 {
    let mut v0 = key[0] ^ 0x736f_6d65_7073_6575;
    let mut v1 = key[1] ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = key[0] ^ 0x6c79_6765_6e65_7261;
    let mut v3 = key[1] ^ 0x7465_6462_7974_6573;
    let mut blocks = data.chunks_exact(8);
    for block in &mut blocks {
        let m = u64::from_le_bytes(block.try_into().unwrap());
        v3 ^= m;
        for _ in 0..C {
            round(&mut v0, &mut v1, &mut v2, &mut v3);
        }
        v0 ^= m;
    }
    let last = (data.len() as u64) << 56 | tail_word(blocks.remainder());
    v3 ^= last;
    for _ in 0..C {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^= last;
    v2 ^= 0xff;
    for _ in 0..D {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    /// Our rounds, run as SipHash-2-4, must match the standard library's
    /// SipHash-2-4 byte for byte; 1-3 differs only in the round counts.
    #[test]
    #[allow(deprecated)]
    fn matches_reference_siphash_2_4() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for key in [[0u64, 0], [0x0706050403020100, 0x0f0e0d0c0b0a0908], [u64::MAX, 12345]] {
            for len in (0..40).chain([63, 64, 65, 999, 1000]) {
                let mut reference = std::hash::SipHasher::new_with_keys(key[0], key[1]);
                reference.write(&data[..len]);
                assert_eq!(siphash::<2, 4>(key, &data[..len]), reference.finish(), "len {len}");
            }
        }
        // The paper's test vector: key 00..0f, message 00..0e.
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash::<2, 4>([0x0706050403020100, 0x0f0e0d0c0b0a0908], &msg), 0xa129ca6149be45e5);
    }

    #[test]
    fn fingerprints_depend_on_seed_and_every_byte() {
        let a = Seed([1, 2]);
        let b = Seed([1, 3]);
        assert_ne!(a.fingerprint(b"key"), b.fingerprint(b"key"));
        assert_ne!(a.fingerprint(b"a\0b"), a.fingerprint(b"a\0c"));
        assert_ne!(a.fingerprint(b"a"), a.fingerprint(b"a\0"));
        assert_eq!(a.fingerprint(b"") & 1, 1);
        let r1 = Seed::random().unwrap();
        let r2 = Seed::random().unwrap();
        assert_ne!(r1, r2);
    }
}
