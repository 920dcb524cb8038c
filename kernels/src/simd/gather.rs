//! The one exact micro-kernel every fast layer is built from: a *gather-axpy*,
//!
//! `out[j] = sum over terms t of coeffs[t] * rows[offsets[t] + j]`, for `j < out.len()`,
//!
//! a matrix product in which each term picks a row (by offset) and scales it. The terms are cut into
//! chunks by [`super::schedule::chunk_ends`]; products are accumulated in `i32` lanes within a chunk
//! and widened into `i64` at its end, which the schedule proves can never overflow. The result is the
//! exact integer sum, the same on every platform as the scalar definition [`gather_axpy_scalar`].
//!
//! Register tiles: 32 output columns at a time (NEON: eight `i32x4` accumulators fed by
//! `smlal`/`smlal2` with the coefficient as a scalar operand, sixteen `i64x2` sums; SSE2: two terms at
//! a time interleaved into `pmaddwd`), then 8 columns, then the scalar code for the last few.

/// Whether a kernel replaces its output or adds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// `out = sum`.
    Set,
    /// `out += sum`.
    Add,
}

/// Exact `out (=|+=) sum_t coeffs[t] * rows[offsets[t]..][..out.len()]`, with the chunks `ends`
/// from [`super::schedule::chunk_ends`] (for a row bound that holds for every row used).
#[inline]
pub fn gather_axpy(
    out: &mut [i64],
    write: Write,
    rows: &[i16],
    offsets: &[u32],
    coeffs: &[i16],
    ends: &[u32],
) {
    check(out.len(), rows, offsets, coeffs, ends);
    platform::gather_axpy(out, write, rows, offsets, coeffs, ends)
}

/// The definition the vector paths must match: plain `i64` arithmetic, chunks ignored.
pub fn gather_axpy_scalar(
    out: &mut [i64],
    write: Write,
    rows: &[i16],
    offsets: &[u32],
    coeffs: &[i16],
    ends: &[u32],
) {
    check(out.len(), rows, offsets, coeffs, ends);
    scalar_columns(out, 0, write, rows, offsets, coeffs);
}

/// Columns `first..first + out.len()` of the product, in `i64` (the tails of the vector paths).
fn scalar_columns(
    out: &mut [i64],
    first: usize,
    write: Write,
    rows: &[i16],
    offsets: &[u32],
    coeffs: &[i16],
) {
    if write == Write::Set {
        out.fill(0);
    }
    for (&offset, &c) in offsets.iter().zip(coeffs) {
        let row = &rows[offset as usize + first..][..out.len()];
        for (o, &v) in out.iter_mut().zip(row) {
            *o += c as i64 * v as i64;
        }
    }
}

