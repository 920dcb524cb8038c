//! The arithmetic a network is computed in: [`Fixed`] (the product) or [`Float`] (the f32 reference).
//!
//! Layers and models are written once, generic over [`Arith`]. The fixed-point implementation does all
//! its rounding in the methods here, at the storage points listed in [`crate::fixed`]; the float one
//! ignores the fraction-bit arguments.

#![forbid(unsafe_code)]

use core::fmt::Debug;
use core::ops::{Add, AddAssign};

use crate::blocks::ConvNet;
use crate::fixed::{self, ACT_FRAC, DELTA_FRAC, HYPER_FRAC, MASTER_FRAC};
use crate::network::{ScratchMut, Weights};
use crate::simd;
use crate::tanh;
use crate::train::BatchStats;

/// SGD with momentum and weight decay, MXNet's form:
/// `mom = momentum * mom - lr * (grad / batch) - lr * weight_decay * w;  w += mom`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (the paper's example: 0.05).
    pub learning_rate: f64,
    /// Momentum (MXNet's example default: 0.9).
    pub momentum: f64,
    /// L2 weight decay, applied to weights and not to biases (MXNet's default multipliers): 1e-4.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { learning_rate: 0.05, momentum: 0.9, weight_decay: 1e-4 }
    }
}

/// One way of computing a network: the types values are stored in, and every operation that rounds.
pub trait Arith: Copy + Default + Send + Sync + Debug + 'static {
    /// Inputs, activations, deltas and working weights (`i16` or `f32`).
    type Val: Copy + Default + PartialOrd + Send + Sync + Debug + 'static;
    /// Exact sums: pre-activations, back-propagated sums and gradients (`i64` or `f32`).
    type Acc: Copy
        + Default
        + PartialOrd
        + Add<Output = Self::Acc>
        + AddAssign
        + Send
        + Sync
        + Debug
        + 'static;
    /// Master weights, biases and momentum (`i32` Q7.24 or `f32`).
    type Param: Copy + Default + PartialEq + Send + Sync + Debug + 'static;
    /// The optimizer's constants, converted once per run.
    type Sgd: Copy + Debug;

    /// A short name for reports ("fixed" or "f32").
    const NAME: &'static str;
    /// Zero of each type, for `static` initialisers.
    const ZERO_VAL: Self::Val;
    /// Zero accumulator.
    const ZERO_ACC: Self::Acc;
    /// Zero parameter.
    const ZERO_PARAM: Self::Param;

    /// `sum(a[i] * b[i])`.
    fn dot(a: &[Self::Val], b: &[Self::Val]) -> Self::Acc;
    /// `acc[i] += scale * x[i]`.
    fn axpy(acc: &mut [Self::Acc], scale: Self::Val, x: &[Self::Val]);
    /// A stored value as an accumulator with the same scale.
    fn widen(v: Self::Val) -> Self::Acc;
    /// An input pixel in the input format.
    fn pixel(p: u8) -> Self::Val;

    /// The working copy of a master parameter, in `frac` fraction bits.
    fn working(p: Self::Param, frac: u32) -> Self::Val;
    /// [`Arith::working`] of every parameter of a slice (once per step: an implementation may
    /// convert many at a time, to the same values).
    fn to_working(master: &[Self::Param], frac: u32, working: &mut [Self::Val]) {
        working_each::<Self>(master, frac, working)
    }
    /// A master bias added into an accumulator of `acc_frac` fraction bits.
    fn bias(p: Self::Param, acc_frac: u32) -> Self::Acc;
    /// A master parameter from a real number (initialisation, loading).
    fn param_from_f64(x: f64) -> Self::Param;
    /// The real number a master parameter stands for.
    fn param_to_f64(p: Self::Param) -> f64;
    /// A master parameter's bits, little-endian (hashing, checkpoints, the wire).
    fn param_le_bytes(p: Self::Param) -> [u8; 4];

    /// An accumulator rounded into a stored value of `to` fraction bits.
    fn requantize(acc: Self::Acc, from: u32, to: u32) -> Self::Val;
    /// `tanh` of a pre-activation, into the activation format.
    fn tanh(acc: Self::Acc, acc_frac: u32) -> Self::Val;
    /// Delta at a tanh's input: `grad * (1 - y^2)`, with one rounding, into the delta format.
    fn tanh_backward(grad: Self::Acc, grad_frac: u32, y: Self::Val) -> Self::Val;

    /// The real number an accumulator stands for (logits).
    fn acc_to_f64(acc: Self::Acc, frac: u32) -> f64;
    /// The real number a stored value stands for.
    fn val_to_f64(v: Self::Val, frac: u32) -> f64;
    /// A real number as a stored value (output deltas).
    fn val_from_f64(x: f64, frac: u32) -> Self::Val;

    /// Converts the optimizer settings.
    fn sgd_constants(config: &SgdConfig) -> Self::Sgd;
    /// Whether [`Arith::accumulate_conv_net`] leaves the dense layers' weight and bias gradients to
    /// [`Arith::dense_gradients_conv_net`] (over the batch rows of all cores), so that a core's
    /// own accumulators hold only the convolutions' gradients.
    #[doc(hidden)]
    const DEFERS_DENSE: bool = false;

    /// Trains a network on one core's samples, adding their gradients into `grads` (cleared first
    /// when `first`: the step's first block): by default one sample at a time through the generic
    /// layers, every gradient included; [`Fixed`] runs its matrix-product path ([`crate::fast`]),
    /// which writes or adds the convolutions' gradients and leaves each sample's dense inputs and
    /// deltas in `rows` ([`Arith::DEFERS_DENSE`]).
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn accumulate_conv_net<'s, const D: usize>(
        net: &ConvNet<D>,
        weights: Weights<'_, Self>,
        samples: impl IntoIterator<Item = (&'s [u8], u8)>,
        mut scratch: ScratchMut<'_, Self>,
        (grads, first): (&mut [Self::Acc], bool),
        _rows: &mut [Self::Val],
    ) -> BatchStats {
        if first {
            grads.fill(Self::ZERO_ACC);
        }
        let mut stats = BatchStats::default();
        for (image, label) in samples {
            let outcome = net.train_sample::<Self>(weights, image, label, scratch.reborrow(), grads);
            stats.record(&outcome, label);
        }
        stats
    }

    /// The dense gradients [`Arith::accumulate_conv_net`] left in the batch rows, for the
    /// parameters `part`, into `out` (set on a step's first block, added after); nothing where
    /// [`Arith::DEFERS_DENSE`] is false.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn dense_gradients_conv_net<const D: usize>(
        _net: &ConvNet<D>,
        _rows: &[Self::Val],
        _samples: usize,
        _part: core::ops::Range<usize>,
        _out: &mut [Self::Acc],
        _first_block: bool,
    ) {
    }

    /// `dst[i] += src[i]`: the cores' gradient sums added together (an implementation may add many
    /// at a time).
    fn add_accs(dst: &mut [Self::Acc], src: &[Self::Acc]) {
        assert_eq!(dst.len(), src.len(), "sums of unequal lengths");
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }

    /// Evaluates a network on samples (see [`Arith::accumulate_conv_net`]).
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn evaluate_conv_net<'s, const D: usize>(
        net: &ConvNet<D>,
        weights: Weights<'_, Self>,
        samples: impl IntoIterator<Item = (&'s [u8], u8)>,
        mut scratch: ScratchMut<'_, Self>,
    ) -> BatchStats {
        let mut stats = BatchStats::default();
        for (image, label) in samples {
            let outcome = net.evaluate::<Self>(weights, image, label, scratch.reborrow());
            stats.record(&outcome, label);
        }
        stats
    }

    /// Applies one step to a tensor: `grads` are the batch sums in `grad_frac` fraction bits over
    /// `batch` samples; weight decay applies when `decay`.
    fn sgd_step(
        sgd: &Self::Sgd,
        params: &mut [Self::Param],
        momentum: &mut [Self::Param],
        grads: &[Self::Acc],
        grad_frac: u32,
        batch: u32,
        decay: bool,
    );
}

