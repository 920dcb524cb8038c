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
//! `smlal`/`smlal2` with the coefficient by lane, sixteen `i64x2` sums; x86: two terms at a time
//! interleaved into `pmaddwd` on SSE2 and AVX2, `vpdpwssd` on AVX-512 VNNI, chosen at run time by
//! [`super::level`]), then 8 columns, then the scalar code for the last few; AVX-512 takes the last
//! columns as one more 32-column tile with masked loads and stores.

use super::level::{self, Level};

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
    gather_axpy_at(level::current(), out, write, rows, offsets, coeffs, ends)
}

/// [`gather_axpy`] at a given level (tests and benchmarks cover every level this way); a level
/// the CPU cannot run falls back to the scalar definition.
pub fn gather_axpy_at(
    level: Level,
    out: &mut [i64],
    write: Write,
    rows: &[i16],
    offsets: &[u32],
    coeffs: &[i16],
    ends: &[u32],
) {
    let slack = check(out.len(), rows, offsets, coeffs, ends);
    if level == Level::Scalar || !level::supported(level) {
        scalar_columns(out, 0, write, rows, offsets, coeffs);
    } else {
        platform::gather_axpy(level, out, write, rows, (offsets, None), slack, coeffs, ends)
    }
}

/// [`gather_axpy`] over rows `stride` values apart, `offsets[t] == t * stride` (a dense layer's
/// weight rows, every one a term): on aarch64 each row load moves a cursor on to the next, as in
/// [`gather_axpy2_strided`]; elsewhere it is [`gather_axpy`] with the offsets.
#[inline]
pub fn gather_axpy_strided(
    out: &mut [i64],
    write: Write,
    rows: &[i16],
    (offsets, stride): (&[u32], usize),
    coeffs: &[i16],
    ends: &[u32],
) {
    gather_axpy_strided_at(level::current(), out, write, rows, (offsets, stride), coeffs, ends)
}

/// [`gather_axpy_strided`] at a given level (see [`gather_axpy_at`]).
pub fn gather_axpy_strided_at(
    level: Level,
    out: &mut [i64],
    write: Write,
    rows: &[i16],
    (offsets, stride): (&[u32], usize),
    coeffs: &[i16],
    ends: &[u32],
) {
    debug_assert!(offsets.iter().enumerate().all(|(t, &o)| o as usize == t * stride), "rows {stride} apart");
    #[cfg(target_arch = "aarch64")]
    if level != Level::Scalar && level::supported(level) {
        let slack = check_strided(out.len(), rows, (offsets, stride), coeffs, ends);
        return platform::gather_axpy(level, out, write, rows, (offsets, Some(stride)), slack, coeffs, ends);
    }
    gather_axpy_at(level, out, write, rows, offsets, coeffs, ends)
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
    let _slack = check(out.len(), rows, offsets, coeffs, ends);
    scalar_columns(out, 0, write, rows, offsets, coeffs);
}

/// Two products over the same rows and terms with two coefficient lists at once,
/// `outs[f] (=|+=) sum_t coeffs[f][t] * rows[offsets[t]..][..len]` (two filters of one convolution
/// over its patches, two rows of a dense weight gradient over the block's inputs): each row is
/// loaded once for both. `ends` comes from [`super::schedule::chunk_ends_pair`], which bounds
/// both lists' lanes. On aarch64 and at x86-64's AVX-512 level one register tile holds both
/// outputs' lanes; elsewhere it is [`gather_axpy`] twice.
#[inline]
pub fn gather_axpy2(
    outs: [&mut [i64]; 2],
    write: Write,
    rows: &[i16],
    offsets: &[u32],
    coeffs: [&[i16]; 2],
    ends: &[u32],
) {
    gather_axpy2_at(level::current(), outs, write, rows, offsets, coeffs, ends)
}

/// [`gather_axpy2`] at a given level (see [`gather_axpy_at`]).
pub fn gather_axpy2_at(
    level: Level,
    outs: [&mut [i64]; 2],
    write: Write,
    rows: &[i16],
    offsets: &[u32],
    coeffs: [&[i16]; 2],
    ends: &[u32],
) {
    let [first, second] = outs;
    assert_eq!(first.len(), second.len(), "both outputs have the same columns");
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    if platform::has_pair_tile(level) && level::supported(level) {
        let _slack = check(first.len(), rows, offsets, coeffs[0], ends);
        check_terms(coeffs[1], offsets, ends); // the same rows: their reach is checked once
        return platform::gather_axpy2([first, second], write, rows, offsets, None, coeffs, ends);
    }
    gather_axpy_at(level, first, write, rows, offsets, coeffs[0], ends);
    gather_axpy_at(level, second, write, rows, offsets, coeffs[1], ends);
}

/// [`gather_axpy2`] over rows `stride` values apart, `offsets[t] == t * stride` (a convolution's
/// transposed patches): on aarch64 each row load moves the row pointer on to the next (`ld1` with
/// a post-increment), without reading an offset or computing an address, and the rows' reach is
/// checked from the stride alone; elsewhere it is [`gather_axpy2`] with the offsets.
#[inline]
pub fn gather_axpy2_strided(
    outs: [&mut [i64]; 2],
    write: Write,
    rows: &[i16],
    (offsets, stride): (&[u32], usize),
    coeffs: [&[i16]; 2],
    ends: &[u32],
) {
    gather_axpy2_strided_at(level::current(), outs, write, rows, (offsets, stride), coeffs, ends)
}

