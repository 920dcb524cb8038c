//! The optimizer step's per-parameter arithmetic in vector lanes, for constants and gradients
//! small enough that 32 x 32 -> 64-bit products carry it exactly ([`crate::sgd`] decides when).
//!
//! With `X = X1 * 2^30 + X0` (`X0 = X & (2^30 - 1)`, `X1 = X >> 30`) for each constant and for
//! the gradient sum `G`, the fused step's numerator
//!
//! `N = Mc * m - Dc * w - Rc * G + half`
//!
//! is `2^30 * B + C` with
//!
//! `B = Mc1 * m - Dc1 * w - R1 * G0 - R0 * G1 - 2^30 * R1 * G1` and
//! `C = Mc0 * m - Dc0 * w - R0 * G0 + half`,
//!
//! every product one `smull`/`smlal` of two 32-bit lanes. Then
//! `floor(N / 2^E) = floor((B + floor(C / 2^30)) / 2^(E - 30))` for `E >= 30` (the low 30 bits
//! of `C` cannot change a floor by `2^E`), an arithmetic shift of a 64-bit lane.
//!
//! **No lane overflows** under the bounds [`SplitStep::new`] checks: `|Mc|, |Dc| < 2^59`
//! (so `|Mc1|, |Dc1| < 2^29`), `|Rc| < 2^40` (`R1 < 2^10`), `0 <= half < 2^60`, and every
//! `|G| < 2^50` (`|G1| < 2^20`), with `m`, `w` any `i32`: each product of `B` is below `2^60`
//! (`2^30 R1 G1` too), so `|B| < 2^62`; each term of `C` is below `2^61`, so `|C| < 2^63`.

/// Gradient sums at or past this magnitude take the 128-bit path.
pub const GRAD_LIMIT: i64 = 1 << 50;

/// The step's constants cut into 30-bit pieces (see the module's formula).
#[derive(Clone, Copy, Debug)]
pub struct SplitStep {
    /// `[Mc1, Dc1, R1, R0]`.
    high: [i32; 4],
    /// `[Mc0, Dc0, 0, 0]`.
    low: [i32; 4],
    half: i64,
    /// `E - 30`.
    shift: u32,
}

impl SplitStep {
    /// The split of `m' = floor((momentum * m - decay * w - rate * G + half) / 2^shift)`, or `None`
    /// where a bound of the module's proof does not hold.
    pub fn new(momentum: i64, decay: i64, rate: i64, half: i64, shift: u32) -> Option<Self> {
        let small = |v: i64, bits: u32| v.unsigned_abs() < 1 << bits;
        if !(small(momentum, 59) && small(decay, 59) && small(rate, 40)) {
            return None;
        }
        if !(0..1 << 60).contains(&half) || !(31..=93).contains(&shift) {
            return None;
        }
        let high = |v: i64| (v >> 30) as i32;
        let low = |v: i64| (v & ((1 << 30) - 1)) as i32;
        Some(SplitStep {
            high: [high(momentum), high(decay), high(rate), low(rate)],
            low: [low(momentum), low(decay), 0, 0],
            half,
            shift: shift - 30,
        })
    }

    /// `m'` for one parameter, in the pieces of the module's formula (the vector lanes' integers).
    #[inline]
    fn momentum(&self, w: i32, m: i32, g: i64) -> i64 {
        let [mc1, dc1, r1, r0] = self.high.map(i64::from);
        let [mc0, dc0, _, _] = self.low.map(i64::from);
        let (g1, g0) = (g >> 30, g & ((1 << 30) - 1));
        let (m, w) = (m as i64, w as i64);
        let b = mc1 * m - dc1 * w - r1 * g0 - r0 * g1 - ((r1 * g1) << 30);
        let c = mc0 * m - dc0 * w - r0 * g0 + self.half;
        (b + (c >> 30)) >> self.shift
    }
}

/// The step `m = saturate(m')`, `w = saturate(w + m)` for every parameter, if this platform has
/// the vector path and every gradient sum is below [`GRAD_LIMIT`] in magnitude; returns `false`,
/// having changed nothing, otherwise (the caller's 128-bit path then runs, as it does on every
/// platform without the vector path: the pieces only pay where lanes take them).
pub fn sgd_step_split(step: &SplitStep, params: &mut [i32], momentum: &mut [i32], grads: &[i64]) -> bool {
    assert!(params.len() == momentum.len() && params.len() == grads.len());
    if !platform::vector() || !all_magnitudes_below(grads, GRAD_LIMIT) {
        return false;
    }
    let done = platform::step(step, params, momentum, grads);
    sgd_step_split_scalar(step, &mut params[done..], &mut momentum[done..], &grads[done..]);
    true
}

