//! The building blocks both models are made of, each owning its slice of the scratch space:
//! convolution + tanh + max-pool, and dense (+ tanh). A block's backward pass turns the exact gradient
//! at its output into its deltas, adds its parameter gradients, and writes the exact gradient at its
//! input into the previous block's buffer.

#![forbid(unsafe_code)]

use crate::layers::loss::evaluate_logits;
use crate::layers::{
    softmax_cross_entropy, tanh_backward, tanh_forward, Conv5x5, Dense, MaxPool2, SampleOutcome,
};
use crate::network::{Carve, LayerSpec, ScratchSize, Weights};
use crate::Arith;

/// Scratch buffers of the three kinds, carved in step.
pub(crate) struct Carver<'a, A: Arith> {
    vals: Carve<'a, A::Val>,
    accs: Carve<'a, A::Acc>,
    indices: Carve<'a, u32>,
}

impl<'a, A: Arith> Carver<'a, A> {
    pub(crate) fn new(scratch: crate::network::ScratchMut<'a, A>) -> Self {
        Carver {
            vals: Carve::new(scratch.vals),
            accs: Carve::new(scratch.accs),
            indices: Carve::new(scratch.indices),
        }
    }
    pub(crate) fn vals(&mut self, n: usize) -> &'a mut [A::Val] {
        self.vals.take(n)
    }
    pub(crate) fn accs(&mut self, n: usize) -> &'a mut [A::Acc] {
        self.accs.take(n)
    }
}

/// Convolution, tanh, then 2x2 max-pool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvBlock {
    pub conv: Conv5x5,
    pub spec: &'static LayerSpec,
}

/// A [`ConvBlock`]'s buffers for one sample.
pub(crate) struct ConvBuffers<'a, A: Arith> {
    patches: &'a mut [A::Val],
    pre: &'a mut [A::Acc],
    act: &'a mut [A::Val],
    /// The block's output.
    pub pooled: &'a mut [A::Val],
    argmax: &'a mut [u32],
    /// Gradient at the block's output, written by the next block.
    pub grad_pooled: &'a mut [A::Acc],
    grad_act: &'a mut [A::Acc],
    delta: &'a mut [A::Val],
    patch_grad: &'a mut [A::Acc],
}

impl ConvBlock {
    pub(crate) const fn pool(&self) -> MaxPool2 {
        MaxPool2 { ch: self.conv.out_ch, in_h: self.conv.out_h(), in_w: self.conv.out_w() }
    }

    pub(crate) const fn scratch(&self) -> ScratchSize {
        let out = self.conv.output_len();
        let pooled = self.pool().output_len();
        ScratchSize {
            vals: self.conv.patches_len() + out + pooled + out,
            accs: out + pooled + out + self.conv.patch_len(),
            indices: pooled,
        }
    }

    pub(crate) fn carve<'a, A: Arith>(&self, c: &mut Carver<'a, A>) -> ConvBuffers<'a, A> {
        let out = self.conv.output_len();
        let pooled = self.pool().output_len();
        ConvBuffers {
            patches: c.vals(self.conv.patches_len()),
            pre: c.accs(out),
            act: c.vals(out),
            pooled: c.vals(pooled),
            argmax: c.indices.take(pooled),
            grad_pooled: c.accs(pooled),
            grad_act: c.accs(out),
            delta: c.vals(out),
            patch_grad: c.accs(self.conv.patch_len()),
        }
    }

    pub(crate) fn forward<A: Arith>(&self, w: Weights<'_, A>, input: &[A::Val], b: &mut ConvBuffers<'_, A>) {
        let s = self.spec;
        self.conv.im2col(input, b.patches);
        self.conv.forward::<A>(b.patches, s.weights(w.working), s.biases(w.master), s.acc_frac(), b.pre);
        tanh_forward::<A>(b.pre, s.acc_frac(), b.act);
        self.pool().forward(b.act, b.pooled, b.argmax);
    }

    /// Backward pass; `grad_frac` is the fraction-bit count of `grad_pooled`. Writes the input
    /// gradient into `grad_input` when there is a previous block, and returns its fraction bits.
    pub(crate) fn backward<A: Arith>(
        &self,
        w: Weights<'_, A>,
        b: &mut ConvBuffers<'_, A>,
        grad_frac: u32,
        grads: &mut [A::Acc],
        grad_input: Option<&mut [A::Acc]>,
    ) -> u32 {
        let s = self.spec;
        self.pool().backward(b.grad_pooled, b.argmax, b.grad_act);
        tanh_backward::<A>(b.grad_act, grad_frac, b.act, b.delta);
        let (grad_w, grad_b) = s.params_mut(grads);
        self.conv.backward_params::<A>(b.patches, b.delta, grad_w, grad_b);
        if let Some(grad_input) = grad_input {
            self.conv.backward_input::<A>(b.delta, s.weights(w.working), b.patch_grad, grad_input);
        }
        s.input_grad_frac()
    }
}

