//! The vector parts of max-pooling before tanh: a row of accumulators rounded into tanh's Q3.12
//! input, and each 2 x 2 window's largest input with the first position (in window order) that
//! holds it. The caller ([`crate::fast`]) turns those into the definition's winners and outputs.
//!
//! aarch64 does eight values, or eight windows, per loop trip in NEON (the scalar loops take
//! about 36 instructions per window on the strict-align target, where even the compiler's own
//! vectorisation of the rounding moves every `i64` through the stack); x86-64 takes eight (or
//! four) windows at a time in SSE2, tanh eight values at a time with AVX2, and rounds eight
//! accumulators (or tanh backward deltas) at a time with AVX-512, most ragged ends as blocks
//! overlapping the last whole ones; other platforms, short rows, the remaining ragged ends and
//! the lower levels use the scalar definitions, which the tests compare them with.

/// Window positions, in window order: top left, top right, bottom left, bottom right.
pub const WINDOW: usize = 4;

/// `out[i] = saturate_i16((pre[i] + bias + 2^(right - 1)) >> right)` for `right` in `1..=63`: the
/// Q3.12 tanh input of `pre[i] + bias` for accumulators of `TANH_IN_FRAC + right` fraction bits
/// ([`crate::tanh::tanh_input`], rounded half up and saturated to the symmetric range).
///
/// The accumulators of a layer are sums of at most a few thousand products below 2^30 and a
/// bias below 2^55, far from the `i64` limits, so the additions never wrap; NEON's rounding shift
/// (`srshl` by `-right`) adds the half before shifting as the scalar code does. x86-64 does eight
/// at a time at the AVX-512 level (`vpsraq`, `vpmovsqw`), the definition below it.
pub fn tanh_inputs(pre: &[i64], bias: i64, right: u32, out: &mut [i16]) {
    assert_eq!(pre.len(), out.len(), "one input per accumulator");
    assert!((1..=63).contains(&right), "a right shift of 1..=63 bits");
    platform::tanh_inputs(pre, bias, right, out)
}

/// The portable definition of [`tanh_inputs`].
pub fn tanh_inputs_scalar(pre: &[i64], bias: i64, right: u32, out: &mut [i16]) {
    let half = 1i64 << (right - 1);
    for (q, &p) in out.iter_mut().zip(pre) {
        *q = crate::fixed::saturate_i16((p + bias + half) >> right);
    }
}

/// For each window `x` of two rows, `[top[2x], top[2x + 1], bottom[2x], bottom[2x + 1]]`: its
/// largest value `largest[x]`, and where the first position (in that order) holding it lies in
/// the plane: `at[x] = corner + 2x + f % 2 + (f / 2) * width` for position `f`, with `corner` the
/// plane index of `top[0]` and `width` the plane's row length. Returns whether any window's
/// largest value lies outside `lowest..=highest` (the caller revisits those windows).
#[allow(clippy::too_many_arguments)] // two rows in, two outputs, where they lie, and the range
pub fn window_max(
    top: &[i16],
    bottom: &[i16],
    corner: u32,
    width: u32,
    (lowest, highest): (i16, i16),
    largest: &mut [i16],
    at: &mut [u32],
) -> bool {
    let windows = largest.len();
    assert!(top.len() == 2 * windows && bottom.len() == 2 * windows && at.len() == windows);
    assert!(width < 1 << 15 && (corner as u64) + 2 * windows as u64 + width as u64 <= u32::MAX as u64);
    platform::window_max(top, bottom, corner, width, (lowest, highest), largest, at)
}

/// The portable definition of [`window_max`].
pub fn window_max_scalar(
    top: &[i16],
    bottom: &[i16],
    corner: u32,
    width: u32,
    (lowest, highest): (i16, i16),
    largest: &mut [i16],
    at: &mut [u32],
) -> bool {
    let mut outside = false;
    let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
    for (x, ((t, b), (m, a))) in windows.zip(largest.iter_mut().zip(at.iter_mut())).enumerate() {
        let window = [t[0], t[1], b[0], b[1]];
        *m = window.into_iter().max().expect("four values");
        let f = window.iter().position(|v| v == m).expect("the largest is in the window") as u32;
        *a = corner + 2 * x as u32 + f % 2 + f / 2 * width;
        outside |= !(lowest..=highest).contains(m);
    }
    outside
}

/// `values[i] = tanh_q(values[i])` ([`crate::tanh::tanh_q`]: Q3.12 in, Q0.15 out), the pooled
/// outputs from their windows' largest inputs. aarch64 does eight at a time: magnitude, segment and position in
/// NEON, both ends of each segment in one 32-bit load per lane ([`crate::tanh::TANH_PAIRS`]), the
/// interpolation `low + ((high - low) * within + 32) >> 6` and the sign in NEON again; x86-64
/// does eight at a time with AVX2 (`vpgatherdd` for the segment ends).
pub fn tanh_in_place(values: &mut [i16]) {
    platform::tanh_in_place(values)
}

/// The portable definition of [`tanh_in_place`].
pub fn tanh_in_place_scalar(values: &mut [i16]) {
    for v in values.iter_mut() {
        *v = crate::tanh::tanh_q(*v);
    }
}