/// Whether every value's magnitude is below `limit` (a vector path's bound, checked once per
/// call; aarch64 four values at a time, x86-64 eight at the AVX-512 level).
pub(crate) fn all_magnitudes_below(values: &[i64], limit: i64) -> bool {
    platform::all_below(values, limit)
}

/// The portable definition of [`sgd_step_split`]'s arithmetic (for gradients below the limit).
pub fn sgd_step_split_scalar(step: &SplitStep, params: &mut [i32], momentum: &mut [i32], grads: &[i64]) {
    for ((w, m), &g) in params.iter_mut().zip(momentum.iter_mut()).zip(grads) {
        *m = crate::fixed::saturate_i32(step.momentum(*w, *m, g));
        *w = w.saturating_add(*m);
    }
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
mod platform {
    /// No vector path here: [`super::sgd_step_split`] refuses before it would use [`step`].
    pub fn vector() -> bool {
        false
    }
    pub fn all_below(grads: &[i64], limit: i64) -> bool {
        grads.iter().all(|g| g.unsigned_abs() < limit as u64)
    }
    pub fn step(_: &super::SplitStep, _: &mut [i32], _: &mut [i32], _: &[i64]) -> usize {
        0
    }
}

#[cfg(target_arch = "x86_64")]
mod platform {
    use crate::simd::level::{self, Level};
    use core::arch::x86_64::*;

    /// AVX-512 F: eight parameters per loop trip, in 64-bit lanes (`vpmuldq` takes the low 32
    /// bits of each, the module's 32 x 32 -> 64-bit products). Below that level there is no
    /// vector path (SSE2 and AVX2 have no 64-bit arithmetic shift or saturating narrowing).
    pub fn vector() -> bool {
        level::current() == Level::Avx512
    }

    pub fn all_below(grads: &[i64], limit: i64) -> bool {
        if grads.len() < 8 || !vector() {
            return grads.iter().all(|g| g.unsigned_abs() < limit as u64);
        }
        // SAFETY: the AVX-512 level is in use only where the CPU has AVX-512 F, BW and VNNI
        // ([`level::force`] and the environment variable refuse it otherwise).
        unsafe { all_below_avx512(grads, limit) }
    }

    /// [`all_below`] eight at a time: `vpabsq` (i64::MIN stays itself, which the unsigned
    /// comparison still finds at or past the limit), then an unsigned comparison into a mask.
    #[target_feature(enable = "avx512f")]
    fn all_below_avx512(grads: &[i64], limit: i64) -> bool {
        let bound = _mm512_set1_epi64(limit);
        let (eights, rest) = grads.as_chunks::<8>();
        let mut past: __mmask8 = 0;
        for eight in eights {
            // SAFETY: `eight` holds 64 bytes; `loadu` has no alignment requirement.
            let g = unsafe { _mm512_loadu_si512(eight.as_ptr().cast()) };
            past |= _mm512_cmpge_epu64_mask(_mm512_abs_epi64(g), bound);
        }
        past == 0 && rest.iter().all(|g| g.unsigned_abs() < limit as u64)
    }

    /// The parameters of whole eights stepped (none below the AVX-512 level); the caller steps
    /// the rest with the scalar definition. The step is in place, so the ragged end cannot be
    /// eight overlapping values as in the other kernels.
    pub fn step(step: &super::SplitStep, params: &mut [i32], momentum: &mut [i32], grads: &[i64]) -> usize {
        if !vector() {
            return 0;
        }
        // SAFETY: as in [`all_below`].
        unsafe { step_avx512(step, params, momentum, grads) }
    }

    /// The lanes of [`step`]: the module's `B` and `C` from sign-extended `w` and `m`, the
    /// gradient's pieces `G1 = G >> 30` (below 2^20 in magnitude, so its low 32 bits are it) and
    /// `G0`, and the constants' pieces, every product one `vpmuldq`; the sums wrap exactly where
    /// the scalar definition's would (never, under the module's bounds). `vpmovsqd` saturates
    /// `m'` into an `i32`, and `w + m'` in 64 bits saturated the same way is `saturating_add`.
    #[target_feature(enable = "avx512f")]
    fn step_avx512(
        step: &super::SplitStep,
        params: &mut [i32],
        momentum: &mut [i32],
        grads: &[i64],
    ) -> usize {
        let [mc1, dc1, r1, r0] = step.high.map(|v| _mm512_set1_epi64(v as i64));
        let [mc0, dc0, _, _] = step.low.map(|v| _mm512_set1_epi64(v as i64));
        let (half, low_bits) = (_mm512_set1_epi64(step.half), _mm512_set1_epi64((1 << 30) - 1));
        let count = _mm_set_epi64x(0, step.shift as i64);
        let (mul, add, sub) = (_mm512_mul_epi32, _mm512_add_epi64, _mm512_sub_epi64);
        let (ws, ms, gs) =
            (params.as_chunks_mut::<8>().0, momentum.as_chunks_mut::<8>().0, grads.as_chunks::<8>().0);
        let whole = 8 * ws.len();
        for ((w8, m8), g8) in ws.iter_mut().zip(ms).zip(gs) {
            // SAFETY: `w8` and `m8` hold 32 bytes, `g8` 64; `loadu` has no alignment requirement.
            let (w, m, g) = unsafe {
                (
                    _mm512_cvtepi32_epi64(_mm256_loadu_si256(w8.as_ptr().cast())),
                    _mm512_cvtepi32_epi64(_mm256_loadu_si256(m8.as_ptr().cast())),
                    _mm512_loadu_si512(g8.as_ptr().cast()),
                )
            };
            let (g1, g0) = (_mm512_srai_epi64::<30>(g), _mm512_and_si512(g, low_bits));
            let b = sub(
                sub(sub(sub(mul(mc1, m), mul(dc1, w)), mul(r1, g0)), mul(r0, g1)),
                _mm512_slli_epi64::<30>(mul(r1, g1)),
            );
            let c = add(sub(sub(mul(mc0, m), mul(dc0, w)), mul(r0, g0)), half);
            let n = _mm512_sra_epi64(add(b, _mm512_srai_epi64::<30>(c)), count);
            let m_new = _mm512_cvtsepi64_epi32(n);
            let w_new = _mm512_cvtsepi64_epi32(add(w, _mm512_cvtepi32_epi64(m_new)));
            // SAFETY: `w8` and `m8` hold 32 bytes; `storeu` has no alignment requirement.
            unsafe {
                _mm256_storeu_si256(m8.as_mut_ptr().cast(), m_new);
                _mm256_storeu_si256(w8.as_mut_ptr().cast(), w_new);
            }
        }
        whole
    }
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use core::arch::asm;

    /// NEON: four parameters per loop trip.
    pub fn vector() -> bool {
        true
    }

    pub fn all_below(grads: &[i64], limit: i64) -> bool {
        let whole = grads.len() / 4 * 4;
        let mut any: u64 = 0;
        if whole > 0 {
            // SAFETY: the loop reads `whole <= grads.len()` values, four at a time, advancing the
            // pointer; `ld1` `.2d` needs only the 8-byte alignment `i64` has. `abs` of i64::MIN is
            // itself, which `cmhs` (unsigned) still finds at or past the limit.
            unsafe {
                asm!(
                    "dup v20.2d, {limit}",
                    "movi v21.16b, #0",
                    "2:",
                    "ld1 {{v16.2d, v17.2d}}, [{p}], #32",
                    "abs v16.2d, v16.2d",
                    "abs v17.2d, v17.2d",
                    "cmhs v16.2d, v16.2d, v20.2d",
                    "cmhs v17.2d, v17.2d, v20.2d",
                    "orr v21.16b, v21.16b, v16.16b",
                    "orr v21.16b, v21.16b, v17.16b",
                    "subs {n}, {n}, #4",
                    "b.ne 2b",
                    "umaxv s21, v21.4s",
                    "fmov {any:w}, s21",
                    n = inout(reg) whole => _,
                    p = inout(reg) grads.as_ptr() => _,
                    limit = in(reg) limit,
                    any = out(reg) any,
                    out("v16") _, out("v17") _, out("v20") _, out("v21") _,
                    options(nostack, readonly)
                );
            }
        }
        any == 0 && grads[whole..].iter().all(|g| g.unsigned_abs() < limit as u64)
    }

    /// The step for the first multiple of four parameters, four at a time; returns how many.
    pub fn step(step: &super::SplitStep, params: &mut [i32], momentum: &mut [i32], grads: &[i64]) -> usize {
        let whole = params.len() / 4 * 4;
        if whole == 0 {
            return 0;
        }
        // SAFETY: the three slices hold `params.len()` values (asserted by the caller); the loop
        // reads and writes `whole` of each, four at a time, advancing the pointers (`ld1`/`st1`
        // need only element alignment); the constants are read from two 16-byte arrays. The
        // lanes' integers are those of `SplitStep::momentum` (see the module's bounds).
        //
        // v0 m, v1 w, v2/v3 G; v4 G0 and v6 G1 as 32-bit lanes; v8/v11 B, v9/v12 C for the low
        // and high two parameters; v30 [Mc1, Dc1, R1, R0], v31 [Mc0, Dc0, 0, 0], v29 half, v28
        // the 30-bit mask, v27 the final right shift (negative, for `sshl`).
        unsafe {
            asm!(
                "ld1 {{v30.4s}}, [{high}]",
                "ld1 {{v31.4s}}, [{low}]",
                "dup v29.2d, {half}",
                "movi v28.2d, #0",
                "dup v28.2d, {mask}",
                "dup v27.2d, {neg_shift}",
                "2:",
                "ld1 {{v0.4s}}, [{pm}]",
                "ld1 {{v1.4s}}, [{pw}]",
                "ld1 {{v2.2d, v3.2d}}, [{pg}], #32",
                "and v4.16b, v2.16b, v28.16b",
                "and v5.16b, v3.16b, v28.16b",
                "sshr v6.2d, v2.2d, #30",
                "sshr v7.2d, v3.2d, #30",
                "xtn v4.2s, v4.2d",
                "xtn2 v4.4s, v5.2d",
                "xtn v6.2s, v6.2d",
                "xtn2 v6.4s, v7.2d",
                // the low two parameters
                "smull v8.2d, v0.2s, v30.s[0]",
                "smlsl v8.2d, v1.2s, v30.s[1]",
                "smlsl v8.2d, v4.2s, v30.s[2]",
                "smlsl v8.2d, v6.2s, v30.s[3]",
                "mov v9.16b, v29.16b",
                "smlal v9.2d, v0.2s, v31.s[0]",
                "smlsl v9.2d, v1.2s, v31.s[1]",
                "smlsl v9.2d, v4.2s, v30.s[3]",
                "smull v10.2d, v6.2s, v30.s[2]",
                "shl v10.2d, v10.2d, #30",
                "sub v8.2d, v8.2d, v10.2d",
                "sshr v9.2d, v9.2d, #30",
                "add v8.2d, v8.2d, v9.2d",
                "sshl v8.2d, v8.2d, v27.2d",
                // the high two
                "smull2 v11.2d, v0.4s, v30.s[0]",
                "smlsl2 v11.2d, v1.4s, v30.s[1]",
                "smlsl2 v11.2d, v4.4s, v30.s[2]",
                "smlsl2 v11.2d, v6.4s, v30.s[3]",
                "mov v12.16b, v29.16b",
                "smlal2 v12.2d, v0.4s, v31.s[0]",
                "smlsl2 v12.2d, v1.4s, v31.s[1]",
                "smlsl2 v12.2d, v4.4s, v30.s[3]",
                "smull2 v13.2d, v6.4s, v30.s[2]",
                "shl v13.2d, v13.2d, #30",
                "sub v11.2d, v11.2d, v13.2d",
                "sshr v12.2d, v12.2d, #30",
                "add v11.2d, v11.2d, v12.2d",
                "sshl v11.2d, v11.2d, v27.2d",
                // m' saturated, then w + m' saturated
                "sqxtn v14.2s, v8.2d",
                "sqxtn2 v14.4s, v11.2d",
                "sqadd v15.4s, v1.4s, v14.4s",
                "st1 {{v14.4s}}, [{pm}], #16",
                "st1 {{v15.4s}}, [{pw}], #16",
                "subs {n}, {n}, #4",
                "b.ne 2b",
                n = inout(reg) whole => _,
                pm = inout(reg) momentum.as_mut_ptr() => _,
                pw = inout(reg) params.as_mut_ptr() => _,
                pg = inout(reg) grads.as_ptr() => _,
                high = in(reg) step.high.as_ptr(),
                low = in(reg) step.low.as_ptr(),
                half = in(reg) step.half,
                mask = in(reg) (1i64 << 30) - 1,
                neg_shift = in(reg) -(step.shift as i64),
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
                out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                out("v12") _, out("v13") _, out("v14") _, out("v15") _, out("v27") _,
                out("v28") _, out("v29") _, out("v30") _, out("v31") _,
                options(nostack)
            );
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The split arithmetic is the 128-bit formula, at the bounds' edges and for random values, in
    /// the vector path (aarch64, and x86-64 at the AVX-512 level, at every length up to 40, its
    /// tails in the scalar one) and in the scalar definition elsewhere.
    #[test]
    fn split_step_is_the_wide_formula() {
        let mut rng = Rng::new(17);
        let edges_i32 = [0, 1, -1, i32::MAX, i32::MIN, i32::MAX - 1, i32::MIN + 1, 1 << 24, -(1 << 24)];
        let edges_g =
            [0, 1, -1, GRAD_LIMIT - 1, -(GRAD_LIMIT - 1), 1 << 30, -(1 << 30), (1 << 30) - 1, -(1 << 30) - 1];
        let constants = [
            // MxLenet's weights: 0.9 and 5e-6 times 2^52, 0.05 times 2^40, half 2^51, E 52
            (4_053_239_664_633_446, 22_517_998_136, 54_975_581_389, 1 << 51, 52),
            ((1 << 59) - 1, -((1 << 59) - 1), (1 << 40) - 1, (1 << 60) - 1, 93),
            (-(1 << 58), 1 << 58, -((1 << 40) - 1), 0, 31),
            (12_345, -678, 9, 1 << 20, 40),
        ];
        for (mc, dc, rc, half, shift) in constants {
            let step = SplitStep::new(mc, dc, rc, half, shift).expect("within the bounds");
            for len in 0..40 {
                let pick = |rng: &mut Rng, edges: &[i64], i: usize, bits: u64| {
                    edges
                        .get(i)
                        .copied()
                        .unwrap_or_else(|| (rng.next_u64() as i64) >> (64 - rng.below(bits) - 1))
                };
                let w: [i32; 40] =
                    core::array::from_fn(|i| pick(&mut rng, &edges_i32.map(i64::from), i, 32) as i32);
                let m: [i32; 40] =
                    core::array::from_fn(|i| pick(&mut rng, &edges_i32.map(i64::from), 39 - i, 32) as i32);
                let g: [i64; 40] = core::array::from_fn(|i| {
                    pick(&mut rng, &edges_g, (i + len) % 40, 50).clamp(-GRAD_LIMIT + 1, GRAD_LIMIT - 1)
                });
                let (mut w_fast, mut m_fast) = (w, m);
                let vector = sgd_step_split(&step, &mut w_fast[..len], &mut m_fast[..len], &g[..len]);
                let exists = cfg!(target_arch = "aarch64")
                    || cfg!(target_arch = "x86_64")
                        && crate::simd::level::current() == crate::simd::level::Level::Avx512;
                assert_eq!(vector, exists, "the vector path exactly where it exists");
                if !vector {
                    sgd_step_split_scalar(&step, &mut w_fast[..len], &mut m_fast[..len], &g[..len]);
                }
                for i in 0..len {
                    let n = mc as i128 * m[i] as i128 - dc as i128 * w[i] as i128 - rc as i128 * g[i] as i128
                        + half as i128;
                    let m_new = (n >> shift).clamp(i32::MIN as i128, i32::MAX as i128) as i32;
                    let w_new = w[i].saturating_add(m_new);
                    assert_eq!(
                        (m_fast[i], w_fast[i]),
                        (m_new, w_new),
                        "{mc} {dc} {rc}: {} {} {}",
                        w[i],
                        m[i],
                        g[i]
                    );
                }
            }
        }
    }

    /// A gradient sum at the limit leaves everything to the 128-bit path, unchanged.
    #[test]
    fn large_gradients_are_refused() {
        let step = SplitStep::new(1 << 40, 0, 1 << 30, 0, 40).expect("within the bounds");
        for at in 0..9 {
            let mut g = [1i64; 9];
            g[at] = [GRAD_LIMIT, -GRAD_LIMIT, i64::MIN][at % 3];
            let (mut w, mut m) = ([5i32; 9], [7i32; 9]);
            assert!(!sgd_step_split(&step, &mut w, &mut m, &g));
            assert_eq!((w, m), ([5; 9], [7; 9]));
        }
    }
}
