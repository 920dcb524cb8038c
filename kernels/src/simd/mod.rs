//! Exact `i16 x i16 -> i64` dot products and multiply-accumulates, the inner loops of every layer.
//!
//! This module and its [`gather`] kernel hold the crate's only `unsafe` code: vector loads through raw pointers. Each platform path
//! computes exactly the same integers as the portable scalar code; the tests compare them bit for bit.
//!
//! Exactness of the vector paths: every operand is in [-32767, 32767] (see [`crate::fixed`]), so one
//! product is below 2^30 in magnitude and a sum of two products is below 2^31. The vector code adds
//! products pairwise in `i32` lanes and widens each pair sum to `i64` before accumulating, so no
//! intermediate can wrap. An operand of -32768 breaks that bound only when all four values of a pair are
//! -32768; callers never produce that value, and debug builds check for it.
//!
//! - x86-64: SSE2 (part of the baseline, so no run-time detection): `pmaddwd` then sign extension.
//! - aarch64: NEON (part of both the Pi and the `aarch64-unknown-none` baseline): `smull`/`smull2`,
//!   then `sadalp` into `i64` lanes.
//! - anything else: the scalar code.

#![allow(unsafe_code)]

pub mod dot;
pub mod gather;
pub mod level;
pub mod pool;
pub mod schedule;
pub mod update;

/// Exact dot product of two equally long `i16` slices.
#[inline]
pub fn dot_i16(a: &[i16], b: &[i16]) -> i64 {
    assert_eq!(a.len(), b.len(), "dot product of unequal lengths");
    debug_assert!(no_min_values(a) && no_min_values(b));
    platform::dot_i16(a, b)
}

/// Exact `acc[i] += scale * x[i]` over equally long slices.
#[inline]
pub fn axpy_i16(acc: &mut [i64], scale: i16, x: &[i16]) {
    assert_eq!(acc.len(), x.len(), "axpy of unequal lengths");
    platform::axpy_i16(acc, scale, x)
}

/// `dst.copy_from_slice(src)` for the short rows of im2col, without a call: on the firmware's
/// target (`+strict-align`) `copy_from_slice` becomes a `memcpy` call that moves a halfword at a
/// time; here eight values move per `ld1`/`st1` pair.
#[inline]
pub fn copy_i16(dst: &mut [i16], src: &[i16]) {
    assert_eq!(dst.len(), src.len(), "copy of unequal lengths");
    platform::copy_i16(dst, src)
}

/// `dst`'s rows of `width` values from rows `stride` apart in `src`: row `r` of `dst` is
/// `src[r * stride..][..width]` (a window of an image, the rows of im2col). aarch64 moves
/// a row of up to 32 values with one `ld1`/`st1` pair of whole registers (a row of 10 as 16, the
/// next row overwriting the six extra), where a [`copy_i16`] call per row spent more on the call
/// than on the copy.
pub fn copy_rows_i16(dst: &mut [i16], src: &[i16], stride: usize, width: usize) {
    assert!(width > 0 && dst.len().is_multiple_of(width), "whole rows of {width}");
    let rows = dst.len() / width;
    assert!(rows == 0 || (rows - 1) * stride + width <= src.len(), "rows past the source");
    platform::copy_rows_i16(dst, src, stride, width)
}

/// The portable definition of [`copy_rows_i16`].
pub fn copy_rows_i16_scalar(dst: &mut [i16], src: &[i16], stride: usize, width: usize) {
    for (r, row) in dst.chunks_exact_mut(width).enumerate() {
        row.copy_from_slice(&src[r * stride..][..width]);
    }
}

/// Adds `src`, `planes` planes of `rows` rows of `width` values stored one after another, into
/// `dst` where rows lie `row_stride` values apart and planes `plane_stride` apart (wrapping, as
/// the vector adds do): a window's input-gradient region into the input gradient. aarch64 moves
/// a row of six (the regions' width) with one three-register `ld1`/`st1` each way, x86-64 two
/// values per SSE2 add.
pub fn add_rows_i64(
    dst: &mut [i64],
    (row_stride, plane_stride): (usize, usize),
    src: &[i64],
    (width, rows, planes): (usize, usize, usize),
) {
    assert_eq!(src.len(), width * rows * planes, "the block's values");
    if src.is_empty() {
        return;
    }
    let reach = (planes - 1) * plane_stride + (rows - 1) * row_stride + width;
    assert!(reach <= dst.len(), "rows past the destination");
    platform::add_rows_i64(dst, (row_stride, plane_stride), src, (width, rows, planes))
}

/// The portable definition of [`add_rows_i64`].
pub fn add_rows_i64_scalar(
    dst: &mut [i64],
    (row_stride, plane_stride): (usize, usize),
    src: &[i64],
    (width, rows, _planes): (usize, usize, usize),
) {
    for (i, row) in src.chunks_exact(width).enumerate() {
        let at = i / rows * plane_stride + i % rows * row_stride;
        add_i64_scalar(&mut dst[at..][..width], row);
    }
}

/// `dst[i] += src[i]` (wrapping, as the vector adds do), for the column-to-image sums of the
/// convolution input gradients and the sum of the cores' gradients. On the firmware's target LLVM
/// vectorises such a loop through the stack (`+strict-align`); here two values move per
/// `ld1`/`add`/`st1`.
#[inline]
pub fn add_i64(dst: &mut [i64], src: &[i64]) {
    assert_eq!(dst.len(), src.len(), "sum of unequal lengths");
    platform::add_i64(dst, src)
}

/// The largest value (`None` for none): the micro-kernel's bounds check of its row offsets, on
/// every call. aarch64 takes four at a time (`umax`, then `umaxv`), x86-64 eight with AVX2.
#[inline]
pub fn max_u32(values: &[u32]) -> Option<u32> {
    platform::max_u32(values)
}

/// The largest magnitude in `values` (0 for none): a layer's largest working weight, the row
/// bound of its products, once per call over every weight (431,080 of them in MxLenet). aarch64
/// takes 32 at a time (`abs`, then `umax`, so that even -32768 counts as 32768); elsewhere
/// [`max_abs_i16_scalar`].
pub fn max_abs_i16(values: &[i16]) -> u32 {
    platform::max_abs_i16(values)
}

/// The sum of the magnitudes of at most 65,536 values: whether a term list fits one chunk
/// ([`schedule::chunk_ends`]), once per list. aarch64 takes 32 at a time (`abs`, then `uadalp`
/// into 32-bit lanes, which hold 2^16 values of up to 32768).
pub fn sum_abs_i16(values: &[i16]) -> u64 {
    assert!(values.len() <= 1 << 16, "at most 65,536 values");
    platform::sum_abs_i16(values)
}

/// The portable definition of [`sum_abs_i16`].
pub fn sum_abs_i16_scalar(values: &[i16]) -> u64 {
    values.iter().map(|v| v.unsigned_abs() as u64).sum()
}

/// `out[i] = max(|a[i]|, |b[i]|)` over equally long slices of values in the symmetric range: the
/// magnitudes by which [`schedule::chunk_ends_pair`] cuts two coefficient lists that share their
/// terms. aarch64 takes eight at a time (`abs`, `smax`), x86-64 eight in SSE2.
pub fn larger_magnitudes_i16(a: &[i16], b: &[i16], out: &mut [i16]) {
    assert!(a.len() == b.len() && a.len() == out.len(), "magnitudes of unequal lengths");
    debug_assert!(no_min_values(a) && no_min_values(b));
    platform::larger_magnitudes_i16(a, b, out)
}

/// The portable definition of [`larger_magnitudes_i16`].
pub fn larger_magnitudes_i16_scalar(a: &[i16], b: &[i16], out: &mut [i16]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x.unsigned_abs().max(y.unsigned_abs()) as i16;
    }
}

/// `out[i] = base + values[i] * scale` in wrapping `u32` arithmetic: row offsets from indices
/// (a filter's winners, the rows of its weight gradient). aarch64 does four per `mla`.
pub fn affine_u32(values: &[u32], base: u32, scale: u32, out: &mut [u32]) {
    assert_eq!(values.len(), out.len(), "one offset per index");
    platform::affine_u32(values, base, scale, out)
}

/// The portable definition of [`affine_u32`].
pub fn affine_u32_scalar(values: &[u32], base: u32, scale: u32, out: &mut [u32]) {
    for (o, &v) in out.iter_mut().zip(values) {
        *o = base.wrapping_add(v.wrapping_mul(scale));
    }
}

/// The sum of at most 65,536 values (a filter's deltas, its bias gradient). aarch64 adds 32 at a
/// time into 32-bit lanes (`sadalp`), which hold 2^16 values of up to 32768 in magnitude.
pub fn sum_i16(values: &[i16]) -> i64 {
    assert!(values.len() <= 1 << 16, "at most 65,536 values");
    platform::sum_i16(values)
}

/// The portable definition of [`sum_i16`].
pub fn sum_i16_scalar(values: &[i16]) -> i64 {
    values.iter().map(|&v| v as i64).sum()
}

/// The portable definition of [`max_abs_i16`].
pub fn max_abs_i16_scalar(values: &[i16]) -> u32 {
    values.iter().map(|v| v.unsigned_abs() as u32).max().unwrap_or(0)
}

