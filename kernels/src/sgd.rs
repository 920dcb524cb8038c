//! The fixed-point optimizer step: SGD with momentum and weight decay on `i32` Q7.24 parameters,
//! once per step, from the batch's exact `i64` gradient sums.
//!
//! With `m`, `w` in Q7.24, the gradient sum `G` in `grad_frac` fraction bits and the constants `M`
//! (momentum), `D` (learning rate times decay) and `L` (learning rate) in `H = HYPER_FRAC` bits,
//!
//! `m' = floor((B * 2^s1 * (M*m - D*w) - 2^s2 * L*G + B * 2^(e-1)) / (B * 2^e))`, `w' = w + m'`,
//!
//! over one common denominator `B * 2^e` (`B` the batch size, `e = max(H, H - 24 + grad_frac)`,
//! `s1 = e - H`, `s2 = e - (H - 24 + grad_frac)`), rounded once, both results saturated to `i32`.
//! [`sgd_step_wide`] computes it as written, in `i128`: the definition. [`sgd_step`] computes the
//! same integer with the batch and the shifts folded into three constants once per call, so each
//! parameter costs three 64 x 64 -> 128-bit products, a 128-bit sum and one fixed shift.

use crate::fixed::{saturate_i32, HYPER_FRAC, MASTER_FRAC};

/// The optimizer constants in [`HYPER_FRAC`] fraction bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedSgd {
    pub(crate) momentum: i64,
    pub(crate) learning_rate: i64,
    pub(crate) decay_step: i64,
}

/// The exponents of one call: `e`, `s1`, `s2` of the module's formula.
#[derive(Clone, Copy)]
struct Exponents {
    e: u32,
    s1: u32,
    s2: u32,
}

impl Exponents {
    fn new(grad_frac: u32) -> Self {
        let gradient_scale = HYPER_FRAC - MASTER_FRAC + grad_frac; // denominator exponent of the G term
        let e = HYPER_FRAC.max(gradient_scale);
        Exponents { e, s1: e - HYPER_FRAC, s2: e - gradient_scale }
    }
}

/// The step with `B * 2^s1 * M`, `B * 2^s1 * D`, `2^s2 * L` and the rounding term `B * 2^(e-1)`
/// folded into `i64` constants.
///
/// Why it is the definition's integer: the numerator is the same mathematical sum in both, and
/// neither overflows. Each constant is below `2^62` in magnitude (checked when it is made), `m` and
/// `w` are `i32` and `G` is `i64`, so `|fused numerator| < 2 * 2^93 + 2^125 + 2^62 < 2^127`; the
/// definition's intermediate values are the same products before their shifts and sums, so they are
/// bounded by the same figures. The shift by `e` (1..=63) of the 128-bit sum is exact floor
/// division, `floor(floor(x / 2^e) / B) == floor(x / (B * 2^e))`, and keeping the low 64 bits of it
/// is what the definition's `as i64` does.
struct Fused {
    momentum: i64,
    decay: i64,
    rate: i64,
    half: i64,
    e: u32,
    batch: i64,
    /// `log2(batch)` where the batch is a power of two: the division is then a shift (floor
    /// division by `2^k` is an arithmetic shift right by `k`), where `div_euclid` would be one
    /// 64-bit divide per parameter (half the scalar step's time on x86-64).
    batch_shift: Option<u32>,
}

impl Fused {
    /// The folded constants, or `None` where one would reach `2^62` (then the definition runs).
    fn new(sgd: &FixedSgd, grad_frac: u32, batch: u32, decay: bool) -> Option<Self> {
        let Exponents { e, s1, s2 } = Exponents::new(grad_frac);
        if !(1..=63).contains(&e) {
            return None;
        }
        const LIMIT: i64 = 1 << 62;
        let small = |v: i64| (v > -LIMIT && v < LIMIT).then_some(v);
        let scale = |c: i64, factor: i64, shift: u32| {
            c.checked_mul(factor)?.checked_mul(1i64.checked_shl(shift).filter(|&s| s > 0)?).and_then(small)
        };
        let batch = batch as i64;
        let decay_step = if decay { sgd.decay_step } else { 0 };
        Some(Fused {
            momentum: scale(sgd.momentum, batch, s1)?,
            decay: scale(decay_step, batch, s1)?,
            rate: scale(sgd.learning_rate, 1, s2)?,
            half: scale(batch, 1, e - 1)?,
            e,
            batch,
            batch_shift: (batch as u64).is_power_of_two().then(|| (batch as u64).trailing_zeros()),
        })
    }