/// The invariants the vector code's raw-pointer loads rely on: every row lies inside `rows`, and
/// the chunks end in order at the last term.
fn check(columns: usize, rows: &[i16], offsets: &[u32], coeffs: &[i16], ends: &[u32]) {
    assert_eq!(offsets.len(), coeffs.len(), "one offset per coefficient");
    let last = offsets.iter().copied().max().map_or(0, |o| o as usize + columns);
    assert!(last <= rows.len(), "a term's row reaches past the matrix");
    assert_eq!(ends.last().map_or(0, |&e| e as usize), coeffs.len(), "the chunks end at the last term");
    debug_assert!(ends.windows(2).all(|w| w[0] < w[1]), "chunk ends increase");
    debug_assert!(!coeffs.contains(&i16::MIN), "values are in the symmetric range");
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use super::{scalar_columns, Write};
    use core::arch::aarch64::*;

    pub fn gather_axpy(
        out: &mut [i64],
        write: Write,
        rows: &[i16],
        offsets: &[u32],
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut first = 0;
        // SAFETY (both tile calls): `check` proved that every row `offsets[t]` has `out.len()`
        // values inside `rows`; a tile reads columns `first..first + 8 * V <= out.len()` of each row
        // and writes `out[first..first + 8 * V]`; `ends` is increasing and ends at `coeffs.len()`,
        // so every term index read is below `offsets.len() == coeffs.len()`.
        while first + 32 <= out.len() {
            unsafe {
                tile::<4>(out.as_mut_ptr().add(first), write, rows.as_ptr().add(first), offsets, coeffs, ends)
            };
            first += 32;
        }
        while first + 8 <= out.len() {
            unsafe {
                tile::<1>(out.as_mut_ptr().add(first), write, rows.as_ptr().add(first), offsets, coeffs, ends)
            };
            first += 8;
        }
        if first < out.len() {
            scalar_columns(&mut out[first..], first, write, rows, offsets, coeffs);
        }
    }

    /// `8 * V` columns (`V` is 1 or 4): `2V` `i32x4` lane sums per chunk, `4V` `i64x2` totals, all
    /// in registers.
    #[inline(always)]
    unsafe fn tile<const V: usize>(
        out: *mut i64,
        write: Write,
        rows: *const i16,
        offsets: &[u32],
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut wide = [vdupq_n_s64(0); 16];
        if write == Write::Add {
            for (i, w) in wide.iter_mut().enumerate().take(4 * V) {
                *w = vld1q_s64(out.add(2 * i));
            }
        }
        let mut t = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [vdupq_n_s32(0); 8];
            while t < end {
                let row = rows.add(*offsets.get_unchecked(t) as usize);
                let c = *coeffs.get_unchecked(t);
                for v in 0..V {
                    let r = vld1q_s16(row.add(8 * v));
                    lanes[2 * v] = vmlal_n_s16(lanes[2 * v], vget_low_s16(r), c);
                    lanes[2 * v + 1] = vmlal_high_n_s16(lanes[2 * v + 1], r, c);
                }
                t += 1;
            }
            for i in 0..2 * V {
                wide[2 * i] = vaddw_s32(wide[2 * i], vget_low_s32(lanes[i]));
                wide[2 * i + 1] = vaddw_high_s32(wide[2 * i + 1], lanes[i]);
            }
        }
        for (i, w) in wide.iter().enumerate().take(4 * V) {
            vst1q_s64(out.add(2 * i), *w);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod platform {
    use super::{scalar_columns, Write};
    use core::arch::x86_64::*;

    pub fn gather_axpy(
        out: &mut [i64],
        write: Write,
        rows: &[i16],
        offsets: &[u32],
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut first = 0;
        // SAFETY (both tile calls): as on aarch64, `check` proved every row has `out.len()` values
        // inside `rows`, a tile touches columns `first..first + 8 * V <= out.len()`, and every term
        // index read is below `ends.last() == coeffs.len() == offsets.len()`. SSE2 is part of the
        // x86-64 baseline.
        while first + 32 <= out.len() {
            unsafe {
                tile::<4>(out.as_mut_ptr().add(first), write, rows.as_ptr().add(first), offsets, coeffs, ends)
            };
            first += 32;
        }
        while first + 8 <= out.len() {
            unsafe {
                tile::<1>(out.as_mut_ptr().add(first), write, rows.as_ptr().add(first), offsets, coeffs, ends)
            };
            first += 8;
        }
        if first < out.len() {
            scalar_columns(&mut out[first..], first, write, rows, offsets, coeffs);
        }
    }

    /// `8 * V` columns (`V` is 1 or 4). Two terms at a time: their rows are interleaved
    /// (`punpck*wd`) and multiplied by the coefficient pair with `pmaddwd`, so each `i32` lane gains
    /// `c0 * r0[j] + c1 * r1[j]`, a sub-sum of the chunk (an odd last term pairs with a zero row).
    #[inline(always)]
    unsafe fn tile<const V: usize>(
        out: *mut i64,
        write: Write,
        rows: *const i16,
        offsets: &[u32],
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut wide = [0i64; 32];
        if write == Write::Add {
            core::ptr::copy_nonoverlapping(out, wide.as_mut_ptr(), 8 * V);
        }
        let zero = _mm_setzero_si128();
        let mut t = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [zero; 8];
            while t < end {
                let row0 = rows.add(*offsets.get_unchecked(t) as usize);
                let c0 = *coeffs.get_unchecked(t) as u16 as u32;
                let (row1, c1) = if t + 1 < end {
                    (
                        Some(rows.add(*offsets.get_unchecked(t + 1) as usize)),
                        *coeffs.get_unchecked(t + 1) as u16 as u32,
                    )
                } else {
                    (None, 0)
                };
                let pair = _mm_set1_epi32((c0 | (c1 << 16)) as i32);
                for v in 0..V {
                    let r0 = _mm_loadu_si128(row0.add(8 * v) as *const __m128i);
                    let r1 = match row1 {
                        Some(row1) => _mm_loadu_si128(row1.add(8 * v) as *const __m128i),
                        None => zero,
                    };
                    lanes[2 * v] =
                        _mm_add_epi32(lanes[2 * v], _mm_madd_epi16(_mm_unpacklo_epi16(r0, r1), pair));
                    lanes[2 * v + 1] =
                        _mm_add_epi32(lanes[2 * v + 1], _mm_madd_epi16(_mm_unpackhi_epi16(r0, r1), pair));
                }
                t += 2;
            }
            t = end;
            for (i, l) in lanes.iter().enumerate().take(2 * V) {
                let sign = _mm_srai_epi32(*l, 31);
                let w = wide.as_mut_ptr().add(4 * i) as *mut __m128i;
                _mm_storeu_si128(w, _mm_add_epi64(_mm_loadu_si128(w), _mm_unpacklo_epi32(*l, sign)));
                let w = w.add(1);
                _mm_storeu_si128(w, _mm_add_epi64(_mm_loadu_si128(w), _mm_unpackhi_epi32(*l, sign)));
            }
        }
        core::ptr::copy_nonoverlapping(wide.as_ptr(), out, 8 * V);
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod platform {
    pub use super::gather_axpy_scalar as gather_axpy;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::simd::schedule::{chunk_ends, max_abs};

    fn random(rng: &mut Rng, n: usize, limit: u64) -> [i16; 4096] {
        let mut v = [0i16; 4096];
        for x in v.iter_mut().take(n) {
            *x = (rng.below(2 * limit + 1) as i64 - limit as i64) as i16;
        }
        v
    }

    /// Both paths on `terms` rows of a `terms x stride` matrix, `columns` wide, both write modes.
    fn compare(rows: &[i16], stride: usize, coeffs: &[i16], columns: usize) {
        let terms = coeffs.len();
        let mut offsets = [0u32; 64];
        for (t, o) in offsets.iter_mut().enumerate().take(terms) {
            *o = ((t * 7) % terms * stride) as u32; // out of order, like a gather
        }
        let mut ends = [0u32; 64];
        let chunks = chunk_ends(coeffs, max_abs(rows), &mut ends);
        for write in [Write::Set, Write::Add] {
            let mut fast = [-1_000_000_000_000i64; 80];
            let mut slow = fast;
            let (o, e) = (&offsets[..terms], &ends[..chunks]);
            gather_axpy(&mut fast[..columns], write, rows, o, coeffs, e);
            gather_axpy_scalar(&mut slow[..columns], write, rows, o, coeffs, e);
            assert_eq!(fast, slow, "{terms} terms, {columns} columns, {write:?}");
        }
    }

    #[test]
    fn matches_scalar_at_every_width_and_term_count() {
        let mut rng = Rng::new(11);
        for columns in 0..=75 {
            for terms in [0usize, 1, 2, 3, 4, 7, 16, 33] {
                let rows = random(&mut rng, terms * 80, 32767);
                let coeffs = random(&mut rng, terms, 32767);
                compare(&rows[..terms.max(1) * 80], 80, &coeffs[..terms], columns);
            }
        }
    }

    #[test]
    fn is_exact_at_the_extremes_and_at_the_chunk_limit() {
        // Every product at +-32767^2: chunks of two terms; sums far beyond i32.
        for (r, c) in [(32767i16, 32767i16), (-32767, 32767), (32767, -32767), (-32767, -32767)] {
            let rows = [r; 64 * 40];
            let coeffs = [c; 64];
            compare(&rows, 40, &coeffs, 40);
            let mut out = [0i64; 40];
            let offsets: [u32; 64] = core::array::from_fn(|t| (t * 40) as u32);
            let mut ends = [0u32; 64];
            let n = chunk_ends(&coeffs, 32767, &mut ends);
            gather_axpy(&mut out, Write::Set, &rows, &offsets, &coeffs, &ends[..n]);
            assert!(out.iter().all(|&o| o == 64 * r as i64 * c as i64));
        }
        // A chunk whose lane sum lands on 65_538 * 32767 = i32::MAX - 1, then more terms.
        let rows = [32767i16; 40];
        let coeffs = [1i16; 70_000];
        let offsets = [0u32; 70_000];
        let mut ends = [0u32; 70_000];
        let n = chunk_ends(&coeffs, 32767, &mut ends);
        assert_eq!(&ends[..n], &[65_538, 70_000]);
        let mut out = [0i64; 40];
        gather_axpy(&mut out, Write::Set, &rows, &offsets, &coeffs, &ends[..n]);
        assert!(out.iter().all(|&o| o == 70_000 * 32767));
    }

    #[test]
    #[should_panic(expected = "past the matrix")]
    fn refuses_rows_outside_the_matrix() {
        let mut out = [0i64; 8];
        gather_axpy(&mut out, Write::Set, &[0; 10], &[4], &[1], &[1]);
    }
}