/// The portable definition of [`max_u32`].
pub fn max_u32_scalar(values: &[u32]) -> Option<u32> {
    values.iter().copied().max()
}

/// `to[i * rows + j] = from[j * columns + i]`: the transpose of a row-major matrix of `columns`
/// columns (the dense layers' `W^T`, once per call). aarch64 moves 8 x 8 blocks through NEON
/// registers (`trn1`/`trn2` at 16, 32 and 64 bits: 40 instructions per 64 values, where the scalar
/// loop takes about ten per value on the strict-align target), and the ragged edges eight values
/// at a time by lane loads or stores (the convolutions' patch matrices have 25, 150 or 500 rows);
/// only the corner and other platforms use [`transpose_i16_scalar`]. x86-64 moves 8 x 8 blocks
/// through SSE2 registers, the ragged edges as blocks overlapping the last whole ones.
pub fn transpose_i16(from: &[i16], columns: usize, to: &mut [i16]) {
    assert!(columns > 0 && from.len().is_multiple_of(columns), "transpose of a ragged matrix");
    assert_eq!(from.len(), to.len(), "transpose into a buffer of another size");
    platform::transpose_i16(from, columns, to)
}

/// The portable definition of [`transpose_i16`], in 8 x 8 blocks so that both sides stay in few
/// cache lines.
pub fn transpose_i16_scalar(from: &[i16], columns: usize, to: &mut [i16]) {
    transpose_rect(from, columns, to, 0..from.len() / columns, 0..columns);
}

/// The transpose restricted to `rows` x `cols` of the source (the edges of the vector path).
fn transpose_rect(
    from: &[i16],
    columns: usize,
    to: &mut [i16],
    rows: core::ops::Range<usize>,
    cols: core::ops::Range<usize>,
) {
    const B: usize = 8;
    let all_rows = from.len() / columns;
    for j0 in rows.clone().step_by(B) {
        for i0 in cols.clone().step_by(B) {
            for j in j0..(j0 + B).min(rows.end) {
                let src = &from[j * columns..][i0..(i0 + B).min(cols.end)];
                for (i, &v) in (i0..).zip(src) {
                    to[i * all_rows + j] = v;
                }
            }
        }
    }
}

/// `to[i] = saturate_i16(round(from[i] / 2^shift))`, rounding half up (the rule of
/// [`crate::fixed::rescale`]), for `shift` in `1..=31`: the master weights' conversion into the
/// working format, once per step. aarch64 converts eight at a time (`srshl` by `-shift` adds the
/// half and shifts in full precision, `sqxtn` narrows with saturation, `smax` keeps the range
/// symmetric); x86-64 converts eight at a time in SSE2; the rest and other platforms use
/// [`round_to_i16_scalar`].
pub fn round_to_i16(from: &[i32], shift: u32, to: &mut [i16]) {
    assert_eq!(from.len(), to.len(), "conversion into a buffer of another size");
    assert!((1..=31).contains(&shift), "a rounding shift of 1 to 31 bits");
    platform::round_to_i16(from, shift, to)
}

/// The portable definition of [`round_to_i16`].
pub fn round_to_i16_scalar(from: &[i32], shift: u32, to: &mut [i16]) {
    for (t, &f) in to.iter_mut().zip(from) {
        *t = crate::fixed::to_i16(f as i64, shift, 0);
    }
}

/// The portable definition of [`add_i64`].
pub fn add_i64_scalar(dst: &mut [i64], src: &[i64]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = d.wrapping_add(s);
    }
}

/// The portable definition the vector paths must match.
pub fn dot_i16_scalar(a: &[i16], b: &[i16]) -> i64 {
    a.iter().zip(b).map(|(&x, &y)| x as i64 * y as i64).sum()
}

/// The portable definition the vector paths must match.
pub fn axpy_i16_scalar(acc: &mut [i64], scale: i16, x: &[i16]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += scale as i64 * v as i64;
    }
}

fn no_min_values(v: &[i16]) -> bool {
    !v.contains(&i16::MIN)
}

#[cfg(target_arch = "x86_64")]
mod platform {
    use super::level::{self, Level};

    /// [`super::add_rows_i64`] two values per SSE2 `paddq` (a region's row of six in three), an
    /// odd last value alone; rows and planes counted by nested loops, where the definition
    /// divides each row's index by `rows` (a 64-bit division per row of six values). The forced
    /// scalar level takes [`super::add_rows_i64_scalar`].
    pub fn add_rows_i64(
        dst: &mut [i64],
        (row_stride, plane_stride): (usize, usize),
        src: &[i64],
        (width, rows, planes): (usize, usize, usize),
    ) {
        if level::current() == Level::Scalar {
            return super::add_rows_i64_scalar(dst, (row_stride, plane_stride), src, (width, rows, planes));
        }
        let mut from = src.chunks_exact(width);
        for plane in 0..planes {
            for row in 0..rows {
                let from = from.next().expect("width * rows * planes values");
                let to = &mut dst[plane * plane_stride + row * row_stride..][..width];
                let ((to_pairs, to_last), (from_pairs, from_last)) =
                    (to.as_chunks_mut::<2>(), from.as_chunks::<2>());
                for (t, f) in to_pairs.iter_mut().zip(from_pairs) {
                    // SAFETY: `t` and `f` hold 16 bytes each; `loadu` and `storeu` have no
                    // alignment requirement; SSE2 is part of the x86-64 baseline.
                    unsafe {
                        let sum = _mm_add_epi64(
                            _mm_loadu_si128(t.as_ptr().cast()),
                            _mm_loadu_si128(f.as_ptr().cast()),
                        );
                        _mm_storeu_si128(t.as_mut_ptr().cast(), sum);
                    }
                }
                if let ([t], [f]) = (to_last, from_last) {
                    *t = t.wrapping_add(*f);
                }
            }
        }
    }
    pub use super::max_abs_i16_scalar as max_abs_i16;
    pub use super::sum_abs_i16_scalar as sum_abs_i16;
    pub use super::{affine_u32_scalar as affine_u32, sum_i16_scalar as sum_i16};
    use core::arch::x86_64::*;

    /// [`super::max_u32`] eight at a time with AVX2 (`vpmaxud`; SSE2 has no unsigned 32-bit
    /// maximum), the ragged end as eight overlapping the ones before them (a maximum does not
    /// mind values seen twice); fewer than eight values and the levels below AVX2 take
    /// [`super::max_u32_scalar`].
    #[inline]
    pub fn max_u32(values: &[u32]) -> Option<u32> {
        if values.len() < 8 || !matches!(level::current(), Level::Avx2 | Level::Avx512) {
            return super::max_u32_scalar(values);
        }
        // SAFETY: the AVX2 and AVX-512 levels are in use only where the CPU has AVX2
        // ([`level::force`] and the environment variable refuse them otherwise).
        Some(unsafe { max_u32_avx2(values) })
    }

    /// The lanes of [`max_u32`] (at least eight values).
    #[target_feature(enable = "avx2")]
    fn max_u32_avx2(values: &[u32]) -> u32 {
        let load = |first: usize| {
            let eight: &[u32; 8] = values[first..][..8].try_into().expect("8 values");
            // SAFETY: `eight` holds 32 bytes; `loadu` has no alignment requirement.
            unsafe { _mm256_loadu_si256(eight.as_ptr().cast()) }
        };
        // Four independent maxima over 32 values per trip, so that the loads are not chained
        // behind one `vpmaxud` each.
        let n = values.len();
        let mut most = [load(0); 4];
        let mut first = 8;
        while first + 32 <= n {
            for (k, m) in most.iter_mut().enumerate() {
                *m = _mm256_max_epu32(*m, load(first + 8 * k));
            }
            first += 32;
        }
        while first + 8 <= n {
            most[0] = _mm256_max_epu32(most[0], load(first));
            first += 8;
        }
        if first < n {
            most[1] = _mm256_max_epu32(most[1], load(n - 8));
        }
        let most = _mm256_max_epu32(_mm256_max_epu32(most[0], most[1]), _mm256_max_epu32(most[2], most[3]));
        let four = _mm_max_epu32(_mm256_castsi256_si128(most), _mm256_extracti128_si256(most, 1));
        let two = _mm_max_epu32(four, _mm_shuffle_epi32(four, 0b00_00_11_10));
        let one = _mm_max_epu32(two, _mm_shuffle_epi32(two, 0b00_00_00_01));
        _mm_cvtsi128_si32(one) as u32
    }

    /// [`super::round_to_i16`] eight at a time in SSE2, the ragged end as eight overlapping the
    /// ones before it; fewer than eight values and the forced scalar level take
    /// [`super::round_to_i16_scalar`].
    pub fn round_to_i16(from: &[i32], shift: u32, to: &mut [i16]) {
        if from.len() < 8 || level::current() == Level::Scalar {
            return super::round_to_i16_scalar(from, shift, to);
        }
        // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 CPU runs it.
        unsafe { round_to_i16_sse2(from, shift, to) }
    }

