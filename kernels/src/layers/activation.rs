//! Element-wise activations: tanh (used by both models) and ReLU.
//!
//! Forward passes read pre-activation accumulators and store values; backward passes read the exact
//! upstream gradient sums and store deltas, rounding once.

#![forbid(unsafe_code)]

use crate::fixed::DELTA_FRAC;
use crate::Arith;

/// `out = tanh(pre)`; `pre` has `acc_frac` fraction bits, `out` is in the activation format.
pub fn tanh_forward<A: Arith>(pre: &[A::Acc], acc_frac: u32, out: &mut [A::Val]) {
    assert_eq!(pre.len(), out.len());
    for (o, &z) in out.iter_mut().zip(pre) {
        *o = A::tanh(z, acc_frac);
    }
}

/// `delta = grad * (1 - y^2)`, from the stored outputs `y`; `grad` has `grad_frac` fraction bits.
pub fn tanh_backward<A: Arith>(grad: &[A::Acc], grad_frac: u32, y: &[A::Val], delta: &mut [A::Val]) {
    assert!(grad.len() == y.len() && y.len() == delta.len());
    let zero = A::Acc::default();
    for ((d, &g), &y) in delta.iter_mut().zip(grad).zip(y) {
        *d = if g == zero { A::Val::default() } else { A::tanh_backward(g, grad_frac, y) };
    }
}

/// `out = max(pre, 0)`, rounded from `acc_frac` into `out_frac` fraction bits.
pub fn relu_forward<A: Arith>(pre: &[A::Acc], acc_frac: u32, out_frac: u32, out: &mut [A::Val]) {
    assert_eq!(pre.len(), out.len());
    let zero = A::Acc::default();
    for (o, &z) in out.iter_mut().zip(pre) {
        *o = if z > zero { A::requantize(z, acc_frac, out_frac) } else { A::Val::default() };
    }
}

/// `delta = grad` where the output was positive, else 0, in the delta format.
pub fn relu_backward<A: Arith>(grad: &[A::Acc], grad_frac: u32, y: &[A::Val], delta: &mut [A::Val]) {
    assert!(grad.len() == y.len() && y.len() == delta.len());
    let zero = A::Val::default();
    for ((d, &g), &y) in delta.iter_mut().zip(grad).zip(y) {
        *d = if y > zero { A::requantize(g, grad_frac, DELTA_FRAC) } else { zero };
    }
}