/// The windows' deltas from the gradients at the pooled outputs: `out[i]` is the definition's
/// tanh backward, [`crate::arith::Arith::tanh_backward`] of `grads[i]` (`grad_frac` fraction bits)
/// and the output `ys[i]`. aarch64 does four at a time where the definition's 64-bit case holds
/// for all (`|g| < 2^47` and a shift of 1 to 61 bits): the slope `(2^30 - y^2 + 2^14) >> 15` in
/// 32-bit lanes, `g * slope` as `(g >> 32) * slope * 2^32 + (g & (2^32 - 1)) * slope` (two
/// 32 x 32 -> 64-bit products, exact below 2^62), then the rounding shift and saturation; x86-64
/// does the same eight at a time at the AVX-512 level.
pub fn tanh_backward_all(grads: &[i64], grad_frac: u32, ys: &[i16], out: &mut [i16]) {
    assert!(grads.len() == ys.len() && ys.len() == out.len(), "one delta per window");
    platform::tanh_backward_all(grads, grad_frac, ys, out)
}

/// The portable definition of [`tanh_backward_all`].
pub fn tanh_backward_all_scalar(grads: &[i64], grad_frac: u32, ys: &[i16], out: &mut [i16]) {
    use crate::arith::{Arith, Fixed};
    for ((&g, &y), d) in grads.iter().zip(ys).zip(out.iter_mut()) {
        *d = Fixed::tanh_backward(g, grad_frac, y);
    }
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
mod platform {
    pub use super::tanh_backward_all_scalar as tanh_backward_all;
    pub use super::tanh_in_place_scalar as tanh_in_place;
    pub use super::tanh_inputs_scalar as tanh_inputs;
    pub use super::window_max_scalar as window_max;
}

#[cfg(target_arch = "x86_64")]
mod platform {
    use crate::simd::level::{self, Level};
    use crate::simd::platform::block_starts;
    use core::arch::x86_64::*;

    /// [`super::tanh_in_place`] eight at a time with AVX2 (`vpgatherdd` loads both ends of each
    /// lane's segment from [`crate::tanh::TANH_PAIRS`]); the last one to seven values and the
    /// levels below AVX2 take the definition (the values are replaced in place, so they cannot
    /// be computed twice as an overlapping block).
    pub fn tanh_in_place(values: &mut [i16]) {
        if !matches!(level::current(), Level::Avx2 | Level::Avx512) {
            return super::tanh_in_place_scalar(values);
        }
        // SAFETY: the AVX2 and AVX-512 levels are in use only where the CPU has AVX2
        // ([`level::force`] and the environment variable refuse them otherwise).
        unsafe { tanh_in_place_avx2(values) }
    }

    /// The lanes of [`tanh_in_place`], in 32-bit lanes: `|x|` splits into the segment
    /// `min(|x| >> 6, 511)` and the position `|x| - 64 * segment` (64 only for -32768, whose
    /// magnitude 32768 is the end of the last segment, so its result is that segment's high end,
    /// `TANH_TABLE[512]`, as in the definition); then `low + ((high - low) * within + 32) >> 6`
    /// (`low` itself where `within` is 0, as the definition takes it), and the sign back by
    /// `vpsignd` (tanh of 0 is 0).
    #[target_feature(enable = "avx2")]
    fn tanh_in_place_avx2(values: &mut [i16]) {
        let (eights, rest) = values.as_chunks_mut::<8>();
        let (last, half) = (_mm256_set1_epi32(511), _mm256_set1_epi32(32));
        for eight in eights {
            // SAFETY: `eight` holds 16 bytes; `loadu` has no alignment requirement.
            let x = _mm256_cvtepi16_epi32(unsafe { _mm_loadu_si128(eight.as_ptr().cast()) });
            let magnitude = _mm256_abs_epi32(x);
            let segment = _mm256_min_epi32(_mm256_srli_epi32::<6>(magnitude), last);
            let within = _mm256_sub_epi32(magnitude, _mm256_slli_epi32::<6>(segment));
            // SAFETY: every lane's segment is in 0..=511 (the minimum above), so each of the
            // eight 4-byte loads reads one of `TANH_PAIRS`' 512 entries.
            let pairs =
                unsafe { _mm256_i32gather_epi32::<4>(crate::tanh::TANH_PAIRS.as_ptr().cast(), segment) };
            let low = _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(pairs));
            let high = _mm256_srai_epi32::<16>(pairs);
            let rise = _mm256_mullo_epi32(_mm256_sub_epi32(high, low), within);
            let y = _mm256_add_epi32(low, _mm256_srai_epi32::<6>(_mm256_add_epi32(rise, half)));
            let y = _mm256_sign_epi32(y, x);
            let y = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y));
            // SAFETY: `eight` holds 16 bytes; `storeu` has no alignment requirement.
            unsafe { _mm_storeu_si128(eight.as_mut_ptr().cast(), y) };
        }
        super::tanh_in_place_scalar(rest);
    }

    /// [`super::tanh_backward_all`] eight at a time at the AVX-512 level where the definition's
    /// 64-bit case holds for every value (`|g| < 2^47` and a shift of 1 to 61 bits), the ragged
    /// end as eight overlapping the ones before them; otherwise, for fewer than eight values and
    /// below AVX-512, the definition.
    pub fn tanh_backward_all(grads: &[i64], grad_frac: u32, ys: &[i16], out: &mut [i16]) {
        let shift = (grad_frac + crate::fixed::ACT_FRAC).saturating_sub(crate::fixed::DELTA_FRAC);
        if grads.len() < 8
            || level::current() != Level::Avx512
            || !(1..=61).contains(&shift)
            || !crate::simd::update::all_magnitudes_below(grads, 1 << 47)
        {
            return super::tanh_backward_all_scalar(grads, grad_frac, ys, out);
        }
        // SAFETY: the AVX-512 level is in use only where the CPU has AVX-512 F, BW and VNNI
        // ([`level::force`] and the environment variable refuse it otherwise).
        unsafe { tanh_backward_avx512(grads, shift, ys, out) }
    }

    /// The lanes of [`tanh_backward_all`], in 64-bit lanes throughout: the slope
    /// `(2^30 - y^2 + 2^14) >> 15` (positive, at most 2^15); `g * slope` as
    /// `((g >> 32) * slope << 32) + (g & (2^32 - 1)) * slope`, two 32 x 32 -> 64-bit products
    /// (`vpmuldq`, `vpmuludq`; AVX-512 F has no 64-bit `vpmullq`), exact because
    /// `|g >> 32| < 2^15` and `|g * slope| < 2^62`; then the definition's rounding
    /// `(p + 2^(shift - 1)) >> shift`, saturated by `vpmovsqw` and `pmaxsw` to the symmetric range.
    #[target_feature(enable = "avx512f")]
    fn tanh_backward_avx512(grads: &[i64], shift: u32, ys: &[i16], out: &mut [i16]) {
        let one = _mm512_set1_epi64((1 << 30) + (1 << 14));
        let half = _mm512_set1_epi64(1 << (shift - 1));
        let count = _mm_set_epi64x(0, shift as i64);
        let floor = _mm_set1_epi16(-i16::MAX);
        for first in block_starts(grads.len(), 8) {
            let g: &[i64; 8] = grads[first..][..8].try_into().expect("8 values");
            let y: &[i16; 8] = ys[first..][..8].try_into().expect("8 values");
            // SAFETY: `g` holds 64 bytes and `y` 16; `loadu` has no alignment requirement.
            let (g, y) =
                unsafe { (_mm512_loadu_si512(g.as_ptr().cast()), _mm_loadu_si128(y.as_ptr().cast())) };
            let y = _mm512_cvtepi16_epi64(y);
            let slope = _mm512_srli_epi64::<15>(_mm512_sub_epi64(one, _mm512_mul_epi32(y, y)));
            let high = _mm512_slli_epi64::<32>(_mm512_mul_epi32(_mm512_srai_epi64::<32>(g), slope));
            let product = _mm512_add_epi64(high, _mm512_mul_epu32(g, slope));
            let d = _mm512_sra_epi64(_mm512_add_epi64(product, half), count);
            let d = _mm_max_epi16(_mm512_cvtsepi64_epi16(d), floor);
            let to: &mut [i16; 8] = (&mut out[first..][..8]).try_into().expect("8 values");
            // SAFETY: `to` holds 16 bytes; `storeu` has no alignment requirement.
            unsafe { _mm_storeu_si128(to.as_mut_ptr().cast(), d) };
        }
    }

    /// [`super::tanh_inputs`] eight at a time at the AVX-512 level (`vpsraq` shifts 64-bit lanes
    /// arithmetically and `vpmovsqw` narrows them with saturation, neither of which SSE2 or AVX2
    /// has), the ragged end as eight overlapping the last whole ones; fewer than eight values and
    /// the lower levels take the definition.
    pub fn tanh_inputs(pre: &[i64], bias: i64, right: u32, out: &mut [i16]) {
        if pre.len() < 8 || level::current() != Level::Avx512 {
            return super::tanh_inputs_scalar(pre, bias, right, out);
        }
        // SAFETY: the AVX-512 level is in use only where the CPU has AVX-512 F, BW and VNNI
        // ([`level::force`] and the environment variable refuse it otherwise).
        unsafe { tanh_inputs_avx512(pre, bias, right, out) }
    }

    /// The lanes of [`tanh_inputs`] (at least eight values). `pre + (bias + half)` wraps as the
    /// definition's `pre + bias + half` would (never, for a layer's accumulators); `vpsraq` then
    /// rounds down as `>>` does, so the rounding is half up; `vpmovsqw` saturates to
    /// `-32768..=32767` and `pmaxsw` raises -32768 to -32767, the symmetric range.
    #[target_feature(enable = "avx512f")]
    fn tanh_inputs_avx512(pre: &[i64], bias: i64, right: u32, out: &mut [i16]) {
        let add = _mm512_set1_epi64(bias.wrapping_add(1 << (right - 1)));
        let count = _mm_set_epi64x(0, right as i64);
        let floor = _mm_set1_epi16(-i16::MAX);
        for first in block_starts(pre.len(), 8) {
            let from: &[i64; 8] = pre[first..][..8].try_into().expect("8 values");
            // SAFETY: `from` holds 64 bytes; `loadu` has no alignment requirement.
            let v = unsafe { _mm512_loadu_si512(from.as_ptr().cast()) };
            let q = _mm512_sra_epi64(_mm512_add_epi64(v, add), count);
            let q = _mm_max_epi16(_mm512_cvtsepi64_epi16(q), floor);
            let to: &mut [i16; 8] = (&mut out[first..][..8]).try_into().expect("8 values");
            // SAFETY: `to` holds 16 bytes; `storeu` has no alignment requirement.
            unsafe { _mm_storeu_si128(to.as_mut_ptr().cast(), q) };
        }
    }

    /// [`super::window_max`] eight windows at a time in SSE2 (MxLenet's rows of 12 windows as
    /// two overlapping eights), or four at a time for rows of four to seven windows (its second
    /// layer's rows of 4); rows of fewer and the forced scalar level take the definition.
    #[allow(clippy::too_many_arguments)]
    pub fn window_max(
        top: &[i16],
        bottom: &[i16],
        corner: u32,
        width: u32,
        range: (i16, i16),
        largest: &mut [i16],
        at: &mut [u32],
    ) -> bool {
        let windows = largest.len();
        let block = if windows >= 8 { 8 } else { 4 };
        if windows < 4 || level::current() == Level::Scalar {
            return super::window_max_scalar(top, bottom, corner, width, range, largest, at);
        }
        let mut outside = false;
        for first in block_starts(windows, block) {
            // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 CPU runs it.
            outside |= unsafe { windows_from(top, bottom, corner, width, range, largest, at, first, block) };
        }
        outside
    }

    /// `block` (4 or 8) windows of [`window_max`] from window `first`: whether one is outside
    /// the range.
    ///
    /// The even and odd values of each row (the windows' left and right columns) are split by
    /// 32-bit shifts and packed back into 16-bit lanes (exact: every value is a sign-extended
    /// `i16`). Each lane's offset in the plane starts at the bottom right's, `width + 1`, then
    /// becomes the bottom left's, the top right's and the top left's where that position equals
    /// the largest value: later tests override earlier ones, so the first equal position in
    /// window order wins, as in the definition. `width < 2^15`, so the offsets fit 16-bit lanes,
    /// which are widened to 32 bits and added to the windows' corners (no wrap: the caller
    /// asserts that `corner + 2 * windows + width` fits a `u32`). Four windows are the lower
    /// half of the lanes, one register per row.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "sse2")]
    fn windows_from(
        top: &[i16],
        bottom: &[i16],
        corner: u32,
        width: u32,
        (lowest, highest): (i16, i16),
        largest: &mut [i16],
        at: &mut [u32],
        first: usize,
        block: usize,
    ) -> bool {
        let row = |values: &[i16]| {
            let values = &values[2 * first..][..2 * block];
            let half = |h: usize| {
                let eight: &[i16; 8] = values[8 * h..][..8].try_into().expect("8 values");
                // SAFETY: `eight` holds 16 bytes; `loadu` has no alignment requirement.
                unsafe { _mm_loadu_si128(eight.as_ptr().cast()) }
            };
            // Four windows: the upper lanes repeat the lower ones and are not stored.
            let (a, b) = if block == 8 { (half(0), half(1)) } else { (half(0), half(0)) };
            let left = |v| _mm_srai_epi32(_mm_slli_epi32(v, 16), 16);
            let right = |v| _mm_srai_epi32(v, 16);
            (_mm_packs_epi32(left(a), left(b)), _mm_packs_epi32(right(a), right(b)))
        };
        let ((tl, tr), (bl, br)) = (row(top), row(bottom));
        let m = _mm_max_epi16(_mm_max_epi16(tl, tr), _mm_max_epi16(bl, br));
        let select = |mask, yes, no| _mm_or_si128(_mm_and_si128(mask, yes), _mm_andnot_si128(mask, no));
        let mut offset = _mm_set1_epi16((width + 1) as u16 as i16);
        offset = select(_mm_cmpeq_epi16(bl, m), _mm_set1_epi16(width as i16), offset);
        offset = select(_mm_cmpeq_epi16(tr, m), _mm_set1_epi16(1), offset);
        offset = _mm_andnot_si128(_mm_cmpeq_epi16(tl, m), offset);
        let zero = _mm_setzero_si128();
        let base = corner + 2 * first as u32;
        let steps = |s: u32| {
            _mm_setr_epi32(
                (base + s) as i32,
                (base + s + 2) as i32,
                (base + s + 4) as i32,
                (base + s + 6) as i32,
            )
        };
        let at_low = _mm_add_epi32(_mm_unpacklo_epi16(offset, zero), steps(0));
        let at_high = _mm_add_epi32(_mm_unpackhi_epi16(offset, zero), steps(8));
        let out = _mm_or_si128(
            _mm_cmpgt_epi16(m, _mm_set1_epi16(highest)),
            _mm_cmpgt_epi16(_mm_set1_epi16(lowest), m),
        );
        let largest = &mut largest[first..][..block];
        let at = &mut at[first..][..block];
        if block == 8 {
            // SAFETY: `largest` holds 8 values (16 bytes) and `at` 8 (32 bytes); `storeu` has no
            // alignment requirement.
            unsafe {
                _mm_storeu_si128(largest.as_mut_ptr().cast(), m);
                _mm_storeu_si128(at.as_mut_ptr().cast(), at_low);
                _mm_storeu_si128(at.as_mut_ptr().add(4).cast(), at_high);
            }
            _mm_movemask_epi8(out) != 0
        } else {
            // SAFETY: `largest` holds 4 values (8 bytes, `storel_epi64` writes 8) and `at` 4
            // (16 bytes); neither store needs alignment.
            unsafe {
                _mm_storel_epi64(largest.as_mut_ptr().cast(), m);
                _mm_storeu_si128(at.as_mut_ptr().cast(), at_low);
            }
            _mm_movemask_epi8(out) & 0xff != 0
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use core::arch::asm;

    pub fn tanh_backward_all(grads: &[i64], grad_frac: u32, ys: &[i16], out: &mut [i16]) {
        let shift = (grad_frac + crate::fixed::ACT_FRAC).saturating_sub(crate::fixed::DELTA_FRAC);
        let whole = grads.len() / 4 * 4;
        if !(1..=61).contains(&shift)
            || whole == 0
            || !crate::simd::update::all_magnitudes_below(&grads[..whole], 1 << 47)
        {
            return super::tanh_backward_all_scalar(grads, grad_frac, ys, out);
        }
        // SAFETY: the three slices hold `grads.len()` values (asserted by the caller); the loop
        // reads and writes `whole` of them, four at a time, advancing the pointers (`ld1`/`st1`
        // need only element alignment). The lanes hold the definition's 64-bit integers: y^2 and
        // the slope fit 32 bits, each partial product is below 2^47 (low word) or 2^62 (high
        // word, |g >> 32| < 2^15), and so is their sum.
        unsafe {
            asm!(
                "movi v24.4s, #64, lsl #24", // 2^30
                "dup v25.2d, {neg_shift}",
                "dup v26.4h, {min:w}",
                "2:",
                "ld1 {{v16.2d, v17.2d}}, [{g}], #32",
                "ld1 {{v18.4h}}, [{y}], #8",
                "smull v19.4s, v18.4h, v18.4h",
                "sub v19.4s, v24.4s, v19.4s",
                "urshr v19.4s, v19.4s, #15",
                "uzp1 v20.4s, v16.4s, v17.4s",
                "uzp2 v21.4s, v16.4s, v17.4s",
                "umull v22.2d, v20.2s, v19.2s",
                "umull2 v23.2d, v20.4s, v19.4s",
                "smull v16.2d, v21.2s, v19.2s",
                "smull2 v17.2d, v21.4s, v19.4s",
                "shl v16.2d, v16.2d, #32",
                "shl v17.2d, v17.2d, #32",
                "add v16.2d, v16.2d, v22.2d",
                "add v17.2d, v17.2d, v23.2d",
                "srshl v16.2d, v16.2d, v25.2d",
                "srshl v17.2d, v17.2d, v25.2d",
                "sqxtn v16.2s, v16.2d",
                "sqxtn2 v16.4s, v17.2d",
                "sqxtn v16.4h, v16.4s",
                "smax v16.4h, v16.4h, v26.4h",
                "st1 {{v16.4h}}, [{d}], #8",
                "subs {n}, {n}, #4",
                "b.ne 2b",
                n = inout(reg) whole => _,
                g = inout(reg) grads.as_ptr() => _,
                y = inout(reg) ys.as_ptr() => _,
                d = inout(reg) out.as_mut_ptr() => _,
                neg_shift = in(reg) -(shift as i64),
                min = in(reg) -(i16::MAX as i32),
                out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
                out("v22") _, out("v23") _, out("v24") _, out("v25") _, out("v26") _,
                options(nostack)
            );
        }
        super::tanh_backward_all_scalar(&grads[whole..], grad_frac, &ys[whole..], &mut out[whole..]);
    }

    pub fn tanh_in_place(values: &mut [i16]) {
        let whole = values.len() / 8 * 8;
        if whole > 0 {
            // SAFETY: the loop reads and writes `whole <= values.len()` values, eight at a time,
            // advancing the pointer after the store (`ld1`/`st1` need only 2-byte alignment). Every
            // lane's segment is at most 511 (`|x| >> 6` is 512 only for -32768, whose magnitude
            // `abs` leaves as 0x8000; `umin` clamps it to 511 with position 64, which interpolates
            // to the segment's high end, the definition's `TANH_TABLE[512]`), so each table load
            // reads one of `TANH_PAIRS`' 512 entries. The slope times the position, at most
            // 512 * 64, fits an `i16` lane.
            unsafe {
                asm!(
                    "2:",
                    "ld1 {{v16.8h}}, [{p}]",
                    "abs v17.8h, v16.8h",
                    "ushr v18.8h, v17.8h, #6",
                    "mvni v19.8h, #0xfe, lsl #8",
                    "umin v18.8h, v18.8h, v19.8h",
                    "shl v19.8h, v18.8h, #6",
                    "sub v19.8h, v17.8h, v19.8h",
                    "umov {i0:w}, v18.h[0]",
                    "umov {i1:w}, v18.h[1]",
                    "umov {i2:w}, v18.h[2]",
                    "umov {i3:w}, v18.h[3]",
                    "ldr {i0:w}, [{table}, {i0}, lsl #2]",
                    "ldr {i1:w}, [{table}, {i1}, lsl #2]",
                    "ldr {i2:w}, [{table}, {i2}, lsl #2]",
                    "ldr {i3:w}, [{table}, {i3}, lsl #2]",
                    "ins v20.s[0], {i0:w}",
                    "ins v20.s[1], {i1:w}",
                    "ins v20.s[2], {i2:w}",
                    "ins v20.s[3], {i3:w}",
                    "umov {i0:w}, v18.h[4]",
                    "umov {i1:w}, v18.h[5]",
                    "umov {i2:w}, v18.h[6]",
                    "umov {i3:w}, v18.h[7]",
                    "ldr {i0:w}, [{table}, {i0}, lsl #2]",
                    "ldr {i1:w}, [{table}, {i1}, lsl #2]",
                    "ldr {i2:w}, [{table}, {i2}, lsl #2]",
                    "ldr {i3:w}, [{table}, {i3}, lsl #2]",
                    "ins v21.s[0], {i0:w}",
                    "ins v21.s[1], {i1:w}",
                    "ins v21.s[2], {i2:w}",
                    "ins v21.s[3], {i3:w}",
                    // low ends in the even halves, high ends in the odd ones
                    "uzp1 v22.8h, v20.8h, v21.8h",
                    "uzp2 v23.8h, v20.8h, v21.8h",
                    "sub v23.8h, v23.8h, v22.8h",
                    "mul v23.8h, v23.8h, v19.8h",
                    "srshr v23.8h, v23.8h, #6",
                    "add v22.8h, v22.8h, v23.8h",
                    // the sign back: (y ^ s) - s with s = x >> 15
                    "sshr v16.8h, v16.8h, #15",
                    "eor v22.16b, v22.16b, v16.16b",
                    "sub v22.8h, v22.8h, v16.8h",
                    "st1 {{v22.8h}}, [{p}], #16",
                    "subs {n}, {n}, #8",
                    "b.ne 2b",
                    n = inout(reg) whole => _,
                    p = inout(reg) values.as_mut_ptr() => _,
                    table = in(reg) crate::tanh::TANH_PAIRS.as_ptr(),
                    i0 = out(reg) _, i1 = out(reg) _, i2 = out(reg) _, i3 = out(reg) _,
                    out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
                    out("v21") _, out("v22") _, out("v23") _,
                    options(nostack)
                );
            }
        }
        super::tanh_in_place_scalar(&mut values[whole..]);
    }

    pub fn tanh_inputs(pre: &[i64], bias: i64, right: u32, out: &mut [i16]) {
        let whole = pre.len() / 8 * 8;
        // SAFETY: both slices hold `pre.len()` values (asserted by the caller); the loop reads
        // `whole` accumulators and writes as many inputs, eight at a time, advancing both pointers;
        // `ld1` `.2d` needs 8-byte and `st1` `.8h` 2-byte alignment, which the slices have. The
        // four-register `ld1` needs consecutive registers, hence the named ones.
        unsafe {
            asm!(
                "dup v20.2d, {neg}",
                "dup v21.2d, {bias}",
                "dup v22.8h, {min:w}",
                "2:",
                "cbz {n}, 3f",
                "ld1 {{v16.2d, v17.2d, v18.2d, v19.2d}}, [{s}], #64",
                "add v16.2d, v16.2d, v21.2d",
                "add v17.2d, v17.2d, v21.2d",
                "add v18.2d, v18.2d, v21.2d",
                "add v19.2d, v19.2d, v21.2d",
                "srshl v16.2d, v16.2d, v20.2d",
                "srshl v17.2d, v17.2d, v20.2d",
                "srshl v18.2d, v18.2d, v20.2d",
                "srshl v19.2d, v19.2d, v20.2d",
                "sqxtn v23.2s, v16.2d",
                "sqxtn2 v23.4s, v17.2d",
                "sqxtn v24.2s, v18.2d",
                "sqxtn2 v24.4s, v19.2d",
                "sqxtn v25.4h, v23.4s",
                "sqxtn2 v25.8h, v24.4s",
                "smax v25.8h, v25.8h, v22.8h",
                "st1 {{v25.8h}}, [{d}], #16",
                "sub {n}, {n}, #8",
                "b 2b",
                "3:",
                n = inout(reg) whole => _,
                s = inout(reg) pre.as_ptr() => _,
                d = inout(reg) out.as_mut_ptr() => _,
                neg = in(reg) -(right as i64),
                bias = in(reg) bias,
                min = in(reg) -(i16::MAX as i32),
                out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
                out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
                options(nostack)
            );
        }
        super::tanh_inputs_scalar(&pre[whole..], bias, right, &mut out[whole..]);
    }

    /// `2 * lane` for eight lanes: the windows' distances from the first one.
    static LANE_STEPS: [u32; 8] = [0, 2, 4, 6, 8, 10, 12, 14];

    #[allow(clippy::too_many_arguments)]
    pub fn window_max(
        top: &[i16],
        bottom: &[i16],
        corner: u32,
        width: u32,
        range: (i16, i16),
        largest: &mut [i16],
        at: &mut [u32],
    ) -> bool {
        let windows = largest.len();
        let eights = windows / 8 * 8;
        let mut outside = 0u64;
        if eights > 0 {
            // SAFETY: `top` and `bottom` hold `2 * windows` values, `largest` and `at` `windows`
            // (asserted by the caller); the loop reads `2 * eights` values of each row and writes
            // `eights` of each output, eight windows at a time, advancing the pointers; `ld1`,
            // `ld2` and `st1` need only element alignment. The two-register `st1` needs
            // consecutive registers, hence the named ones.
            //
            // `ld2` splits a row into its windows' left and right values. The position is 3, then
            // 2 where the bottom left equals the largest, 1 where the top right does, 0 where the
            // top left does (later tests override earlier ones, so the first equal position
            // wins); its offset in the plane is `(f & 1) + (f >> 1) * width`, widened to 32 bits
            // and added to the windows' corners. Lanes outside the range are or-ed into v29.
            unsafe {
                asm!(
                    "movi v26.8h, #3",
                    "movi v27.8h, #2",
                    "movi v28.8h, #1",
                    "movi v29.16b, #0",
                    "dup v30.8h, {lo:w}",
                    "dup v31.8h, {hi:w}",
                    "dup v7.8h, {width:w}",
                    "ld1 {{v4.4s, v5.4s}}, [{steps}]",
                    "dup v6.4s, {corner:w}",
                    "add v4.4s, v4.4s, v6.4s",
                    "add v5.4s, v5.4s, v6.4s",
                    "movi v6.4s, #16",
                    "2:",
                    "ld2 {{v16.8h, v17.8h}}, [{t}], #32",
                    "ld2 {{v18.8h, v19.8h}}, [{b}], #32",
                    "smax v20.8h, v16.8h, v17.8h",
                    "smax v21.8h, v18.8h, v19.8h",
                    "smax v20.8h, v20.8h, v21.8h",
                    "cmeq v16.8h, v16.8h, v20.8h",
                    "cmeq v17.8h, v17.8h, v20.8h",
                    "cmeq v18.8h, v18.8h, v20.8h",
                    "mov v21.16b, v26.16b",
                    "bit v21.16b, v27.16b, v18.16b",
                    "bit v21.16b, v28.16b, v17.16b",
                    "bic v21.16b, v21.16b, v16.16b",
                    "and v22.16b, v21.16b, v28.16b",
                    "ushr v21.8h, v21.8h, #1",
                    "mla v22.8h, v21.8h, v7.8h",
                    "uxtl v24.4s, v22.4h",
                    "uxtl2 v25.4s, v22.8h",
                    "add v24.4s, v24.4s, v4.4s",
                    "add v25.4s, v25.4s, v5.4s",
                    "cmgt v16.8h, v20.8h, v31.8h",
                    "cmgt v17.8h, v30.8h, v20.8h",
                    "orr v29.16b, v29.16b, v16.16b",
                    "orr v29.16b, v29.16b, v17.16b",
                    "st1 {{v20.8h}}, [{m}], #16",
                    "st1 {{v24.4s, v25.4s}}, [{a}], #32",
                    "add v4.4s, v4.4s, v6.4s",
                    "add v5.4s, v5.4s, v6.4s",
                    "subs {n}, {n}, #8",
                    "b.ne 2b",
                    "umaxv h29, v29.8h",
                    "umov {outside:w}, v29.h[0]",
                    n = inout(reg) eights => _,
                    t = inout(reg) top.as_ptr() => _,
                    b = inout(reg) bottom.as_ptr() => _,
                    m = inout(reg) largest.as_mut_ptr() => _,
                    a = inout(reg) at.as_mut_ptr() => _,
                    steps = in(reg) LANE_STEPS.as_ptr(),
                    corner = in(reg) corner,
                    width = in(reg) width,
                    lo = in(reg) range.0 as i32,
                    hi = in(reg) range.1 as i32,
                    outside = out(reg) outside,
                    out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                    out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
                    out("v21") _, out("v22") _, out("v24") _, out("v25") _, out("v26") _,
                    out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
                    options(nostack)
                );
            }
        }
        let mut done = eights;
        if windows - done >= 4 {
            outside |= four_windows(top, bottom, corner, width, range, largest, at, done);
            done += 4;
        }
        if done < windows && windows >= 4 {
            // The last one to three windows as the last four: the ones before them are computed
            // again, to the same values.
            outside |= four_windows(top, bottom, corner, width, range, largest, at, windows - 4);
            done = windows;
        }
        if done == windows {
            return outside != 0;
        }
        let rest = 2 * done..;
        let rest_outside = super::window_max_scalar(
            &top[rest.clone()],
            &bottom[rest],
            corner + 2 * done as u32,
            width,
            range,
            &mut largest[done..],
            &mut at[done..],
        );
        outside != 0 || rest_outside
    }

    /// The loop of [`window_max`] once, in half registers, for the four windows from `first`
    /// (`first + 4 <= largest.len()`): nonzero if one is outside the range.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn four_windows(
        top: &[i16],
        bottom: &[i16],
        corner: u32,
        width: u32,
        range: (i16, i16),
        largest: &mut [i16],
        at: &mut [u32],
        first: usize,
    ) -> u64 {
        assert!(first + 4 <= largest.len());
        // SAFETY: as in the loop of [`window_max`], for the four windows from `first`, which lie
        // inside the slices (asserted here, and by [`window_max`]'s caller for their lengths).
        let outside: u64;
        unsafe {
            asm!(
                "ld2 {{v16.4h, v17.4h}}, [{t}]",
                "ld2 {{v18.4h, v19.4h}}, [{b}]",
                "smax v20.4h, v16.4h, v17.4h",
                "smax v21.4h, v18.4h, v19.4h",
                "smax v20.4h, v20.4h, v21.4h",
                "cmeq v16.4h, v16.4h, v20.4h",
                "cmeq v17.4h, v17.4h, v20.4h",
                "cmeq v18.4h, v18.4h, v20.4h",
                "movi v21.4h, #3",
                "movi v22.4h, #2",
                "bit v21.8b, v22.8b, v18.8b",
                "movi v28.4h, #1",
                "bit v21.8b, v28.8b, v17.8b",
                "bic v21.8b, v21.8b, v16.8b",
                "and v22.8b, v21.8b, v28.8b",
                "ushr v21.4h, v21.4h, #1",
                "dup v7.4h, {width:w}",
                "mla v22.4h, v21.4h, v7.4h",
                "uxtl v24.4s, v22.4h",
                "ld1 {{v4.4s}}, [{steps}]",
                "dup v6.4s, {corner:w}",
                "add v4.4s, v4.4s, v6.4s",
                "add v24.4s, v24.4s, v4.4s",
                "dup v30.4h, {lo:w}",
                "dup v31.4h, {hi:w}",
                "cmgt v16.4h, v20.4h, v31.4h",
                "cmgt v17.4h, v30.4h, v20.4h",
                "orr v16.8b, v16.8b, v17.8b",
                "st1 {{v20.4h}}, [{m}]",
                "st1 {{v24.4s}}, [{a}]",
                "umaxv h16, v16.4h",
                "umov {outside:w}, v16.h[0]",
                t = in(reg) top.as_ptr().add(2 * first),
                b = in(reg) bottom.as_ptr().add(2 * first),
                m = in(reg) largest.as_mut_ptr().add(first),
                a = in(reg) at.as_mut_ptr().add(first),
                steps = in(reg) LANE_STEPS.as_ptr(),
                corner = in(reg) corner + 2 * first as u32,
                width = in(reg) width,
                lo = in(reg) range.0 as i32,
                hi = in(reg) range.1 as i32,
                outside = out(reg) outside,
                out("v4") _, out("v6") _, out("v7") _, out("v16") _, out("v17") _,
                out("v18") _, out("v19") _, out("v20") _, out("v21") _, out("v22") _,
                out("v24") _, out("v28") _, out("v30") _, out("v31") _,
                options(nostack)
            );
        }
        outside
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// [`tanh_inputs`] against its definition at every length up to 40, for shifts around the
    /// layers' (15 and 18), at the rounding boundaries and past both saturation edges.
    #[test]
    fn tanh_inputs_match_the_definition() {
        let mut rng = Rng::new(11);
        for right in [1, 2, 12, 15, 18, 30, 40] {
            let unit = 1i64 << right;
            for len in 0..40 {
                let mut pre = [0i64; 40];
                for p in pre.iter_mut().take(len) {
                    *p = match rng.below(4) {
                        0 => (rng.below(70_000) as i64 - 35_000) * unit + unit / 2 - rng.below(2) as i64,
                        1 => (rng.next_u64() as i64) >> (rng.below(20) + 6),
                        2 => (rng.below(2) as i64 * 2 - 1) * 32767 * unit + rng.below(3) as i64 * unit - unit,
                        _ => rng.below(2 * unit as u64) as i64 - unit,
                    };
                }
                let bias = [0, unit / 2, -3 * unit, 1 << 40][len % 4];
                let (mut fast, mut want) = ([0i16; 40], [0i16; 40]);
                tanh_inputs(&pre[..len], bias, right, &mut fast[..len]);
                tanh_inputs_scalar(&pre[..len], bias, right, &mut want[..len]);
                assert_eq!(fast, want, "right {right}, length {len}");
                // The definition is the crate's tanh input.
                for (&p, &q) in pre[..len].iter().zip(&want[..len]) {
                    assert_eq!(q, crate::tanh::tanh_input(p + bias, crate::fixed::TANH_IN_FRAC + right));
                }
            }
        }
    }

    /// [`tanh_in_place`] is [`crate::tanh::tanh_q`] for every Q3.12 input, -32768 (the end of
    /// the last segment) included, and in runs of every length up to 20.
    #[test]
    fn tanh_in_place_is_tanh_q_for_every_input() {
        let inputs: [i16; 65535] = core::array::from_fn(|i| (i as i32 - 32767) as i16);
        let mut out = inputs;
        tanh_in_place(&mut out);
        for (&x, &y) in inputs.iter().zip(&out) {
            assert_eq!(y, crate::tanh::tanh_q(x), "tanh of {x}");
        }
        for len in 0..20 {
            let (mut fast, mut want) = ([0i16; 20], [0i16; 20]);
            fast[..len].copy_from_slice(&inputs[30000..30000 + len]);
            want[..len].copy_from_slice(&inputs[30000..30000 + len]);
            tanh_in_place(&mut fast[..len]);
            tanh_in_place_scalar(&mut want[..len]);
            assert_eq!(fast, want, "{len} inputs");
        }
        // The vector lanes take -32768 (the end of the last segment) exactly too.
        let mut edge = [i16::MIN, -1, 0, 1, i16::MAX, i16::MIN, -32704, 32704, i16::MIN];
        let want = edge.map(crate::tanh::tanh_q);
        tanh_in_place(&mut edge);
        assert_eq!(edge, want, "the extremes");
    }

    /// [`tanh_backward_all`] against the definition at every length up to 24, for gradients
    /// at and past the 64-bit case's bound, outputs at the extremes, and several fractions (one
    /// past the 64-bit case's shifts).
    #[test]
    fn tanh_backward_all_is_the_definition() {
        let mut rng = Rng::new(23);
        for grad_frac in [1, 15, 30, 46, 60] {
            for len in 0..24 {
                for limit_case in 0..3 {
                    let grads: [i64; 24] = core::array::from_fn(|i| match (i + limit_case) % 5 {
                        0 => 0,
                        1 => [(1 << 47) - 1, -(1 << 47) + 1, 1 << 47][limit_case],
                        2 => (rng.next_u64() as i64) >> (17 + rng.below(40)),
                        _ => (rng.next_u64() as i64) >> 40,
                    });
                    let ys: [i16; 24] = core::array::from_fn(|i| match i % 4 {
                        0 => 0,
                        1 => [32767, -32767][i / 4 % 2],
                        _ => (rng.below(65535) as i64 - 32767) as i16,
                    });
                    let (mut fast, mut want) = ([0i16; 24], [0i16; 24]);
                    tanh_backward_all(&grads[..len], grad_frac, &ys[..len], &mut fast[..len]);
                    tanh_backward_all_scalar(&grads[..len], grad_frac, &ys[..len], &mut want[..len]);
                    assert_eq!(fast, want, "frac {grad_frac}, length {len}, case {limit_case}");
                }
            }
        }
    }

    /// [`window_max`] against its definition at every window count up to 20 (whole and
    /// overlapping blocks of vector lanes), on values drawn from a handful so that ties at every
    /// position occur, at the extremes, with ranges that leave some windows outside or none, and
    /// at the widest plane with offsets up to the largest `u32`.
    #[test]
    fn window_max_matches_the_definition() {
        let mut rng = Rng::new(12);
        let palette = [-32767i16, -5, 0, 3, 3, 7, 32767];
        for windows in 0..20 {
            for trial in 0..30 {
                let (mut top, mut bottom) = ([0i16; 40], [0i16; 40]);
                for v in top.iter_mut().chain(bottom.iter_mut()) {
                    *v = palette[rng.below(palette.len() as u64) as usize];
                }
                let range = [(-32767, 32767), (-5, 7), (0, 3), (-4, 32766)][trial % 4];
                let (corner, width) = match trial % 5 {
                    // The widest plane and the last corners the offsets may reach.
                    4 => (u32::MAX - 32767 - 40, 32767),
                    _ => (rng.below(1000) as u32, 2 * windows as u32 + rng.below(5) as u32),
                };
                let (mut largest, mut at) = ([0i16; 20], [0u32; 20]);
                let (mut want, mut want_at) = ([0i16; 20], [0u32; 20]);
                let (t, b) = (&top[..2 * windows], &bottom[..2 * windows]);
                let outside =
                    window_max(t, b, corner, width, range, &mut largest[..windows], &mut at[..windows]);
                let want_outside = window_max_scalar(
                    t,
                    b,
                    corner,
                    width,
                    range,
                    &mut want[..windows],
                    &mut want_at[..windows],
                );
                assert_eq!((largest, at, outside), (want, want_at, want_outside), "{windows} windows");
            }
        }
    }
}