    /// The same step in 32-bit pieces for vector lanes ([`crate::simd::update`]), where the batch
    /// is a power of two (its division joins the shift: `floor(floor(x / 2^e) / 2^k)` is
    /// `floor(x / 2^(e + k))`) and `e >= 30` (then the numerator, below `2^92` under the split's
    /// bounds, keeps `x / 2^e` within `i64`, so the low 64 bits the definition keeps are all of
    /// it), and the constants are within the split's bounds.
    fn split(&self) -> Option<crate::simd::update::SplitStep> {
        if !(self.batch as u64).is_power_of_two() || self.e < 30 {
            return None;
        }
        let shift = self.e + (self.batch as u64).trailing_zeros();
        crate::simd::update::SplitStep::new(self.momentum, self.decay, self.rate, self.half, shift)
    }

    /// `m'` for one parameter.
    #[inline(always)]
    fn momentum(&self, w: i32, m: i32, g: i64) -> i64 {
        let product = |c: i64, v: i64| c as i128 * v as i128;
        let numerator =
            product(self.momentum, m as i64) - product(self.decay, w as i64) - product(self.rate, g)
                + self.half as i128;
        // The low 64 bits of `numerator >> e`, from its two halves (1 <= e <= 63).
        let (low, high) = (numerator as u64, (numerator >> 64) as u64);
        let shifted = ((low >> self.e) | (high << (64 - self.e))) as i64;
        match self.batch_shift {
            Some(k) => shifted >> k,
            None => shifted.div_euclid(self.batch),
        }
    }
}

/// One step over a layer's weights or biases (`decay` off for biases), in place.
pub fn sgd_step(
    sgd: &FixedSgd,
    params: &mut [i32],
    momentum: &mut [i32],
    grads: &[i64],
    grad_frac: u32,
    batch: u32,
    decay: bool,
) {
    assert!(batch > 0, "an update needs at least one sample");
    match Fused::new(sgd, grad_frac, batch, decay) {
        Some(fused) => {
            if let Some(split) = fused.split() {
                if crate::simd::update::sgd_step_split(&split, params, momentum, grads) {
                    return;
                }
            }
            each_parameter(params, momentum, grads, |w, m, g| fused.momentum(w, m, g))
        }
        None => sgd_step_wide(sgd, params, momentum, grads, grad_frac, batch, decay),
    }
}

/// `m = saturate(new_momentum(w, m, g))`, then `w = saturate(w + m)`, for every parameter.
#[inline(always)]
fn each_parameter(
    params: &mut [i32],
    momentum: &mut [i32],
    grads: &[i64],
    new_momentum: impl Fn(i32, i32, i64) -> i64,
) {
    assert!(params.len() == momentum.len() && params.len() == grads.len());
    for ((w, m), &g) in params.iter_mut().zip(momentum.iter_mut()).zip(grads) {
        *m = saturate_i32(new_momentum(*w, *m, g));
        *w = saturate_i32(*w as i64 + *m as i64);
    }
}