/// Dense layer, followed by tanh unless it is the output layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DenseBlock {
    pub dense: Dense,
    pub spec: &'static LayerSpec,
    pub tanh: bool,
}

/// A [`DenseBlock`]'s buffers for one sample.
pub(crate) struct DenseBuffers<'a, A: Arith> {
    /// Pre-activations (the logits, for the output layer).
    pub pre: &'a mut [A::Acc],
    /// The block's output (after tanh).
    pub act: &'a mut [A::Val],
    /// Gradient at the block's output, written by the next block.
    pub grad_out: &'a mut [A::Acc],
    /// Deltas at the pre-activations (for the output layer: written by the loss).
    pub delta: &'a mut [A::Val],
}

impl DenseBlock {
    pub(crate) const fn scratch(&self) -> ScratchSize {
        let n = self.dense.outputs;
        ScratchSize { vals: 2 * n, accs: 2 * n, indices: 0 }
    }

    pub(crate) fn carve<'a, A: Arith>(&self, c: &mut Carver<'a, A>) -> DenseBuffers<'a, A> {
        let n = self.dense.outputs;
        DenseBuffers { pre: c.accs(n), act: c.vals(n), grad_out: c.accs(n), delta: c.vals(n) }
    }

    pub(crate) fn forward<A: Arith>(&self, w: Weights<'_, A>, input: &[A::Val], b: &mut DenseBuffers<'_, A>) {
        let s = self.spec;
        self.dense.forward::<A>(input, s.weights(w.working), s.biases(w.master), s.acc_frac(), b.pre);
        if self.tanh {
            tanh_forward::<A>(b.pre, s.acc_frac(), b.act);
        }
    }

    /// Backward pass from `grad_out` (hidden layers) or from `delta` already set by the loss (the
    /// output layer). Writes the input gradient and returns its fraction bits.
    pub(crate) fn backward<A: Arith>(
        &self,
        w: Weights<'_, A>,
        input: &[A::Val],
        b: &mut DenseBuffers<'_, A>,
        grad_frac: u32,
        grads: &mut [A::Acc],
        grad_input: &mut [A::Acc],
    ) -> u32 {
        let s = self.spec;
        if self.tanh {
            tanh_backward::<A>(b.grad_out, grad_frac, b.act, b.delta);
        }
        let (grad_w, grad_b) = s.params_mut(grads);
        self.dense.backward_params::<A>(input, b.delta, grad_w, grad_b);
        self.dense.backward_input::<A>(b.delta, s.weights(w.working), grad_input);
        s.input_grad_frac()
    }
}

/// Writes an MNIST image into the input buffer, centred in a `side` x `side` frame of zeros.
pub(crate) fn load_image<A: Arith>(image: &[u8], side: usize, input: &mut [A::Val]) {
    use crate::network::IMAGE_SIDE;
    assert_eq!(image.len(), IMAGE_SIDE * IMAGE_SIDE, "an MNIST image is 28x28 bytes");
    assert_eq!(input.len(), side * side);
    let pad = (side - IMAGE_SIDE) / 2;
    input.fill(A::Val::default());
    for (y, row) in image.chunks_exact(IMAGE_SIDE).enumerate() {
        let dst = &mut input[(y + pad) * side + pad..][..IMAGE_SIDE];
        for (d, &p) in dst.iter_mut().zip(row) {
            *d = A::pixel(p);
        }
    }
}