/// The product's arithmetic: `i16` values, exact `i64` sums, `i32` Q7.24 master parameters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixed;

pub use crate::sgd::FixedSgd;

impl Arith for Fixed {
    type Val = i16;
    type Acc = i64;
    type Param = i32;
    type Sgd = FixedSgd;
    const NAME: &'static str = "fixed";
    const ZERO_VAL: i16 = 0;
    const ZERO_ACC: i64 = 0;
    const ZERO_PARAM: i32 = 0;

    #[inline]
    fn dot(a: &[i16], b: &[i16]) -> i64 {
        simd::dot_i16(a, b)
    }
    #[inline]
    fn axpy(acc: &mut [i64], scale: i16, x: &[i16]) {
        simd::axpy_i16(acc, scale, x)
    }
    #[inline]
    fn widen(v: i16) -> i64 {
        v as i64
    }
    #[inline]
    fn pixel(p: u8) -> i16 {
        fixed::pixel_to_q14(p)
    }
    #[inline]
    fn working(p: i32, frac: u32) -> i16 {
        fixed::to_i16(p as i64, MASTER_FRAC, frac)
    }
    fn to_working(master: &[i32], frac: u32, working: &mut [i16]) {
        match MASTER_FRAC.checked_sub(frac) {
            Some(shift @ 1..=31) => simd::round_to_i16(master, shift, working),
            _ => working_each::<Self>(master, frac, working),
        }
    }
    #[inline]
    fn bias(p: i32, acc_frac: u32) -> i64 {
        fixed::rescale(p as i64, MASTER_FRAC, acc_frac)
    }
    fn param_from_f64(x: f64) -> i32 {
        fixed::saturate_i32(fixed::from_f64(x, MASTER_FRAC))
    }
    fn param_to_f64(p: i32) -> f64 {
        fixed::to_f64(p as i64, MASTER_FRAC)
    }
    fn param_le_bytes(p: i32) -> [u8; 4] {
        p.to_le_bytes()
    }
    #[inline]
    fn requantize(acc: i64, from: u32, to: u32) -> i16 {
        fixed::to_i16(acc, from, to)
    }
    #[inline]
    fn tanh(acc: i64, acc_frac: u32) -> i16 {
        tanh::tanh_q(tanh::tanh_input(acc, acc_frac))
    }
    #[inline]
    fn tanh_backward(grad: i64, grad_frac: u32, y: i16) -> i16 {
        let from = grad_frac + ACT_FRAC;
        if from > DELTA_FRAC && from - DELTA_FRAC <= 61 && grad.unsigned_abs() < 1 << 47 {
            // The common case in 64 bits, with the same value as the 128-bit path below: the slope
            // is at most 2^15, so |grad * slope| < 2^62, and the rounding term is at most 2^60, so
            // nothing overflows.
            let product = grad * tanh::tanh_slope_q(y) as i64;
            return fixed::saturate_i16(fixed::rescale(product, from, DELTA_FRAC));
        }
        tanh_backward_wide(grad, grad_frac, y)
    }
    fn acc_to_f64(acc: i64, frac: u32) -> f64 {
        fixed::to_f64(acc, frac)
    }
    fn val_to_f64(v: i16, frac: u32) -> f64 {
        fixed::to_f64(v as i64, frac)
    }
    fn val_from_f64(x: f64, frac: u32) -> i16 {
        fixed::saturate_i16(fixed::from_f64(x, frac))
    }

