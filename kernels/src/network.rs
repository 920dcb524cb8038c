//! What a network is: its parameter layout, its scratch space, and the [`Network`] trait the models
//! implement.
//!
//! All parameters of a model live in one flat vector, layer by layer, each layer's weights followed by
//! its biases (see [`LayerSpec`]). The same layout serves the master weights, the momentum, the working
//! weights, the gradient accumulators, the checkpoint and the wire format.

#![forbid(unsafe_code)]

use core::ops::Range;

use crate::layers::SampleOutcome;
use crate::Arith;

/// One parametrised layer: where its weights and biases sit in the flat parameter vector and which
/// fixed-point formats they use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// Name, used for checkpoint tensors (`<name>.weight`, `<name>.bias`).
    pub name: &'static str,
    /// Weight tensor shape: `[out, in, 5, 5]` for convolutions, `[out, in]` for dense layers.
    pub weight_shape: &'static [usize],
    /// Weights and biases are Xavier-initialised with this fan-in.
    pub fan_in: usize,
    /// Fraction bits of the working (`i16`) weights.
    pub weight_frac: u32,
    /// Fraction bits of this layer's input values.
    pub input_frac: u32,
    /// Offset of the weights in the flat parameter vector (filled in by [`layout`]).
    pub offset: usize,
}

impl LayerSpec {
    /// A layer whose offset [`layout`] fills in.
    pub const fn new(
        name: &'static str,
        weight_shape: &'static [usize],
        weight_frac: u32,
        input_frac: u32,
    ) -> Self {
        let mut fan_in = 1;
        let mut i = 1;
        while i < weight_shape.len() {
            fan_in *= weight_shape[i];
            i += 1;
        }
        LayerSpec { name, weight_shape, fan_in, weight_frac, input_frac, offset: 0 }
    }

    /// Number of outputs (and biases).
    pub const fn outputs(&self) -> usize {
        self.weight_shape[0]
    }
    /// Number of weights.
    pub const fn weight_len(&self) -> usize {
        self.outputs() * self.fan_in
    }
    /// Weights plus biases.
    pub const fn param_len(&self) -> usize {
        self.weight_len() + self.outputs()
    }
    /// Where the weights sit in the flat vector.
    pub const fn weight_range(&self) -> Range<usize> {
        self.offset..self.offset + self.weight_len()
    }
    /// Where the biases sit in the flat vector.
    pub const fn bias_range(&self) -> Range<usize> {
        self.offset + self.weight_len()..self.offset + self.param_len()
    }
    /// Fraction bits of this layer's pre-activation accumulators.
    pub const fn acc_frac(&self) -> u32 {
        self.input_frac + self.weight_frac
    }
    /// Fraction bits of the weight gradients (delta times input).
    pub const fn weight_grad_frac(&self) -> u32 {
        crate::fixed::DELTA_FRAC + self.input_frac
    }
    /// Fraction bits of the bias gradients (sums of deltas).
    pub const fn bias_grad_frac(&self) -> u32 {
        crate::fixed::DELTA_FRAC
    }
    /// Fraction bits of the input gradient this layer passes back (delta times weight).
    pub const fn input_grad_frac(&self) -> u32 {
        crate::fixed::DELTA_FRAC + self.weight_frac
    }

    /// The weights of this layer in a flat vector.
    pub fn weights<'a, T>(&self, all: &'a [T]) -> &'a [T] {
        &all[self.weight_range()]
    }
    /// The biases of this layer in a flat vector.
    pub fn biases<'a, T>(&self, all: &'a [T]) -> &'a [T] {
        &all[self.bias_range()]
    }
    /// Weights and biases of this layer, mutably.
    pub fn params_mut<'a, T>(&self, all: &'a mut [T]) -> (&'a mut [T], &'a mut [T]) {
        all[self.offset..self.offset + self.param_len()].split_at_mut(self.weight_len())
    }
}

/// Fills in consecutive offsets.
pub const fn layout<const N: usize>(mut layers: [LayerSpec; N]) -> [LayerSpec; N] {
    let mut offset = 0;
    let mut i = 0;
    while i < N {
        layers[i].offset = offset;
        offset += layers[i].param_len();
        i += 1;
    }
    layers
}

/// Total parameter count of a layout.
pub const fn param_count(layers: &[LayerSpec]) -> usize {
    match layers.last() {
        Some(last) => last.offset + last.param_len(),
        None => 0,
    }
}

/// The parameters a forward or backward pass reads.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a, A: Arith> {
    /// Master parameters (biases are read from here).
    pub master: &'a [A::Param],
    /// Working copies of the weights.
    pub working: &'a [A::Val],
}

/// One core's scratch space, as three flat slices; each model carves its buffers out of them.
#[derive(Debug)]
pub struct ScratchMut<'a, A: Arith> {
    /// Stored values: inputs, patches, activations, deltas.
    pub vals: &'a mut [A::Val],
    /// Accumulators: pre-activations and back-propagated sums.
    pub accs: &'a mut [A::Acc],
    /// Max-pool winners.
    pub indices: &'a mut [u32],
}

/// Sizes of one core's scratch space, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScratchSize {
    /// `A::Val` elements.
    pub vals: usize,
    /// `A::Acc` elements.
    pub accs: usize,
    /// `u32` elements.
    pub indices: usize,
}

