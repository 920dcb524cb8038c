//! Fixed-point tanh and its derivative.
//!
//! **How:** the input is Q3.12, so it covers (-8, 8). tanh is odd, so only |x| is looked up: a
//! 513-entry table of tanh(i / 64) for i = 0..=512 in Q0.15 (built by `build.rs` with `libm`), and
//! linear interpolation between neighbours on the 6 low bits of |x|, rounded half up. The sign is
//! restored afterwards, so tanh_q(-x) == -tanh_q(x) exactly.
//!
//! **Error:** over all 65,536 inputs the largest difference from the true tanh is 4.65e-5, about 1.52 LSB
//! of Q0.15 (asserted by `max_error_is_under_1_6_lsb` below). Interpolation error dominates near x = 0.6,
//! where the curvature is largest; without interpolation 1 LSB would need 32,769 entries.
//!
//! **Derivative:** tanh'(x) = 1 - y^2, computed from the stored output y in integers and rounded once
//! to Q0.15 (at most 32768, i.e. exactly 1.0, when y = 0).

#![forbid(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/tanh_table.rs"));

/// Fraction bits of the table step (2^-6) in a Q3.12 input: 12 - 6.
const STEP_BITS: u32 = 6;

/// An accumulator of `acc_frac` fraction bits as tanh's Q3.12 input: rounded half up and
/// saturated (pre-activations beyond (-8, 8) saturate there, where tanh is flat anyway).
#[inline]
pub fn tanh_input(acc: i64, acc_frac: u32) -> i16 {
    crate::fixed::to_i16(acc, acc_frac, crate::fixed::TANH_IN_FRAC)
}

/// [`tanh_q`] is strictly increasing on `-STRICT_LIMIT..=STRICT_LIMIT`: there, two different
/// inputs never give the same output, so a max-pool over tanh outputs can find ties by comparing
/// inputs. Within one table segment the interpolated outputs step by at least one for every input
/// step exactly when the segment rises by at least 2^STEP_BITS (and across a segment's end when it
/// rises by more than half that), so the limit is the start of the first flatter segment. tanh is
/// odd, so the same holds on the negative side. (Asserted over every input below.)
pub const STRICT_LIMIT: i16 = {
    let mut i = 0;
    while i + 1 < TANH_TABLE.len() && TANH_TABLE[i + 1] - TANH_TABLE[i] >= 1 << STEP_BITS {
        i += 1;
    }
    (i << STEP_BITS) as i16
};

/// Each table entry beside the next, `TANH_TABLE[i] | TANH_TABLE[i + 1] << 16`: both ends of a
/// segment in one 32-bit load, for the vector tanh of [`crate::simd::pool::tanh_all`].
#[cfg_attr(not(any(target_arch = "aarch64", target_arch = "x86_64")), allow(dead_code))] // the vector paths read it
pub(crate) const TANH_PAIRS: [u32; 512] = {
    let mut pairs = [0u32; 512];
    let mut i = 0;
    while i < 512 {
        pairs[i] = (TANH_TABLE[i] as u16 as u32) | ((TANH_TABLE[i + 1] as u16 as u32) << 16);
        i += 1;
    }
    pairs
};

/// tanh of a Q3.12 input, in Q0.15.
#[inline]
pub fn tanh_q(x: i16) -> i16 {
    let magnitude = (x as i32).unsigned_abs();
    let index = (magnitude >> STEP_BITS) as usize;
    let within = (magnitude & ((1 << STEP_BITS) - 1)) as i32;
    let low = TANH_TABLE[index] as i32;
    let y = if within == 0 {
        low
    } else {
        let high = TANH_TABLE[index + 1] as i32;
        low + (((high - low) * within + (1 << (STEP_BITS - 1))) >> STEP_BITS)
    };
    if x < 0 {
        -y as i16
    } else {
        y as i16
    }
}

/// tanh'(x) = 1 - y^2 from the stored Q0.15 output y, in Q0.15 (0..=32768).
#[inline]
pub fn tanh_slope_q(y: i16) -> i32 {
    let y = y as i64;
    let one_minus_square = (1i64 << 30) - y * y; // Q0.30, in [2^30 - 32767^2, 2^30]
    ((one_minus_square + (1 << 14)) >> 15) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest |tanh_q(x) - tanh(x)| over every Q3.12 input, in real units.
    fn max_error() -> f64 {
        (i16::MIN..=i16::MAX)
            .map(|x| {
                let exact = libm::tanh(x as f64 / 4096.0);
                (tanh_q(x) as f64 / 32768.0 - exact).abs()
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn max_error_is_under_1_6_lsb() {
        let err = max_error();
        assert!(err < 1.6 / 32768.0, "max error {err:e}");
        // The documented figure, to three digits.
        assert!((err - 4.65e-5).abs() < 0.01e-5, "max error {err:e} no longer matches the docs");
    }

    #[test]
    fn odd_and_monotonic() {
        let mut previous = tanh_q(i16::MIN);
        for x in i16::MIN + 1..=i16::MAX {
            let y = tanh_q(x);
            assert!(y >= previous, "not monotonic at {x}");
            if x != i16::MIN {
                assert_eq!(tanh_q(-x), -y);
            }
            previous = y;
        }
        assert_eq!(tanh_q(0), 0);
    }

    #[test]
    fn strictly_increasing_within_the_strict_limit_only() {
        let limit = STRICT_LIMIT;
        assert!(limit > 4096, "strict beyond |x| = 1 (limit {limit})");
        for x in -limit + 1..=limit {
            assert!(tanh_q(x - 1) < tanh_q(x), "flat at {x} inside the limit {limit}");
        }
        // Past the limit a step that does not change the output comes soon: the limit is tight
        // to within one table segment.
        let flat = (limit..limit + 2 * (1 << STEP_BITS)).any(|x| tanh_q(x) == tanh_q(x + 1));
        assert!(flat, "no flat step just past {limit}");
    }

    #[test]
    fn slope_of_known_points() {
        assert_eq!(tanh_slope_q(0), 32768);
        assert_eq!(tanh_slope_q(16384), 24576); // 1 - 0.25
        assert_eq!(tanh_slope_q(-16384), 24576);
        assert_eq!(tanh_slope_q(32767), 2); // 1 - (1 - 2^-15)^2 ~ 2^-14
    }
}