/// Both models' shape: two [`ConvBlock`]s, then `D` [`DenseBlock`]s, the last one giving the logits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvNet<const D: usize> {
    /// The image is centred in a `side` x `side` input.
    pub side: usize,
    pub conv: [ConvBlock; 2],
    pub dense: [DenseBlock; D],
}

struct ConvNetBuffers<'a, A: Arith, const D: usize> {
    input: &'a mut [A::Val],
    conv: [ConvBuffers<'a, A>; 2],
    dense: [DenseBuffers<'a, A>; D],
}

impl<const D: usize> ConvNet<D> {
    /// See [`Network::TRAIN_MACS`](crate::Network::TRAIN_MACS).
    pub(crate) const fn train_macs(&self) -> u64 {
        let mut forward = 0;
        let mut i = 0;
        while i < 2 {
            let c = &self.conv[i].conv;
            forward += (c.out_h() * c.out_w() * c.out_ch * c.in_ch * 25) as u64;
            i += 1;
        }
        let first = forward
            - (self.conv[1].conv.out_h()
                * self.conv[1].conv.out_w()
                * self.conv[1].conv.out_ch
                * self.conv[1].conv.in_ch
                * 25) as u64;
        i = 0;
        while i < D {
            forward += (self.dense[i].dense.inputs * self.dense[i].dense.outputs) as u64;
            i += 1;
        }
        3 * forward - first
    }

    pub(crate) const fn scratch(&self) -> ScratchSize {
        let mut size = ScratchSize { vals: self.side * self.side, accs: 0, indices: 0 }
            .plus(self.conv[0].scratch())
            .plus(self.conv[1].scratch());
        let mut i = 0;
        while i < D {
            size = size.plus(self.dense[i].scratch());
            i += 1;
        }
        size
    }

    fn carve<'a, A: Arith>(&self, scratch: crate::network::ScratchMut<'a, A>) -> ConvNetBuffers<'a, A, D> {
        let mut c = Carver::new(scratch);
        let input = c.vals(self.side * self.side);
        let conv = [self.conv[0].carve(&mut c), self.conv[1].carve(&mut c)];
        // The scratch is sized for the fast path too ([`crate::fast`]), so some may be left over.
        let dense = core::array::from_fn(|i| self.dense[i].carve(&mut c));
        ConvNetBuffers { input, conv, dense }
    }

    fn forward<A: Arith>(&self, w: Weights<'_, A>, image: &[u8], b: &mut ConvNetBuffers<'_, A, D>) {
        load_image::<A>(image, self.side, b.input);
        let [c0, c1] = &mut b.conv;
        self.conv[0].forward(w, b.input, c0);
        self.conv[1].forward(w, c0.pooled, c1);
        for i in 0..D {
            let (before, from_here) = b.dense.split_at_mut(i);
            let input: &[A::Val] = match before.last() {
                Some(previous) => previous.act,
                None => c1.pooled,
            };
            self.dense[i].forward(w, input, &mut from_here[0]);
        }
    }

    fn logits_frac(&self) -> u32 {
        self.dense[D - 1].spec.acc_frac()
    }

    pub(crate) fn evaluate<A: Arith>(
        &self,
        w: Weights<'_, A>,
        image: &[u8],
        label: u8,
        scratch: crate::network::ScratchMut<'_, A>,
    ) -> SampleOutcome {
        let mut b = self.carve(scratch);
        self.forward(w, image, &mut b);
        evaluate_logits::<A>(b.dense[D - 1].pre, self.logits_frac(), label as usize)
    }

    pub(crate) fn train_sample<A: Arith>(
        &self,
        w: Weights<'_, A>,
        image: &[u8],
        label: u8,
        scratch: crate::network::ScratchMut<'_, A>,
        grads: &mut [A::Acc],
    ) -> SampleOutcome {
        let mut b = self.carve(scratch);
        self.forward(w, image, &mut b);
        let out = &mut b.dense[D - 1];
        let outcome = softmax_cross_entropy::<A>(out.pre, self.logits_frac(), label as usize, out.delta);
        let [c0, c1] = &mut b.conv;
        // The output block's delta comes from the loss, so its incoming fraction bits are unused.
        let mut frac = 0;
        for i in (0..D).rev() {
            let (before, from_here) = b.dense.split_at_mut(i);
            let (input, grad_input): (&[A::Val], &mut [A::Acc]) = match before.last_mut() {
                Some(previous) => (previous.act, previous.grad_out),
                None => (c1.pooled, c1.grad_pooled),
            };
            frac = self.dense[i].backward(w, input, &mut from_here[0], frac, grads, grad_input);
        }
        frac = self.conv[1].backward(w, c1, frac, grads, Some(c0.grad_pooled));
        self.conv[0].backward(w, c0, frac, grads, None);
        outcome
    }
}