    const DEFERS_DENSE: bool = true;

    #[allow(private_interfaces)]
    fn accumulate_conv_net<'s, const D: usize>(
        net: &ConvNet<D>,
        weights: Weights<'_, Self>,
        samples: impl IntoIterator<Item = (&'s [u8], u8)>,
        scratch: ScratchMut<'_, Self>,
        grads: (&mut [i64], bool),
        rows: &mut [i16],
    ) -> BatchStats {
        crate::fast::accumulate_rows(net, weights, samples, scratch, grads, rows)
    }

    #[allow(private_interfaces)]
    fn dense_gradients_conv_net<const D: usize>(
        net: &ConvNet<D>,
        rows: &[i16],
        samples: usize,
        part: core::ops::Range<usize>,
        out: &mut [i64],
        first_block: bool,
    ) {
        let write =
            if first_block { crate::simd::gather::Write::Set } else { crate::simd::gather::Write::Add };
        crate::fast::dense_gradients(net, rows, samples, part, out, write)
    }

    fn add_accs(dst: &mut [i64], src: &[i64]) {
        crate::simd::add_i64(dst, src)
    }

    #[allow(private_interfaces)]
    fn evaluate_conv_net<'s, const D: usize>(
        net: &ConvNet<D>,
        weights: Weights<'_, Self>,
        samples: impl IntoIterator<Item = (&'s [u8], u8)>,
        scratch: ScratchMut<'_, Self>,
    ) -> BatchStats {
        crate::fast::evaluate(net, weights, samples, scratch)
    }

