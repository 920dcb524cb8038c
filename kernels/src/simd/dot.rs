//! The same exact product as [`super::gather`] in its other form, for a matrix times one vector:
//!
//! `out[r] = sum over i of rows[r * stride + i] * x[i]`, for `r < out.len()`, `i < x.len()`,
//!
//! a dense layer's `W x` over the rows of `W` (its forward pass) or its `W^T d` over the rows of
//! `W^T` (its input gradient), where [`super::gather::gather_axpy`] sums rows of the other matrix
//! scaled by the vector's values. Both give the exact integer sum, so a caller may use either.
//!
//! This form pays where the vector unit multiplies *neighbouring* pairs into a lane: AVX-512 VNNI's
//! `vpdpwssd` takes 32 consecutive values of a row and of `x` as they lie in memory, with no
//! interleave and no broadcast, and each row is read front to back, eight rows at once. The gather
//! form needs neither a horizontal sum nor a row's whole length in flight, which suits NEON's
//! multiply by lane; so only x86-64's AVX-512 level has a vector path here ([`has_vector_path`]),
//! and callers take the gather form elsewhere.
//!
//! **Exactness.** `x` is cut into chunks of whole 32-term blocks by
//! [`super::schedule::chunk_ends_dot`] for a bound `R` on every value of the rows. Within a chunk,
//! lane `k` of a row's `i32` accumulator holds the products of the chunk's terms `i` with
//! `(i - start) % 32` in `{2k, 2k + 1}`, which that schedule bounds lane by lane (the proof is
//! there); a finer cut, such as [`super::schedule::chunk_ends`]'s, bounds every sub-sum of a chunk
//! and so serves too. At a chunk's end the lanes are widened into `i64` and cleared.

use super::level::{self, Level};

/// Whether [`dot_rows_at`] has a vector path at `level` on this CPU (x86-64's AVX-512 level);
/// elsewhere it runs its scalar definition, and callers should take the gather form.
pub fn has_vector_path(level: Level) -> bool {
    cfg!(target_arch = "x86_64") && level == Level::Avx512 && level::supported(level)
}

/// [`dot_rows_at`] at the current level.
#[inline]
pub fn dot_rows(out: &mut [i64], (rows, stride): (&[i16], usize), x: &[i16], ends: &[u32]) {
    dot_rows_at(level::current(), out, (rows, stride), x, ends)
}

/// Exact `out[r] = sum_i rows[r * stride + i] * x[i]` (see the module documentation), with the
/// chunks `ends` from [`super::schedule::chunk_ends_dot`] of `x` for a bound on every value of the
/// rows (or any finer cut, such as [`super::schedule::chunk_ends`]'s).
pub fn dot_rows_at(level: Level, out: &mut [i64], (rows, stride): (&[i16], usize), x: &[i16], ends: &[u32]) {
    check(out.len(), (rows, stride), x, ends);
    if has_vector_path(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `check` proved that every row's `x.len()` values lie inside `rows` and that the
        // chunks end in order at `x.len()`; `has_vector_path` checked the CPU for AVX-512 F/BW/VNNI.
        unsafe {
            avx512::dot_rows([out], rows.as_ptr(), stride, [x], ends)
        };
        return;
    }
    dot_rows_scalar(out, (rows, stride), x);
}

/// [`dot_rows2_at`] at the current level.
#[inline]
pub fn dot_rows2(outs: [&mut [i64]; 2], (rows, stride): (&[i16], usize), xs: [&[i16]; 2], ends: &[u32]) {
    dot_rows2_at(level::current(), outs, (rows, stride), xs, ends)
}

