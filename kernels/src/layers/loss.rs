//! Softmax plus cross-entropy on the logits, and the output delta `p - onehot(label)`.
//!
//! The logits are converted to `f64` exactly (they are below 2^53 in magnitude), and the softmax uses
//! `libm::exp` and `libm::log`, so the result is the same on every CPU. The delta is not divided by the
//! batch size: the optimizer does that once, so gradients stay exact integer sums.

#![forbid(unsafe_code)]

use crate::fixed::DELTA_FRAC;
use crate::Arith;

/// Largest class count supported (MNIST has 10).
pub const MAX_CLASSES: usize = 16;

/// What one sample's forward pass gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOutcome {
    /// Cross-entropy loss, natural log.
    pub loss: f64,
    /// The predicted class (the first largest logit).
    pub predicted: usize,
}

/// Computes the loss against `label` and writes `delta[j] = softmax(logits)[j] - (j == label)`.
pub fn softmax_cross_entropy<A: Arith>(
    logits: &[A::Acc],
    acc_frac: u32,
    label: usize,
    delta: &mut [A::Val],
) -> SampleOutcome {
    let n = logits.len();
    assert!(n <= MAX_CLASSES && label < n && delta.len() == n);
    let mut z = [0f64; MAX_CLASSES];
    let mut predicted = 0;
    for (j, &l) in logits.iter().enumerate() {
        z[j] = A::acc_to_f64(l, acc_frac);
        if z[j] > z[predicted] {
            predicted = j;
        }
    }
    let max = z[predicted];
    let mut exps = [0f64; MAX_CLASSES];
    let mut total = 0.0;
    for j in 0..n {
        exps[j] = libm::exp(z[j] - max);
        total += exps[j];
    }
    for j in 0..n {
        let target = if j == label { 1.0 } else { 0.0 };
        delta[j] = A::val_from_f64(exps[j] / total - target, DELTA_FRAC);
    }
    SampleOutcome { loss: libm::log(total) + max - z[label], predicted }
}

/// The loss and prediction without a delta (evaluation).
pub fn evaluate_logits<A: Arith>(logits: &[A::Acc], acc_frac: u32, label: usize) -> SampleOutcome {
    let mut delta = [A::Val::default(); MAX_CLASSES];
    softmax_cross_entropy::<A>(logits, acc_frac, label, &mut delta[..logits.len()])
}
