//! When a narrow (`i32`) accumulator must be widened: the overflow proof of [`super::gather`].
//!
//! A term list `c_0 * row_0 + c_1 * row_1 + ...` is cut into *chunks*. Within a chunk every output
//! column is accumulated in `i32` lanes; at the end of a chunk the lanes are added into `i64` and
//! cleared.
//!
//! **Why no lane can overflow.** Whatever the vector width, a lane of column `j` only ever holds a
//! sum of some of the chunk's products `c_t * row_t[j]` (one product per term on NEON; a pair of
//! neighbouring terms' products on x86's `pmaddwd`). Its magnitude is therefore at most
//! `sum over the chunk of |c_t| * |row_t[j]| <= sum over the chunk of |c_t| * R`, where `R` is a
//! proven bound on every value of every row (the *row bound*). The builder below closes a chunk
//! before that sum would pass [`LANE_LIMIT`] = `i32::MAX`. One term alone is always within the limit:
//! every `i16` value of this crate is in [-32767, 32767] (see [`crate::fixed`]) and a row bound is
//! at most 32767, so `|c_t| * R <= 32767^2 < 2^31`. The result is exact for any input; small values
//! give long chunks (few widenings), extreme ones short chunks.
//!
//! Row bounds come from the number formats (activations and deltas are saturated to 32767, input
//! pixels are at most 16384) or from a measured maximum (a layer's largest working weight).

/// The largest magnitude an `i32` lane may reach.
pub const LANE_LIMIT: u64 = i32::MAX as u64;

/// The largest magnitude of any stored `i16` value (the symmetric range of [`crate::fixed`]).
pub const VALUE_LIMIT: u32 = crate::fixed::I16_LIMIT as u32;

/// Terms the vector kernels take at once (NEON: eight coefficients in one register; x86: pairs).
/// Chunks are cut at multiples of it from their start where the bound allows.
pub const TERM_GROUP: usize = 8;

/// Cuts `coeffs` into chunks for rows bounded by `row_bound`, writing each chunk's end (exclusive,
/// increasing, the last one `coeffs.len()`) into `ends`; returns how many chunks there are. `ends`
/// needs room for `coeffs.len()` entries (the worst case: one term per chunk); an empty list has
/// no chunk.
///
/// Greedy: a chunk grows until the next term would pass the limit; it is then cut at the last
/// multiple of [`TERM_GROUP`] terms from its start (a prefix of an admissible chunk is admissible),
/// or at that term when the chunk is shorter than a group.
pub fn chunk_ends(coeffs: &[i16], row_bound: u32, ends: &mut [u32]) -> usize {
    if coeffs.len() <= 1 << 16 && super::sum_abs_i16(coeffs) * row_bound as u64 <= LANE_LIMIT {
        return one_chunk(coeffs.len(), ends);
    }
    // A group's magnitudes summed by the vector kernel (eight values: one `abs`/`uaddlv` pass on
    // aarch64).
    let group = |t: usize| super::sum_abs_i16(&coeffs[t..t + TERM_GROUP]);
    chunk_ends_by(coeffs.len(), (|t| coeffs[t].unsigned_abs(), group), row_bound, ends)
}

/// Whether all `terms` magnitudes together stay within the lane limit, so the greedy cut would
/// make one chunk of them: the common case, checked in one pass (a sum of at most 65,536
/// magnitudes below 2^15 fits a `u32`) before the greedy cut's branch per term. A single list
/// sums its magnitudes with [`super::sum_abs_i16`] instead; this is the pairs' larger magnitudes.
#[inline]
fn fits_one_chunk(magnitudes: impl Iterator<Item = u16>, terms: usize, row_bound: u32) -> bool {
    terms <= 1 << 16 && magnitudes.map(u32::from).sum::<u32>() as u64 * row_bound as u64 <= LANE_LIMIT
}

/// The one chunk of a list of `terms` terms (none for an empty list).
fn one_chunk(terms: usize, ends: &mut [u32]) -> usize {
    if terms == 0 {
        return 0;
    }
    ends[0] = terms as u32;
    1
}

/// The longest pair of lists [`chunk_ends_pair`] cuts through one list of their larger magnitudes
/// (on the stack); longer ones take the magnitudes term by term.
const PAIR_BUFFER: usize = 1024;