    fn sgd_constants(config: &SgdConfig) -> FixedSgd {
        FixedSgd {
            momentum: fixed::from_f64(config.momentum, HYPER_FRAC),
            learning_rate: fixed::from_f64(config.learning_rate, HYPER_FRAC),
            decay_step: fixed::from_f64(config.learning_rate * config.weight_decay, HYPER_FRAC),
        }
    }

    /// See [`crate::sgd`]: the fused exact step, with the `i128` definition beside it.
    fn sgd_step(
        sgd: &FixedSgd,
        params: &mut [i32],
        momentum: &mut [i32],
        grads: &[i64],
        grad_frac: u32,
        batch: u32,
        decay: bool,
    ) {
        crate::sgd::sgd_step(sgd, params, momentum, grads, grad_frac, batch, decay)
    }
}

/// [`Arith::working`] of each parameter: [`Arith::to_working`]'s default, and [`Fixed`]'s for the
/// formats its vector conversion does not take.
fn working_each<A: Arith>(master: &[A::Param], frac: u32, working: &mut [A::Val]) {
    for (v, &p) in working.iter_mut().zip(master) {
        *v = A::working(p, frac);
    }
}

/// [`Fixed`]'s tanh backward for every input, in 128 bits: the definition its 64-bit common case is
/// tested against. Kept out of line so that the compiler does not compute both paths for every call.
#[cold]
#[inline(never)]
fn tanh_backward_wide(grad: i64, grad_frac: u32, y: i16) -> i16 {
    let slope = tanh::tanh_slope_q(y) as i128;
    let product = grad as i128 * slope; // grad_frac + 15 fraction bits
    let delta = fixed::rescale_i128(product, grad_frac + ACT_FRAC, DELTA_FRAC);
    fixed::saturate_i16(delta.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// The f32 reference arithmetic. Sums are in `f32` in a fixed order, transcendental functions come
/// from `libm`; the fraction-bit arguments are ignored.
#[cfg(feature = "reference")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Float;

#[cfg(feature = "reference")]
impl Arith for Float {
    type Val = f32;
    type Acc = f32;
    type Param = f32;
    type Sgd = SgdConfig;
    const NAME: &'static str = "f32";
    const ZERO_VAL: f32 = 0.0;
    const ZERO_ACC: f32 = 0.0;
    const ZERO_PARAM: f32 = 0.0;

    #[inline]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        simd::dot_f32(a, b)
    }
    #[inline]
    fn axpy(acc: &mut [f32], scale: f32, x: &[f32]) {
        simd::axpy_f32(acc, scale, x)
    }
    #[inline]
    fn widen(v: f32) -> f32 {
        v
    }
    #[inline]
    fn pixel(p: u8) -> f32 {
        p as f32 / 255.0
    }
    #[inline]
    fn working(p: f32, _frac: u32) -> f32 {
        p
    }
    #[inline]
    fn bias(p: f32, _acc_frac: u32) -> f32 {
        p
    }
    fn param_from_f64(x: f64) -> f32 {
        x as f32
    }
    fn param_to_f64(p: f32) -> f64 {
        p as f64
    }
    fn param_le_bytes(p: f32) -> [u8; 4] {
        p.to_le_bytes()
    }
    #[inline]
    fn requantize(acc: f32, _from: u32, _to: u32) -> f32 {
        acc
    }
    #[inline]
    fn tanh(acc: f32, _acc_frac: u32) -> f32 {
        libm::tanhf(acc)
    }
    #[inline]
    fn tanh_backward(grad: f32, _grad_frac: u32, y: f32) -> f32 {
        grad * (1.0 - y * y)
    }
    fn acc_to_f64(acc: f32, _frac: u32) -> f64 {
        acc as f64
    }
    fn val_to_f64(v: f32, _frac: u32) -> f64 {
        v as f64
    }
    fn val_from_f64(x: f64, _frac: u32) -> f32 {
        x as f32
    }
    fn sgd_constants(config: &SgdConfig) -> SgdConfig {
        *config
    }
    fn sgd_step(
        sgd: &SgdConfig,
        params: &mut [f32],
        momentum: &mut [f32],
        grads: &[f32],
        _grad_frac: u32,
        batch: u32,
        decay: bool,
    ) {
        let mom = sgd.momentum as f32;
        let rate = sgd.learning_rate as f32;
        let decay_step = if decay { (sgd.learning_rate * sgd.weight_decay) as f32 } else { 0.0 };
        let inv_batch = 1.0 / batch as f32;
        for ((w, m), &g) in params.iter_mut().zip(momentum.iter_mut()).zip(grads) {
            *m = mom * *m - rate * (g * inv_batch) - decay_step * *w;
            *w += *m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_sgd() -> FixedSgd {
        Fixed::sgd_constants(&SgdConfig::default())
    }

    #[test]
    fn sgd_matches_the_real_valued_update_within_one_lsb() {
        // w = 0.25, m = -0.01, G = 3.0 summed over a batch of 64 (grad frac 30), decay on.
        let mut w = [Fixed::param_from_f64(0.25)];
        let mut m = [Fixed::param_from_f64(-0.01)];
        let g = [fixed::from_f64(3.0, 30)];
        Fixed::sgd_step(&fixed_sgd(), &mut w, &mut m, &g, 30, 64, true);
        let expect_m = 0.9 * -0.01 - 0.05 * 3.0 / 64.0 - 0.05 * 1e-4 * 0.25;
        let lsb = 1.0 / (1u64 << 24) as f64;
        assert!((Fixed::param_to_f64(m[0]) - expect_m).abs() <= lsb, "{}", Fixed::param_to_f64(m[0]));
        assert!((Fixed::param_to_f64(w[0]) - (0.25 + expect_m)).abs() <= 2.0 * lsb);
    }

    #[test]
    fn sgd_divides_by_any_batch_size() {
        for batch in [1u32, 3, 64, 192, 640] {
            let mut w = [0i32];
            let mut m = [0i32];
            let g = [fixed::from_f64(-1.5, 15)];
            Fixed::sgd_step(&fixed_sgd(), &mut w, &mut m, &g, 15, batch, false);
            let expect = 0.05 * 1.5 / batch as f64;
            assert!((Fixed::param_to_f64(m[0]) - expect).abs() <= 1.0 / (1u64 << 24) as f64);
            assert_eq!(w, m);
        }
    }

    #[test]
    fn bias_has_no_decay() {
        let mut w = [Fixed::param_from_f64(1.0)];
        let mut m = [0];
        Fixed::sgd_step(&fixed_sgd(), &mut w, &mut m, &[0], 15, 64, false);
        assert_eq!(m, [0]);
        Fixed::sgd_step(&fixed_sgd(), &mut w, &mut m, &[0], 15, 64, true);
        assert!(m[0] < 0);
    }

    #[test]
    fn tanh_backward_in_64_bits_is_the_128_bit_definition() {
        let mut rng = crate::rng::Rng::new(7);
        let edge = 1i64 << 47;
        let fixed_points = [0, 1, -1, edge - 1, edge, edge + 1, i64::MAX, i64::MIN + 1, i64::MIN];
        let edges = fixed_points.into_iter().flat_map(|g| [g, g.wrapping_neg()]);
        let random = (0..200).map(|_| (rng.next_u64() as i64) >> (rng.next_u64() % 64));
        for grad in edges.chain(random) {
            for y in [0, 1, -1, 12345, -20000, 32767, -32767] {
                for grad_frac in 0..=60 {
                    assert_eq!(
                        Fixed::tanh_backward(grad, grad_frac, y),
                        tanh_backward_wide(grad, grad_frac, y),
                        "grad {grad} at {grad_frac} fraction bits, y {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn tanh_backward_applies_the_slope() {
        // grad 0.5 (frac 30), y = 0.5: delta = 0.5 * 0.75 = 0.375.
        let y = Fixed::val_from_f64(0.5, 15);
        let d = Fixed::tanh_backward(fixed::from_f64(0.5, 30), 30, y);
        assert_eq!(d, Fixed::val_from_f64(0.375, 15));
    }
}