/// The definition of [`sgd_step`]: the module's formula as written, in `i128`.
pub fn sgd_step_wide(
    sgd: &FixedSgd,
    params: &mut [i32],
    momentum: &mut [i32],
    grads: &[i64],
    grad_frac: u32,
    batch: u32,
    decay: bool,
) {
    assert!(batch > 0, "an update needs at least one sample");
    let Exponents { e, s1, s2 } = Exponents::new(grad_frac);
    let decay_step = if decay { sgd.decay_step as i128 } else { 0 };
    let batch = batch as i128;
    let half = (batch << e) / 2;
    each_parameter(params, momentum, grads, |w, m, g| {
        let kept = sgd.momentum as i128 * m as i128 - decay_step * w as i128;
        let numerator = ((kept * batch) << s1) - ((sgd.learning_rate as i128 * g as i128) << s2);
        // floor(floor(x / 2^e) / B) == floor(x / (B * 2^e)): the shift is exact floor division,
        // leaving only a 64-bit division by the batch size.
        let shifted = ((numerator + half) >> e) as i64;
        shifted.div_euclid(batch as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn constants(momentum: i64, learning_rate: i64, decay_step: i64) -> FixedSgd {
        FixedSgd { momentum, learning_rate, decay_step }
    }

    /// A value of random magnitude: uniform bits, then shifted right by a random amount.
    fn spread(rng: &mut Rng) -> i64 {
        (rng.next_u64() as i64) >> (rng.next_u64() % 64)
    }

    /// With every gradient sum below the vector path's limit (as in training), the step is the
    /// definition too: weights and biases of the default constants, batches of 64 and 32, and
    /// momenta and weights over the whole `i32` range.
    #[test]
    fn vector_step_is_the_definition() {
        let mut rng = Rng::new(6);
        let hyper = 1i64 << HYPER_FRAC;
        let sgd = constants(hyper * 9 / 10, hyper / 20, hyper / 20 / 10_000);
        let limit = crate::simd::update::GRAD_LIMIT;
        for (grad_frac, decay) in [(30, true), (29, true), (15, false)] {
            for batch in [64, 32] {
                for len in [0, 1, 5, 64, 67] {
                    let mut w: [i32; 67] = core::array::from_fn(|_| spread(&mut rng) as i32);
                    let mut m: [i32; 67] = core::array::from_fn(|_| spread(&mut rng) as i32);
                    let g: [i64; 67] = core::array::from_fn(|_| spread(&mut rng) % limit);
                    (w[0], m[0], w[1], m[1]) = (i32::MAX, i32::MIN, i32::MIN, i32::MAX);
                    let (mut w_wide, mut m_wide) = (w, m);
                    sgd_step(&sgd, &mut w[..len], &mut m[..len], &g[..len], grad_frac, batch, decay);
                    sgd_step_wide(
                        &sgd,
                        &mut w_wide[..len],
                        &mut m_wide[..len],
                        &g[..len],
                        grad_frac,
                        batch,
                        decay,
                    );
                    assert_eq!((w, m), (w_wide, m_wide), "frac {grad_frac} batch {batch} length {len}");
                }
            }
        }
    }

    #[test]
    fn fused_step_is_the_definition() {
        let mut rng = Rng::new(5);
        let i32_edges = [0, 1, -1, i32::MAX, i32::MIN, i32::MAX - 1, i32::MIN + 1, 1 << 24, -(1 << 24)];
        let i64_edges = [0, 1, -1, i64::MAX, i64::MIN, i64::MIN + 1, 1 << 40, -(1 << 40), 1 << 62];
        let hyper = 1i64 << HYPER_FRAC;
        let product_constants = [
            constants(hyper * 9 / 10, hyper / 20, hyper / 20 / 10_000), // the defaults
            constants(hyper - 1, hyper, hyper),
            constants(0, 1, 0),
            constants(hyper * 4, hyper * 2, 7),
            constants(-hyper / 3, -hyper / 7, -5),
            // beyond the fused range for the larger batches: the definition runs
            constants(1 << 50, 1 << 41, 1 << 45),
        ];
        // The definition's own `i128` arithmetic is exact for these constants, fractions and
        // batches (its largest term, `L * G << s2`, stays below 2^113).
        for sgd in product_constants {
            for grad_frac in [15, 23, 24, 29, 30, 40] {
                for batch in [1, 2, 3, 64, 100, 1 << 16, 1 << 20] {
                    for decay in [false, true] {
                        let n = 64;
                        let mut w: [i32; 64] = core::array::from_fn(|i| {
                            i32_edges.get(i).copied().unwrap_or_else(|| spread(&mut rng) as i32)
                        });
                        let mut m: [i32; 64] = core::array::from_fn(|i| {
                            i32_edges.get(n - 1 - i).copied().unwrap_or_else(|| spread(&mut rng) as i32)
                        });
                        let g: [i64; 64] = core::array::from_fn(|i| {
                            i64_edges.get(i).copied().unwrap_or_else(|| spread(&mut rng))
                        });
                        let (mut w_wide, mut m_wide) = (w, m);
                        sgd_step(&sgd, &mut w, &mut m, &g, grad_frac, batch, decay);
                        sgd_step_wide(&sgd, &mut w_wide, &mut m_wide, &g, grad_frac, batch, decay);
                        assert_eq!(
                            (w, m),
                            (w_wide, m_wide),
                            "{sgd:?} frac {grad_frac} batch {batch} {decay}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_fused_constants_are_taken_only_within_their_bound() {
        let sgd = constants(1 << 40, 1 << 40, 0);
        assert!(Fused::new(&sgd, 30, 64, true).is_some());
        // 2^40 * 2^16 * 2^(30 - 24) = 2^62 is not below 2^62.
        assert!(Fused::new(&sgd, 30, 1 << 16, true).is_none());
        assert!(Fused::new(&sgd, 30, (1 << 16) - 1, true).is_some());
        assert!(Fused::new(&constants(i64::MAX, 1, 0), 30, 1, false).is_none());
        // The trainer's own constants take the fused path for weights and biases.
        let defaults = <crate::Fixed as crate::Arith>::sgd_constants(&crate::SgdConfig::default());
        for grad_frac in [15, 29, 30] {
            assert!(Fused::new(&defaults, grad_frac, 64, true).is_some(), "{grad_frac}");
        }
    }
}