/// [`chunk_ends_pair`] through a buffer of `N` larger magnitudes; `None` for longer lists.
fn cut_by_larger<const N: usize>(coeffs: [&[i16]; 2], row_bound: u32, ends: &mut [u32]) -> Option<usize> {
    let mut larger = [0i16; N];
    let larger = larger.get_mut(..coeffs[0].len())?;
    super::larger_magnitudes_i16(coeffs[0], coeffs[1], larger);
    Some(chunk_ends(larger, row_bound, ends))
}

/// [`chunk_ends`] for two coefficient lists that share their terms (the two outputs of
/// [`super::gather::gather_axpy2`]): a chunk must suit both, so each term counts with the larger of
/// its two magnitudes, which bounds either lane's sum.
pub fn chunk_ends_pair(coeffs: [&[i16]; 2], row_bound: u32, ends: &mut [u32]) -> usize {
    assert_eq!(coeffs[0].len(), coeffs[1].len(), "the lists share their terms");
    // The larger magnitudes as one list (a vector pass), then the single list's cut: the same
    // greedy over the same magnitudes, so the same chunks. A short list (a block's samples) takes
    // a short buffer, which is cheaper to clear.
    let cut = match coeffs[0].len() {
        0..=64 => cut_by_larger::<64>(coeffs, row_bound, ends),
        _ => cut_by_larger::<PAIR_BUFFER>(coeffs, row_bound, ends),
    };
    if let Some(chunks) = cut {
        return chunks;
    }
    let magnitude = |t: usize| coeffs[0][t].unsigned_abs().max(coeffs[1][t].unsigned_abs());
    let larger = coeffs[0].iter().zip(coeffs[1]).map(|(a, b)| a.unsigned_abs().max(b.unsigned_abs()));
    if fits_one_chunk(larger, coeffs[0].len(), row_bound) {
        return one_chunk(coeffs[0].len(), ends);
    }
    let group = |t: usize| (t..t + TERM_GROUP).map(|i| magnitude(i) as u64).sum::<u64>();
    chunk_ends_by(coeffs[0].len(), (magnitude, group), row_bound, ends)
}

/// The chunks of one list ([`chunk_ends`]) or of two lists that share their terms
/// ([`chunk_ends_pair`]): the gather form's counterpart of [`chunk_ends_dot`], for callers with one
/// or two samples in flight.
pub fn chunk_ends_shared(lists: &[&[i16]], row_bound: u32, ends: &mut [u32]) -> usize {
    match lists {
        [list] => chunk_ends(list, row_bound, ends),
        [first, second] => chunk_ends_pair([first, second], row_bound, ends),
        _ => panic!("one or two coefficient lists"),
    }
}

/// The greedy cut of [`chunk_ends`] over `terms` terms of the given magnitudes. Whole groups of
/// [`TERM_GROUP`] terms (counted from the chunk's start) that fit go in at once, with one test
/// for the group; only a group that does not fit is taken term by term, which is where the cut
/// falls. The same cuts as term by term throughout ([`chunk_ends_term_by_term`], tested): inside
/// a group that fits, no term could have passed the limit.
/// `group(t)` is the sum of the magnitudes of terms `t..t + TERM_GROUP`.
fn chunk_ends_by(
    terms: usize,
    (magnitude, group): (impl Fn(usize) -> u16, impl Fn(usize) -> u64),
    row_bound: u32,
    ends: &mut [u32],
) -> usize {
    debug_assert!(row_bound <= VALUE_LIMIT);
    let term = |t: usize| magnitude(t) as u64 * row_bound as u64;
    let mut chunks = 0;
    let mut start = 0;
    let mut sum = 0u64;
    let mut t = 0;
    while t < terms {
        if (t - start).is_multiple_of(TERM_GROUP) && t + TERM_GROUP <= terms {
            let group = group(t) * row_bound as u64;
            if sum + group <= LANE_LIMIT {
                sum += group;
                t += TERM_GROUP;
                continue;
            }
        }
        if sum + term(t) > LANE_LIMIT {
            let grouped = start + (t - start) / TERM_GROUP * TERM_GROUP;
            let cut = if grouped > start { grouped } else { t };
            ends[chunks] = cut as u32;
            chunks += 1;
            start = cut;
            // The terms carried over are part of an admissible chunk, so they fit; with term `t`
            // they may not, and then `t` starts a chunk of its own.
            sum = (cut..t).map(term).sum();
            if sum + term(t) > LANE_LIMIT {
                ends[chunks] = t as u32;
                chunks += 1;
                start = t;
                sum = 0;
            }
        }
        sum += term(t);
        t += 1;
    }
    if terms > 0 {
        ends[chunks] = terms as u32;
        chunks += 1;
    }
    chunks
}