/// Implements [`Network`](crate::Network) for a model type from its layer table and its [`ConvNet`].
macro_rules! conv_net_model {
    ($model:ty, $name:literal, $layers:ident, $net:ident) => {
        impl $crate::network::Network for $model {
            const NAME: &'static str = $name;
            const LAYERS: &'static [$crate::network::LayerSpec] = &$layers;
            const PARAMS: usize = $crate::network::param_count(&$layers);
            const SCRATCH: $crate::network::ScratchSize = $net.scratch().max($net.fast_scratch());
            const TRAIN_MACS: u64 = $net.train_macs();

            fn evaluate<A: $crate::Arith>(
                w: $crate::network::Weights<'_, A>,
                image: &[u8],
                label: u8,
                scratch: $crate::network::ScratchMut<'_, A>,
            ) -> $crate::layers::SampleOutcome {
                $net.evaluate(w, image, label, scratch)
            }

            const BATCH_ROWS: usize = $net.batch_rows();
            const BATCH_ROW: usize = $net.batch_row();

            fn accumulate<'s, A: $crate::Arith>(
                w: $crate::network::Weights<'_, A>,
                samples: impl IntoIterator<Item = (&'s [u8], u8)>,
                scratch: $crate::network::ScratchMut<'_, A>,
                grads: &mut [A::Acc],
                first_block: bool,
                rows: &mut [A::Val],
            ) -> $crate::train::BatchStats {
                assert_eq!(grads.len(), Self::PARAMS);
                A::accumulate_conv_net(&$net, w, samples, scratch, (grads, first_block), rows)
            }

            fn dense_params() -> core::ops::Range<usize> {
                $net.dense_params()
            }

            fn dense_part(parts: usize, k: usize) -> core::ops::Range<usize> {
                $crate::fast::dense_part(&$net, parts, k)
            }

            fn dense_gradients<A: $crate::Arith>(
                rows: &[A::Val],
                samples: usize,
                part: core::ops::Range<usize>,
                out: &mut [A::Acc],
                first_block: bool,
            ) {
                A::dense_gradients_conv_net(&$net, rows, samples, part, out, first_block)
            }

            fn evaluate_all<'s, A: $crate::Arith>(
                w: $crate::network::Weights<'_, A>,
                samples: impl IntoIterator<Item = (&'s [u8], u8)>,
                scratch: $crate::network::ScratchMut<'_, A>,
            ) -> $crate::train::BatchStats {
                A::evaluate_conv_net(&$net, w, samples, scratch)
            }

            fn train_sample<A: $crate::Arith>(
                w: $crate::network::Weights<'_, A>,
                image: &[u8],
                label: u8,
                scratch: $crate::network::ScratchMut<'_, A>,
                grads: &mut [A::Acc],
            ) -> $crate::layers::SampleOutcome {
                assert_eq!(grads.len(), Self::PARAMS);
                $net.train_sample(w, image, label, scratch, grads)
            }
        }
    };
}
pub(crate) use conv_net_model;
