//! Fully connected layer: `out = W x + b`, weights `[outputs][inputs]`.

#![forbid(unsafe_code)]

use crate::Arith;

/// Shape of a fully connected layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    /// Input length.
    pub inputs: usize,
    /// Output length.
    pub outputs: usize,
}

impl Dense {
    /// Weight count.
    pub const fn weight_len(&self) -> usize {
        self.inputs * self.outputs
    }

    /// Pre-activations `out[j] = weight[j] . x + bias[j]` in `acc_frac` fraction bits.
    pub fn forward<A: Arith>(
        &self,
        x: &[A::Val],
        weight: &[A::Val],
        bias: &[A::Param],
        acc_frac: u32,
        out: &mut [A::Acc],
    ) {
        assert_eq!(x.len(), self.inputs);
        assert_eq!(weight.len(), self.weight_len());
        assert_eq!(bias.len(), self.outputs);
        assert_eq!(out.len(), self.outputs);
        for ((o, row), &b) in out.iter_mut().zip(weight.chunks_exact(self.inputs)).zip(bias) {
            *o = A::dot(row, x) + A::bias(b, acc_frac);
        }
    }

    /// Adds this sample's gradients: `grad_w[j] += delta[j] * x`, `grad_b[j] += delta[j]`.
    pub fn backward_params<A: Arith>(
        &self,
        x: &[A::Val],
        delta: &[A::Val],
        grad_w: &mut [A::Acc],
        grad_b: &mut [A::Acc],
    ) {
        assert_eq!(x.len(), self.inputs);
        assert_eq!(delta.len(), self.outputs);
        assert_eq!(grad_w.len(), self.weight_len());
        assert_eq!(grad_b.len(), self.outputs);
        let zero = A::Val::default();
        for ((&d, g_row), g_b) in delta.iter().zip(grad_w.chunks_exact_mut(self.inputs)).zip(grad_b) {
            if d != zero {
                A::axpy(g_row, d, x);
                *g_b += A::widen(d);
            }
        }
    }

    /// Input gradient `grad_in = W^T delta`, exact (fraction bits: delta's plus weights').
    pub fn backward_input<A: Arith>(&self, delta: &[A::Val], weight: &[A::Val], grad_in: &mut [A::Acc]) {
        assert_eq!(delta.len(), self.outputs);
        assert_eq!(weight.len(), self.weight_len());
        assert_eq!(grad_in.len(), self.inputs);
        grad_in.fill(A::Acc::default());
        let zero = A::Val::default();
        for (&d, row) in delta.iter().zip(weight.chunks_exact(self.inputs)) {
            if d != zero {
                A::axpy(grad_in, d, row);
            }
        }
    }
}