/// Terms of one step of [`super::dot`]'s products: 32 consecutive terms, two per `i32` lane.
pub const DOT_BLOCK: usize = 32;

/// Cuts the terms of [`super::dot`]'s products (one vector or two over the same rows, `lists`)
/// into chunks of whole [`DOT_BLOCK`]s from the first term (the last one may be shorter), for rows
/// bounded by `row_bound`; returns how many chunks there are (`ends` needs room for one per block).
///
/// **Why no lane can overflow.** In the dot form lane `k` of a chunk takes only terms `2k` and
/// `2k + 1` of each of the chunk's blocks, not every term as in [`chunk_ends`]. So a block adds at
/// most `m_b * R` to any lane, where `m_b` is the largest `|x_2k| + |x_2k+1|` of the block (over
/// both lists) and `R` the row bound; a chunk is closed before `sum of m_b * R` would pass
/// [`LANE_LIMIT`]. One block alone always fits: `m_b * R <= 65534 * 32767 < 2^31`. Chunks are
/// therefore about sixteen times longer than [`chunk_ends`] would cut for the same terms.
pub fn chunk_ends_dot(lists: &[&[i16]], row_bound: u32, ends: &mut [u32]) -> usize {
    let len = lists.first().map_or(0, |x| x.len());
    assert!(lists.iter().all(|x| x.len() == len), "the lists share their terms");
    debug_assert!(row_bound <= VALUE_LIMIT);
    let mut chunks = 0;
    let mut sum = 0u64;
    for start in (0..len).step_by(DOT_BLOCK) {
        let block = start..(start + DOT_BLOCK).min(len);
        let pair_sum = |x: &[i16]| -> u64 {
            let block = &x[block.clone()];
            block.chunks(2).map(|p| p.iter().map(|v| v.unsigned_abs() as u64).sum::<u64>()).max().unwrap_or(0)
        };
        let most = lists.iter().map(|x| pair_sum(x)).max().unwrap_or(0) * row_bound as u64;
        if start > 0 && sum + most > LANE_LIMIT {
            ends[chunks] = start as u32;
            chunks += 1;
            sum = 0;
        }
        sum += most;
    }
    if len > 0 {
        ends[chunks] = len as u32;
        chunks += 1;
    }
    chunks
}

