//! Fixed-point number formats and the one rounding rule used everywhere.
//!
//! A value in format Q*m*.*n* is an integer `v` standing for `v / 2^n`; *m* integer bits plus the sign
//! bit plus *n* fraction bits fill the storage type. Only the fraction-bit count matters to the
//! arithmetic, so the code carries it as a `u32` "frac".
//!
//! | what | storage | format | frac | notes |
//! |---|---|---|---|---|
//! | input pixels | `i16` | Q1.14 | 14 | `round(pixel * 16384 / 255)`, so 0..=16384 |
//! | activations (tanh outputs) | `i16` | Q0.15 | 15 | in [-32767, 32767] |
//! | tanh inputs | `i16` | Q3.12 | 12 | pre-activations saturated to (-8, 8) |
//! | back-propagated deltas | `i16` | Q0.15 | 15 | |
//! | working weights, conv1 | `i16` | Q2.13 | 13 | the input layer has the largest weights |
//! | working weights, MxLenet conv2/fc1/fc2 | `i16` | Q0.15 | 15 | largest \|w\| stays below 0.5 |
//! | working weights, LeNet-5 conv2/fc* | `i16` | Q1.14 | 14 | small fan-ins grow larger weights |
//! | forward accumulators | `i64` | input frac + weight frac | 27..30 | exact; overflow `i32` |
//! | weight gradients | `i64` | delta frac + input frac | 29..30 | exact sums over batch and positions |
//! | bias gradients | `i64` | delta frac | 15 | exact sums |
//! | master weights, biases, momentum | `i32` | Q7.24 | 24 | updated once per step |
//!
//! Every `i16` value is saturated to the symmetric range [-32767, 32767]. The SIMD dot products rely
//! on it: two products of such values always sum within `i32` (see [`crate::simd`]).
//!
//! Rounding to a shorter format adds half an output LSB, shifts right arithmetically and saturates.
//! Ties therefore round towards +infinity, the same on every CPU.

#![forbid(unsafe_code)]

/// Fraction bits of the input pixels (Q1.14).
pub const INPUT_FRAC: u32 = 14;
/// Fraction bits of tanh outputs and of every stored activation (Q0.15).
pub const ACT_FRAC: u32 = 15;
/// Fraction bits of the tanh input (Q3.12).
pub const TANH_IN_FRAC: u32 = 12;
/// Fraction bits of back-propagated deltas (Q0.15).
pub const DELTA_FRAC: u32 = 15;
/// Fraction bits of master weights, biases and momentum (Q7.24).
pub const MASTER_FRAC: u32 = 24;
/// Fraction bits of the optimizer's hyperparameter constants (learning rate, momentum, decay).
pub const HYPER_FRAC: u32 = 40;

/// Largest magnitude an `i16` value may take (the range is kept symmetric).
pub const I16_LIMIT: i64 = i16::MAX as i64;

/// Saturates to the symmetric `i16` range [-32767, 32767].
#[inline]
pub fn saturate_i16(v: i64) -> i16 {
    v.clamp(-I16_LIMIT, I16_LIMIT) as i16
}

/// Saturates to `i32`.
#[inline]
pub fn saturate_i32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// Rescales `v` from `from` fraction bits to `to` fraction bits, rounding half up.
#[inline]
pub fn rescale(v: i64, from: u32, to: u32) -> i64 {
    if from > to {
        let shift = from - to;
        (v + (1i64 << (shift - 1))) >> shift
    } else {
        v << (to - from)
    }
}

/// 128-bit [`rescale`] for the few products that need more than 64 bits.
#[inline]
pub fn rescale_i128(v: i128, from: u32, to: u32) -> i128 {
    if from > to {
        let shift = from - to;
        (v + (1i128 << (shift - 1))) >> shift
    } else {
        v << (to - from)
    }
}

/// Rescales an accumulator and saturates it into an `i16` value.
#[inline]
pub fn to_i16(v: i64, from: u32, to: u32) -> i16 {
    saturate_i16(rescale(v, from, to))
}

/// Nearest integer to `x * 2^frac` (half up), saturated to `i64`. Exact IEEE arithmetic plus `libm::floor`,
/// so the result is the same on every CPU.
#[inline]
pub fn from_f64(x: f64, frac: u32) -> i64 {
    let scaled = libm::floor(x * libm::exp2(frac as f64) + 0.5);
    // `as` saturates for out-of-range floats and maps NaN to 0.
    scaled as i64
}

/// The real number an integer in `frac` fraction bits stands for.
#[inline]
pub fn to_f64(v: i64, frac: u32) -> f64 {
    v as f64 / libm::exp2(frac as f64)
}

/// Floor division by a positive divisor, rounding half up: `round(n / d)`.
#[inline]
pub fn div_round(n: i64, d: i64) -> i64 {
    debug_assert!(d > 0);
    (n + d / 2).div_euclid(d)
}

/// Converts an 8-bit pixel to Q1.14: `round(pixel * 16384 / 255)`.
#[inline]
pub fn pixel_to_q14(pixel: u8) -> i16 {
    div_round(pixel as i64 * (1 << INPUT_FRAC), 255) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_half_up_on_both_signs() {
        // 1.5 and -1.5 in one fraction bit, to integers: ties go towards +inf.
        assert_eq!(rescale(3, 1, 0), 2);
        assert_eq!(rescale(-3, 1, 0), -1);
        assert_eq!(rescale(-5, 2, 0), -1); // -1.25
        assert_eq!(rescale(7, 0, 3), 56);
        assert_eq!(rescale_i128(-3, 1, 0), -1);
    }

    #[test]
    fn saturation_is_symmetric() {
        assert_eq!(saturate_i16(-100_000), -32767);
        assert_eq!(saturate_i16(100_000), 32767);
        assert_eq!(to_i16(1 << 40, 30, 15), 32767);
    }

    #[test]
    fn pixels_map_to_q14() {
        assert_eq!(pixel_to_q14(0), 0);
        assert_eq!(pixel_to_q14(255), 16384);
        assert_eq!(pixel_to_q14(128), 8224); // 128 * 16384 / 255 = 8224.1
    }

    #[test]
    fn float_conversion_round_trips() {
        assert_eq!(from_f64(0.05, 40), 54_975_581_389);
        assert_eq!(from_f64(-0.5, 1), -1); // -1.0 exactly
        assert_eq!(to_f64(1 << 24, 24), 1.0);
        assert_eq!(div_round(-7, 2), -3);
        assert_eq!(div_round(7, 2), 4);
    }
}