impl ScratchSize {
    /// Element-wise sum.
    pub const fn plus(self, other: ScratchSize) -> ScratchSize {
        ScratchSize {
            vals: self.vals + other.vals,
            accs: self.accs + other.accs,
            indices: self.indices + other.indices,
        }
    }
    /// Element-wise maximum: room for either of two uses.
    pub const fn max(self, other: ScratchSize) -> ScratchSize {
        const fn larger(a: usize, b: usize) -> usize {
            if a > b {
                a
            } else {
                b
            }
        }
        ScratchSize {
            vals: larger(self.vals, other.vals),
            accs: larger(self.accs, other.accs),
            indices: larger(self.indices, other.indices),
        }
    }
    /// Bytes these take in arithmetic `A`.
    pub const fn bytes<A: Arith>(self) -> usize {
        self.vals * core::mem::size_of::<A::Val>()
            + self.accs * core::mem::size_of::<A::Acc>()
            + self.indices * 4
    }
}

/// Hands out consecutive sub-slices of a scratch slice.
#[derive(Debug)]
pub struct Carve<'a, T>(&'a mut [T]);

impl<'a, T> Carve<'a, T> {
    /// Starts carving `all`.
    pub fn new(all: &'a mut [T]) -> Self {
        Carve(all)
    }
    /// The next `n` elements.
    pub fn take(&mut self, n: usize) -> &'a mut [T] {
        let rest = core::mem::take(&mut self.0);
        assert!(n <= rest.len(), "scratch space too small");
        let (head, tail) = rest.split_at_mut(n);
        self.0 = tail;
        head
    }
    /// Everything not handed out yet.
    pub fn rest(self) -> &'a mut [T] {
        self.0
    }
}

/// A network with a compile-time shape: MNIST images in, ten class scores out.
pub trait Network: Copy + Default + Send + Sync + core::fmt::Debug + 'static {
    /// The `--model` name.
    const NAME: &'static str;
    /// The parametrised layers, in order.
    const LAYERS: &'static [LayerSpec];
    /// Total parameter count.
    const PARAMS: usize;
    /// One core's scratch space.
    const SCRATCH: ScratchSize;
    /// Multiply-accumulates of one training sample: every layer's forward pass, its weight
    /// gradients, and its input gradients except the first layer's (nothing needs those).
    const TRAIN_MACS: u64;

    /// Forward pass on a 28x28 image: the loss against `label` and the prediction.
    fn evaluate<A: Arith>(
        weights: Weights<'_, A>,
        image: &[u8],
        label: u8,
        scratch: ScratchMut<'_, A>,
    ) -> SampleOutcome;

    /// Values of the batch rows the cores of a step share ([`crate::train::batch_gradient`]): each
    /// sample's dense inputs and deltas, for a block of [`crate::train::BLOCK`] samples.
    const BATCH_ROWS: usize;
    /// Values of one sample in the batch rows.
    const BATCH_ROW: usize;

    /// One core's part of [`crate::train::batch_gradient`]: forward and backward passes on
    /// `samples` (at most [`crate::train::BLOCK`]), adding their gradients into `grads` (length
    /// `PARAMS`; the sums start from zero when `first_block`, the step's first), except the dense
    /// layers' where the arithmetic defers them ([`Arith::DEFERS_DENSE`](crate::Arith)): those it
    /// leaves in `rows` (this core's samples' part of the batch rows, in order) for
    /// [`Network::dense_gradients`], and their part of `grads` is left alone.
    fn accumulate<'s, A: Arith>(
        weights: Weights<'_, A>,
        samples: impl IntoIterator<Item = (&'s [u8], u8)>,
        scratch: ScratchMut<'_, A>,
        grads: &mut [A::Acc],
        first_block: bool,
        rows: &mut [A::Val],
    ) -> crate::train::BatchStats;

    /// The dense layers' parameters, a contiguous range of the flat vector.
    fn dense_params() -> Range<usize>;

    /// Part `k` of `parts` of [`Network::dense_params`]: contiguous, about equal in work.
    fn dense_part(parts: usize, k: usize) -> Range<usize>;

    /// The deferred dense gradients of the first `samples` samples of the batch `rows`, for the
    /// parameters `part` (from [`Network::dense_part`]), into `out`: set when `first_block`, else
    /// added.
    fn dense_gradients<A: Arith>(
        rows: &[A::Val],
        samples: usize,
        part: Range<usize>,
        out: &mut [A::Acc],
        first_block: bool,
    );

    /// Forward passes on samples; what [`crate::train::evaluate`] runs (the same results as
    /// [`Network::evaluate`] on each).
    fn evaluate_all<'s, A: Arith>(
        weights: Weights<'_, A>,
        samples: impl IntoIterator<Item = (&'s [u8], u8)>,
        scratch: ScratchMut<'_, A>,
    ) -> crate::train::BatchStats;

    /// Forward and backward pass on one sample; adds its gradient into `grads` (length `PARAMS`).
    fn train_sample<A: Arith>(
        weights: Weights<'_, A>,
        image: &[u8],
        label: u8,
        scratch: ScratchMut<'_, A>,
        grads: &mut [A::Acc],
    ) -> SampleOutcome;
}

/// Side length of an MNIST image.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in an MNIST image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// MNIST classes.
pub const CLASSES: usize = 10;
