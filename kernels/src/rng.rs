//! Seeded, platform-independent randomness: weight initialisation and the global batch schedule.
//!
//! The generator is xoshiro256** seeded through SplitMix64 (`rand_xoshiro`). Everything derived from
//! it here (integers below a bound, uniform and Gaussian floats, shuffles) is written out in this file
//! rather than taken from `rand`, whose algorithms may change between versions: a given seed must give
//! the same weights and the same batches forever, on every node.

#![forbid(unsafe_code)]

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256StarStar;

/// Seeded generator with the few draws the trainer needs.
#[derive(Clone, Debug)]
pub struct Rng(Xoshiro256StarStar);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(Xoshiro256StarStar::seed_from_u64(seed))
    }

    /// An independent stream for a numbered purpose (for example the shuffle of epoch `stream`).
    pub fn stream(seed: u64, stream: u64) -> Self {
        Self::new(seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// An integer in `0..bound` (`bound > 0`). Uses a plain modulo: the bias is below 2^-40 for the
    /// bounds used here (at most a few million) and the rule is trivially the same everywhere.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next_u64() % bound
    }

    /// A float uniform in (0, 1): 53 random bits, never exactly zero.
    pub fn uniform_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal draw (Box-Muller, cosine branch), computed with `libm` only.
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform_open();
        let u2 = self.uniform_open();
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * core::f64::consts::PI * u2)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Fills `order` with the global sample order of `epoch`: a permutation of `0..order.len()` that
/// depends only on `seed` and `epoch`. Batches are consecutive runs of this order, whatever the number
/// of cores or nodes that later share them.
pub fn epoch_order(seed: u64, epoch: u32, order: &mut [u32]) {
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i as u32;
    }
    Rng::stream(seed, epoch as u64).shuffle(order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::stream(42, 0).next_u64(), Rng::stream(42, 1).next_u64());
    }

    #[test]
    fn first_draws_are_pinned() {
        // Any change here changes every initialisation and batch schedule: it must be deliberate.
        let mut r = Rng::new(1);
        assert_eq!(r.next_u64(), 0xB3F2_AF6D_0FC7_10C5);
    }

    #[test]
    fn epoch_order_is_a_permutation() {
        let mut order = [0u32; 1000];
        epoch_order(3, 5, &mut order);
        let mut seen = [false; 1000];
        for &i in &order {
            assert!(!seen[i as usize]);
            seen[i as usize] = true;
        }
        let mut again = [0u32; 1000];
        epoch_order(3, 5, &mut again);
        assert_eq!(order, again);
        epoch_order(3, 6, &mut again);
        assert_ne!(order, again);
    }

    #[test]
    fn gaussian_has_unit_moments() {
        let mut r = Rng::new(5);
        let n = 20_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let g = r.gaussian();
            s += g;
            s2 += g * g;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