/// [`dot_rows_at`] for two vectors over the same rows, `outs[v][r] = sum_i rows[r * stride + i] *
/// xs[v][i]`, each row read once for both; `ends` from [`super::schedule::chunk_ends_dot`] of
/// the two, which bounds both vectors' lanes.
pub fn dot_rows2_at(
    level: Level,
    outs: [&mut [i64]; 2],
    (rows, stride): (&[i16], usize),
    xs: [&[i16]; 2],
    ends: &[u32],
) {
    let [first, second] = outs;
    assert_eq!(first.len(), second.len(), "both outputs have the same rows");
    assert_eq!(xs[0].len(), xs[1].len(), "both vectors have the same length");
    check(first.len(), (rows, stride), xs[0], ends);
    debug_assert!(!xs[1].contains(&i16::MIN), "values are in the symmetric range");
    if has_vector_path(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_rows_at`, for both vectors (of one length) and both outputs (of one
        // length).
        unsafe {
            avx512::dot_rows([first, second], rows.as_ptr(), stride, xs, ends)
        };
        return;
    }
    dot_rows_scalar(first, (rows, stride), xs[0]);
    dot_rows_scalar(second, (rows, stride), xs[1]);
}

/// The definition the vector path must match: plain `i64` arithmetic.
pub fn dot_rows_scalar(out: &mut [i64], (rows, stride): (&[i16], usize), x: &[i16]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &rows[r * stride..][..x.len()];
        *o = row.iter().zip(x).map(|(&w, &v)| w as i64 * v as i64).sum();
    }
}

/// The invariants the vector path's raw-pointer loads rely on.
fn check(count: usize, (rows, stride): (&[i16], usize), x: &[i16], ends: &[u32]) {
    if count > 0 {
        let reach = (count - 1).checked_mul(stride).and_then(|last| last.checked_add(x.len()));
        assert!(reach.is_some_and(|reach| reach <= rows.len()), "a row reaches past the matrix");
    }
    assert_eq!(ends.last().map_or(0, |&e| e as usize), x.len(), "the chunks end at the last term");
    debug_assert!(ends.windows(2).all(|w| w[0] < w[1]), "chunk ends increase");
    debug_assert!(!x.contains(&i16::MIN), "values are in the symmetric range");
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    /// [`super::dot_rows_at`]'s and [`super::dot_rows2_at`]'s vector path for `N` vectors: rows
    /// taken eight at a time for one vector, four for two (eight accumulators in flight either
    /// way, so consecutive `vpdpwssd`s do not wait for each other, and each 32 values of a vector
    /// loaded once for all those rows).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; all outputs have one length and all vectors another; for
    /// every row `r` of the outputs, `rows + r * stride` has a vector's length of readable values;
    /// `ends` increases to that length and its chunks obey the schedule's bound for every vector.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dot_rows<const N: usize>(
        outs: [&mut [i64]; N],
        rows: *const i16,
        stride: usize,
        xs: [&[i16]; N],
        ends: &[u32],
    ) {
        let count = outs[0].len();
        let outs = outs.map(|o| o.as_mut_ptr());
        let block = if N == 1 { 8 } else { 4 };
        let mut first = 0;
        while first + block <= count {
            // SAFETY: rows `first..first + block` exist in the matrix and the outputs (the contract).
            unsafe {
                let outs = outs.map(|o| o.add(first));
                match N {
                    1 => dot_block::<8, N>(outs, rows.add(first * stride), stride, xs, ends),
                    _ => dot_block::<4, N>(outs, rows.add(first * stride), stride, xs, ends),
                }
            }
            first += block;
        }
        while first < count {
            // SAFETY: row `first` exists (the contract).
            unsafe {
                dot_block::<1, N>(outs.map(|o| o.add(first)), rows.add(first * stride), stride, xs, ends)
            };
            first += 1;
        }
    }

    /// `R` rows starting at `rows`, `stride` values apart, dotted with `N` vectors into
    /// `outs[v][..R]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_block<const R: usize, const N: usize>(
        outs: [*mut i64; N],
        rows: *const i16,
        stride: usize,
        xs: [&[i16]; N],
        ends: &[u32],
    ) {
        let zero = _mm512_setzero_si512();
        let mut wide = [[zero; R]; N];
        let mut start = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [[zero; R]; N];
            let mut i = start;
            while i < end {
                let n = (end - i).min(32);
                let mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
                // SAFETY: terms `i..i + n` are terms of every vector and row (the contract); the
                // masked loads read nothing past them.
                unsafe {
                    // A loop, not a closure: a closure would not have the target features.
                    let mut vectors = [zero; N];
                    for (vector, x) in vectors.iter_mut().zip(xs) {
                        *vector = _mm512_maskz_loadu_epi16(mask, x.as_ptr().add(i));
                    }
                    for k in 0..R {
                        let row = _mm512_maskz_loadu_epi16(mask, rows.add(k * stride + i));
                        for (lanes, &vector) in lanes.iter_mut().zip(&vectors) {
                            lanes[k] = _mm512_dpwssd_epi32(lanes[k], row, vector);
                        }
                    }
                }
                i += 32;
            }
            for (wide, lanes) in wide.iter_mut().zip(lanes) {
                for (w, l) in wide.iter_mut().zip(lanes) {
                    let low = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(l));
                    let high = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(l));
                    *w = _mm512_add_epi64(*w, _mm512_add_epi64(low, high));
                }
            }
            start = end;
        }
        for (out, wide) in outs.into_iter().zip(wide) {
            for (k, w) in wide.into_iter().enumerate() {
                // SAFETY: row `k` of the block exists in every output (the contract).
                unsafe { *out.add(k) = _mm512_reduce_add_epi64(w) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::simd::schedule::{chunk_ends, chunk_ends_dot, max_abs};

    fn random(rng: &mut Rng, n: usize, limit: u64) -> [i16; 2048] {
        let mut v = [0i16; 2048];
        for x in v.iter_mut().take(n) {
            *x = (rng.below(2 * limit + 1) as i64 - limit as i64) as i16;
        }
        v
    }

    /// Every row count (the eight-row blocks and the rest) and length (whole and masked 32-value
    /// steps), rows a stride apart with no room after the last, at every level.
    #[test]
    fn matches_scalar_at_every_length_and_row_count() {
        let mut rng = Rng::new(31);
        for len in [0usize, 1, 2, 5, 31, 32, 33, 63, 64, 65, 100] {
            for count in [0usize, 1, 3, 7, 8, 9, 17] {
                let stride = len + 3;
                let size = count.saturating_sub(1) * stride + len;
                let rows = random(&mut rng, size, 32767);
                let x = random(&mut rng, len, [32767, 40][len % 2]);
                let mut ends = [0u32; 128];
                let chunks = chunk_ends_dot(&[&x[..len]], max_abs(&rows[..size]), &mut ends);
                for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                    let (mut fast, mut slow) = ([7i64; 17], [7i64; 17]);
                    let (rows, x, ends) = ((&rows[..size], stride), &x[..len], &ends[..chunks]);
                    dot_rows_at(level, &mut fast[..count], rows, x, ends);
                    dot_rows_scalar(&mut slow[..count], rows, x);
                    assert_eq!(fast, slow, "{level:?}: {count} rows of {len}");
                }
            }
        }
    }

    /// Every product at `+-32767^2`: chunks of two terms, sums far past `i32`; and chunks that
    /// start inside a 32-value step.
    #[test]
    fn is_exact_at_the_extremes_and_across_chunk_ends() {
        for (r, c) in [(32767i16, 32767i16), (-32767, 32767), (-32767, -32767)] {
            let rows = [r; 9 * 70];
            let x = [c; 70];
            let mut ends = [0u32; 70];
            let chunks = chunk_ends(&x, 32767, &mut ends);
            assert!(chunks > 30, "short chunks");
            for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                let mut out = [0i64; 9];
                dot_rows_at(level, &mut out, (&rows, 70), &x, &ends[..chunks]);
                assert!(out.iter().all(|&o| o == 70 * r as i64 * c as i64), "{level:?}");
            }
        }
        let mut rng = Rng::new(32);
        let rows = random(&mut rng, 9 * 70, 3000);
        let x = random(&mut rng, 70, 3000);
        let ends = [1u32, 5, 33, 34, 40, 69, 70];
        for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
            let (mut fast, mut slow) = ([0i64; 9], [0i64; 9]);
            dot_rows_at(level, &mut fast, (&rows[..9 * 70], 70), &x[..70], &ends);
            dot_rows_scalar(&mut slow, (&rows[..9 * 70], 70), &x[..70]);
            assert_eq!(fast, slow, "{level:?}");
        }
    }

    /// Two vectors over the same rows, against the definition for each, at every level.
    #[test]
    fn pair_matches_scalar_at_every_length_and_row_count() {
        let mut rng = Rng::new(33);
        for len in [0usize, 1, 2, 31, 32, 33, 64, 65, 100] {
            for count in [0usize, 1, 3, 4, 5, 8, 9] {
                let stride = len + 1;
                let size = count.saturating_sub(1) * stride + len;
                let rows = random(&mut rng, size, 32767);
                let (a, b) = (random(&mut rng, len, 32767), random(&mut rng, len, 50));
                let xs = [&a[..len], &b[..len]];
                let mut ends = [0u32; 8];
                let chunks = chunk_ends_dot(&xs, max_abs(&rows[..size]), &mut ends);
                for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                    let (mut fast, mut slow) = ([[5i64; 9]; 2], [[5i64; 9]; 2]);
                    let [f0, f1] = &mut fast;
                    let rows = (&rows[..size], stride);
                    dot_rows2_at(level, [&mut f0[..count], &mut f1[..count]], rows, xs, &ends[..chunks]);
                    for (s, x) in slow.iter_mut().zip(xs) {
                        dot_rows_scalar(&mut s[..count], rows, x);
                    }
                    assert_eq!(fast, slow, "{level:?}: {count} rows of {len}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "past the matrix")]
    fn refuses_rows_outside_the_matrix() {
        let mut out = [0i64; 2];
        dot_rows(&mut out, (&[0; 10], 6), &[1; 5], &[5]);
    }
}