/// The largest magnitude in `values` (0 for none).
pub fn max_abs(values: &[i16]) -> u32 {
    super::max_abs_i16(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`chunk_ends_by`] with each group's sum taken term by term from the magnitudes.
    fn greedy_by(len: usize, magnitude: impl Fn(usize) -> u16 + Copy, bound: u32, ends: &mut [u32]) -> usize {
        let group = |t: usize| (t..t + TERM_GROUP).map(|i| magnitude(i) as u64).sum::<u64>();
        chunk_ends_by(len, (magnitude, group), bound, ends)
    }

    /// The dot form's chunks: whole blocks, every lane's bound within the limit, and as long as
    /// the bound allows (one more block would pass it).
    #[test]
    fn dot_chunks_are_whole_blocks_within_every_lanes_limit() {
        let mut rng = crate::rng::Rng::new(5);
        for len in [0usize, 1, 31, 32, 33, 200, 800] {
            for limit in [1u64, 300, 32767] {
                let mut lists = [[0i16; 800]; 2];
                for v in lists.iter_mut().flat_map(|l| l.iter_mut()) {
                    *v = (rng.below(2 * limit + 1) as i64 - limit as i64) as i16;
                }
                let lists = [&lists[0][..len], &lists[1][..len]];
                let mut ends = [0u32; 25];
                let n = chunk_ends_dot(&lists, 32767, &mut ends);
                let block_most = |b: usize| -> u64 {
                    let block = b * DOT_BLOCK..((b + 1) * DOT_BLOCK).min(len);
                    let pairs = lists.iter().flat_map(|x| x[block.clone()].chunks(2));
                    pairs.map(|p| p.iter().map(|v| v.unsigned_abs() as u64).sum::<u64>()).max().unwrap()
                        * 32767
                };
                let mut start = 0;
                for &end in &ends[..n] {
                    let end = end as usize;
                    assert!(end == len || end.is_multiple_of(DOT_BLOCK), "whole blocks");
                    let blocks = start / DOT_BLOCK..end.div_ceil(DOT_BLOCK);
                    assert!(blocks.clone().map(block_most).sum::<u64>() <= LANE_LIMIT, "within the limit");
                    if end < len {
                        let more = blocks.clone().map(block_most).sum::<u64>() + block_most(blocks.end);
                        assert!(more > LANE_LIMIT, "as long as the bound allows");
                    }
                    start = end;
                }
                assert_eq!(start, len);
            }
        }
    }

    #[test]
    fn small_values_make_one_chunk() {
        let mut ends = [0u32; 8];
        assert_eq!(chunk_ends(&[1, -2, 3, 4], 32767, &mut ends), 1);
        assert_eq!(ends[0], 4);
        assert_eq!(chunk_ends(&[], 32767, &mut ends), 0);
    }

    #[test]
    fn extremes_cut_after_every_second_term() {
        // 32767^2 * 2 < 2^31 - 1 < 32767^2 * 3.
        let mut ends = [0u32; 8];
        let n = chunk_ends(&[-32767; 7], 32767, &mut ends);
        assert_eq!(&ends[..n], &[2, 4, 6, 7]); // shorter than a group: cut at the term
    }

    #[test]
    fn a_chunk_stops_exactly_at_the_limit() {
        // 65_538 * 32767 = 2^31 - 2 fits, 65_539 * 32767 = 2^31 + 32765 does not; the cut falls
        // back to the last whole group of eight, 65_536.
        let coeffs = [1i16; 70_000];
        let mut ends = [0u32; 70_000];
        let n = chunk_ends(&coeffs, 32767, &mut ends);
        assert_eq!(&ends[..n], &[65_536, 70_000]);
    }

    #[test]
    fn every_chunk_is_within_the_limit_and_grouped_where_possible() {
        let mut rng = crate::rng::Rng::new(4);
        let mut coeffs = [0i16; 3000];
        for c in coeffs.iter_mut() {
            *c = (rng.below(65535) as i64 - 32767) as i16 / [1, 2, 5, 40][rng.below(4) as usize];
        }
        let mut ends = [0u32; 3000];
        let n = chunk_ends(&coeffs, 32767, &mut ends);
        let mut start = 0;
        for (i, &end) in ends[..n].iter().enumerate() {
            let end = end as usize;
            let sum: u64 = coeffs[start..end].iter().map(|c| c.unsigned_abs() as u64 * 32767).sum();
            assert!(sum <= LANE_LIMIT, "chunk {i} sums to {sum}");
            assert!(end > start);
            if i + 1 < n && end - start >= TERM_GROUP {
                assert_eq!((end - start) % TERM_GROUP, 0, "chunk {i} is not a whole number of groups");
            }
            start = end;
        }
        assert_eq!(start, coeffs.len());
    }

    /// The greedy cut one term at a time, as it was first written: the reference for the
    /// grouped loop of [`chunk_ends_by`].
    fn chunk_ends_term_by_term(
        terms: usize,
        magnitude: impl Fn(usize) -> u16,
        row_bound: u32,
        ends: &mut [u32],
    ) -> usize {
        let term = |t: usize| magnitude(t) as u64 * row_bound as u64;
        let (mut chunks, mut start, mut sum) = (0, 0, 0u64);
        for t in 0..terms {
            if sum + term(t) > LANE_LIMIT {
                let grouped = start + (t - start) / TERM_GROUP * TERM_GROUP;
                let cut = if grouped > start { grouped } else { t };
                ends[chunks] = cut as u32;
                chunks += 1;
                start = cut;
                sum = (cut..t).map(term).sum();
                if sum + term(t) > LANE_LIMIT {
                    ends[chunks] = t as u32;
                    chunks += 1;
                    start = t;
                    sum = 0;
                }
            }
            sum += term(t);
        }
        if terms > 0 {
            ends[chunks] = terms as u32;
            chunks += 1;
        }
        chunks
    }

    /// The grouped greedy cut makes the term-by-term cut's chunks, on lists of every mix of
    /// magnitudes (tiny, typical, extreme) and every length up to 300.
    #[test]
    fn grouped_cut_is_the_term_by_term_cut() {
        let mut rng = crate::rng::Rng::new(19);
        for case in 0..600 {
            let len = case % 300;
            let mut values = [0i16; 300];
            for v in values.iter_mut().take(len) {
                let scale = [3u64, 300, 3000, 32767][rng.below(4) as usize];
                *v = (rng.below(2 * scale + 1) as i64 - scale as i64) as i16;
            }
            for row_bound in [1, 1000, 16384, 32767] {
                let (mut grouped, mut reference) = ([0u32; 300], [0u32; 300]);
                let n = greedy_by(len, |t| values[t].unsigned_abs(), row_bound, &mut grouped);
                let m = chunk_ends_term_by_term(len, |t| values[t].unsigned_abs(), row_bound, &mut reference);
                assert_eq!(&grouped[..n], &reference[..m], "case {case}, bound {row_bound}");
            }
        }
    }

    /// The one-pass check for a single chunk gives the greedy cut's chunks: lists whose magnitudes
    /// sum just below, at and just above the limit, alone and in pairs.
    #[test]
    fn one_chunk_shortcut_is_the_greedy_cut() {
        let mut rng = crate::rng::Rng::new(9);
        for case in 0..400 {
            let len = 1 + rng.below(300) as usize;
            let scale = [1u64, 40, 300, 2000, 32767][case % 5];
            let mut list = || {
                let mut values = [0i16; 300];
                values.iter_mut().for_each(|v| *v = (rng.below(2 * scale + 1) as i64 - scale as i64) as i16);
                values
            };
            let (a, b) = (list(), list());
            let (a, b) = (&a[..len], &b[..len]);
            let sum: u64 = a.iter().map(|c| c.unsigned_abs() as u64).sum();
            // Row bounds that put the whole list just inside, exactly at and just past the limit.
            let at_limit = (LANE_LIMIT / sum.max(1)).clamp(1, VALUE_LIMIT as u64) as u32;
            for row_bound in
                [at_limit.saturating_sub(1).max(1), at_limit, (at_limit + 1).min(VALUE_LIMIT), 16384]
            {
                let (mut fast, mut greedy) = ([0u32; 300], [0u32; 300]);
                let n = chunk_ends(a, row_bound, &mut fast);
                let m = greedy_by(len, |t| a[t].unsigned_abs(), row_bound, &mut greedy);
                assert_eq!(&fast[..n], &greedy[..m], "case {case} bound {row_bound}");
                let n = chunk_ends_pair([a, b], row_bound, &mut fast);
                let larger = |t: usize| a[t].unsigned_abs().max(b[t].unsigned_abs());
                let m = greedy_by(len, larger, row_bound, &mut greedy);
                assert_eq!(&fast[..n], &greedy[..m], "pair case {case} bound {row_bound}");
            }
        }
    }

    /// Pairs longer than the stack buffer take the magnitudes term by term: the same cuts.
    #[test]
    fn long_pairs_are_cut_as_the_greedy_definition() {
        let mut rng = crate::rng::Rng::new(10);
        let mut a = [0i16; 1500];
        let mut b = [0i16; 1500];
        for v in a.iter_mut().chain(b.iter_mut()) {
            *v = (rng.below(2 * 32767 + 1) as i64 - 32767) as i16;
        }
        for len in [PAIR_BUFFER - 1, PAIR_BUFFER, PAIR_BUFFER + 1, 1500] {
            let (mut fast, mut greedy) = ([0u32; 1500], [0u32; 1500]);
            let n = chunk_ends_pair([&a[..len], &b[..len]], 3000, &mut fast);
            let larger = |t: usize| a[t].unsigned_abs().max(b[t].unsigned_abs());
            let m = greedy_by(len, larger, 3000, &mut greedy);
            assert!(n > 1, "several chunks");
            assert_eq!(&fast[..n], &greedy[..m], "{len} terms");
        }
    }

    #[test]
    fn a_pair_is_cut_by_the_larger_magnitude_of_each_term() {
        let (small, large) = ([1i16, -2, 3, -4, 5, -6, 7], [-32767i16; 7]);
        let (mut pair, mut alone) = ([0u32; 8], [0u32; 8]);
        let n = chunk_ends_pair([&small, &large], 32767, &mut pair);
        let m = chunk_ends(&large, 32767, &mut alone);
        assert_eq!(&pair[..n], &alone[..m]);
        let n = chunk_ends_pair([&large, &small], 32767, &mut pair);
        assert_eq!(&pair[..n], &[2, 4, 6, 7]);
    }
}
