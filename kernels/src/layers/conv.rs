//! 5x5 multi-channel 2-D convolution, valid padding, stride 1.
//!
//! Computed through an im2col patch matrix: row `p` (an output position) holds the 5x5 input window of
//! every input channel, so the forward pass is one dot product per output channel and position, and
//! the weight gradient and the input gradient are multiply-accumulates of whole patch rows.
//! Weights are `[out_ch][in_ch][5][5]`, which is the patch order `k = (ci * 5 + ky) * 5 + kx`.

#![forbid(unsafe_code)]

use crate::Arith;

/// Kernel side length.
pub const KERNEL: usize = 5;

/// Shape of a 5x5 convolution layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv5x5 {
    /// Input channels.
    pub in_ch: usize,
    /// Output channels (filters).
    pub out_ch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
}

impl Conv5x5 {
    /// Output height.
    pub const fn out_h(&self) -> usize {
        self.in_h - KERNEL + 1
    }
    /// Output width.
    pub const fn out_w(&self) -> usize {
        self.in_w - KERNEL + 1
    }
    /// Output positions per channel.
    pub const fn positions(&self) -> usize {
        self.out_h() * self.out_w()
    }
    /// Values in one patch (one weight filter).
    pub const fn patch_len(&self) -> usize {
        self.in_ch * KERNEL * KERNEL
    }
    /// Length of the patch matrix.
    pub const fn patches_len(&self) -> usize {
        self.positions() * self.patch_len()
    }
    /// Input tensor length.
    pub const fn input_len(&self) -> usize {
        self.in_ch * self.in_h * self.in_w
    }
    /// Output tensor length.
    pub const fn output_len(&self) -> usize {
        self.out_ch * self.positions()
    }
    /// Weight count.
    pub const fn weight_len(&self) -> usize {
        self.out_ch * self.patch_len()
    }

    /// Input index of patch element `k` at output position `(oy, ox)`.
    #[inline]
    fn input_index(&self, k: usize, oy: usize, ox: usize) -> usize {
        let ci = k / (KERNEL * KERNEL);
        let ky = (k / KERNEL) % KERNEL;
        let kx = k % KERNEL;
        (ci * self.in_h + oy + ky) * self.in_w + ox + kx
    }

    /// Builds the patch matrix `[positions][patch_len]` from the input.
    pub fn im2col<T: Copy>(&self, input: &[T], patches: &mut [T]) {
        assert_eq!(input.len(), self.input_len());
        assert_eq!(patches.len(), self.patches_len());
        let k_len = self.patch_len();
        for (p, row) in patches.chunks_exact_mut(k_len).enumerate() {
            let (oy, ox) = (p / self.out_w(), p % self.out_w());
            for ci in 0..self.in_ch {
                for ky in 0..KERNEL {
                    let src = (ci * self.in_h + oy + ky) * self.in_w + ox;
                    let dst = (ci * KERNEL + ky) * KERNEL;
                    row[dst..dst + KERNEL].copy_from_slice(&input[src..src + KERNEL]);
                }
            }
        }
    }

    /// Pre-activations `out[co][p] = weight[co] . patch[p] + bias[co]`, in `acc_frac` fraction bits
    /// (the input's plus the weights').
    pub fn forward<A: Arith>(
        &self,
        patches: &[A::Val],
        weight: &[A::Val],
        bias: &[A::Param],
        acc_frac: u32,
        out: &mut [A::Acc],
    ) {
        assert_eq!(patches.len(), self.patches_len());
        assert_eq!(weight.len(), self.weight_len());
        assert_eq!(bias.len(), self.out_ch);
        assert_eq!(out.len(), self.output_len());
        let k_len = self.patch_len();
        for ((filter, &b), out_ch) in
            weight.chunks_exact(k_len).zip(bias).zip(out.chunks_exact_mut(self.positions()))
        {
            let b = A::bias(b, acc_frac);
            for (o, patch) in out_ch.iter_mut().zip(patches.chunks_exact(k_len)) {
                *o = A::dot(filter, patch) + b;
            }
        }
    }

    /// Adds this sample's weight and bias gradients: `grad_w[co] += delta[co][p] * patch[p]` and
    /// `grad_b[co] += delta[co][p]`, summed over positions.
    pub fn backward_params<A: Arith>(
        &self,
        patches: &[A::Val],
        delta: &[A::Val],
        grad_w: &mut [A::Acc],
        grad_b: &mut [A::Acc],
    ) {
        assert_eq!(patches.len(), self.patches_len());
        assert_eq!(delta.len(), self.output_len());
        assert_eq!(grad_w.len(), self.weight_len());
        assert_eq!(grad_b.len(), self.out_ch);
        let k_len = self.patch_len();
        let zero = A::Val::default();
        for ((d_ch, g_filter), g_b) in
            delta.chunks_exact(self.positions()).zip(grad_w.chunks_exact_mut(k_len)).zip(grad_b)
        {
            for (&d, patch) in d_ch.iter().zip(patches.chunks_exact(k_len)) {
                if d != zero {
                    A::axpy(g_filter, d, patch);
                    *g_b += A::widen(d);
                }
            }
        }
    }

    /// Input gradient `grad_in = sum over co, p of delta[co][p] * weight[co]` placed at patch `p`'s
    /// window, as exact sums (fraction bits: delta's plus weights'). `patch_grad` is scratch of
    /// `patch_len` accumulators.
    pub fn backward_input<A: Arith>(
        &self,
        delta: &[A::Val],
        weight: &[A::Val],
        patch_grad: &mut [A::Acc],
        grad_in: &mut [A::Acc],
    ) {
        assert_eq!(delta.len(), self.output_len());
        assert_eq!(weight.len(), self.weight_len());
        assert_eq!(patch_grad.len(), self.patch_len());
        assert_eq!(grad_in.len(), self.input_len());
        grad_in.fill(A::Acc::default());
        let (positions, k_len) = (self.positions(), self.patch_len());
        let zero = A::Val::default();
        for p in 0..positions {
            let mut any = false;
            patch_grad.fill(A::Acc::default());
            for (co, filter) in weight.chunks_exact(k_len).enumerate() {
                let d = delta[co * positions + p];
                if d != zero {
                    A::axpy(patch_grad, d, filter);
                    any = true;
                }
            }
            if any {
                let (oy, ox) = (p / self.out_w(), p % self.out_w());
                for (k, &g) in patch_grad.iter().enumerate() {
                    grad_in[self.input_index(k, oy, ox)] += g;
                }
            }
        }
    }
}
