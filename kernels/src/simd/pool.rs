//! The vector parts of max-pooling before tanh: a row of accumulators rounded into tanh's Q3.12
//! input, and each 2 x 2 window's largest input with the first position (in window order) that
//! holds it. The caller ([`crate::fast`]) turns those into the definition's winners and outputs.
//!
//! aarch64 does eight values, or eight windows, per loop trip in NEON (the scalar loops take
//! about 36 instructions per window on the strict-align target, where even the compiler's own
//! vectorisation of the rounding moves every `i64` through the stack); other platforms and the
//! ragged ends use the scalar definitions, which the tests compare them with.

/// Window positions, in window order: top left, top right, bottom left, bottom right.
pub const WINDOW: usize = 4;

/// `out[i] = saturate_i16((pre[i] + bias + 2^(right - 1)) >> right)` for `right` in `1..=63`: the
/// Q3.12 tanh input of `pre[i] + bias` for accumulators of `TANH_IN_FRAC + right` fraction bits
/// ([`crate::tanh::tanh_input`], rounded half up and saturated to the symmetric range).
///
/// The accumulators of a layer are sums of at most a few thousand products below 2^30 and a
/// bias below 2^55, far from the `i64` limits, so the additions never wrap; NEON's rounding shift
/// (`srshl` by `-right`) adds the half before shifting as the scalar code does.
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
/// largest value `largest[x]`, and `first[x]`, the first position in that order holding it.
pub fn window_max(top: &[i16], bottom: &[i16], largest: &mut [i16], first: &mut [u16]) {
    let windows = largest.len();
    assert!(top.len() == 2 * windows && bottom.len() == 2 * windows && first.len() == windows);
    platform::window_max(top, bottom, largest, first)
}

/// The portable definition of [`window_max`].
pub fn window_max_scalar(top: &[i16], bottom: &[i16], largest: &mut [i16], first: &mut [u16]) {
    let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
    for ((t, b), (m, f)) in windows.zip(largest.iter_mut().zip(first.iter_mut())) {
        let window = [t[0], t[1], b[0], b[1]];
        *m = window.into_iter().max().expect("four values");
        *f = window.iter().position(|v| v == m).expect("the largest is in the window") as u16;
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod platform {
    pub use super::tanh_inputs_scalar as tanh_inputs;
    pub use super::window_max_scalar as window_max;
}

#[cfg(target_arch = "aarch64")]
mod platform {
    use core::arch::asm;

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

    pub fn window_max(top: &[i16], bottom: &[i16], largest: &mut [i16], first: &mut [u16]) {
        let eights = largest.len() / 8 * 8;
        // SAFETY: `top` and `bottom` hold `2 * largest.len()` values and `first` `largest.len()`
        // (asserted by the caller); the loop reads `2 * eights` values of each row and writes
        // `eights` of each output, eight windows at a time, advancing the pointers; `ld2`/`st1`
        // need only element alignment.
        unsafe {
            windows_by_eight(top.as_ptr(), bottom.as_ptr(), largest.as_mut_ptr(), first.as_mut_ptr(), eights)
        };
        let mut done = eights;
        if largest.len() - done >= 4 {
            // SAFETY: as above, for the four windows from `done`, which are inside the slices.
            unsafe {
                four_windows(
                    top.as_ptr().add(2 * done),
                    bottom.as_ptr().add(2 * done),
                    largest.as_mut_ptr().add(done),
                    first.as_mut_ptr().add(done),
                )
            };
            done += 4;
        }
        let rest = 2 * done..;
        super::window_max_scalar(&top[rest.clone()], &bottom[rest], &mut largest[done..], &mut first[done..]);
    }

    // `ld2` splits a row into its windows' left and right values; the position is 3, then 2 where
    // the bottom left equals the largest, 1 where the top right does, 0 where the top left does
    // (later tests override earlier ones, so the first equal position wins).

    /// `windows` (a multiple of 8) windows, eight at a time. SAFETY (caller): `top` and `bottom`
    /// have `2 * windows` readable values, `largest` and `first` `windows` writable ones.
    unsafe fn windows_by_eight(
        top: *const i16,
        bottom: *const i16,
        largest: *mut i16,
        first: *mut u16,
        windows: usize,
    ) {
        asm!(
            "movi v26.8h, #3",
            "movi v27.8h, #2",
            "movi v28.8h, #1",
            "2:",
            "cbz {n}, 3f",
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
            "st1 {{v20.8h}}, [{m}], #16",
            "st1 {{v21.8h}}, [{f}], #16",
            "sub {n}, {n}, #8",
            "b 2b",
            "3:",
            n = inout(reg) windows => _,
            t = inout(reg) top => _,
            b = inout(reg) bottom => _,
            m = inout(reg) largest => _,
            f = inout(reg) first => _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
            out("v21") _, out("v26") _, out("v27") _, out("v28") _,
            options(nostack)
        );
    }

    /// Four windows in half registers. SAFETY (caller): `top` and `bottom` have 8 readable values,
    /// `largest` and `first` 4 writable ones.
    unsafe fn four_windows(top: *const i16, bottom: *const i16, largest: *mut i16, first: *mut u16) {
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
            "movi v22.4h, #1",
            "bit v21.8b, v22.8b, v17.8b",
            "bic v21.8b, v21.8b, v16.8b",
            "st1 {{v20.4h}}, [{m}]",
            "st1 {{v21.4h}}, [{f}]",
            t = in(reg) top,
            b = in(reg) bottom,
            m = in(reg) largest,
            f = in(reg) first,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _,
            out("v21") _, out("v22") _,
            options(nostack)
        );
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

    /// [`window_max`] against its definition at every window count up to 20, on values drawn from
    /// a handful so that ties at every position occur, and at the extremes.
    #[test]
    fn window_max_matches_the_definition() {
        let mut rng = Rng::new(12);
        let palette = [-32767i16, -5, 0, 3, 3, 7, 32767];
        for windows in 0..20 {
            for _ in 0..20 {
                let (mut top, mut bottom) = ([0i16; 40], [0i16; 40]);
                for v in top.iter_mut().chain(bottom.iter_mut()) {
                    *v = palette[rng.below(palette.len() as u64) as usize];
                }
                let (mut largest, mut first) = ([0i16; 20], [0u16; 20]);
                let (mut want, mut want_first) = ([0i16; 20], [0u16; 20]);
                let (t, b) = (&top[..2 * windows], &bottom[..2 * windows]);
                window_max(t, b, &mut largest[..windows], &mut first[..windows]);
                window_max_scalar(t, b, &mut want[..windows], &mut want_first[..windows]);
                assert_eq!((largest, first), (want, want_first), "{windows} windows");
            }
        }
    }
}