/// [`gather_axpy2_strided`] at a given level (see [`gather_axpy_at`]).
pub fn gather_axpy2_strided_at(
    level: Level,
    outs: [&mut [i64]; 2],
    write: Write,
    rows: &[i16],
    (offsets, stride): (&[u32], usize),
    coeffs: [&[i16]; 2],
    ends: &[u32],
) {
    debug_assert!(offsets.iter().enumerate().all(|(t, &o)| o as usize == t * stride), "rows {stride} apart");
    #[cfg(target_arch = "aarch64")]
    if level != Level::Scalar && level::supported(level) {
        let [first, second] = outs;
        assert_eq!(first.len(), second.len(), "both outputs have the same columns");
        let _slack = check_strided(first.len(), rows, (offsets, stride), coeffs[0], ends);
        check_terms(coeffs[1], offsets, ends); // the same rows: their reach is checked once
        return platform::gather_axpy2([first, second], write, rows, offsets, Some(stride), coeffs, ends);
    }
    gather_axpy2_at(level, outs, write, rows, offsets, coeffs, ends)
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
/// Returns the slack: how many values of `rows` lie past the last column of the furthest row.
fn check(columns: usize, rows: &[i16], offsets: &[u32], coeffs: &[i16], ends: &[u32]) -> usize {
    let last = super::max_u32(offsets).map_or(0, |o| o as usize + columns);
    assert!(last <= rows.len(), "a term's row reaches past the matrix");
    check_terms(coeffs, offsets, ends);
    rows.len() - last
}

/// [`check`] for rows `stride` values apart (`offsets[t] == t * stride`, which the strided entry
/// points assert in debug builds): the furthest row is the last term's, so the reach needs no pass
/// over the offsets.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // only the NEON path reads rows by stride
fn check_strided(
    columns: usize,
    rows: &[i16],
    (offsets, stride): (&[u32], usize),
    coeffs: &[i16],
    ends: &[u32],
) -> usize {
    let last = offsets.len().checked_sub(1).map_or(0, |last| last * stride + columns);
    assert!(last <= rows.len(), "a term's row reaches past the matrix");
    check_terms(coeffs, offsets, ends);
    rows.len() - last
}

/// The invariants of one coefficient list: one per offset, and chunks that end in order at the
/// last term.
fn check_terms(coeffs: &[i16], offsets: &[u32], ends: &[u32]) {
    assert_eq!(offsets.len(), coeffs.len(), "one offset per coefficient");
    assert_eq!(ends.last().map_or(0, |&e| e as usize), coeffs.len(), "the chunks end at the last term");
    debug_assert!(ends.windows(2).all(|w| w[0] < w[1]), "chunk ends increase");
    debug_assert!(!coeffs.contains(&i16::MIN), "values are in the symmetric range");
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use super::{scalar_columns, Write};
    use crate::simd::level::Level;
    use core::arch::aarch64::*;
    use core::arch::asm;

    #[allow(clippy::too_many_arguments)] // the product's parts, where its rows are, and their slack
    pub fn gather_axpy(
        _level: Level,
        out: &mut [i64],
        write: Write,
        rows: &[i16],
        (offsets, stride): (&[u32], Option<usize>),
        slack: usize,
        coeffs: &[i16],
        ends: &[u32],
    ) {
        match stride {
            Some(stride) => {
                let term_rows = ByStride { next: rows.as_ptr(), stride_bytes: 2 * stride };
                single_tiles(out, write, rows, offsets, term_rows, slack, coeffs, ends)
            }
            None => {
                let term_rows = ByOffset { rows: rows.as_ptr(), offsets };
                single_tiles(out, write, rows, offsets, term_rows, slack, coeffs, ends)
            }
        }
    }

    /// [`gather_axpy`]'s tiles over the columns, with the rows found by `term_rows` (the same rows
    /// as `offsets` give, which the scalar columns of a short output use).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn single_tiles(
        out: &mut [i64],
        write: Write,
        rows: &[i16],
        offsets: &[u32],
        term_rows: impl TermRows,
        slack: usize,
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut first = 0;
        // SAFETY (both tile calls): `check` proved that every row `offsets[t]` has `out.len()`
        // values inside `rows`; a tile reads columns `first..first + 8 * V <= out.len()` of each row
        // and writes `out[first..first + 8 * V]`; `ends` is increasing and ends at `coeffs.len()`,
        // so every term index read is below `offsets.len() == coeffs.len()`, and the eight
        // coefficients loaded together lie below the chunk's end.
        while first + 32 <= out.len() {
            unsafe {
                tile::<4>(
                    out.as_mut_ptr().add(first),
                    write,
                    term_rows.starting_at_column(first),
                    coeffs,
                    ends,
                )
            };
            first += 32;
        }
        let rest = out.len() - first;
        if rest > 16 && first + 32 - out.len() <= slack {
            // More than two 8-column tiles' worth left, and the rows have room past their last
            // column: one 32-column tile reading on into that room, into its own buffer, of which
            // only the wanted columns are kept (one pass over the terms instead of three or four).
            let mut last = [0i64; 32];
            // SAFETY: as above, for columns `first..first + 32` of every row, which the slack
            // keeps inside `rows`; `last` holds 32 values.
            unsafe {
                tile::<4>(last.as_mut_ptr(), Write::Set, term_rows.starting_at_column(first), coeffs, ends)
            };
            match write {
                Write::Set => out[first..].copy_from_slice(&last[..rest]),
                Write::Add => super::super::add_i64(&mut out[first..], &last[..rest]),
            }
            return;
        }
        while first + 8 <= out.len() {
            unsafe {
                tile::<1>(
                    out.as_mut_ptr().add(first),
                    write,
                    term_rows.starting_at_column(first),
                    coeffs,
                    ends,
                )
            };
            first += 8;
        }
        if first == out.len() {
            return;
        }
        if out.len() < 8 {
            return scalar_columns(&mut out[first..], first, write, rows, offsets, coeffs);
        }
        // The last few columns: one more 8-column tile ending at the last column, over columns
        // the tiles before it already did. Computed into its own buffer and only its new columns
        // kept, so `Add` does not add the overlap twice (on the strict-align target this is much
        // cheaper than the scalar code: one vector load and two `smlal` per term).
        let start = out.len() - 8;
        let mut last = [0i64; 8];
        // SAFETY: as above, for columns `start..start + 8 == out.len()`; `last` holds 8 values.
        unsafe {
            tile::<1>(last.as_mut_ptr(), Write::Set, term_rows.starting_at_column(start), coeffs, ends)
        };
        let new = &last[first - start..];
        match write {
            Write::Set => out[first..].copy_from_slice(new),
            Write::Add => super::super::add_i64(&mut out[first..], new),
        }
    }

    /// Where a tile finds each term's row, loaded in term order (`t` = 0, 1, 2, ...).
    trait TermRows: Copy {
        /// These rows from column `first` on. SAFETY (caller): the columns are inside the rows.
        unsafe fn starting_at_column(self, first: usize) -> Self;
        /// The `8 * V` values of term `t`'s row. SAFETY (caller): the row is readable (`check`,
        /// or the stride's reach).
        /// `ODD` picks the second set of registers for the four-register loads, so that
        /// consecutive terms' rows land in different registers and none has to be moved out of
        /// the way while the previous term's multiplies still read it.
        unsafe fn load<const V: usize, const ODD: bool>(&mut self, t: usize) -> [int16x8_t; 4];
    }

    /// Term `t`'s row starts `offsets[t]` values into the matrix.
    #[derive(Clone, Copy)]
    struct ByOffset<'a> {
        rows: *const i16,
        offsets: &'a [u32],
    }

    impl TermRows for ByOffset<'_> {
        #[inline(always)]
        unsafe fn starting_at_column(self, first: usize) -> Self {
            ByOffset { rows: self.rows.add(first), ..self }
        }
        #[inline(always)]
        unsafe fn load<const V: usize, const ODD: bool>(&mut self, t: usize) -> [int16x8_t; 4] {
            load_row::<V, ODD>(self.rows.add(*self.offsets.get_unchecked(t) as usize))
        }
    }

    /// Rows a stride apart: a cursor that each load moves on to the next row.
    #[derive(Clone, Copy)]
    struct ByStride {
        next: *const i16,
        stride_bytes: usize,
    }

    impl TermRows for ByStride {
        #[inline(always)]
        unsafe fn starting_at_column(self, first: usize) -> Self {
            ByStride { next: self.next.add(first), ..self }
        }
        #[inline(always)]
        unsafe fn load<const V: usize, const ODD: bool>(&mut self, _t: usize) -> [int16x8_t; 4] {
            load_row_advancing::<V, ODD>(&mut self.next, self.stride_bytes)
        }
    }

    /// Whether [`gather_axpy2`] has its own tile at `level` (every vector level here).
    pub fn has_pair_tile(level: Level) -> bool {
        level != Level::Scalar
    }

    pub fn gather_axpy2(
        outs: [&mut [i64]; 2],
        write: Write,
        rows: &[i16],
        offsets: &[u32],
        stride: Option<usize>,
        coeffs: [&[i16]; 2],
        ends: &[u32],
    ) {
        match stride {
            Some(stride) => {
                let term_rows = ByStride { next: rows.as_ptr(), stride_bytes: 2 * stride };
                pair_tiles(outs, write, rows, offsets, term_rows, coeffs, ends)
            }
            None => {
                let term_rows = ByOffset { rows: rows.as_ptr(), offsets };
                pair_tiles(outs, write, rows, offsets, term_rows, coeffs, ends)
            }
        }
    }

    /// [`gather_axpy2`]'s tiles over the columns, with the rows found by `term_rows` (the same
    /// rows as `offsets` give, which the scalar columns of a short output use).
    #[inline(always)]
    fn pair_tiles(
        outs: [&mut [i64]; 2],
        write: Write,
        rows: &[i16],
        offsets: &[u32],
        term_rows: impl TermRows,
        coeffs: [&[i16]; 2],
        ends: &[u32],
    ) {
        let [a, b] = outs;
        let columns = a.len();
        let mut first = 0;
        // SAFETY (every tile call): as in `gather_axpy`, for both coefficient lists (`check` ran on
        // each) and both outputs, which have `columns` values each.
        // Few long chunks: the wide tile, whose totals live in memory and are read and written at
        // each chunk's end; many or short ones: the narrower one, whose totals stay in registers
        // (measured on both convolutions of MxLenet, about 13 chunks of 38 terms in the second, and
        // on the dense weight gradient's blocks).
        let in_memory = ends.len() == 1 || (ends.len() <= 4 && offsets.len() >= 24 * ends.len());
        while in_memory && first + 32 <= columns {
            let outs = unsafe { [a.as_mut_ptr().add(first), b.as_mut_ptr().add(first)] };
            unsafe { tile2_in_memory::<4>(outs, write, term_rows.starting_at_column(first), coeffs, ends) };
            first += 32;
        }
        while first + 16 <= columns {
            let outs = unsafe { [a.as_mut_ptr().add(first), b.as_mut_ptr().add(first)] };
            unsafe { tile2::<2>(outs, write, term_rows.starting_at_column(first), coeffs, ends) };
            first += 16;
        }
        while first + 8 <= columns {
            let outs = unsafe { [a.as_mut_ptr().add(first), b.as_mut_ptr().add(first)] };
            unsafe { tile2::<1>(outs, write, term_rows.starting_at_column(first), coeffs, ends) };
            first += 8;
        }
        if first == columns {
            return;
        }
        if columns < 8 {
            scalar_columns(&mut a[first..], first, write, rows, offsets, coeffs[0]);
            return scalar_columns(&mut b[first..], first, write, rows, offsets, coeffs[1]);
        }
        // The last few columns as in `gather_axpy`: an overlapping tile into its own buffers.
        let start = columns - 8;
        let mut last = [[0i64; 8]; 2];
        let outs = [last[0].as_mut_ptr(), last[1].as_mut_ptr()];
        // SAFETY: as above, for columns `start..columns`; each buffer holds 8 values.
        unsafe { tile2::<1>(outs, Write::Set, term_rows.starting_at_column(start), coeffs, ends) };
        for (out, last) in [a, b].into_iter().zip(&last) {
            let new = &last[first - start..];
            match write {
                Write::Set => out[first..].copy_from_slice(new),
                Write::Add => super::super::add_i64(&mut out[first..], new),
            }
        }
    }

    /// `8 * V` columns of two outputs (`V` is 1 or 2): `2V` `i32x4` lane sums per output and chunk,
    /// `4V` `i64x2` totals per output, all in registers; each row is loaded once and multiplied by
    /// both coefficient registers.
    #[inline(always)]
    unsafe fn tile2<const V: usize>(
        outs: [*mut i64; 2],
        write: Write,
        mut rows: impl TermRows,
        coeffs: [&[i16]; 2],
        ends: &[u32],
    ) {
        let mut wide = [[vdupq_n_s64(0); 8]; 2];
        if write == Write::Add {
            for f in 0..2 {
                for (i, w) in wide[f].iter_mut().enumerate().take(4 * V) {
                    *w = load_i64x2(outs[f].add(2 * i));
                }
            }
        }
        let mut t = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [[vdupq_n_s32(0); 4]; 2];
            while t + 8 <= end {
                let c = [load_i16x8(coeffs[0].as_ptr().add(t)), load_i16x8(coeffs[1].as_ptr().add(t))];
                macro_rules! term {
                    ($lane:literal) => {{
                        let r = rows.load::<V, { $lane % 2 == 1 }>(t + $lane);
                        for f in 0..2 {
                            for v in 0..V {
                                lanes[f][2 * v] =
                                    vmlal_laneq_s16::<$lane>(lanes[f][2 * v], vget_low_s16(r[v]), c[f]);
                                lanes[f][2 * v + 1] =
                                    vmlal_high_laneq_s16::<$lane>(lanes[f][2 * v + 1], r[v], c[f]);
                            }
                        }
                    }};
                }
                term!(0);
                term!(1);
                term!(2);
                term!(3);
                term!(4);
                term!(5);
                term!(6);
                term!(7);
                t += 8;
            }
            while t < end {
                let r = rows.load::<V, false>(t);
                for f in 0..2 {
                    let c = *coeffs[f].get_unchecked(t);
                    for v in 0..V {
                        lanes[f][2 * v] = vmlal_n_s16(lanes[f][2 * v], vget_low_s16(r[v]), c);
                        lanes[f][2 * v + 1] = vmlal_high_n_s16(lanes[f][2 * v + 1], r[v], c);
                    }
                }
                t += 1;
            }
            for f in 0..2 {
                for i in 0..2 * V {
                    wide[f][2 * i] = vaddw_s32(wide[f][2 * i], vget_low_s32(lanes[f][i]));
                    wide[f][2 * i + 1] = vaddw_high_s32(wide[f][2 * i + 1], lanes[f][i]);
                }
            }
        }
        for f in 0..2 {
            for (i, w) in wide[f].iter().enumerate().take(4 * V) {
                store_i64x2(outs[f].add(2 * i), *w);
            }
        }
    }

    /// `8 * V` columns of two outputs (`V` is 4): `4V` `i32x4` lane sums per chunk (`2V` per
    /// output), each row loaded once and multiplied by both coefficient registers. With no room
    /// left for sixteen more `i64` registers, the totals are kept in the outputs and added at each
    /// chunk's end (stored, on the first chunk of a `Set`): the better tile when there are few
    /// chunks.
    #[inline(always)]
    unsafe fn tile2_in_memory<const V: usize>(
        outs: [*mut i64; 2],
        write: Write,
        mut rows: impl TermRows,
        coeffs: [&[i16]; 2],
        ends: &[u32],
    ) {
        let mut fresh = write == Write::Set;
        let mut t = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [[vdupq_n_s32(0); 8]; 2];
            while t + 8 <= end {
                let c = [load_i16x8(coeffs[0].as_ptr().add(t)), load_i16x8(coeffs[1].as_ptr().add(t))];
                macro_rules! term {
                    ($lane:literal) => {{
                        let r = rows.load::<V, { $lane % 2 == 1 }>(t + $lane);
                        for f in 0..2 {
                            for v in 0..V {
                                lanes[f][2 * v] =
                                    vmlal_laneq_s16::<$lane>(lanes[f][2 * v], vget_low_s16(r[v]), c[f]);
                                lanes[f][2 * v + 1] =
                                    vmlal_high_laneq_s16::<$lane>(lanes[f][2 * v + 1], r[v], c[f]);
                            }
                        }
                    }};
                }
                term!(0);
                term!(1);
                term!(2);
                term!(3);
                term!(4);
                term!(5);
                term!(6);
                term!(7);
                t += 8;
            }
            while t < end {
                let r = rows.load::<V, false>(t);
                for f in 0..2 {
                    let c = *coeffs[f].get_unchecked(t);
                    for v in 0..V {
                        lanes[f][2 * v] = vmlal_n_s16(lanes[f][2 * v], vget_low_s16(r[v]), c);
                        lanes[f][2 * v + 1] = vmlal_high_n_s16(lanes[f][2 * v + 1], r[v], c);
                    }
                }
                t += 1;
            }
            for (out, filter_lanes) in outs.iter().zip(&lanes) {
                for (i, &lane) in filter_lanes.iter().take(2 * V).enumerate() {
                    let (low, high) = (out.add(4 * i), out.add(4 * i + 2));
                    if fresh {
                        store_i64x2(low, vmovl_s32(vget_low_s32(lane)));
                        store_i64x2(high, vmovl_high_s32(lane));
                    } else {
                        store_i64x2(low, vaddw_s32(load_i64x2(low), vget_low_s32(lane)));
                        store_i64x2(high, vaddw_high_s32(load_i64x2(high), lane));
                    }
                }
            }
            fresh = false;
        }
        if fresh {
            for out in outs {
                for i in 0..4 * V {
                    store_i64x2(out.add(2 * i), vdupq_n_s64(0));
                }
            }
        }
    }

    // Vector loads and stores in `asm!`. The intrinsics (`vld1q_*`) are unaligned loads to LLVM,
    // and the firmware's target (`aarch64-unknown-none`, `+strict-align`) splits each into eight
    // halfword loads and a trip through the stack. `ld1`/`st1` need only element alignment; `ldp q`
    // on a row that is only 2-byte aligned relies on alignment checking being off
    // (SCTLR_EL1.A = 0: set by the firmware's boot code, and so on Linux) and on Normal memory
    // (the firmware trains only after turning the MMU on).

    /// Eight `i16` from `p`. SAFETY (caller): `p..p + 8` is readable.
    #[inline(always)]
    unsafe fn load_i16x8(p: *const i16) -> int16x8_t {
        let v: int16x8_t;
        asm!("ld1 {{{v:v}.8h}}, [{p}]", v = out(vreg) v, p = in(reg) p, options(pure, readonly, nostack, preserves_flags));
        v
    }

    /// Thirty-two `i16` from `p` in one four-register `ld1` (the same 64 bytes as two `ldp q`, in
    /// one instruction; its registers must be consecutive, hence the named ones). SAFETY
    /// (caller): `p..p + 32` is readable.
    #[inline(always)]
    unsafe fn load_i16x32<const ODD: bool>(p: *const i16) -> [int16x8_t; 4] {
        let (a, b, c, d): (int16x8_t, int16x8_t, int16x8_t, int16x8_t);
        if ODD {
            asm!(
                "ld1 {{v28.8h, v29.8h, v30.8h, v31.8h}}, [{p}]",
                out("v28") a, out("v29") b, out("v30") c, out("v31") d, p = in(reg) p,
                options(pure, readonly, nostack, preserves_flags)
            );
        } else {
            asm!(
                "ld1 {{v0.8h, v1.8h, v2.8h, v3.8h}}, [{p}]",
                out("v0") a, out("v1") b, out("v2") c, out("v3") d, p = in(reg) p,
                options(pure, readonly, nostack, preserves_flags)
            );
        }
        [a, b, c, d]
    }

    /// Sixteen `i16` from `p` in one `ldp`. SAFETY (caller): `p..p + 16` is readable.
    #[inline(always)]
    unsafe fn load_i16x16(p: *const i16) -> [int16x8_t; 2] {
        let (a, b): (int16x8_t, int16x8_t);
        asm!(
            "ldp {a:q}, {b:q}, [{p}]",
            a = out(vreg) a, b = out(vreg) b, p = in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
        [a, b]
    }

    /// Two `i64` from `p`. SAFETY (caller): `p..p + 2` is readable.
    #[inline(always)]
    unsafe fn load_i64x2(p: *const i64) -> int64x2_t {
        let v: int64x2_t;
        asm!("ld1 {{{v:v}.2d}}, [{p}]", v = out(vreg) v, p = in(reg) p, options(pure, readonly, nostack, preserves_flags));
        v
    }

    /// Two `i64` to `p`. SAFETY (caller): `p..p + 2` is writable.
    #[inline(always)]
    unsafe fn store_i64x2(p: *mut i64, v: int64x2_t) {
        asm!("st1 {{{v:v}.2d}}, [{p}]", v = in(vreg) v, p = in(reg) p, options(nostack, preserves_flags));
    }

    /// The `8 * V` values of the row at `*row`, moving `*row` on by `stride_bytes` in the same
    /// `ld1` (post-increment by a register). SAFETY (caller): they are readable.
    #[inline(always)]
    unsafe fn load_row_advancing<const V: usize, const ODD: bool>(
        row: &mut *const i16,
        stride_bytes: usize,
    ) -> [int16x8_t; 4] {
        let (a, b, c, d): (int16x8_t, int16x8_t, int16x8_t, int16x8_t);
        if V == 4 && ODD {
            asm!(
                "ld1 {{v28.8h, v29.8h, v30.8h, v31.8h}}, [{p}], {stride}",
                p = inout(reg) *row, stride = in(reg) stride_bytes,
                out("v28") a, out("v29") b, out("v30") c, out("v31") d,
                options(readonly, nostack, preserves_flags)
            );
            [a, b, c, d]
        } else if V == 4 {
            asm!(
                "ld1 {{v0.8h, v1.8h, v2.8h, v3.8h}}, [{p}], {stride}",
                p = inout(reg) *row, stride = in(reg) stride_bytes,
                out("v0") a, out("v1") b, out("v2") c, out("v3") d,
                options(readonly, nostack, preserves_flags)
            );
            [a, b, c, d]
        } else if V == 2 {
            asm!(
                "ld1 {{v0.8h, v1.8h}}, [{p}], {stride}",
                p = inout(reg) *row, stride = in(reg) stride_bytes,
                out("v0") a, out("v1") b,
                options(readonly, nostack, preserves_flags)
            );
            [a, b, a, b]
        } else {
            asm!(
                "ld1 {{v0.8h}}, [{p}], {stride}",
                p = inout(reg) *row, stride = in(reg) stride_bytes,
                out("v0") a,
                options(readonly, nostack, preserves_flags)
            );
            [a, a, a, a]
        }
    }

    /// The `8 * V` values of one row at `row` (`ODD`: see [`TermRows::load`]). SAFETY (caller):
    /// they are readable.
    #[inline(always)]
    unsafe fn load_row<const V: usize, const ODD: bool>(row: *const i16) -> [int16x8_t; 4] {
        if V == 4 {
            load_i16x32::<ODD>(row)
        } else if V == 2 {
            let [a, b] = load_i16x16(row);
            [a, b, a, b]
        } else {
            let r = load_i16x8(row);
            [r, r, r, r]
        }
    }

    /// `8 * V` columns (`V` is 1 or 4): `2V` `i32x4` lane sums per chunk, `4V` `i64x2` totals, all
    /// in registers. Terms go eight at a time with their coefficients in one register, each used
    /// by lane (`smlal vd.4s, vn.4h, vm.h[lane]`); the rest of a chunk one at a time.
    #[inline(always)]
    unsafe fn tile<const V: usize>(
        out: *mut i64,
        write: Write,
        mut rows: impl TermRows,
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut wide = [vdupq_n_s64(0); 16];
        if write == Write::Add {
            for (i, w) in wide.iter_mut().enumerate().take(4 * V) {
                *w = load_i64x2(out.add(2 * i));
            }
        }
        let mut t = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [vdupq_n_s32(0); 8];
            while t + 8 <= end {
                let c = load_i16x8(coeffs.as_ptr().add(t));
                macro_rules! term {
                    ($lane:literal) => {{
                        let r = rows.load::<V, { $lane % 2 == 1 }>(t + $lane);
                        for v in 0..V {
                            lanes[2 * v] = vmlal_laneq_s16::<$lane>(lanes[2 * v], vget_low_s16(r[v]), c);
                            lanes[2 * v + 1] = vmlal_high_laneq_s16::<$lane>(lanes[2 * v + 1], r[v], c);
                        }
                    }};
                }
                term!(0);
                term!(1);
                term!(2);
                term!(3);
                term!(4);
                term!(5);
                term!(6);
                term!(7);
                t += 8;
            }
            while t < end {
                let r = rows.load::<V, false>(t);
                let c = *coeffs.get_unchecked(t);
                for v in 0..V {
                    lanes[2 * v] = vmlal_n_s16(lanes[2 * v], vget_low_s16(r[v]), c);
                    lanes[2 * v + 1] = vmlal_high_n_s16(lanes[2 * v + 1], r[v], c);
                }
                t += 1;
            }
            for i in 0..2 * V {
                wide[2 * i] = vaddw_s32(wide[2 * i], vget_low_s32(lanes[i]));
                wide[2 * i + 1] = vaddw_high_s32(wide[2 * i + 1], lanes[i]);
            }
        }
        for (i, w) in wide.iter().enumerate().take(4 * V) {
            store_i64x2(out.add(2 * i), *w);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod platform {
    use super::{scalar_columns, Write};
    use crate::simd::level::Level;
    use core::arch::x86_64::*;

    /// Columns per register tile.
    const TILE: usize = 32;

    #[allow(clippy::too_many_arguments)] // the same signature on every platform
    pub fn gather_axpy(
        level: Level,
        out: &mut [i64],
        write: Write,
        rows: &[i16],
        (offsets, _stride): (&[u32], Option<usize>), // the rows come from the offsets here
        _slack: usize,
        coeffs: &[i16],
        ends: &[u32],
    ) {
        if level == Level::Avx512 {
            // SAFETY: `check` proved that every row `offsets[t]` has `out.len()` values inside
            // `rows` and that `ends` increases to `coeffs.len() == offsets.len()`; the caller
            // checked that the CPU has AVX-512 F/BW/VNNI (`level::supported`).
            unsafe {
                avx512::tiles([out.as_mut_ptr()], out.len(), write, rows.as_ptr(), offsets, [coeffs], ends)
            };
            return;
        }
        let mut first = 0;
        // SAFETY (every tile call): `check` proved that every row `offsets[t]` has `out.len()`
        // values inside `rows`; a tile reads columns `first..first + width <= out.len()` of each row
        // and writes `out[first..first + width]`; `ends` increases to `coeffs.len() ==
        // offsets.len()`, so every term index read is in bounds. SSE2 is the x86-64 baseline; the
        // AVX2 tile runs only at levels `current()` reports, which `level::supported` checked
        // against the CPU.
        while first + TILE <= out.len() && level >= Level::Sse2 {
            let (o, r) = unsafe { (out.as_mut_ptr().add(first), rows.as_ptr().add(first)) };
            match level {
                Level::Avx2 => unsafe { tile_avx2(o, write, r, offsets, coeffs, ends) },
                _ => unsafe { tile_sse2::<4>(o, write, r, offsets, coeffs, ends) },
            }
            first += TILE;
        }
        while first + 8 <= out.len() && level >= Level::Sse2 {
            unsafe {
                tile_sse2::<1>(
                    out.as_mut_ptr().add(first),
                    write,
                    rows.as_ptr().add(first),
                    offsets,
                    coeffs,
                    ends,
                )
            };
            first += 8;
        }
        if first < out.len() {
            scalar_columns(&mut out[first..], first, write, rows, offsets, coeffs);
        }
    }

    /// Whether [`gather_axpy2`] has its own tile at `level`: AVX-512's 32 registers hold both
    /// outputs' lanes; below it the pair is two single products.
    pub fn has_pair_tile(level: Level) -> bool {
        level == Level::Avx512
    }

    /// Both products of [`super::gather_axpy2`] in one pass over the rows (at [`has_pair_tile`]'s
    /// levels).
    pub fn gather_axpy2(
        outs: [&mut [i64]; 2],
        write: Write,
        rows: &[i16],
        offsets: &[u32],
        _stride: Option<usize>, // the rows come from the offsets here
        coeffs: [&[i16]; 2],
        ends: &[u32],
    ) {
        let [first, second] = outs;
        let columns = first.len();
        // SAFETY: the caller checked both lists against `offsets` and `ends` and every row's
        // `columns` values against `rows` (`check`, `check_terms`), both outputs have `columns`
        // values, and the CPU has AVX-512 F/BW/VNNI (`has_pair_tile` and `level::supported`).
        unsafe {
            avx512::tiles(
                [first.as_mut_ptr(), second.as_mut_ptr()],
                columns,
                write,
                rows.as_ptr(),
                offsets,
                coeffs,
                ends,
            )
        }
    }

    // How the tiles pair terms: the rows of terms t and t + 1 are interleaved (`punpck*wd`, which
    // works within each 128-bit lane) and multiplied by the coefficient pair (`pmaddwd`), so each
    // `i32` lane gains `c0 * r0[j] + c1 * r1[j]`, a sub-sum of its chunk (the schedule's bound
    // holds for it); an odd last term of a chunk pairs with a zero row. Element `e` of the
    // accumulator for the low (high) interleave of vector `v` holds column
    // `v * 2E + 8 * (e / 4) + e % 4 (+ 4)`, with `E` elements per accumulator. The `i64` totals are
    // kept in that order, `wide[(2 * v + half) * E + e]`, and put in column order at the ends.

    /// Column of total `i` for accumulators of `per` elements.
    #[inline(always)]
    fn column(i: usize, per: usize) -> usize {
        let (acc, e) = (i / per, i % per);
        let (v, half) = (acc / 2, acc % 2);
        v * 2 * per + 8 * (e / 4) + 4 * half + e % 4
    }

    #[inline(always)]
    unsafe fn load_totals(out: *const i64, write: Write, per: usize, columns: usize, wide: &mut [i64; TILE]) {
        if write == Write::Add {
            for (i, w) in wide.iter_mut().enumerate().take(columns) {
                *w = *out.add(column(i, per));
            }
        }
    }

    #[inline(always)]
    unsafe fn store_totals(out: *mut i64, per: usize, columns: usize, wide: &[i64; TILE]) {
        for (i, &w) in wide.iter().enumerate().take(columns) {
            *out.add(column(i, per)) = w;
        }
    }

    /// The coefficient pair of terms `t` and `t + 1` (0 past the chunk's end) as `i32` lanes.
    #[inline(always)]
    unsafe fn pair(coeffs: &[i16], t: usize, end: usize) -> (i32, bool) {
        let c0 = *coeffs.get_unchecked(t) as u16 as u32;
        let second = t + 1 < end;
        let c1 = if second { *coeffs.get_unchecked(t + 1) as u16 as u32 } else { 0 };
        ((c0 | (c1 << 16)) as i32, second)
    }

    /// `8 * V` columns with 128-bit registers (`V` is 1 or 4).
    #[inline(always)]
    unsafe fn tile_sse2<const V: usize>(
        out: *mut i64,
        write: Write,
        rows: *const i16,
        offsets: &[u32],
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut wide = [0i64; TILE];
        load_totals(out, write, 4, 8 * V, &mut wide);
        let zero = _mm_setzero_si128();
        let mut t = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [zero; 8];
            while t < end {
                let (c, second) = pair(coeffs, t, end);
                let c = _mm_set1_epi32(c);
                let row0 = rows.add(*offsets.get_unchecked(t) as usize);
                let row1 = if second { rows.add(*offsets.get_unchecked(t + 1) as usize) } else { row0 };
                for v in 0..V {
                    let r0 = _mm_loadu_si128(row0.add(8 * v) as *const __m128i);
                    let r1 = if second { _mm_loadu_si128(row1.add(8 * v) as *const __m128i) } else { zero };
                    lanes[2 * v] = _mm_add_epi32(lanes[2 * v], _mm_madd_epi16(_mm_unpacklo_epi16(r0, r1), c));
                    lanes[2 * v + 1] =
                        _mm_add_epi32(lanes[2 * v + 1], _mm_madd_epi16(_mm_unpackhi_epi16(r0, r1), c));
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
        store_totals(out, 4, 8 * V, &wide);
    }

    /// 32 columns with 256-bit registers.
    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2(
        out: *mut i64,
        write: Write,
        rows: *const i16,
        offsets: &[u32],
        coeffs: &[i16],
        ends: &[u32],
    ) {
        let mut wide = [0i64; TILE];
        load_totals(out, write, 8, TILE, &mut wide);
        let zero = _mm256_setzero_si256();
        let mut t = 0;
        for &end in ends {
            let end = end as usize;
            let mut lanes = [zero; 4];
            while t < end {
                let (c, second) = pair(coeffs, t, end);
                let c = _mm256_set1_epi32(c);
                let row0 = rows.add(*offsets.get_unchecked(t) as usize);
                let row1 = if second { rows.add(*offsets.get_unchecked(t + 1) as usize) } else { row0 };
                for v in 0..2 {
                    let r0 = _mm256_loadu_si256(row0.add(16 * v) as *const __m256i);
                    let r1 =
                        if second { _mm256_loadu_si256(row1.add(16 * v) as *const __m256i) } else { zero };
                    lanes[2 * v] =
                        _mm256_add_epi32(lanes[2 * v], _mm256_madd_epi16(_mm256_unpacklo_epi16(r0, r1), c));
                    lanes[2 * v + 1] = _mm256_add_epi32(
                        lanes[2 * v + 1],
                        _mm256_madd_epi16(_mm256_unpackhi_epi16(r0, r1), c),
                    );
                }
                t += 2;
            }
            t = end;
            for (i, l) in lanes.iter().enumerate() {
                let w = wide.as_mut_ptr().add(8 * i) as *mut __m256i;
                let low = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(*l));
                let high = _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(*l));
                _mm256_storeu_si256(w, _mm256_add_epi64(_mm256_loadu_si256(w), low));
                let w = w.add(1);
                _mm256_storeu_si256(w, _mm256_add_epi64(_mm256_loadu_si256(w), high));
            }
        }
        store_totals(out, 8, TILE, &wide);
    }

    /// The AVX-512 tiles: 32 columns with 512-bit registers and VNNI's fused `vpdpwssd` (multiply
    /// pairs, add to the lane; it wraps like `vpaddd`, so the schedule's bound applies), for one
    /// output or two sharing their rows. A term pair's coefficients are one unaligned 32-bit
    /// broadcast load of the list (`coeffs[t]` and `coeffs[t + 1]` side by side), so only the
    /// interleaves use the shuffle port. The last columns of a row (fewer than 32) are the same tile
    /// with masked loads and stores, which touch nothing past them, so no slack is needed.
    mod avx512 {
        use super::Write;
        use core::arch::x86_64::*;

        /// Every 32-column tile of `N` products of `columns` columns.
        ///
        /// # Safety
        /// The CPU has AVX-512 F/BW/VNNI; every `rows + offsets[t]` has `columns` readable values;
        /// every `outs[f]` has `columns` writable values; every list has `offsets.len()`
        /// coefficients; `ends` increases to `offsets.len()` and its chunks obey the schedule's
        /// bound for every list.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        pub unsafe fn tiles<const N: usize>(
            outs: [*mut i64; N],
            columns: usize,
            write: Write,
            rows: *const i16,
            offsets: &[u32],
            coeffs: [&[i16]; N],
            ends: &[u32],
        ) {
            let mut first = 0;
            while first < columns {
                let width = (columns - first).min(32);
                let mask = if width == 32 { u32::MAX } else { (1u32 << width) - 1 };
                // SAFETY: columns `first..first + width` of every row and output exist (the
                // contract), and the masked loads and stores touch no column past them.
                unsafe {
                    let outs = outs.map(|o| o.add(first));
                    tile::<N>(outs, mask, write, rows.add(first), offsets, coeffs, ends);
                }
                first += 32;
            }
        }

        /// Loads the columns of `mask` of the row at `row` (zero in the others, nothing read there).
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn load_row(row: *const i16, mask: u32) -> __m512i {
            // SAFETY: the masked columns are readable (the caller's contract).
            unsafe {
                if mask == u32::MAX {
                    _mm512_loadu_si512(row as *const __m512i)
                } else {
                    _mm512_maskz_loadu_epi16(mask, row)
                }
            }
        }

        /// The coefficients of terms `t` and `t + 1` of `list` in every `i32` lane (`t + 1` is a
        /// term of the list).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn coefficient_pair(list: &[i16], t: usize) -> __m512i {
            // SAFETY: `t + 1 < list.len()` (the caller); an unaligned read of two `i16`s.
            unsafe { _mm512_set1_epi32((list.as_ptr().add(t) as *const i32).read_unaligned()) }
        }

        /// One tile: `N` products over the columns of `mask` (a prefix of the 32).
        ///
        /// Element `e` of the low (high) interleave's accumulator holds column
        /// `8 * (e / 4) + e % 4` (`+ 4`), as `punpck*wd` leaves them within each 128-bit lane. The
        /// `i64` totals keep that order, `wide[f][2 * half + e / 8]`, and are put in column order at
        /// the end (`vshufi64x2`).
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn tile<const N: usize>(
            outs: [*mut i64; N],
            mask: u32,
            write: Write,
            rows: *const i16,
            offsets: &[u32],
            coeffs: [&[i16]; N],
            ends: &[u32],
        ) {
            let zero = _mm512_setzero_si512();
            let mut wide = [[zero; 4]; N];
            let mut t = 0;
            // SAFETY (the loads): every term index `t` read is below the chunk's end, which is at
            // most `offsets.len()`, and its row's masked columns are readable (the contract). A
            // macro, not a closure: a closure would not have the target features, and the loads
            // would not be inlined into the loop.
            macro_rules! row {
                ($t:expr) => {
                    unsafe { load_row(rows.add(*offsets.get_unchecked($t) as usize), mask) }
                };
            }
            for &end in ends {
                let end = end as usize;
                // Two sets of lanes for one output, so that consecutive `vpdpwssd`s do not wait
                // for each other; a pair's four chains suffice. Either set holds a sub-sum of the
                // chunk, and so does their sum.
                let mut lanes = [[zero; 2]; N];
                let mut more = [[zero; 2]; N];
                while N == 1 && t + 4 <= end {
                    let (r0, r1, r2, r3) = (row!(t), row!(t + 1), row!(t + 2), row!(t + 3));
                    let (low, high) = (_mm512_unpacklo_epi16(r0, r1), _mm512_unpackhi_epi16(r0, r1));
                    let (low2, high2) = (_mm512_unpacklo_epi16(r2, r3), _mm512_unpackhi_epi16(r2, r3));
                    for f in 0..N {
                        let c = coefficient_pair(coeffs[f], t);
                        let d = coefficient_pair(coeffs[f], t + 2);
                        lanes[f][0] = _mm512_dpwssd_epi32(lanes[f][0], low, c);
                        lanes[f][1] = _mm512_dpwssd_epi32(lanes[f][1], high, c);
                        more[f][0] = _mm512_dpwssd_epi32(more[f][0], low2, d);
                        more[f][1] = _mm512_dpwssd_epi32(more[f][1], high2, d);
                    }
                    t += 4;
                }
                while t + 2 <= end {
                    let (r0, r1) = (row!(t), row!(t + 1));
                    let (low, high) = (_mm512_unpacklo_epi16(r0, r1), _mm512_unpackhi_epi16(r0, r1));
                    for (f, lanes) in lanes.iter_mut().enumerate() {
                        let c = coefficient_pair(coeffs[f], t);
                        lanes[0] = _mm512_dpwssd_epi32(lanes[0], low, c);
                        lanes[1] = _mm512_dpwssd_epi32(lanes[1], high, c);
                    }
                    t += 2;
                }
                if t < end {
                    // An odd last term pairs with a zero row and coefficient.
                    let r0 = row!(t);
                    let (low, high) = (_mm512_unpacklo_epi16(r0, zero), _mm512_unpackhi_epi16(r0, zero));
                    for (f, lanes) in lanes.iter_mut().enumerate() {
                        let c = _mm512_set1_epi32(*coeffs[f].get_unchecked(t) as u16 as i32);
                        lanes[0] = _mm512_dpwssd_epi32(lanes[0], low, c);
                        lanes[1] = _mm512_dpwssd_epi32(lanes[1], high, c);
                    }
                    t += 1;
                }
                for f in 0..N {
                    for half in 0..2 {
                        let l = _mm512_add_epi32(lanes[f][half], more[f][half]);
                        let w = &mut wide[f][2 * half..];
                        w[0] = _mm512_add_epi64(w[0], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(l)));
                        w[1] =
                            _mm512_add_epi64(w[1], _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(l)));
                    }
                }
            }
            for (f, w) in wide.iter().enumerate() {
                // Columns 0-7: the low interleave's columns 0-3 then the high one's 4-7, and so on.
                let in_order = [
                    _mm512_shuffle_i64x2::<0x44>(w[0], w[2]),
                    _mm512_shuffle_i64x2::<0xEE>(w[0], w[2]),
                    _mm512_shuffle_i64x2::<0x44>(w[1], w[3]),
                    _mm512_shuffle_i64x2::<0xEE>(w[1], w[3]),
                ];
                for (k, mut v) in in_order.into_iter().enumerate() {
                    let m = (mask >> (8 * k)) as u8;
                    if m == 0 {
                        break;
                    }
                    // SAFETY: the columns of `m` are columns of the mask, which exist in `outs[f]`.
                    unsafe {
                        let o = outs[f].add(8 * k);
                        if write == Write::Add {
                            v = _mm512_add_epi64(v, _mm512_maskz_loadu_epi64(m, o));
                        }
                        _mm512_mask_storeu_epi64(o, m, v);
                    }
                }
            }
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod platform {
    use super::{gather_axpy_scalar, Write};
    use crate::simd::level::Level;

    pub fn gather_axpy(
        _level: Level,
        out: &mut [i64],
        write: Write,
        rows: &[i16],
        (offsets, _stride): (&[u32], Option<usize>),
        _slack: usize,
        coeffs: &[i16],
        ends: &[u32],
    ) {
        gather_axpy_scalar(out, write, rows, offsets, coeffs, ends)
    }
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
            for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                let mut fast = [-1_000_000_000_000i64; 80];
                let mut slow = fast;
                let (o, e) = (&offsets[..terms], &ends[..chunks]);
                gather_axpy_at(level, &mut fast[..columns], write, rows, o, coeffs, e);
                gather_axpy_scalar(&mut slow[..columns], write, rows, o, coeffs, e);
                assert_eq!(fast, slow, "{level:?}: {terms} terms, {columns} columns, {write:?}");
            }
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
                // With no room after the last row's last column (the last columns cannot be
                // one wide tile reading past them), and with only a little.
                for room in [0, 5] {
                    let end = terms.saturating_sub(1) * 80 + columns + room;
                    compare(&rows[..end.min(terms.max(1) * 80)], 80, &coeffs[..terms], columns);
                }
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
            for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                gather_axpy_at(level, &mut out, Write::Set, &rows, &offsets, &coeffs, &ends[..n]);
                assert!(out.iter().all(|&o| o == 64 * r as i64 * c as i64), "{level:?}");
            }
        }
        // Long chunks of the largest unit terms (65_536 * 32767 is just under i32::MAX), then more.
        let rows = [32767i16; 40];
        let coeffs = [1i16; 70_000];
        let offsets = [0u32; 70_000];
        let mut ends = [0u32; 70_000];
        let n = chunk_ends(&coeffs, 32767, &mut ends);
        assert_eq!(&ends[..n], &[65_536, 70_000]);
        let mut out = [0i64; 40];
        for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
            gather_axpy_at(level, &mut out, Write::Set, &rows, &offsets, &coeffs, &ends[..n]);
            assert!(out.iter().all(|&o| o == 70_000 * 32767), "{level:?}");
        }
    }

    /// [`gather_axpy2`] against two scalar products, at every width and in both write modes.
    #[test]
    fn pair_matches_scalar_at_every_width_and_term_count() {
        use crate::simd::schedule::chunk_ends_pair;
        let mut rng = Rng::new(12);
        for columns in 0..=75 {
            for terms in [0usize, 1, 3, 8, 9, 17, 40] {
                let limit = [32767, 300][columns % 2];
                let rows = random(&mut rng, terms.max(1) * 80, limit);
                let (a, b) =
                    (random(&mut rng, terms, 32767), random(&mut rng, terms, 32767 / (1 + columns as u64)));
                let coeffs = [&a[..terms], &b[..terms]];
                let offsets: [u32; 40] = core::array::from_fn(|t| ((t * 7) % terms.max(1) * 80) as u32);
                let mut ends = [0u32; 40];
                let n = chunk_ends_pair(coeffs, max_abs(&rows[..terms.max(1) * 80]), &mut ends);
                for write in [Write::Set, Write::Add] {
                    for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                        let mut fast = [[-7_000_000_000_000i64; 80]; 2];
                        let mut slow = fast;
                        let (o, e, rows) = (&offsets[..terms], &ends[..n], &rows[..terms.max(1) * 80]);
                        let [f0, f1] = &mut fast;
                        gather_axpy2_at(
                            level,
                            [&mut f0[..columns], &mut f1[..columns]],
                            write,
                            rows,
                            o,
                            coeffs,
                            e,
                        );
                        for (s, c) in slow.iter_mut().zip(coeffs) {
                            gather_axpy_scalar(&mut s[..columns], write, rows, o, c, e);
                        }
                        assert_eq!(fast, slow, "{level:?}: {terms} terms, {columns} columns, {write:?}");
                    }
                }
            }
        }
    }

    /// [`gather_axpy2_strided`] against two scalar products over rows a stride apart, at every
    /// width, with several chunks and in both write modes.
    #[test]
    fn strided_pair_matches_scalar_at_every_width_and_term_count() {
        use crate::simd::schedule::chunk_ends_pair;
        let mut rng = Rng::new(13);
        for columns in 0..=75 {
            for terms in [0usize, 1, 3, 8, 9, 17, 40] {
                let stride = 75 + columns % 5;
                let len = terms.saturating_sub(1) * stride + columns;
                let rows = random(&mut rng, len, [32767, 300][columns % 2]);
                let (a, b) = (random(&mut rng, terms, 32767), random(&mut rng, terms, 5000));
                let coeffs = [&a[..terms], &b[..terms]];
                let offsets: [u32; 40] = core::array::from_fn(|t| (t * stride) as u32);
                let mut ends = [0u32; 40];
                let n = chunk_ends_pair(coeffs, 32767, &mut ends);
                for write in [Write::Set, Write::Add] {
                    for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                        let mut fast = [[-7_000_000_000_000i64; 80]; 2];
                        let mut slow = fast;
                        let (o, e, rows) = (&offsets[..terms], &ends[..n], &rows[..len]);
                        let [f0, f1] = &mut fast;
                        let outs = [&mut f0[..columns], &mut f1[..columns]];
                        gather_axpy2_strided_at(level, outs, write, rows, (o, stride), coeffs, e);
                        for (s, c) in slow.iter_mut().zip(coeffs) {
                            gather_axpy_scalar(&mut s[..columns], write, rows, o, c, e);
                        }
                        assert_eq!(fast, slow, "{level:?}: {terms} terms, {columns} columns, {write:?}");
                    }
                }
            }
        }
    }

    /// [`gather_axpy_strided`] against the scalar definition over rows a stride apart, at every
    /// width, with several chunks and in both write modes.
    #[test]
    fn strided_matches_scalar_at_every_width_and_term_count() {
        let mut rng = Rng::new(14);
        for columns in 0..=75 {
            for terms in [0usize, 1, 3, 8, 9, 17, 40] {
                let stride = 75 + columns % 5;
                let len = terms.saturating_sub(1) * stride + columns;
                let rows = random(&mut rng, len, [32767, 300][columns % 2]);
                let coeffs = random(&mut rng, terms, 32767);
                let offsets: [u32; 40] = core::array::from_fn(|t| (t * stride) as u32);
                let mut ends = [0u32; 40];
                let n = chunk_ends(&coeffs[..terms], 32767, &mut ends);
                for write in [Write::Set, Write::Add] {
                    for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                        let mut fast = [-7_000_000_000_000i64; 80];
                        let mut slow = fast;
                        let (o, c, e, rows) = (&offsets[..terms], &coeffs[..terms], &ends[..n], &rows[..len]);
                        gather_axpy_strided_at(level, &mut fast[..columns], write, rows, (o, stride), c, e);
                        gather_axpy_scalar(&mut slow[..columns], write, rows, o, c, e);
                        assert_eq!(fast, slow, "{level:?}: {terms} terms, {columns} columns, {write:?}");
                    }
                }
            }
        }
    }

    /// Chunks that start and end at odd terms (the schedule cuts at a single term when a chunk is
    /// shorter than a group): the x86 tiles read a term pair's coefficients as one unaligned
    /// 32-bit value and pair an odd last term with zero; both outputs of a pair, every width.
    #[test]
    fn chunks_may_start_and_end_at_odd_terms() {
        let mut rng = Rng::new(15);
        let terms = 23;
        let ends = [1u32, 4, 5, 8, 11, 12, 17, 20, 23];
        let offsets: [u32; 23] = core::array::from_fn(|t| ((t * 5) % terms * 70) as u32);
        let rows = random(&mut rng, terms * 70, 3000);
        let (a, b) = (random(&mut rng, terms, 3000), random(&mut rng, terms, 3000));
        let coeffs = [&a[..terms], &b[..terms]];
        let rows = &rows[..terms * 70];
        for columns in 0..=70 {
            for write in [Write::Set, Write::Add] {
                for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
                    let mut fast = [[-9_000_000_000i64; 70]; 2];
                    let mut slow = fast;
                    let [f0, f1] = &mut fast;
                    let outs = [&mut f0[..columns], &mut f1[..columns]];
                    gather_axpy2_at(level, outs, write, rows, &offsets, coeffs, &ends);
                    for (s, c) in slow.iter_mut().zip(coeffs) {
                        gather_axpy_scalar(&mut s[..columns], write, rows, &offsets, c, &ends);
                    }
                    assert_eq!(fast, slow, "{level:?}: pair, {columns} columns, {write:?}");
                    let mut single = [-9_000_000_000i64; 70];
                    gather_axpy_at(level, &mut single[..columns], write, rows, &offsets, coeffs[1], &ends);
                    assert_eq!(single, slow[1], "{level:?}: single, {columns} columns, {write:?}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "past the matrix")]
    fn strided_refuses_rows_outside_the_matrix() {
        let (mut x, mut y) = ([0i64; 8], [0i64; 8]);
        let rows = [0i16; 20];
        gather_axpy2_strided([&mut x, &mut y], Write::Set, &rows, (&[0, 13], 13), [&[1, 1], &[1, 1]], &[2]);
    }

    #[test]
    fn pair_is_exact_at_the_extremes() {
        use crate::simd::schedule::chunk_ends_pair;
        let rows = [-32767i16; 64 * 40];
        let (a, b) = ([32767i16; 64], [-32767i16; 64]);
        let offsets: [u32; 64] = core::array::from_fn(|t| (t * 40) as u32);
        let mut ends = [0u32; 64];
        let n = chunk_ends_pair([&a, &b], 32767, &mut ends);
        for level in Level::ALL.into_iter().filter(|&l| level::supported(l)) {
            let (mut x, mut y) = ([0i64; 40], [0i64; 40]);
            gather_axpy2_at(level, [&mut x, &mut y], Write::Set, &rows, &offsets, [&a, &b], &ends[..n]);
            assert!(x.iter().all(|&v| v == -64 * 32767 * 32767), "{level:?}");
            assert!(y.iter().all(|&v| v == 64 * 32767 * 32767), "{level:?}");
        }
    }

    #[test]
    #[should_panic(expected = "past the matrix")]
    fn refuses_rows_outside_the_matrix() {
        let mut out = [0i64; 8];
        gather_axpy(&mut out, Write::Set, &[0; 10], &[4], &[1], &[1]);
    }
}
