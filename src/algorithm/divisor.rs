//! Division by a rate's constant, without a division instruction.
//!
//! A check divides by numbers fixed when the limiter is made: a token
//! bucket's ticks per unit (`remaining = free / interval`), a window's period
//! (`now % period`). A 64-bit `div` costs tens of cycles, a sixth of a hot
//! key's check; a multiply by a precomputed reciprocal and a shift costs a
//! few. This is the classic round-up method (Granlund and Montgomery,
//! "Division by invariant integers using multiplication", 1994), exact for
//! every u64 numerator: with `l = ceil(log2 d)` and
//! `m = floor(2^64 * (2^l - d) / d) + 1`,
//!
//! ```text
//! q = mulhi(m, n);   n / d = (q + ((n - q) >> 1)) >> (l - 1)
//! ```
//!
//! (`d = 1` is kept apart: it needs no work, and `l - 1` would be negative.)

/// A divisor and its reciprocal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divisor {
    d: u64,
    magic: u64,
    /// `l - 1`, or 0 for `d = 1` (then `magic` is 0 and unused).
    shift: u32,
}

impl Divisor {
    /// The divisor `d` (at least 1).
    pub fn new(d: u64) -> Divisor {
        assert!(d > 0, "a divisor is at least 1");
        if d == 1 {
            return Divisor { d, magic: 0, shift: 0 };
        }
        let l = 64 - (d - 1).leading_zeros(); // ceil(log2 d), 1..=64
                                              // 2^64 * (2^l - d) / d, in 128 bits: 2^l - d < d, so it fits a u64.
        let magic = ((((1u128 << l) - d as u128) << 64) / d as u128) as u64 + 1;
        Divisor { d, magic, shift: l - 1 }
    }

    pub fn get(&self) -> u64 {
        self.d
    }

    /// `n / d`.
    #[inline(always)]
    pub fn div(&self, n: u64) -> u64 {
        if self.d == 1 {
            return n;
        }
        let q = ((self.magic as u128 * n as u128) >> 64) as u64;
        (q + ((n - q) >> 1)) >> self.shift
    }

    /// `n % d`.
    #[inline(always)]
    pub fn rem(&self, n: u64) -> u64 {
        n - self.div(n) * self.d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_edge_and_random_numerators() {
        let mut x = 0x243F_6A88_85A3_08D3u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut divisors =
            vec![1, 2, 3, 5, 7, 10, 60, 641, 1000, 1_000_000, 1 << 32, (1 << 32) + 1, u64::MAX - 1, u64::MAX];
        divisors.extend((0..200).map(|_| next() >> (next() % 64)).filter(|&d| d > 0));
        divisors.extend((0..64).map(|s| 1u64 << s));
        divisors.extend((1..64).map(|s| (1u64 << s) - 1));
        for d in divisors {
            let v = Divisor::new(d);
            let mut numerators = vec![0, 1, d - 1, d, d.wrapping_add(1), u64::MAX, u64::MAX - 1, u64::MAX / 2];
            numerators.extend((0..300).map(|_| next() >> (next() % 64)));
            numerators.extend([d.saturating_mul(3), d.saturating_mul(3) - 1, u64::MAX - u64::MAX % d]);
            for n in numerators {
                assert_eq!(v.div(n), n / d, "{n} / {d}");
                assert_eq!(v.rem(n), n % d, "{n} % {d}");
            }
        }
    }
}