    /// The lanes of [`round_to_i16`]. Rounding half up without the sum that could wrap 32 bits:
    /// `(x + 2^(s-1)) >> s` is `(x >> s)` plus bit `s - 1` of `x` (the carry out of the bits
    /// shifted away), and `x >> s` is at most 2^30, so adding 1 cannot wrap. `packssdw`
    /// saturates to `-32768..=32767` and `pmaxsw` raises -32768 to -32767, the symmetric range
    /// of the definition.
    #[target_feature(enable = "sse2")]
    fn round_to_i16_sse2(from: &[i32], shift: u32, to: &mut [i16]) {
        let (by, by_less) = (_mm_cvtsi32_si128(shift as i32), _mm_cvtsi32_si128(shift as i32 - 1));
        let (one, floor) = (_mm_set1_epi32(1), _mm_set1_epi16(-i16::MAX));
        let round = |x| _mm_add_epi32(_mm_sra_epi32(x, by), _mm_and_si128(_mm_srl_epi32(x, by_less), one));
        for first in block_starts(from.len(), 8) {
            let eight: &[i32; 8] = from[first..][..8].try_into().expect("8 values");
            // SAFETY: `eight` holds 32 bytes, two loads of 16; `loadu` has no alignment
            // requirement.
            let (a, b) = unsafe {
                (_mm_loadu_si128(eight.as_ptr().cast()), _mm_loadu_si128(eight.as_ptr().add(4).cast()))
            };
            let q = _mm_max_epi16(_mm_packs_epi32(round(a), round(b)), floor);
            let out: &mut [i16; 8] = (&mut to[first..][..8]).try_into().expect("8 values");
            // SAFETY: `out` holds 16 bytes; `storeu` has no alignment requirement.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), q) };
        }
    }

    /// [`super::copy_rows_i16`] eight values at a time: a copy of a fixed `[i16; 8]` is one
    /// 16-byte load and store, where `copy_from_slice` of a row of run-time width is a `memcpy`
    /// call per row (MxLenet's rows are 24 and 8 wide). A row's last eight overlap the ones before
    /// them instead of a scalar tail; rows narrower than eight and the forced scalar level take
    /// [`super::copy_rows_i16_scalar`].
    pub fn copy_rows_i16(dst: &mut [i16], src: &[i16], stride: usize, width: usize) {
        if width < 8 || level::current() == Level::Scalar {
            return super::copy_rows_i16_scalar(dst, src, stride, width);
        }
        for (r, row) in dst.chunks_exact_mut(width).enumerate() {
            let from = &src[r * stride..][..width];
            let mut i = 0;
            loop {
                let at = i.min(width - 8);
                let eight: &[i16; 8] = from[at..][..8].try_into().expect("8 values");
                let to: &mut [i16; 8] = (&mut row[at..][..8]).try_into().expect("8 values");
                *to = *eight;
                if at + 8 == width {
                    break;
                }
                i += 8;
            }
        }
    }

    #[inline]
    pub fn copy_i16(dst: &mut [i16], src: &[i16]) {
        dst.copy_from_slice(src)
    }

    pub use super::add_i64_scalar as add_i64;

    /// Where blocks of `block` values start to cover `0..len` (`len >= block`): every multiple of
    /// `block` that leaves a whole block, then `len - block` for the ragged end. The last block
    /// overlaps the one before it; the kernels that use this compute every output from the inputs
    /// alone, so the overlapped outputs are written again with the same values, which is cheaper
    /// than a scalar loop for the edge.
    pub(super) fn block_starts(len: usize, block: usize) -> impl Iterator<Item = usize> {
        debug_assert!(len >= block);
        let whole = (0..len / block).map(move |b| b * block);
        whole.chain((!len.is_multiple_of(block)).then(|| len - block))
    }

    pub fn larger_magnitudes_i16(a: &[i16], b: &[i16], out: &mut [i16]) {
        let whole = a.len() / 8 * 8;
        for ((o, x), y) in out[..whole].chunks_exact_mut(8).zip(a.chunks_exact(8)).zip(b.chunks_exact(8)) {
            // SAFETY: SSE2 is part of the x86-64 baseline; each chunk holds 16 bytes and
            // `loadu`/`storeu` have no alignment requirement.
            unsafe {
                let (x, y) = (_mm_loadu_si128(x.as_ptr().cast()), _mm_loadu_si128(y.as_ptr().cast()));
                let zero = _mm_setzero_si128();
                // |v| = max(v, -v): the values are in the symmetric range, so -v does not wrap.
                let x = _mm_max_epi16(x, _mm_sub_epi16(zero, x));
                let y = _mm_max_epi16(y, _mm_sub_epi16(zero, y));
                _mm_storeu_si128(o.as_mut_ptr().cast(), _mm_max_epi16(x, y));
            }
        }
        super::larger_magnitudes_i16_scalar(&a[whole..], &b[whole..], &mut out[whole..]);
    }

    /// [`super::transpose_i16`] in 8 x 8 blocks through SSE2 registers (`punpck*` at 16, 32 and
    /// 64 bits: 24 shuffles per 64 values). The ragged edges are blocks that overlap the last
    /// whole ones (the patch matrices have 25, 150 or 500 rows); a matrix with fewer than eight
    /// rows or columns, and the forced scalar level, take [`super::transpose_i16_scalar`].
    pub fn transpose_i16(from: &[i16], columns: usize, to: &mut [i16]) {
        let rows = from.len() / columns;
        if rows < 8 || columns < 8 || level::current() == Level::Scalar {
            return super::transpose_i16_scalar(from, columns, to);
        }
        if columns >= 32 && level::current() == Level::Avx512 {
            // SAFETY: `current()` reports AVX-512 only where the CPU has it; rows and columns are
            // at least 8 and 32, and `to` holds `from.len()` values (asserted by the caller).
            return unsafe { transpose_blocks_avx512(from, columns, rows, to) };
        }
        // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 CPU runs it.
        unsafe { transpose_blocks(from, columns, rows, to) }
    }

    /// [`transpose_i16`] in blocks of 8 rows and 32 columns: the SSE2 network of
    /// [`transpose_blocks`] on four 8 x 8 blocks at once, one in each 128-bit lane of the 512-bit
    /// registers (24 shuffles per 256 values), each lane then stored as eight values of a row of
    /// `to`. The ragged edges are blocks that overlap the last whole ones.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; `rows >= 8`, `columns >= 32`, `from` and `to` hold
    /// `rows * columns` values.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn transpose_blocks_avx512(from: &[i16], columns: usize, rows: usize, to: &mut [i16]) {
        for j0 in block_starts(rows, 8) {
            for i0 in block_starts(columns, 32) {
                let mut a = [_mm512_setzero_si512(); 8];
                for (j, a) in a.iter_mut().enumerate() {
                    // SAFETY: row `j0 + j < rows`, columns `i0..i0 + 32 <= columns`: inside `from`.
                    *a = unsafe { _mm512_loadu_si512(from.as_ptr().add((j0 + j) * columns + i0).cast()) };
                }
                let mut t = [_mm512_setzero_si512(); 8];
                for (k, t) in t.iter_mut().enumerate() {
                    let (x, y) = (a[k / 2 * 2], a[k / 2 * 2 + 1]);
                    *t = if k % 2 == 0 { _mm512_unpacklo_epi16(x, y) } else { _mm512_unpackhi_epi16(x, y) };
                }
                let mut u = [_mm512_setzero_si512(); 8];
                for (k, u) in u.iter_mut().enumerate() {
                    let (x, y) = (t[k / 4 * 4 + k % 4 / 2], t[k / 4 * 4 + k % 4 / 2 + 2]);
                    *u = if k % 2 == 0 { _mm512_unpacklo_epi32(x, y) } else { _mm512_unpackhi_epi32(x, y) };
                }
                for i in 0..8 {
                    let (x, y) = (u[i / 2], u[i / 2 + 4]);
                    let column =
                        if i % 2 == 0 { _mm512_unpacklo_epi64(x, y) } else { _mm512_unpackhi_epi64(x, y) };
                    // Lane `b` holds column `i0 + 8b + i` of rows `j0..j0 + 8`.
                    let lanes = [
                        _mm512_castsi512_si128(column),
                        _mm512_extracti32x4_epi32::<1>(column),
                        _mm512_extracti32x4_epi32::<2>(column),
                        _mm512_extracti32x4_epi32::<3>(column),
                    ];
                    for (b, lane) in lanes.into_iter().enumerate() {
                        let at = (i0 + 8 * b + i) * rows + j0;
                        // SAFETY: row `i0 + 8b + i < columns` of `to` (rows of `rows` values),
                        // values `j0..j0 + 8 <= rows`: inside `to`.
                        unsafe { _mm_storeu_si128(to.as_mut_ptr().add(at).cast(), lane) };
                    }
                }
            }
        }
    }

    /// The blocks of [`transpose_i16`] (`rows` and `columns` at least 8).
    #[target_feature(enable = "sse2")]
    fn transpose_blocks(from: &[i16], columns: usize, rows: usize, to: &mut [i16]) {
        for j0 in block_starts(rows, 8) {
            for i0 in block_starts(columns, 8) {
                let load = |j: usize| {
                    let row: &[i16; 8] = from[(j0 + j) * columns + i0..][..8].try_into().expect("8 values");
                    // SAFETY: `row` holds 16 bytes; `loadu` has no alignment requirement.
                    unsafe { _mm_loadu_si128(row.as_ptr().cast()) }
                };
                let a: [__m128i; 8] = core::array::from_fn(load);
                // Pairs of rows interleaved by 16, then 32, then 64 bits: each step doubles the
                // run of one column's values, until a register holds a whole column of the block.
                let t: [__m128i; 8] = core::array::from_fn(|k| {
                    let (x, y) = (a[k / 2 * 2], a[k / 2 * 2 + 1]);
                    if k % 2 == 0 {
                        _mm_unpacklo_epi16(x, y)
                    } else {
                        _mm_unpackhi_epi16(x, y)
                    }
                });
                // u[k] holds columns 2(k % 4) and 2(k % 4) + 1 of rows 4(k / 4)..+4.
                let u: [__m128i; 8] = core::array::from_fn(|k| {
                    let (x, y) = (t[k / 4 * 4 + k % 4 / 2], t[k / 4 * 4 + k % 4 / 2 + 2]);
                    if k % 2 == 0 {
                        _mm_unpacklo_epi32(x, y)
                    } else {
                        _mm_unpackhi_epi32(x, y)
                    }
                });
                for (i, at) in (i0..i0 + 8).enumerate() {
                    let (x, y) = (u[i / 2], u[i / 2 + 4]);
                    let column = if i % 2 == 0 { _mm_unpacklo_epi64(x, y) } else { _mm_unpackhi_epi64(x, y) };
                    let out: &mut [i16; 8] = (&mut to[at * rows + j0..][..8]).try_into().expect("8 values");
                    // SAFETY: `out` holds 16 bytes; `storeu` has no alignment requirement.
                    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), column) };
                }
            }
        }
    }

    const LANES: usize = 8;

    #[inline]
    pub fn dot_i16(a: &[i16], b: &[i16]) -> i64 {
        let chunks = a.len() / LANES;
        // SAFETY: SSE2 is part of the x86-64 baseline. Every load reads LANES values starting at
        // index i * LANES < chunks * LANES <= len, so it stays inside both slices (equal lengths are
        // asserted by the caller); `loadu` has no alignment requirement.
        let mut sum = unsafe {
            let mut acc = _mm_setzero_si128();
            for i in 0..chunks {
                let x = _mm_loadu_si128(a.as_ptr().add(i * LANES) as *const __m128i);
                let y = _mm_loadu_si128(b.as_ptr().add(i * LANES) as *const __m128i);
                let pairs = _mm_madd_epi16(x, y);
                let sign = _mm_srai_epi32(pairs, 31);
                let low = _mm_unpacklo_epi32(pairs, sign);
                let high = _mm_unpackhi_epi32(pairs, sign);
                acc = _mm_add_epi64(acc, _mm_add_epi64(low, high));
            }
            let mut lanes = [0i64; 2];
            _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, acc);
            lanes[0] + lanes[1]
        };
        let tail = chunks * LANES;
        sum += super::dot_i16_scalar(&a[tail..], &b[tail..]);
        sum
    }

    #[inline]
    pub fn axpy_i16(acc: &mut [i64], scale: i16, x: &[i16]) {
        let chunks = x.len() / LANES;
        // SAFETY: SSE2 is baseline. Loads read x[i*8..i*8+8] and read/write acc[i*8..i*8+8], all below
        // chunks * 8 <= len of both slices (equal lengths asserted by the caller); unaligned access is
        // allowed by loadu/storeu.
        unsafe {
            let s = _mm_set1_epi16(scale);
            for i in 0..chunks {
                let v = _mm_loadu_si128(x.as_ptr().add(i * LANES) as *const __m128i);
                let low16 = _mm_mullo_epi16(v, s);
                let high16 = _mm_mulhi_epi16(v, s);
                // Full 32-bit products of lanes 0-3 and 4-7.
                let p0 = _mm_unpacklo_epi16(low16, high16);
                let p1 = _mm_unpackhi_epi16(low16, high16);
                let out = acc.as_mut_ptr().add(i * LANES) as *mut __m128i;
                for (k, p) in [p0, p1].into_iter().enumerate() {
                    let sign = _mm_srai_epi32(p, 31);
                    let lo = _mm_unpacklo_epi32(p, sign);
                    let hi = _mm_unpackhi_epi32(p, sign);
                    let a0 = out.add(2 * k);
                    let a1 = out.add(2 * k + 1);
                    _mm_storeu_si128(a0, _mm_add_epi64(_mm_loadu_si128(a0), lo));
                    _mm_storeu_si128(a1, _mm_add_epi64(_mm_loadu_si128(a1), hi));
                }
            }
        }
        let tail = chunks * LANES;
        super::axpy_i16_scalar(&mut acc[tail..], scale, &x[tail..]);
    }
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use core::arch::aarch64::*;

    #[inline]
    pub fn copy_i16(dst: &mut [i16], src: &[i16]) {
        // SAFETY: both slices hold `src.len()` values (asserted by the caller); the loop moves
        // exactly that many, 8, then 4, then 1 at a time, advancing both pointers; `ld1`/`st1` and
        // `ldrh`/`strh` need only 2-byte alignment. Written in `asm!` because LLVM turns any copy
        // loop back into a `memcpy` call.
        unsafe {
            core::arch::asm!(
                "2:",
                "cmp {n}, #8",
                "b.lo 3f",
                "ld1 {{{v:v}.8h}}, [{s}], #16",
                "st1 {{{v:v}.8h}}, [{d}], #16",
                "sub {n}, {n}, #8",
                "b 2b",
                "3:",
                "cmp {n}, #4",
                "b.lo 4f",
                "ld1 {{{v:v}.4h}}, [{s}], #8",
                "st1 {{{v:v}.4h}}, [{d}], #8",
                "sub {n}, {n}, #4",
                "4:",
                "cbz {n}, 5f",
                "ldrh {w:w}, [{s}], #2",
                "strh {w:w}, [{d}], #2",
                "sub {n}, {n}, #1",
                "b 4b",
                "5:",
                n = inout(reg) src.len() => _,
                s = inout(reg) src.as_ptr() => _,
                d = inout(reg) dst.as_mut_ptr() => _,
                v = out(vreg) _,
                w = out(reg) _,
                options(nostack)
            );
        }
    }

    pub fn copy_rows_i16(dst: &mut [i16], src: &[i16], stride: usize, width: usize) {
        let rows = dst.len() / width;
        // Each row moves as `regs` whole registers of eight values: `spill` values past its end,
        // read from past its source row and written over the start of the next row, which is
        // written after it. Every row but the last may spill where the spill stays inside both
        // slices: row `r < rows - 1` ends its reads by `r * stride + 8 * regs <= (rows - 1) *
        // stride + width` (the source's asserted reach) when `spill <= stride`, and its writes by
        // `(rows - 2) * width + 8 * regs <= rows * width` when `spill <= width`.
        let regs = width.div_ceil(8);
        let spill = 8 * regs - width;
        if rows == 0 || regs > 4 || spill > width.min(stride) {
            // Rows of any width, one `copy_i16` each (the definition's `copy_from_slice` is a
            // `memcpy` call moving a halfword at a time on the strict-align target).
            for (r, row) in dst.chunks_exact_mut(width).enumerate() {
                copy_i16(row, &src[r * stride..][..width]);
            }
            return;
        }
        let spilling = if spill == 0 { rows } else { rows - 1 };
        macro_rules! rows_of {
            ($registers:literal) => {
                // SAFETY: `spilling` rows, each one `ld1` of `8 * regs` values at `r * stride`
                // (post-incremented by the stride) and one `st1` at `r * width` (post-incremented
                // by the width): inside `src` and `dst` by the bounds above; `ld1`/`st1` need
                // only 2-byte alignment. The registers are named because a multi-register `ld1`
                // takes consecutive ones.
                unsafe {
                    core::arch::asm!(
                        "cbz {rows}, 3f",
                        "2:",
                        concat!("ld1 {{", $registers, "}}, [{s}], {stride_bytes}"),
                        concat!("st1 {{", $registers, "}}, [{d}], {width_bytes}"),
                        "subs {rows}, {rows}, #1",
                        "b.ne 2b",
                        "3:",
                        rows = inout(reg) spilling => _,
                        s = inout(reg) src.as_ptr() => _,
                        d = inout(reg) dst.as_mut_ptr() => _,
                        stride_bytes = in(reg) 2 * stride,
                        width_bytes = in(reg) 2 * width,
                        out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                        options(nostack)
                    )
                }
            };
        }
        match regs {
            1 => rows_of!("v16.8h"),
            2 => rows_of!("v16.8h, v17.8h"),
            3 => rows_of!("v16.8h, v17.8h, v18.8h"),
            _ => rows_of!("v16.8h, v17.8h, v18.8h, v19.8h"),
        }
        if spilling < rows {
            let last = rows - 1;
            copy_i16(&mut dst[last * width..], &src[last * stride..][..width]);
        }
    }

    #[inline]
    pub fn add_i64(dst: &mut [i64], src: &[i64]) {
        // SAFETY: both slices hold `src.len()` values (asserted by the caller); the loops read and
        // write exactly that many, eight, then two, then one at a time, advancing both pointers;
        // `ld1`/`st1` with `.2d` need only 8-byte alignment, which `i64` slices have. The
        // four-register `ld1`/`st1` need consecutive registers, hence the named ones. Eight at a
        // time is what the sum of the cores' gradients (431,080 values per core and step) runs on.
        unsafe {
            core::arch::asm!(
                "5:",
                "cmp {n}, #8",
                "b.lo 2f",
                "ld1 {{v16.2d, v17.2d, v18.2d, v19.2d}}, [{s}], #64",
                "ld1 {{v20.2d, v21.2d, v22.2d, v23.2d}}, [{d}]",
                "add v20.2d, v20.2d, v16.2d",
                "add v21.2d, v21.2d, v17.2d",
                "add v22.2d, v22.2d, v18.2d",
                "add v23.2d, v23.2d, v19.2d",
                "st1 {{v20.2d, v21.2d, v22.2d, v23.2d}}, [{d}], #64",
                "sub {n}, {n}, #8",
                "b 5b",
                "2:",
                "cmp {n}, #2",
                "b.lo 3f",
                "ld1 {{{a:v}.2d}}, [{s}], #16",
                "ld1 {{{b:v}.2d}}, [{d}]",
                "add {b:v}.2d, {b:v}.2d, {a:v}.2d",
                "st1 {{{b:v}.2d}}, [{d}], #16",
                "sub {n}, {n}, #2",
                "b 2b",
                "3:",
                "cbz {n}, 4f",
                "ldr {x}, [{s}]",
                "ldr {y}, [{d}]",
                "add {y}, {y}, {x}",
                "str {y}, [{d}]",
                "4:",
                n = inout(reg) src.len() => _,
                s = inout(reg) src.as_ptr() => _,
                d = inout(reg) dst.as_mut_ptr() => _,
                a = out(vreg) _,
                b = out(vreg) _,
                x = out(reg) _,
                y = out(reg) _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                options(nostack)
            );
        }
    }

    #[inline]
    pub fn add_rows_i64(
        dst: &mut [i64],
        (row_stride, plane_stride): (usize, usize),
        src: &[i64],
        (width, rows, planes): (usize, usize, usize),
    ) {
        if width != 6 {
            return super::add_rows_i64_scalar(dst, (row_stride, plane_stride), src, (width, rows, planes));
        }
        // SAFETY: the caller asserted that `src` holds `planes * rows * 6` values and that the
        // furthest row, `(planes - 1) * plane_stride + (rows - 1) * row_stride + 6`, lies inside
        // `dst`; the loops read `src` in order and each row of `dst` once, moving the row pointer
        // on by the row stride and the plane pointer by the plane stride. `ld1`/`st1` `.2d` need
        // only 8-byte alignment; three-register forms need consecutive registers (named).
        unsafe {
            core::arch::asm!(
                "2:",
                "mov {row}, {plane}",
                "mov {r}, {rows}",
                "3:",
                "ld1 {{v16.2d, v17.2d, v18.2d}}, [{s}], #48",
                "ld1 {{v19.2d, v20.2d, v21.2d}}, [{row}]",
                "add v19.2d, v19.2d, v16.2d",
                "add v20.2d, v20.2d, v17.2d",
                "add v21.2d, v21.2d, v18.2d",
                "st1 {{v19.2d, v20.2d, v21.2d}}, [{row}], {row_bytes}",
                "subs {r}, {r}, #1",
                "b.ne 3b",
                "add {plane}, {plane}, {plane_bytes}",
                "subs {planes}, {planes}, #1",
                "b.ne 2b",
                planes = inout(reg) planes => _,
                plane = inout(reg) dst.as_mut_ptr() => _,
                s = inout(reg) src.as_ptr() => _,
                rows = in(reg) rows,
                row_bytes = in(reg) 8 * row_stride,
                plane_bytes = in(reg) 8 * plane_stride,
                row = out(reg) _,
                r = out(reg) _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
                options(nostack)
            );
        }
    }

    pub fn affine_u32(values: &[u32], base: u32, scale: u32, out: &mut [u32]) {
        let whole = values.len() / 4 * 4;
        if whole > 0 {
            // SAFETY: both slices hold `values.len()` values (asserted by the caller); the loop
            // reads and writes `whole` of them, four at a time, advancing both pointers (`ld1`/
            // `st1` `.4s` need only the 4-byte alignment `u32` has).
            unsafe {
                core::arch::asm!(
                    "dup {b:v}.4s, {base:w}",
                    "dup {k:v}.4s, {scale:w}",
                    "2:",
                    "ld1 {{{v:v}.4s}}, [{s}], #16",
                    "mov {o:v}.16b, {b:v}.16b",
                    "mla {o:v}.4s, {v:v}.4s, {k:v}.4s",
                    "st1 {{{o:v}.4s}}, [{d}], #16",
                    "subs {n}, {n}, #4",
                    "b.ne 2b",
                    n = inout(reg) whole => _,
                    s = inout(reg) values.as_ptr() => _,
                    d = inout(reg) out.as_mut_ptr() => _,
                    base = in(reg) base,
                    scale = in(reg) scale,
                    b = out(vreg) _,
                    k = out(vreg) _,
                    v = out(vreg) _,
                    o = out(vreg) _,
                    options(nostack)
                );
            }
        }
        super::affine_u32_scalar(&values[whole..], base, scale, &mut out[whole..]);
    }

    pub fn sum_i16(values: &[i16]) -> i64 {
        let whole = values.len() / 32 * 32;
        let mut vector: i64 = 0;
        if whole > 0 {
            // SAFETY: as in `sum_abs_i16`, with signed pairwise sums (`sadalp`) of the values.
            unsafe {
                core::arch::asm!(
                    "movi v20.4s, #0",
                    "movi v21.4s, #0",
                    "2:",
                    "ld1 {{v16.8h, v17.8h, v18.8h, v19.8h}}, [{p}], #64",
                    "sadalp v20.4s, v16.8h",
                    "sadalp v21.4s, v17.8h",
                    "sadalp v20.4s, v18.8h",
                    "sadalp v21.4s, v19.8h",
                    "subs {n}, {n}, #32",
                    "b.ne 2b",
                    "saddlp v20.2d, v20.4s",
                    "sadalp v20.2d, v21.4s",
                    "addp d20, v20.2d",
                    "fmov {out}, d20",
                    n = inout(reg) whole => _,
                    p = inout(reg) values.as_ptr() => _,
                    out = out(reg) vector,
                    out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
                    options(nostack, readonly)
                );
            }
        }
        vector + super::sum_i16_scalar(&values[whole..])
    }

    pub fn larger_magnitudes_i16(a: &[i16], b: &[i16], out: &mut [i16]) {
        let whole = a.len() / 8 * 8;
        if whole > 0 {
            // SAFETY: the three slices hold `a.len()` values (asserted by the caller); the loop
            // reads and writes `whole` of them, eight at a time, advancing the pointers; `ld1`/`st1`
            // `.8h` need only 2-byte alignment. The values are in the symmetric range, so `abs`
            // does not wrap.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "ld1 {{{x:v}.8h}}, [{a}], #16",
                    "ld1 {{{y:v}.8h}}, [{b}], #16",
                    "abs {x:v}.8h, {x:v}.8h",
                    "abs {y:v}.8h, {y:v}.8h",
                    "smax {x:v}.8h, {x:v}.8h, {y:v}.8h",
                    "st1 {{{x:v}.8h}}, [{o}], #16",
                    "subs {n}, {n}, #8",
                    "b.ne 2b",
                    n = inout(reg) whole => _,
                    a = inout(reg) a.as_ptr() => _,
                    b = inout(reg) b.as_ptr() => _,
                    o = inout(reg) out.as_mut_ptr() => _,
                    x = out(vreg) _,
                    y = out(vreg) _,
                    options(nostack)
                );
            }
        }
        super::larger_magnitudes_i16_scalar(&a[whole..], &b[whole..], &mut out[whole..]);
    }

    pub fn sum_abs_i16(values: &[i16]) -> u64 {
        let whole = values.len() / 32 * 32;
        let mut vector: u64 = 0;
        if whole > 0 {
            // SAFETY: the loop reads `whole <= values.len()` values, 32 at a time, advancing the
            // pointer; `ld1` `.8h` needs only 2-byte alignment; the four-register `ld1` needs
            // consecutive registers, hence the named ones. Each 32-bit lane gains two magnitudes
            // of at most 32768 per trip, over at most 2^11 trips (the caller's 65,536 values).
            unsafe {
                core::arch::asm!(
                    "movi v20.4s, #0",
                    "movi v21.4s, #0",
                    "2:",
                    "ld1 {{v16.8h, v17.8h, v18.8h, v19.8h}}, [{p}], #64",
                    "abs v16.8h, v16.8h",
                    "abs v17.8h, v17.8h",
                    "abs v18.8h, v18.8h",
                    "abs v19.8h, v19.8h",
                    "uadalp v20.4s, v16.8h",
                    "uadalp v21.4s, v17.8h",
                    "uadalp v20.4s, v18.8h",
                    "uadalp v21.4s, v19.8h",
                    "subs {n}, {n}, #32",
                    "b.ne 2b",
                    "add v20.4s, v20.4s, v21.4s",
                    "uaddlv d20, v20.4s",
                    "fmov {out}, d20",
                    n = inout(reg) whole => _,
                    p = inout(reg) values.as_ptr() => _,
                    out = out(reg) vector,
                    out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
                    options(nostack, readonly)
                );
            }
        }
        // Eight more at a time (a chunk schedule's group of eight terms is one such step).
        let eights = (values.len() - whole) / 8 * 8;
        if eights > 0 {
            let mut sum: u64;
            // SAFETY: the loop reads `eights` values from `whole`, inside `values`, eight at a
            // time; each 32-bit lane gains at most two magnitudes of 32768 per trip, over at most
            // three trips.
            unsafe {
                core::arch::asm!(
                    "movi {acc:v}.4s, #0",
                    "2:",
                    "ld1 {{{v:v}.8h}}, [{p}], #16",
                    "abs {v:v}.8h, {v:v}.8h",
                    "uadalp {acc:v}.4s, {v:v}.8h",
                    "subs {n}, {n}, #8",
                    "b.ne 2b",
                    "uaddlv {acc:d}, {acc:v}.4s",
                    "fmov {out}, {acc:d}",
                    n = inout(reg) eights => _,
                    p = inout(reg) values.as_ptr().add(whole) => _,
                    out = out(reg) sum,
                    acc = out(vreg) _,
                    v = out(vreg) _,
                    options(nostack, readonly)
                );
            }
            vector += sum;
        }
        vector + super::sum_abs_i16_scalar(&values[whole + eights..])
    }

    pub fn max_abs_i16(values: &[i16]) -> u32 {
        let whole = values.len() / 32 * 32;
        let mut vector: u32 = 0;
        if whole > 0 {
            // SAFETY: the loop reads `whole <= values.len()` values, 32 at a time, advancing the
            // pointer; `ld1` `.8h` needs only the 2-byte alignment `i16` has. The four-register
            // `ld1` needs consecutive registers, hence the named ones.
            unsafe {
                core::arch::asm!(
                    "movi v20.8h, #0",
                    "movi v21.8h, #0",
                    "2:",
                    "ld1 {{v16.8h, v17.8h, v18.8h, v19.8h}}, [{p}], #64",
                    "abs v16.8h, v16.8h",
                    "abs v17.8h, v17.8h",
                    "abs v18.8h, v18.8h",
                    "abs v19.8h, v19.8h",
                    "umax v16.8h, v16.8h, v17.8h",
                    "umax v18.8h, v18.8h, v19.8h",
                    "umax v20.8h, v20.8h, v16.8h",
                    "umax v21.8h, v21.8h, v18.8h",
                    "subs {n}, {n}, #32",
                    "b.ne 2b",
                    "umax v20.8h, v20.8h, v21.8h",
                    "umaxv h20, v20.8h",
                    "umov {out:w}, v20.h[0]",
                    n = inout(reg) whole => _,
                    p = inout(reg) values.as_ptr() => _,
                    out = out(reg) vector,
                    out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
                    options(nostack)
                );
            }
        }
        vector.max(super::max_abs_i16_scalar(&values[whole..]))
    }

    pub fn max_u32(values: &[u32]) -> Option<u32> {
        let whole = values.len() / 4 * 4;
        if whole == 0 {
            return super::max_u32_scalar(values);
        }
        let vector: u32;
        // SAFETY: the loop reads `whole <= values.len()` values, four at a time, advancing the
        // pointer; `ld1` `.4s` needs only the 4-byte alignment `u32` has.
        unsafe {
            core::arch::asm!(
                "movi {m:v}.4s, #0",
                "2:",
                "ld1 {{{v:v}.4s}}, [{p}], #16",
                "umax {m:v}.4s, {m:v}.4s, {v:v}.4s",
                "subs {n}, {n}, #4",
                "b.ne 2b",
                "umaxv {m:s}, {m:v}.4s",
                "fmov {out:w}, {m:s}",
                n = inout(reg) whole => _,
                p = inout(reg) values.as_ptr() => _,
                m = out(vreg) _,
                v = out(vreg) _,
                out = out(reg) vector,
                options(nostack)
            );
        }
        Some(super::max_u32_scalar(&values[whole..]).map_or(vector, |tail| tail.max(vector)))
    }

    pub fn transpose_i16(from: &[i16], columns: usize, to: &mut [i16]) {
        const B: usize = 8;
        let rows = from.len() / columns;
        let (full_rows, full_cols) = (rows / B * B, columns / B * B);
        for j0 in (0..full_rows).step_by(B) {
            for i0 in (0..full_cols).step_by(B) {
                // SAFETY: the block reads rows j0..j0+8 of `from` at columns i0..i0+8 and writes
                // rows i0..i0+8 of `to` (rows of `rows` values) at columns j0..j0+8; j0 + 8 <= rows
                // and i0 + 8 <= columns, and `to` holds columns * rows values (asserted by the
                // caller), so every access is inside its slice. `ld1`/`st1` `.8h` need only 2-byte
                // alignment.
                unsafe {
                    core::arch::asm!(
                        "ld1 {{v0.8h}}, [{s}], {ss}",
                        "ld1 {{v1.8h}}, [{s}], {ss}",
                        "ld1 {{v2.8h}}, [{s}], {ss}",
                        "ld1 {{v3.8h}}, [{s}], {ss}",
                        "ld1 {{v4.8h}}, [{s}], {ss}",
                        "ld1 {{v5.8h}}, [{s}], {ss}",
                        "ld1 {{v6.8h}}, [{s}], {ss}",
                        "ld1 {{v7.8h}}, [{s}], {ss}",
                        // 16-bit pairs, then 32-bit pairs, then 64-bit halves.
                        "trn1 v16.8h, v0.8h, v1.8h",
                        "trn2 v17.8h, v0.8h, v1.8h",
                        "trn1 v18.8h, v2.8h, v3.8h",
                        "trn2 v19.8h, v2.8h, v3.8h",
                        "trn1 v20.8h, v4.8h, v5.8h",
                        "trn2 v21.8h, v4.8h, v5.8h",
                        "trn1 v22.8h, v6.8h, v7.8h",
                        "trn2 v23.8h, v6.8h, v7.8h",
                        "trn1 v0.4s, v16.4s, v18.4s",
                        "trn2 v2.4s, v16.4s, v18.4s",
                        "trn1 v1.4s, v17.4s, v19.4s",
                        "trn2 v3.4s, v17.4s, v19.4s",
                        "trn1 v4.4s, v20.4s, v22.4s",
                        "trn2 v6.4s, v20.4s, v22.4s",
                        "trn1 v5.4s, v21.4s, v23.4s",
                        "trn2 v7.4s, v21.4s, v23.4s",
                        "trn1 v16.2d, v0.2d, v4.2d",
                        "trn1 v17.2d, v1.2d, v5.2d",
                        "trn1 v18.2d, v2.2d, v6.2d",
                        "trn1 v19.2d, v3.2d, v7.2d",
                        "trn2 v20.2d, v0.2d, v4.2d",
                        "trn2 v21.2d, v1.2d, v5.2d",
                        "trn2 v22.2d, v2.2d, v6.2d",
                        "trn2 v23.2d, v3.2d, v7.2d",
                        "st1 {{v16.8h}}, [{d}], {ds}",
                        "st1 {{v17.8h}}, [{d}], {ds}",
                        "st1 {{v18.8h}}, [{d}], {ds}",
                        "st1 {{v19.8h}}, [{d}], {ds}",
                        "st1 {{v20.8h}}, [{d}], {ds}",
                        "st1 {{v21.8h}}, [{d}], {ds}",
                        "st1 {{v22.8h}}, [{d}], {ds}",
                        "st1 {{v23.8h}}, [{d}], {ds}",
                        s = inout(reg) from.as_ptr().add(j0 * columns + i0) => _,
                        ss = in(reg) columns * 2,
                        d = inout(reg) to.as_mut_ptr().add(i0 * rows + j0) => _,
                        ds = in(reg) rows * 2,
                        out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                        out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                        out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                        out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                        options(nostack)
                    );
                }
            }
        }
        // The last columns (fewer than eight) of the whole blocks' rows: each column gathered
        // eight rows at a time into one register by lane loads, stored as eight values of a row
        // of `to`.
        for i in full_cols..columns {
            for j0 in (0..full_rows).step_by(B) {
                // SAFETY: reads `from[(j0 + l) * columns + i]` for the eight `l`, inside `from`
                // (j0 + 8 <= full_rows <= rows, i < columns); writes `to[i * rows + j0..][..8]`,
                // inside `to` (it holds columns * rows values); 2-byte alignment suffices.
                unsafe {
                    core::arch::asm!(
                        "ld1 {{{v:v}.h}}[0], [{s}], {ss}",
                        "ld1 {{{v:v}.h}}[1], [{s}], {ss}",
                        "ld1 {{{v:v}.h}}[2], [{s}], {ss}",
                        "ld1 {{{v:v}.h}}[3], [{s}], {ss}",
                        "ld1 {{{v:v}.h}}[4], [{s}], {ss}",
                        "ld1 {{{v:v}.h}}[5], [{s}], {ss}",
                        "ld1 {{{v:v}.h}}[6], [{s}], {ss}",
                        "ld1 {{{v:v}.h}}[7], [{s}], {ss}",
                        "st1 {{{v:v}.8h}}, [{d}]",
                        s = inout(reg) from.as_ptr().add(j0 * columns + i) => _,
                        ss = in(reg) columns * 2,
                        d = in(reg) to.as_mut_ptr().add(i * rows + j0),
                        v = out(vreg) _,
                        options(nostack)
                    );
                }
            }
        }
        // The last rows (fewer than eight) of whole column blocks: eight values of a row loaded
        // at once, each stored into its row of `to` by a lane store.
        for j in full_rows..rows {
            for i0 in (0..full_cols).step_by(B) {
                // SAFETY: reads `from[j * columns + i0..][..8]` (j < rows, i0 + 8 <= columns),
                // writes `to[(i0 + l) * rows + j]` for the eight `l` (i0 + 8 <= columns): inside
                // both slices; 2-byte alignment suffices.
                unsafe {
                    core::arch::asm!(
                        "ld1 {{{v:v}.8h}}, [{s}]",
                        "st1 {{{v:v}.h}}[0], [{d}], {ds}",
                        "st1 {{{v:v}.h}}[1], [{d}], {ds}",
                        "st1 {{{v:v}.h}}[2], [{d}], {ds}",
                        "st1 {{{v:v}.h}}[3], [{d}], {ds}",
                        "st1 {{{v:v}.h}}[4], [{d}], {ds}",
                        "st1 {{{v:v}.h}}[5], [{d}], {ds}",
                        "st1 {{{v:v}.h}}[6], [{d}], {ds}",
                        "st1 {{{v:v}.h}}[7], [{d}], {ds}",
                        s = in(reg) from.as_ptr().add(j * columns + i0),
                        d = inout(reg) to.as_mut_ptr().add(i0 * rows + j) => _,
                        ds = in(reg) rows * 2,
                        v = out(vreg) _,
                        options(nostack)
                    );
                }
            }
        }
        super::transpose_rect(from, columns, to, full_rows..rows, full_cols..columns);
    }

    pub fn round_to_i16(from: &[i32], shift: u32, to: &mut [i16]) {
        let whole = from.len() / 8 * 8;
        // SAFETY: both slices hold `from.len()` values (asserted by the caller); the loop reads
        // `whole` values of `from` and writes as many of `to`, eight at a time, advancing both
        // pointers; `ld1` `.4s` needs 4-byte and `st1` `.8h` 2-byte alignment, which the slices have.
        unsafe {
            core::arch::asm!(
                "dup {k:v}.4s, {neg:w}",
                "dup {floor:v}.8h, {min:w}",
                "2:",
                "cbz {n}, 3f",
                "ld1 {{{a:v}.4s}}, [{s}], #16",
                "ld1 {{{b:v}.4s}}, [{s}], #16",
                "srshl {a:v}.4s, {a:v}.4s, {k:v}.4s",
                "srshl {b:v}.4s, {b:v}.4s, {k:v}.4s",
                "sqxtn {r:v}.4h, {a:v}.4s",
                "sqxtn2 {r:v}.8h, {b:v}.4s",
                "smax {r:v}.8h, {r:v}.8h, {floor:v}.8h",
                "st1 {{{r:v}.8h}}, [{d}], #16",
                "sub {n}, {n}, #8",
                "b 2b",
                "3:",
                n = inout(reg) whole => _,
                s = inout(reg) from.as_ptr() => _,
                d = inout(reg) to.as_mut_ptr() => _,
                neg = in(reg) -(shift as i32),
                min = in(reg) -(i16::MAX as i32),
                k = out(vreg) _,
                floor = out(vreg) _,
                a = out(vreg) _,
                b = out(vreg) _,
                r = out(vreg) _,
                options(nostack)
            );
        }
        super::round_to_i16_scalar(&from[whole..], shift, &mut to[whole..]);
    }

    const LANES: usize = 8;

    #[inline]
    pub fn dot_i16(a: &[i16], b: &[i16]) -> i64 {
        let chunks = a.len() / LANES;
        // SAFETY: NEON is part of the aarch64 baseline of every target we build for. Loads read
        // LANES values at i * LANES < chunks * LANES <= len of both slices.
        let mut sum = unsafe {
            let mut acc = vdupq_n_s64(0);
            for i in 0..chunks {
                let x = vld1q_s16(a.as_ptr().add(i * LANES));
                let y = vld1q_s16(b.as_ptr().add(i * LANES));
                let low = vmull_s16(vget_low_s16(x), vget_low_s16(y));
                let high = vmull_high_s16(x, y);
                acc = vpadalq_s32(acc, vaddq_s32(low, high));
            }
            vaddvq_s64(acc)
        };
        let tail = chunks * LANES;
        sum += super::dot_i16_scalar(&a[tail..], &b[tail..]);
        sum
    }

    #[inline]
    pub fn axpy_i16(acc: &mut [i64], scale: i16, x: &[i16]) {
        let chunks = x.len() / LANES;
        // SAFETY: NEON is baseline. Loads and stores touch x[i*8..i*8+8] and acc[i*8..i*8+8], inside
        // both slices because i * 8 + 8 <= chunks * 8 <= len.
        unsafe {
            let s = vdup_n_s16(scale);
            for i in 0..chunks {
                let v = vld1q_s16(x.as_ptr().add(i * LANES));
                let p0 = vmull_s16(vget_low_s16(v), s);
                let p1 = vmull_s16(vget_high_s16(v), s);
                let out = acc.as_mut_ptr().add(i * LANES);
                vst1q_s64(out, vaddw_s32(vld1q_s64(out), vget_low_s32(p0)));
                vst1q_s64(out.add(2), vaddw_high_s32(vld1q_s64(out.add(2)), p0));
                vst1q_s64(out.add(4), vaddw_s32(vld1q_s64(out.add(4)), vget_low_s32(p1)));
                vst1q_s64(out.add(6), vaddw_high_s32(vld1q_s64(out.add(6)), p1));
            }
        }
        let tail = chunks * LANES;
        super::axpy_i16_scalar(&mut acc[tail..], scale, &x[tail..]);
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod platform {
    pub use super::add_rows_i64_scalar as add_rows_i64;
    pub use super::copy_rows_i16_scalar as copy_rows_i16;
    pub use super::larger_magnitudes_i16_scalar as larger_magnitudes_i16;
    pub use super::max_abs_i16_scalar as max_abs_i16;
    pub use super::max_u32_scalar as max_u32;
    pub use super::round_to_i16_scalar as round_to_i16;
    pub use super::sum_abs_i16_scalar as sum_abs_i16;
    pub use super::transpose_i16_scalar as transpose_i16;
    pub use super::{affine_u32_scalar as affine_u32, sum_i16_scalar as sum_i16};

    pub use super::{add_i64_scalar as add_i64, axpy_i16_scalar as axpy_i16, dot_i16_scalar as dot_i16};

    pub fn copy_i16(dst: &mut [i16], src: &[i16]) {
        dst.copy_from_slice(src)
    }
}

/// `f32` dot product with sixteen independent partial sums, so the compiler can vectorise it without
/// reassociating (the summation order is fixed and the same on every CPU).
#[cfg(feature = "reference")]
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot product of unequal lengths");
    const WIDTH: usize = 16;
    let mut partial = [0f32; WIDTH];
    let (ca, cb) = (a.chunks_exact(WIDTH), b.chunks_exact(WIDTH));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..WIDTH {
            partial[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = partial.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// `acc[i] += scale * x[i]` in `f32`.
#[cfg(feature = "reference")]
#[inline]
pub fn axpy_f32(acc: &mut [f32], scale: f32, x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "axpy of unequal lengths");
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += scale * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_values(rng: &mut Rng, n: usize) -> [i16; 67] {
        let mut v = [0i16; 67];
        for x in v.iter_mut().take(n) {
            *x = (rng.below(65535) as i64 - 32767) as i16;
        }
        v
    }

    #[test]
    fn vector_dot_matches_scalar_at_every_length() {
        let mut rng = Rng::new(7);
        for n in 0..67 {
            let a = random_values(&mut rng, n);
            let b = random_values(&mut rng, n);
            assert_eq!(dot_i16(&a[..n], &b[..n]), dot_i16_scalar(&a[..n], &b[..n]), "length {n}");
        }
    }

    /// [`copy_rows_i16`] against its definition for widths 1..=40 (up to 32 take whole registers,
    /// spilling into the next row), several rows and strides, up to the source's last value;
    /// nothing past the destination is written.
    #[test]
    fn copy_rows_matches_the_definition() {
        let src: [i16; 400] = core::array::from_fn(|i| i as i16 * 7 - 1000);
        for width in 1..=40 {
            for rows in 0..8 {
                for stride in [width, width + 3, width + 7, 44] {
                    let (mut fast, mut want) = ([0i16; 330], [0i16; 330]);
                    let n = rows * width;
                    let offset = if rows > 0 { 400 - ((rows - 1) * stride + width) } else { 0 };
                    copy_rows_i16(&mut fast[..n], &src[offset..], stride, width);
                    copy_rows_i16_scalar(&mut want[..n], &src[offset..], stride, width);
                    assert_eq!(fast, want, "width {width}, {rows} rows, stride {stride}");
                }
            }
        }
    }

    #[test]
    fn vector_dot_is_exact_at_the_extremes() {
        let a = [-32767i16; 64];
        let b = [-32767i16; 64];
        assert_eq!(dot_i16(&a, &b), 64 * 32767i64 * 32767);
        let c = [32767i16; 64];
        assert_eq!(dot_i16(&a, &c), -64 * 32767i64 * 32767);
    }

    #[test]
    fn copy_moves_every_length() {
        let mut rng = Rng::new(5);
        for n in 0..67 {
            let src = random_values(&mut rng, n);
            let mut dst = [7i16; 67];
            copy_i16(&mut dst[..n], &src[..n]);
            assert_eq!(&dst[..n], &src[..n]);
            assert!(dst[n..].iter().all(|&v| v == 7), "length {n} wrote past the end");
        }
    }

    #[test]
    fn larger_magnitudes_match_scalar_at_every_length() {
        let mut rng = Rng::new(14);
        let edges = [32767i16, -32767, 0, 1, -1];
        let a: [i16; 40] =
            core::array::from_fn(|i| edges.get(i).copied().unwrap_or(rng.next_u64() as i16 | 1));
        let b: [i16; 40] =
            core::array::from_fn(|i| edges.get(4 - i.min(4)).copied().unwrap_or(rng.next_u64() as i16 | 1));
        let (a, b) = (a.map(|v| v.max(-32767)), b.map(|v| v.max(-32767)));
        for len in 0..=40 {
            let (mut fast, mut scalar) = ([7i16; 40], [7i16; 40]);
            larger_magnitudes_i16(&a[..len], &b[..len], &mut fast[..len]);
            larger_magnitudes_i16_scalar(&a[..len], &b[..len], &mut scalar[..len]);
            assert_eq!(fast, scalar, "{len} values");
        }
    }

    #[test]
    fn transpose_matches_scalar_at_every_shape() {
        let mut rng = Rng::new(11);
        let mut from = [0i16; 23 * 19];
        for v in from.iter_mut() {
            *v = rng.next_u64() as i16;
        }
        for rows in 1..=23 {
            for columns in 1..=19 {
                let n = rows * columns;
                let (mut fast, mut scalar) = ([0i16; 23 * 19], [0i16; 23 * 19]);
                transpose_i16(&from[..n], columns, &mut fast[..n]);
                transpose_i16_scalar(&from[..n], columns, &mut scalar[..n]);
                assert_eq!(fast, scalar, "{rows} x {columns}");
                for j in 0..rows {
                    for i in 0..columns {
                        assert_eq!(scalar[i * rows + j], from[j * columns + i], "{rows} x {columns}");
                    }
                }
            }
        }
    }

    /// [`transpose_i16`] at the layers' shapes (patch matrices of 25, 150 and 500 rows) and
    /// others around them, where the x86-64 blocks overlap in one direction or both.
    #[test]
    fn transpose_matches_scalar_at_large_shapes() {
        let mut rng = Rng::new(12);
        let from: [i16; 7000] = core::array::from_fn(|_| rng.next_u64() as i16);
        for (rows, columns) in [(25, 64), (25, 240), (150, 16), (150, 40), (500, 8), (500, 12), (8, 750)] {
            for (rows, columns) in [(rows, columns), (rows + 1, columns - 1), (columns, rows)] {
                let n = rows * columns;
                let (mut fast, mut scalar) = ([0i16; 7000], [0i16; 7000]);
                transpose_i16(&from[..n], columns, &mut fast[..n]);
                transpose_i16_scalar(&from[..n], columns, &mut scalar[..n]);
                assert!(fast == scalar, "{rows} x {columns}");
            }
        }
    }

    #[test]
    fn rounding_conversion_matches_scalar_at_every_length_and_shift() {
        let mut rng = Rng::new(13);
        let edges = [0, 1, -1, i32::MAX, i32::MIN, 1 << 23, -(1 << 23), (1 << 23) - 1, -(1 << 23) + 1];
        let from: [i32; 40] = core::array::from_fn(|i| {
            edges.get(i).copied().unwrap_or_else(|| (rng.next_u64() as i32) >> (i % 24))
        });
        for n in 0..=from.len() {
            for shift in 1..=31 {
                let (mut fast, mut scalar) = ([7i16; 40], [7i16; 40]);
                round_to_i16(&from[..n], shift, &mut fast[..n]);
                round_to_i16_scalar(&from[..n], shift, &mut scalar[..n]);
                assert_eq!(fast, scalar, "{n} values, shift {shift}");
            }
        }
        let mut out = [0i16; 4];
        round_to_i16_scalar(&[3 << 8, -(3 << 8) + 128, i32::MAX, i32::MIN], 9, &mut out);
        assert_eq!(out, [2, -1, 32767, -32767], "half up, saturated to the symmetric range");
    }

    /// [`max_u32`] against its definition at every length up to 100 (x86-64: past one trip of
    /// four vectors and the ragged ends), with the largest value at every position.
    #[test]
    fn max_matches_scalar_at_every_length() {
        let mut rng = Rng::new(17);
        let values: [u32; 100] = core::array::from_fn(|_| rng.next_u64() as u32 >> (rng.next_u64() % 32));
        for n in 0..=values.len() {
            for at in 0..n {
                let mut v = values;
                v[at] = u32::MAX - 1; // the largest anywhere: in a vector lane or in the tail
                assert_eq!(max_u32(&v[..n]), max_u32_scalar(&v[..n]), "{n} values, largest at {at}");
            }
            assert_eq!(max_u32(&values[..n]), max_u32_scalar(&values[..n]), "{n} values");
        }
    }

    /// [`max_abs_i16`] and [`sum_abs_i16`] against their definitions at every length up to 100,
    /// with the largest magnitude anywhere, and at the extremes (including -32768).
    #[test]
    fn max_abs_matches_the_definition() {
        let mut rng = Rng::new(10);
        for n in 0..100 {
            let mut values = [0i16; 100];
            for v in values.iter_mut().take(n) {
                *v = (rng.below(2001) as i64 - 1000) as i16;
            }
            if n > 0 {
                values[rng.below(n as u64) as usize] = [-32768, -32767, 32767, -1001][n % 4];
            }
            assert_eq!(max_abs_i16(&values[..n]), max_abs_i16_scalar(&values[..n]), "{n} values");
            assert_eq!(sum_abs_i16(&values[..n]), sum_abs_i16_scalar(&values[..n]), "{n} values");
            assert_eq!(sum_i16(&values[..n]), sum_i16_scalar(&values[..n]), "{n} values");
            let indices: [u32; 100] = core::array::from_fn(|i| (values[i] as i32 + 40000) as u32);
            let base = [0, 7, u32::MAX - 100_000][n % 3];
            let (mut fast, mut want) = ([0u32; 100], [0u32; 100]);
            affine_u32(&indices[..n], base, 500, &mut fast[..n]);
            affine_u32_scalar(&indices[..n], base, 500, &mut want[..n]);
            assert_eq!(fast, want, "{n} offsets");
        }
    }

    /// [`add_rows_i64`] against its definition for the regions' width six and others, with
    /// several row and plane counts and strides, up to the destination's last value.
    #[test]
    fn add_rows_matches_the_definition() {
        let mut rng = Rng::new(21);
        for width in [1, 5, 6, 7] {
            for rows in 1..4 {
                for planes in 1..4 {
                    let (row_stride, plane_stride) = (width + 3, (width + 3) * (rows + 1));
                    let src: [i64; 84] = core::array::from_fn(|_| rng.next_u64() as i64 >> 8);
                    let reach = (planes - 1) * plane_stride + (rows - 1) * row_stride + width;
                    let start: [i64; 200] = core::array::from_fn(|_| rng.next_u64() as i64 >> 8);
                    let (mut fast, mut want) = (start, start);
                    let n = width * rows * planes;
                    let strides = (row_stride, plane_stride);
                    add_rows_i64(&mut fast[..reach], strides, &src[..n], (width, rows, planes));
                    add_rows_i64_scalar(&mut want[..reach], strides, &src[..n], (width, rows, planes));
                    assert_eq!(fast, want, "width {width}, {rows} rows, {planes} planes");
                }
            }
        }
    }

    #[test]
    fn add_matches_scalar_at_every_length() {
        let mut rng = Rng::new(9);
        for n in 0..19 {
            let src: [i64; 19] = core::array::from_fn(|_| rng.next_u64() as i64);
            let start: [i64; 20] = core::array::from_fn(|_| rng.next_u64() as i64);
            let (mut fast, mut scalar) = (start, start);
            add_i64(&mut fast[..n], &src[..n]);
            add_i64_scalar(&mut scalar[..n], &src[..n]);
            assert_eq!(fast, scalar, "length {n}");
            assert_eq!(fast[n..], start[n..], "length {n} wrote past the end");
        }
    }

    #[test]
    fn vector_axpy_matches_scalar_at_every_length() {
        let mut rng = Rng::new(9);
        for n in 0..67 {
            let x = random_values(&mut rng, n);
            for scale in [-32767i16, -3, 0, 1, 12345, 32767] {
                let mut fast = [1_000_000_000_000i64; 67];
                let mut slow = fast;
                axpy_i16(&mut fast[..n], scale, &x[..n]);
                axpy_i16_scalar(&mut slow[..n], scale, &x[..n]);
                assert_eq!(fast, slow, "length {n} scale {scale}");
            }
        }
    }
}
