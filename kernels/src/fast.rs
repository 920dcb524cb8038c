//! The fixed-point training path the product runs: the same networks as [`crate::blocks`], computed
//! as exact matrix products on the [`gather_axpy`] micro-kernel instead of per-sample dot products
//! and `i64` multiply-accumulates. Every integer it produces is the one the generic per-sample code
//! (the definition, still used for the f32 reference and in the tests) produces, so weight hashes do
//! not depend on which path ran.
//!
//! What changes is the order of work:
//! - **Once per call** (one core's share of a step), `prepare` transposes each dense layer's
//!   weights (forward passes read columns of `W` as rows of `W^T`) and cuts every convolution
//!   filter into the chunks of [`crate::simd::schedule`].
//! - **Per sample**: convolutions as `pre[co][p] = sum_k W[co][k] * patch^T[k][p]` (terms: the
//!   filter; rows: the transposed im2col matrix), dense layers as `pre = sum_i x[i] * W^T[i]` (terms:
//!   the non-zero inputs), input gradients as sums of weight rows scaled by the non-zero deltas, and
//!   convolution weight gradients as sums of patch rows scaled by the non-zero deltas (after
//!   max-pooling, three in four are zero).
//! - **Per block of up to [`BLOCK`] samples of a step, on all the cores together**: each sample's
//!   dense inputs and deltas go into the block's *batch rows*, which all cores share
//!   ([`accumulate_rows`], one core's samples); then the dense weight gradients are one product over
//!   the whole block, `gW[j] = sum_s delta[s][j] * x[s]`, each core taking a contiguous part of the
//!   dense parameters ([`dense_part`], [`dense_gradients`]). Their `i64` accumulators are written
//!   once per block (and read too only from a step's second block on), whatever the number of
//!   cores.

#![forbid(unsafe_code)]

use crate::blocks::{load_image, ConvBlock, ConvNet, DenseBlock};
use crate::fixed::INPUT_FRAC;
use crate::layers::loss::evaluate_logits;
use crate::layers::{softmax_cross_entropy, tanh_backward, tanh_forward, SampleOutcome};
use crate::network::{Carve, ScratchMut, ScratchSize, Weights};
use crate::profile::{self, span, Phase, Slot};
use crate::simd::dot::{self, dot_rows, dot_rows2};
use crate::simd::gather::{gather_axpy, gather_axpy2_strided, gather_axpy_strided, Write};
use crate::simd::level;
use crate::simd::schedule::{
    chunk_ends, chunk_ends_dot, chunk_ends_pair, chunk_ends_shared, max_abs, VALUE_LIMIT,
};
use crate::simd::{add_rows_i64, affine_u32, copy_i16, copy_rows_i16, pool, sum_i16, transpose_i16};
use crate::train::BatchStats;
use crate::{tanh, Arith, Fixed};

/// Samples whose dense weight gradients are summed in one pass: the batch rows hold this many.
pub const BLOCK: usize = 64;

/// Samples whose convolution weight gradients are summed in one pass, per convolution: their
/// patch rows, winners and deltas are kept until then, so each filter's `i64` sums are touched
/// once per block (written by a step's first block, read and written by the others), and each
/// filter's product has the block's terms over the same columns. Sixteen samples make one block of
/// a core's share on four cores (64 per step); the second convolution's 25,050 sums take blocks of
/// 32 on fewer cores, so that one core also touches them only twice per step (measured on MxLenet,
/// instructions per sample about the same from blocks of 1 and 8 up: the chunks are longer, the
/// term lists too; the kept patches are 0.5 and 2 MB per core). Divisors of [`BLOCK`].
pub const CONV_BLOCKS: [usize; 2] = [16, 32];

/// Samples between a convolution's weight-gradient passes: its [`CONV_BLOCKS`] block on aarch64,
/// where that keeps the firmware's accumulator traffic down; 8 on x86-64, where the kept patch rows
/// of a full block (2.5 MB for MxLenet) would push the dense weights out of a 2 MB L2 (measured on
/// the host's one-thread step: 4-5% faster than the full blocks). A divisor of the block, so the
/// buffers stay those of [`CONV_BLOCKS`]; the sums are exact either way.
const FLUSH_EVERY: [usize; 2] = if cfg!(target_arch = "x86_64") { [8, 8] } else { CONV_BLOCKS };
const _: () = assert!(
    FLUSH_EVERY[0].is_multiple_of(IN_FLIGHT) && FLUSH_EVERY[1].is_multiple_of(IN_FLIGHT),
    "whole groups per flush"
);

/// Values of room after the last row of a matrix the micro-kernel reads, so that a row's last
/// few columns can be one full 32-column tile reading on into the room (see
/// [`crate::simd::gather`]; what it reads there lands in columns that are thrown away).
const ROW_SLACK: usize = 32;

/// The largest input pixel (Q1.14 of 255): the row bound of the first convolution's patches.
const PIXEL_LIMIT: u32 = 1 << INPUT_FRAC;

/// Row bound of a layer's input: pixels for the first layer, activations after it.
const fn input_limit(input_frac: u32) -> u32 {
    if input_frac == INPUT_FRAC {
        PIXEL_LIMIT
    } else {
        VALUE_LIMIT
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

impl<const D: usize> ConvNet<D> {
    /// Scratch of the fast path (see [`ConvNet::scratch`] for the generic one).
    pub(crate) const fn fast_scratch(&self) -> ScratchSize {
        let mut vals = self.side * self.side;
        let mut accs = 0;
        let mut indices = 0;
        let mut terms = 0;
        let mut i = 0;
        while i < 2 {
            let c = &self.conv[i].conv;
            let pooled = self.conv[i].pool().output_len();
            // patches both ways (a block of the weight gradient's, each sample in flight its
            // transposed ones), pooled outputs, a block of the windows' deltas
            vals += (IN_FLIGHT + CONV_BLOCKS[i]) * c.patches_len() + ROW_SLACK;
            vals += IN_FLIGHT * pooled + CONV_BLOCKS[i] * pooled;
            // pre-activations, gradients at the pooled outputs
            accs += c.output_len() + IN_FLIGHT * pooled;
            if i > 0 {
                // the input gradient (the first block has none): embedded filters, one region
                vals += embedded_len(c);
                accs += region_len(c);
            }
            // a block of argmax, per-filter chunk ends and their counts, forward row offsets
            indices += CONV_BLOCKS[i] * pooled + c.weight_len() + c.out_ch + c.patch_len();
            let filter_terms = CONV_BLOCKS[i] * (pooled / c.out_ch); // a block's winners of a filter
            terms = max(terms, max(filter_terms, max(c.out_ch, c.patch_len())));
            i += 1;
        }
        i = 0;
        while i < D {
            let d = &self.dense[i].dense;
            // W^T, the activations of the samples in flight
            vals += d.weight_len() + ROW_SLACK + IN_FLIGHT * d.outputs;
            // where the rows of W^T and of W start
            indices += d.inputs + d.outputs;
            // pre-activations and output gradients
            accs += IN_FLIGHT * 2 * d.outputs;
            terms = max(terms, max(d.inputs, d.outputs));
            i += 1;
        }
        // one term list: offsets and chunk ends (indices), coefficients (vals); one sample's row
        // of dense inputs and deltas, for evaluation (training keeps them in the batch rows)
        ScratchSize { vals: vals + terms + self.batch_row(), accs, indices: indices + 2 * terms }
    }

    /// Values of one sample in the batch rows: every dense layer's input, then its deltas.
    pub(crate) const fn batch_row(&self) -> usize {
        let mut row = 0;
        let mut i = 0;
        while i < D {
            row += self.dense[i].dense.inputs + self.dense[i].dense.outputs;
            i += 1;
        }
        row
    }

    /// Values of the batch rows of a block ([`BLOCK`] samples), with the room the micro-kernel
    /// reads after the last row.
    pub(crate) const fn batch_rows(&self) -> usize {
        BLOCK * self.batch_row() + ROW_SLACK
    }

    /// The dense layers' parameters (weights and biases), the part [`dense_gradients`] computes.
    pub(crate) const fn dense_params(&self) -> core::ops::Range<usize> {
        let first = &self.dense[0].spec;
        let last = &self.dense[D - 1].spec;
        first.offset..last.offset + last.param_len()
    }
}

/// A term list being built: row offsets, coefficients and chunk ends.
struct Terms<'a> {
    offsets: &'a mut [u32],
    coeffs: &'a mut [i16],
    /// A second coefficient list over the same rows, for pairs of outputs ([`Terms::push_pair_kept`]);
    /// empty except in [`dense_gradients`].
    second: &'a mut [i16],
    ends: &'a mut [u32],
    len: usize,
    chunks: usize,
}

impl<'a> Terms<'a> {
    fn clear(&mut self) {
        self.len = 0;
        self.chunks = 0;
    }
    /// Adds `coeff * rows[offset..]` unless the coefficient is zero.
    #[inline]
    fn push(&mut self, offset: usize, coeff: i16) {
        if coeff != 0 {
            self.offsets[self.len] = offset as u32;
            self.coeffs[self.len] = coeff;
            self.len += 1;
        }
    }
    /// Cuts both lists of [`Terms::push_pair_kept`] for rows bounded by `row_bound`.
    fn schedule_pair(&mut self, row_bound: u32) {
        let lists = [&self.coeffs[..self.len], &self.second[..self.len]];
        self.chunks = chunk_ends_pair(lists, row_bound, self.ends);
    }
    /// Adds a term to both lists, zero or not (for lists whose rows are a fixed stride apart).
    #[inline]
    fn push_pair_kept(&mut self, offset: usize, coeffs: [i16; 2]) {
        self.offsets[self.len] = offset as u32;
        self.coeffs[self.len] = coeffs[0];
        self.second[self.len] = coeffs[1];
        self.len += 1;
    }
    /// `outs[f] (=|+=) sum of the terms of list f` over `rows`, for the lists of
    /// [`Terms::push_pair_kept`] whose offsets are `t * stride`.
    fn apply_pair_strided(&self, outs: [&mut [i64]; 2], write: Write, rows: &[i16], stride: usize) {
        let lists = [&self.coeffs[..self.len], &self.second[..self.len]];
        let rows_at = (&self.offsets[..self.len], stride);
        gather_axpy2_strided(outs, write, rows, rows_at, lists, &self.ends[..self.chunks]);
    }
    /// Cuts the list for rows bounded by `row_bound`.
    fn schedule(&mut self, row_bound: u32) {
        self.chunks = chunk_ends(&self.coeffs[..self.len], row_bound, self.ends);
    }
    /// `out (=|+=) sum of the terms` over `rows`.
    fn apply(&self, out: &mut [i64], write: Write, rows: &[i16]) {
        gather_axpy(
            out,
            write,
            rows,
            &self.offsets[..self.len],
            &self.coeffs[..self.len],
            &self.ends[..self.chunks],
        );
    }
}

/// A convolution block's buffers on the fast path.
struct ConvSpace<'a> {
    /// A block ([`CONV_BLOCKS`]) of samples' im2col matrices, the weight gradient's rows.
    patches: &'a mut [i16],
    pre: &'a mut [i64],
    /// A block ([`CONV_BLOCKS`]) of samples' winners, one per pooling window (an index into `pre`).
    argmax: &'a mut [u32],
    /// A block ([`CONV_BLOCKS`]) of samples' deltas, one per pooling window, at its winner (every other
    /// position's is zero).
    window_delta: &'a mut [i16],
    /// The filters embedded in a pooling window's input region (see [`embed_filters`]); empty
    /// for a block without an input gradient.
    embedded: &'a mut [i16],
    /// One window's input-gradient region.
    region: &'a mut [i64],
    /// Chunk ends of the forward pass, `patch_len` slots per filter, and their counts: filters go
    /// in pairs ([`gather_axpy2`]), whose ends are in the slots of the pair's first filter; an odd
    /// last filter has its own.
    filter_ends: &'a mut [u32],
    filter_chunks: &'a mut [u32],
    /// `k * positions`: the rows of the transposed patch matrix.
    row_offsets: &'a mut [u32],
    /// Largest working weight (row bound of the filters in the input gradient).
    weight_limit: u32,
}

/// A dense block's buffers on the fast path.
struct DenseSpace<'a> {
    weights_t: &'a mut [i16],
    /// Where this layer's input and its deltas sit in a sample's batch row.
    input_at: usize,
    delta_at: usize,
    /// `i * outputs` for every input `i`: where the rows of `W^T` start (the forward pass's terms).
    input_rows: &'a mut [u32],
    /// `j * inputs` for every output `j`: where the rows of `W` start (the input gradient's terms).
    output_rows: &'a mut [u32],
    /// Largest working weight (row bound of `W` and `W^T`).
    weight_limit: u32,
}

/// Samples whose passes run together, so that each dense layer's weights are read once for all
/// of them ([`dense_forward`], [`dense_backward`]): the dense layers are one product per pass
/// whatever the batch, and their weights (MxLenet's fc1: 800 kB) are the largest thing a sample
/// reads. Each sample in flight keeps its own [`InFlight`].
pub(crate) const IN_FLIGHT: usize = 2;

/// What one sample keeps of a convolution block from its forward pass to its backward pass.
struct ConvSample<'a> {
    /// The transposed im2col matrix, one row per filter tap (the forward product's rows).
    patches_t: &'a mut [i16],
    /// The pooled tanh outputs: the next layer's input, and tanh's derivative going back.
    pooled: &'a mut [i16],
    /// The gradient at the pooled outputs.
    grad_pooled: &'a mut [i64],
}

/// What one sample keeps of a dense block from its forward pass to its backward pass.
struct DenseSample<'a> {
    pre: &'a mut [i64],
    act: &'a mut [i16],
    grad_out: &'a mut [i64],
}

/// One sample in flight.
struct InFlight<'a, const D: usize> {
    conv: [ConvSample<'a>; 2],
    dense: [DenseSample<'a>; D],
}

struct Space<'a, const D: usize> {
    input: &'a mut [i16],
    /// One sample's batch row, for evaluation.
    row: &'a mut [i16],
    conv: [ConvSpace<'a>; 2],
    dense: [DenseSpace<'a>; D],
    samples: [InFlight<'a, D>; IN_FLIGHT],
    terms: Terms<'a>,
}

fn carve<'a, const D: usize>(net: &ConvNet<D>, scratch: ScratchMut<'a, Fixed>) -> Space<'a, D> {
    let mut vals = Carve::new(scratch.vals);
    let mut accs = Carve::new(scratch.accs);
    let mut indices = Carve::new(scratch.indices);
    let input = vals.take(net.side * net.side);
    let mut conv_space = |b: &ConvBlock, input_gradient: bool, samples: usize| {
        let c = &b.conv;
        let (embedded, region) = if input_gradient { (embedded_len(c), region_len(c)) } else { (0, 0) };
        let pooled = b.pool().output_len();
        ConvSpace {
            patches: vals.take(samples * c.patches_len() + ROW_SLACK),
            pre: accs.take(c.output_len()),
            argmax: indices.take(samples * pooled),
            window_delta: vals.take(samples * pooled),
            embedded: vals.take(embedded),
            region: accs.take(region),
            filter_ends: indices.take(c.weight_len()),
            filter_chunks: indices.take(c.out_ch),
            row_offsets: indices.take(c.patch_len()),
            weight_limit: 0,
        }
    };
    let conv =
        [conv_space(&net.conv[0], false, CONV_BLOCKS[0]), conv_space(&net.conv[1], true, CONV_BLOCKS[1])];
    let dense = core::array::from_fn(|i| {
        let d = &net.dense[i].dense;
        let input_at = net.dense[..i].iter().map(|b| b.dense.inputs + b.dense.outputs).sum();
        DenseSpace {
            weights_t: vals.take(d.weight_len() + ROW_SLACK),
            input_at,
            delta_at: input_at + d.inputs,
            input_rows: indices.take(d.inputs),
            output_rows: indices.take(d.outputs),
            weight_limit: 0,
        }
    });
    let samples = core::array::from_fn(|_| InFlight {
        conv: core::array::from_fn(|i| {
            let c = &net.conv[i];
            ConvSample {
                patches_t: vals.take(c.conv.patches_len()),
                pooled: vals.take(c.pool().output_len()),
                grad_pooled: accs.take(c.pool().output_len()),
            }
        }),
        dense: core::array::from_fn(|i| {
            let outputs = net.dense[i].dense.outputs;
            DenseSample { pre: accs.take(outputs), act: vals.take(outputs), grad_out: accs.take(outputs) }
        }),
    });
    // The rest is the term list (the scratch may be larger than the fast path needs: it is sized
    // for the generic path too).
    let rest_indices = indices.rest();
    let (offsets, ends) = rest_indices.split_at_mut(rest_indices.len() / 2);
    let row = vals.take(net.batch_row());
    let terms = Terms { offsets, coeffs: vals.rest(), second: &mut [], ends, len: 0, chunks: 0 };
    Space { input, row, conv, dense, samples, terms }
}

/// Once per call: transposed dense weights, their bounds, and the forward chunks of every filter.
fn prepare<const D: usize>(net: &ConvNet<D>, w: Weights<'_, Fixed>, space: &mut Space<'_, D>) {
    for (block, c) in net.conv.iter().zip(space.conv.iter_mut()) {
        let k_len = block.conv.patch_len();
        let positions = block.conv.positions();
        for (k, o) in c.row_offsets.iter_mut().enumerate() {
            *o = (k * positions) as u32;
        }
        let limit = input_limit(block.spec.input_frac);
        c.weight_limit = max_abs(block.spec.weights(w.working));
        let mut filters = block.spec.weights(w.working).chunks_exact(2 * k_len);
        let ends = c.filter_ends.chunks_exact_mut(2 * k_len).zip(c.filter_chunks.chunks_exact_mut(2));
        for (pair, (ends, chunks)) in (&mut filters).zip(ends) {
            let (first, second) = pair.split_at(k_len);
            chunks[0] = chunk_ends_pair([first, second], limit, ends) as u32;
        }
        let last = filters.remainder();
        if !last.is_empty() {
            let co = block.conv.out_ch - 1;
            c.filter_chunks[co] = chunk_ends(last, limit, &mut c.filter_ends[co * k_len..]) as u32;
        }
        if !c.embedded.is_empty() {
            embed_filters(block.spec.weights(w.working), c.embedded);
        }
    }
    for (block, d) in net.dense.iter().zip(space.dense.iter_mut()) {
        let inputs = block.dense.inputs;
        let weights = block.spec.weights(w.working);
        if !dot::has_vector_path(level::current()) {
            // `dense_pre`'s gather form reads `W^T`; its dot form reads `W` itself.
            transpose_i16(weights, inputs, &mut d.weights_t[..weights.len()]);
        }
        d.weight_limit = max_abs(weights);
        let outputs = block.dense.outputs;
        d.input_rows.iter_mut().enumerate().for_each(|(i, o)| *o = (i * outputs) as u32);
        d.output_rows.iter_mut().enumerate().for_each(|(j, o)| *o = (j * inputs) as u32);
    }
}

/// `patches_t[k][p]`: the transposed im2col matrix, one row per filter tap.
fn im2col_t(block: &ConvBlock, input: &[i16], patches_t: &mut [i16]) {
    let c = &block.conv;
    let out_w = c.out_w();
    let mut rows = patches_t.chunks_exact_mut(c.positions());
    for ci in 0..c.in_ch {
        for ky in 0..crate::layers::conv::KERNEL {
            for kx in 0..crate::layers::conv::KERNEL {
                let row = rows.next().expect("one row per tap");
                copy_rows_i16(row, &input[(ci * c.in_h + ky) * c.in_w + kx..], c.in_w, out_w);
            }
        }
    }
}

/// Forward pass of one convolution block for the sample `sample`, its winners into block slot
/// `slot` of `argmax`.
fn conv_forward(
    block: &ConvBlock,
    w: Weights<'_, Fixed>,
    input: &[i16],
    c: &mut ConvSpace<'_>,
    sample: &mut ConvSample<'_>,
    slot: usize,
) {
    let s = block.spec;
    let conv = &block.conv;
    let (k_len, positions) = (conv.patch_len(), conv.positions());
    im2col_t(block, input, sample.patches_t);
    let weights = s.weights(w.working);
    let ends = |co: usize| &c.filter_ends[co * k_len..][..c.filter_chunks[co] as usize];
    let mut outputs = c.pre.chunks_exact_mut(2 * positions);
    for (co, pre) in (0..).step_by(2).zip(&mut outputs) {
        let (first, second) = pre.split_at_mut(positions);
        let filters = weights[co * k_len..][..2 * k_len].split_at(k_len);
        let filters = [filters.0, filters.1];
        let rows = (&*c.row_offsets, positions);
        gather_axpy2_strided([first, second], Write::Set, sample.patches_t, rows, filters, ends(co));
    }
    if let Some(co) = (conv.out_ch % 2 == 1).then(|| conv.out_ch - 1) {
        let filter = &weights[co * k_len..][..k_len];
        let rows = (&*c.row_offsets, positions);
        let outputs = outputs.into_remainder();
        gather_axpy_strided(outputs, Write::Set, sample.patches_t, rows, filter, ends(co));
    }
    let biases = s.biases(w.master);
    let pooled = sample.pooled.len();
    let argmax = &mut c.argmax[slot * pooled..][..pooled];
    pool_then_tanh(&block.conv, c.pre, biases, s.acc_frac(), sample.pooled, argmax);
}

/// Max-pooling then tanh, as the definition's tanh then max-pooling: each 2 x 2 window's output
/// and the position it came from (`argmax`, an index into `pre`).
///
/// `pre` is without the channel's bias, which is added on the way into tanh's Q3.12 input. tanh
/// (the rounding into Q3.12, then the table) is monotonic, so a window's largest output is the
/// tanh of its largest Q3.12 input `qm`. The definition takes the first position (in window order)
/// whose *output* is largest. Where tanh is strictly increasing ([`tanh::STRICT_LIMIT`]: for `qm`
/// in `-STRICT_LIMIT + 1..=STRICT_LIMIT` every smaller input gives a smaller output), those are
/// exactly the positions whose input equals `qm`. Outside it (about 2% of the windows) the outputs
/// are compared ([`first_tie_in_flat_tail`]). The rounding of a pair of rows and each window's
/// largest input with its first position are vector kernels ([`crate::simd::pool`]). Only
/// winners' outputs are read again (the backward pass gives every other position a zero delta),
/// so no other output is stored.
fn pool_then_tanh(
    c: &crate::layers::Conv5x5,
    pre: &[i64],
    biases: &[i32],
    acc_frac: u32,
    pooled: &mut [i16],
    argmax: &mut [u32],
) {
    let (in_h, in_w) = (c.out_h(), c.out_w());
    let (out_h, out_w) = (in_h / 2, in_w / 2);
    // Where tanh is strictly increasing: its inputs' order is its outputs' order.
    let strict = (-tanh::STRICT_LIMIT + 1, tanh::STRICT_LIMIT);
    assert!(out_w <= MAX_POOLED_WIDTH, "a pooled row of at most {MAX_POOLED_WIDTH} windows");
    let mut row_inputs = [0i16; 4 * MAX_POOLED_WIDTH];
    let inputs = &mut row_inputs[..2 * in_w];
    let channels = pre.chunks_exact(in_h * in_w).zip(biases);
    let outputs = pooled.chunks_exact_mut(out_h * out_w).zip(argmax.chunks_exact_mut(out_h * out_w));
    // Each window's largest input goes into `pooled`, which becomes tanh of it at the end.
    for (ch, ((channel, &bias), (pooled, argmax))) in channels.zip(outputs).enumerate() {
        let bias = Fixed::bias(bias, acc_frac);
        let row_pairs = channel.chunks_exact(2 * in_w);
        let outputs = pooled.chunks_exact_mut(out_w).zip(argmax.chunks_exact_mut(out_w));
        for (y, (pair, (pooled, argmax))) in row_pairs.zip(outputs).enumerate() {
            match acc_frac.checked_sub(crate::fixed::TANH_IN_FRAC) {
                Some(right) if right > 0 => pool::tanh_inputs(pair, bias, right, inputs),
                _ => {
                    inputs.iter_mut().zip(pair).for_each(|(q, &p)| *q = tanh::tanh_input(p + bias, acc_frac))
                }
            }
            let (top, bottom) = inputs.split_at(in_w);
            let corner = ((ch * in_h + 2 * y) * in_w) as u32;
            let outside = pool::window_max(top, bottom, corner, in_w as u32, strict, pooled, argmax);
            if outside {
                let windows = pooled.iter().zip(argmax.iter_mut()).enumerate();
                for (x, (&qm, at)) in windows.filter(|(_, (qm, _))| !(strict.0..=strict.1).contains(qm)) {
                    let f = first_tie_in_flat_tail(top, bottom, x, qm) as u32;
                    *at = corner + 2 * x as u32 + f % 2 + f / 2 * in_w as u32;
                }
            }
        }
    }
    pool::tanh_in_place(pooled);
}

/// Where tanh is not strictly increasing ([`tanh::STRICT_LIMIT`]), the first position of window
/// `x` of two rows of Q3.12 inputs whose output equals that of the largest input, `largest`.
#[cold]
fn first_tie_in_flat_tail(top: &[i16], bottom: &[i16], x: usize, largest: i16) -> usize {
    let best = tanh::tanh_q(largest);
    let window = [top[2 * x], top[2 * x + 1], bottom[2 * x], bottom[2 * x + 1]];
    window.iter().position(|&q| tanh::tanh_q(q) == best).expect("the largest ties with itself")
}

/// The widest pooled row [`pool_then_tanh`] takes (its row buffers are on the stack; the models'
/// widest is 14).
const MAX_POOLED_WIDTH: usize = 64;

/// `pre = W x + b` for each sample in flight (`xs` and `pres`, one or two), chunk ends into
/// `ends`: where [`dot`] has a vector path, the rows of `W` dotted with the inputs; elsewhere the
/// rows of `W^T` (`outputs` values apart) scaled by the inputs, every input a term (a zero input
/// adds nothing; tanh outputs are rarely exactly zero, and a fixed stride lets each row load move
/// on without an offset). Two samples share one pass over the weights, their chunks cut for both.
fn dense_pre(
    block: &DenseBlock,
    w: Weights<'_, Fixed>,
    d: &DenseSpace<'_>,
    xs: &[&[i16]],
    pres: &mut [&mut [i64]],
    ends: &mut [u32],
) {
    let (inputs, outputs) = (block.dense.inputs, block.dense.outputs);
    // The dot form reads `W` front to back, the rows the input gradient reads too, so that only
    // one copy of the weights is in the cache ([`dot`]).
    let dot = dot::has_vector_path(level::current());
    let (weights, weights_t) = (block.spec.weights(w.working), &*d.weights_t);
    let rows_t = (&*d.input_rows, outputs);
    let chunks = match dot {
        true => chunk_ends_dot(xs, d.weight_limit, ends),
        false => chunk_ends_shared(xs, d.weight_limit, ends),
    };
    let ends = &ends[..chunks];
    match (xs, &mut *pres) {
        ([x], [pre]) => match dot {
            true => dot_rows(pre, (weights, inputs), x, ends),
            false => gather_axpy_strided(pre, Write::Set, weights_t, rows_t, x, ends),
        },
        ([x0, x1], [pre0, pre1]) => {
            let outs = [&mut **pre0, &mut **pre1];
            match dot {
                true => dot_rows2(outs, (weights, inputs), [x0, x1], ends),
                false => gather_axpy2_strided(outs, Write::Set, weights_t, rows_t, [x0, x1], ends),
            }
        }
        _ => panic!("one or two samples in flight"),
    }
    let s = block.spec;
    for pre in pres.iter_mut() {
        for (p, &b) in pre.iter_mut().zip(s.biases(w.master)) {
            *p += Fixed::bias(b, s.acc_frac());
        }
    }
}

/// The convolutions' forward passes of the image in `space.input` as sample `k` in flight, in
/// block slot `slot`: the last one's pooled outputs, the first dense layer's input, go into the
/// sample's batch row `row`.
fn conv_forwards<const D: usize>(
    net: &ConvNet<D>,
    w: Weights<'_, Fixed>,
    space: &mut Space<'_, D>,
    k: usize,
    slot: usize,
    row: &mut [i16],
) {
    let [c0, c1] = &mut space.conv;
    let [s0, s1] = &mut space.samples[k].conv;
    let t = span(Slot::Layer(0, Phase::Forward));
    conv_forward(&net.conv[0], w, space.input, c0, s0, slot % FLUSH_EVERY[0]);
    let _t = t.then(Slot::Layer(1, Phase::Forward));
    conv_forward(&net.conv[1], w, s0.pooled, c1, s1, slot % FLUSH_EVERY[1]);
    copy_i16(&mut row[space.dense[0].input_at..][..s1.pooled.len()], s1.pooled);
}

/// Values `at..at + len` of each of the first `count` batch rows (`row_len` values each); empty
/// for the rest of the samples in flight.
fn row_parts(
    rows: &[i16],
    (row_len, count): (usize, usize),
    (at, len): (usize, usize),
) -> [&[i16]; IN_FLIGHT] {
    let mut parts: [&[i16]; IN_FLIGHT] = [&[]; IN_FLIGHT];
    for (part, row) in parts.iter_mut().zip(rows.chunks_exact(row_len)).take(count) {
        *part = &row[at..][..len];
    }
    parts
}

/// The dense layers' forward passes of the first `count` samples in flight, whose first inputs
/// are in their batch rows (`rows`, one per sample, `row_len` values each): every later layer's
/// input is stored in the rows too; the logits are left in the last layer's `pre`.
fn dense_forward<const D: usize>(
    net: &ConvNet<D>,
    w: Weights<'_, Fixed>,
    space: &mut Space<'_, D>,
    rows: &mut [i16],
    (row_len, count): (usize, usize),
) {
    for (i, (block, d)) in net.dense.iter().zip(&space.dense).enumerate() {
        let _t = span(Slot::Layer(2 + i, Phase::Forward));
        let inputs = block.dense.inputs;
        if i > 0 {
            for (row, sample) in rows.chunks_exact_mut(row_len).zip(&space.samples).take(count) {
                copy_i16(&mut row[d.input_at..][..inputs], sample.dense[i - 1].act);
            }
        }
        let xs = row_parts(rows, (row_len, count), (d.input_at, inputs));
        let mut pres = space.samples.each_mut().map(|sample| &mut *sample.dense[i].pre);
        dense_pre(block, w, d, &xs[..count], &mut pres[..count], space.terms.ends);
        if block.tanh {
            for sample in space.samples.iter_mut().take(count) {
                let DenseSample { pre, act, .. } = &mut sample.dense[i];
                tanh_forward::<Fixed>(pre, block.spec.acc_frac(), act);
            }
        }
    }
}

/// Convolution backward from `sample.grad_pooled` (in `grad_frac` fraction bits) for the sample
/// in block slot `slot`: its window deltas and patch rows kept for the weight gradient
/// ([`conv_flush`]), and the input gradient into `grad_input` when there is one.
#[allow(clippy::too_many_arguments)] // the layer, its buffers and the sample's, where and how to write
fn conv_backward(
    layer: usize,
    block: &ConvBlock,
    c: &mut ConvSpace<'_>,
    sample: &ConvSample<'_>,
    slot: usize,
    grad_frac: u32,
    grad_input: Option<&mut [i64]>,
    terms: &mut Terms<'_>,
) -> u32 {
    let conv = &block.conv;
    let pooled = sample.pooled.len();
    let t = span(Slot::Layer(layer, Phase::InputGradient));
    // The deltas, one per pooling window: `tanh'(y) * g` at the window's winner (the definition's
    // tanh backward of the routed gradient). Every other position's delta is zero, so none is
    // stored: the weight and input gradients read the winners' deltas beside their `argmax`.
    let window_delta = &mut c.window_delta[slot * pooled..][..pooled];
    pool::tanh_backward_all(sample.grad_pooled, grad_frac, sample.pooled, window_delta);
    let t = t.then(Slot::Layer(layer, Phase::WeightGradient));
    // The weight gradient's rows are the im2col matrix itself (`patches[p][k]`, one row per output
    // position): the transpose of the forward pass's `patches_t`, moved in 8 x 8 blocks, and only
    // when training (evaluation never needs it).
    let patches_len = conv.patches_len();
    transpose_i16(sample.patches_t, conv.positions(), &mut c.patches[slot * patches_len..][..patches_len]);
    let _t = t.then(Slot::Layer(layer, Phase::InputGradient));
    if let Some(grad_in) = grad_input {
        input_gradient(block, c, slot, grad_in, terms);
    }
    block.spec.input_grad_frac()
}

/// The weight and bias gradients of a convolution block over the first `samples` samples of the
/// block, written or added into `grads`: per filter one product whose terms are the samples' winners (each
/// a patch row, scaled by its window's delta), in sample and window order (the sum is exact in
/// any order).
fn conv_flush(
    layer: usize,
    block: &ConvBlock,
    c: &ConvSpace<'_>,
    samples: usize,
    (grads, write): (&mut [i64], Write),
    terms: &mut Terms<'_>,
) {
    let _t = span(Slot::Layer(layer, Phase::WeightGradient));
    let s = block.spec;
    let conv = &block.conv;
    let (k_len, positions, patches_len) = (conv.patch_len(), conv.positions(), conv.patches_len());
    let pooled = block.pool().output_len();
    let windows = pooled / conv.out_ch;
    let patch_limit = input_limit(s.input_frac);
    let (grad_w, grad_b) = s.params_mut(grads);
    for (co, (g_filter, g_b)) in grad_w.chunks_exact_mut(k_len).zip(grad_b).enumerate() {
        // Every window's winner is a term (a zero delta adds nothing; they are rare): its patch
        // row's offset `sample * patches_len + (winner - co * positions) * k_len`, its delta.
        terms.clear();
        let channel_start = co * positions;
        for sample in 0..samples {
            let at = sample * pooled + co * windows;
            let base = (sample * patches_len) as u32;
            let base = base.wrapping_sub((channel_start * k_len) as u32);
            let offsets = &mut terms.offsets[terms.len..][..windows];
            affine_u32(&c.argmax[at..][..windows], base, k_len as u32, offsets);
            copy_i16(&mut terms.coeffs[terms.len..][..windows], &c.window_delta[at..][..windows]);
            terms.len += windows;
        }
        if terms.len > 0 {
            let bias = sum_i16(&terms.coeffs[..terms.len]);
            match write {
                Write::Set => *g_b = bias,
                Write::Add => *g_b += bias,
            }
            terms.schedule(patch_limit);
            terms.apply(g_filter, write, c.patches); // the block's rows and the slack after them
            profile::count_traffic(layer, accumulator_bytes(write) * (k_len + 1));
        } else if write == Write::Set {
            g_filter.fill(0);
            *g_b = 0;
        }
    }
}

/// Side of the input region one pooling window's patches cover: two positions apart, one tap more.
const REGION_SIDE: usize = crate::layers::conv::KERNEL + 1;

/// Values of one window's input region, all channels.
const fn region_len(c: &crate::layers::Conv5x5) -> usize {
    c.in_ch * REGION_SIDE * REGION_SIDE
}

/// Zeros before the first embedded filter: the most a shift reaches back (one row and one column).
const LEAD: usize = REGION_SIDE + 1;

/// Values of the embedded filters.
const fn embedded_len(c: &crate::layers::Conv5x5) -> usize {
    LEAD + c.out_ch * region_len(c)
}

/// Once per call: each filter embedded at the top left of a window's input region (each input
/// channel's `KERNEL` square in a `REGION_SIDE` square, zero in the last row and column), after
/// `LEAD` zeros. What a delta at window offset `(dy, dx)` adds to the region is the filter moved
/// down `dy` rows and right `dx` columns: the same values read `REGION_SIDE * dy + dx` places
/// earlier, where the places moved in from are the zero last row and column of the plane (or of the
/// previous filter, or the leading zeros). So one embedding serves all four offsets.
fn embed_filters(weights: &[i16], embedded: &mut [i16]) {
    use crate::layers::conv::KERNEL;
    embedded.fill(0);
    let planes = embedded[LEAD..].chunks_exact_mut(REGION_SIDE * REGION_SIDE);
    for (plane, taps) in planes.zip(weights.chunks_exact(KERNEL * KERNEL)) {
        for (row, taps) in plane.chunks_exact_mut(REGION_SIDE).zip(taps.chunks_exact(KERNEL)) {
            copy_i16(&mut row[..KERNEL], taps);
        }
    }
}

/// The input gradient, one pooling window at a time. Max-pooling left each output channel one
/// delta per window (at its winner, [`conv_backward`]), so a window's deltas, times their
/// filters moved to their positions ([`embed_filters`]), give its whole input region in one product of
/// `REGION_SIDE^2 * in_ch` columns; the regions of neighbouring windows overlap and are added.
/// Exact integer sums in another order: the same values as patch by patch.
fn input_gradient(
    block: &ConvBlock,
    c: &mut ConvSpace<'_>,
    slot: usize,
    grad_in: &mut [i64],
    terms: &mut Terms<'_>,
) {
    let conv = &block.conv;
    let (out_w, positions, region) = (conv.out_w(), conv.positions(), region_len(conv));
    let pooled = block.pool().output_len();
    let windows = pooled / conv.out_ch;
    let (argmax, window_delta) =
        (&c.argmax[slot * pooled..][..pooled], &c.window_delta[slot * pooled..][..pooled]);
    let pooled_w = out_w / 2;
    grad_in.fill(0);
    for window in 0..windows {
        terms.clear();
        for co in 0..conv.out_ch {
            let at = argmax[co * windows + window] as usize;
            let p = at - co * positions;
            let back = (p / out_w % 2) * REGION_SIDE + p % 2;
            terms.push(LEAD + co * region - back, window_delta[co * windows + window]);
        }
        if terms.len == 0 {
            continue;
        }
        terms.schedule(c.weight_limit);
        terms.apply(c.region, Write::Set, c.embedded);
        let (wy, wx) = (window / pooled_w, window % pooled_w);
        let corner = 2 * wy * conv.in_w + 2 * wx;
        let strides = (conv.in_w, conv.in_h * conv.in_w);
        let shape = (REGION_SIDE, REGION_SIDE, conv.in_ch);
        add_rows_i64(&mut grad_in[corner..], strides, c.region, shape);
    }
}

/// The dense layers' backward passes of the first `count` samples in flight, whose output deltas
/// are already in their batch rows (`rows`, `row_len` values each): every layer's deltas into the
/// rows (their weight gradients wait for [`dense_gradients`]), the gradient at the last
/// convolution's pooled outputs into each sample's `grad_pooled`. Returns its fraction bits.
fn dense_backward<const D: usize>(
    net: &ConvNet<D>,
    w: Weights<'_, Fixed>,
    space: &mut Space<'_, D>,
    rows: &mut [i16],
    (row_len, count): (usize, usize),
) -> u32 {
    let mut frac = 0;
    for i in (0..D).rev() {
        let _t = span(Slot::Layer(2 + i, Phase::InputGradient));
        let block = &net.dense[i];
        let (inputs, outputs) = (block.dense.inputs, block.dense.outputs);
        let d = &space.dense[i];
        if block.tanh {
            for (row, sample) in rows.chunks_exact_mut(row_len).zip(&space.samples).take(count) {
                let DenseSample { act, grad_out, .. } = &sample.dense[i];
                tanh_backward::<Fixed>(grad_out, frac, act, &mut row[d.delta_at..][..outputs]);
            }
        }
        let deltas = row_parts(rows, (row_len, count), (d.delta_at, outputs));
        let mut grads = space.samples.each_mut().map(|sample| match i {
            0 => &mut *sample.conv[1].grad_pooled,
            _ => &mut *sample.dense[i - 1].grad_out,
        });
        // The rows of `W` (`inputs` values apart) scaled by the deltas, every delta a term (as
        // in `dense_pre`); two samples share one pass over them.
        let (weights, rows_w) = (block.spec.weights(w.working), (&*d.output_rows, inputs));
        let chunks = chunk_ends_shared(&deltas[..count], d.weight_limit, space.terms.ends);
        let ends = &space.terms.ends[..chunks];
        match (&deltas[..count], &mut grads[..count]) {
            ([delta], [grad]) => gather_axpy_strided(grad, Write::Set, weights, rows_w, delta, ends),
            ([d0, d1], [g0, g1]) => {
                gather_axpy2_strided([g0, g1], Write::Set, weights, rows_w, [d0, d1], ends)
            }
            _ => panic!("one or two samples in flight"),
        }
        frac = block.spec.input_grad_frac();
    }
    frac
}

/// The convolutions' backward passes of sample `k` in flight, in block slot `slot`, from the
/// gradient at its pooled outputs (in `frac` fraction bits): their deltas and patch rows kept for
/// the weight gradients ([`conv_flush`]).
fn conv_backwards<const D: usize>(
    net: &ConvNet<D>,
    space: &mut Space<'_, D>,
    k: usize,
    slot: usize,
    frac: u32,
) {
    let [c0, c1] = &mut space.conv;
    let [s0, s1] = &mut space.samples[k].conv;
    let terms = &mut space.terms;
    let grad_pooled = Some(&mut *s0.grad_pooled);
    let frac = conv_backward(1, &net.conv[1], c1, s1, slot % FLUSH_EVERY[1], frac, grad_pooled, terms);
    conv_backward(0, &net.conv[0], c0, s0, slot % FLUSH_EVERY[0], frac, None, terms);
}

/// Part `k` of `parts` of the dense layers' parameters ([`ConvNet::dense_params`]), in the flat
/// parameter vector: contiguous, so that each core of a step writes its own slice of the gradient
/// sum, and cut only before a pair of weight rows (at a layer's start or an even row), so that
/// [`dense_gradients`] computes whole pairs. The parts hold about equal numbers of weights; a
/// layer's biases belong to the part holding the first index after its weights.
pub(crate) fn dense_part<const D: usize>(
    net: &ConvNet<D>,
    parts: usize,
    k: usize,
) -> core::ops::Range<usize> {
    assert!(parts > 0 && k < parts, "part {k} of {parts}");
    let cut = |k: usize| -> usize {
        let all = net.dense_params();
        if k == 0 {
            return all.start;
        }
        if k == parts {
            return all.end;
        }
        let weights: usize = net.dense.iter().map(|b| b.dense.weight_len()).sum();
        // The first pair boundary with at least the target number of weights before it.
        let target = weights * k / parts;
        let mut before = 0;
        for block in &net.dense {
            let (inputs, outputs) = (block.dense.inputs, block.dense.outputs);
            let here = block.dense.weight_len();
            if before + here > target {
                let rows = (target - before).div_ceil(inputs).next_multiple_of(2).min(outputs);
                return block.spec.offset + rows * inputs;
            }
            before += here;
        }
        all.end
    };
    cut(k)..cut(k + 1)
}

/// The dense weight and bias gradients of the first `samples` samples of the batch rows `rows`
/// ([`accumulate_rows`] on every core), for the parameters `part` (from [`dense_part`]), written
/// into `out` (`part.len()` values) with `write`: `Set` for a step's first block, `Add` after.
/// Each pair of weight rows is one product over the block's samples (every sample a term, so that
/// the rows are a fixed stride apart), its `i64` sums touched once.
pub(crate) fn dense_gradients<const D: usize>(
    net: &ConvNet<D>,
    rows: &[i16],
    samples: usize,
    part: core::ops::Range<usize>,
    out: &mut [i64],
    write: Write,
) {
    assert!(samples > 0 && samples <= BLOCK, "a block of 1 to {BLOCK} samples");
    assert_eq!(out.len(), part.len(), "one value per parameter of the part");
    let row_len = net.batch_row();
    assert!(rows.len() >= net.batch_rows() - (BLOCK - samples) * row_len, "the block's rows");
    // Term lists of at most a block's samples: offsets, both coefficient lists, chunk ends.
    let (mut offsets, mut coeffs, mut second, mut ends) =
        ([0u32; BLOCK], [0i16; BLOCK], [0i16; BLOCK], [0u32; BLOCK]);
    let mut terms = Terms {
        offsets: &mut offsets,
        coeffs: &mut coeffs,
        second: &mut second,
        ends: &mut ends,
        len: 0,
        chunks: 0,
    };
    let bytes = accumulator_bytes(write);
    let mut input_at = 0;
    for (i, block) in net.dense.iter().enumerate() {
        let _t = span(Slot::Layer(2 + i, Phase::WeightGradient));
        let (inputs, outputs) = (block.dense.inputs, block.dense.outputs);
        let delta_at = input_at + inputs;
        let inputs_rows = &rows[input_at..];
        input_at += inputs + outputs;
        let deltas = |s: usize, j: usize| rows[s * row_len + delta_at + j];
        let weights = block.spec.weight_range();
        let biases = block.spec.bias_range();
        // This part's weight rows: from the row its start falls in (a pair boundary) to the one
        // its end does.
        let row_of = |at: usize| at.clamp(weights.start, weights.end).saturating_sub(weights.start) / inputs;
        let (first_row, end_row) = (row_of(part.start), row_of(part.end));
        let mut j = first_row;
        while j < end_row {
            let at = weights.start + j * inputs - part.start;
            if j + 1 < end_row {
                terms.clear();
                for s in 0..samples {
                    terms.push_pair_kept(s * row_len, [deltas(s, j), deltas(s, j + 1)]);
                }
                terms.schedule_pair(VALUE_LIMIT);
                let (first, second) = out[at..][..2 * inputs].split_at_mut(inputs);
                terms.apply_pair_strided([first, second], write, inputs_rows, row_len);
                profile::count_traffic(2 + i, 2 * bytes * inputs);
                j += 2;
            } else {
                // An odd layer's last row.
                terms.clear();
                for s in 0..samples {
                    terms.push(s * row_len, deltas(s, j));
                }
                let g_row = &mut out[at..][..inputs];
                if terms.len > 0 {
                    terms.schedule(VALUE_LIMIT);
                    terms.apply(g_row, write, inputs_rows);
                } else if write == Write::Set {
                    g_row.fill(0);
                }
                profile::count_traffic(2 + i, bytes * inputs);
                j += 1;
            }
        }
        // This part's biases: each the sum of its output's deltas.
        for b in biases.start.max(part.start)..biases.end.min(part.end) {
            let j = b - biases.start;
            let sum: i64 = (0..samples).map(|s| deltas(s, j) as i64).sum();
            match write {
                Write::Set => out[b - part.start] = sum,
                Write::Add => out[b - part.start] += sum,
            }
            profile::count_traffic(2 + i, bytes);
        }
    }
}

/// Bytes of `i64` accumulators one value costs: written, or read and written.
const fn accumulator_bytes(write: Write) -> usize {
    match write {
        Write::Set => 8,
        Write::Add => 16,
    }
}

/// [`crate::train::batch_gradient`]'s work on one core on the fast path: the forward and backward
/// passes of `samples` (at most [`BLOCK`]), their convolution gradients written (`first`: the
/// step's first block) or added into `grads`, and each sample's dense inputs and deltas left in
/// its row of `rows` (one [`ConvNet::batch_row`] per sample, in order) for [`dense_gradients`].
pub(crate) fn accumulate_rows<'s, const D: usize>(
    net: &ConvNet<D>,
    w: Weights<'_, Fixed>,
    samples: impl IntoIterator<Item = (&'s [u8], u8)>,
    scratch: ScratchMut<'_, Fixed>,
    (grads, first): (&mut [i64], bool),
    rows: &mut [i16],
) -> BatchStats {
    let mut space = carve(net, scratch);
    let t = span(Slot::Prepare);
    prepare(net, w, &mut space);
    drop(t);
    let mut stats = BatchStats::default();
    let logits_frac = net.dense[D - 1].spec.acc_frac();
    let last = &net.dense[D - 1].dense;
    let row_len = net.batch_row();
    let last_delta_at = row_len - last.outputs;
    // Whether a convolution's sums are still to be written (the first flush of the step's first
    // block writes them, so they are never cleared and read back).
    let mut fresh = [first; 2];
    let mut samples = samples.into_iter();
    let mut slot = 0;
    loop {
        // The next samples in flight: their convolutions' forward passes one by one.
        let mut labels = [0u8; IN_FLIGHT];
        let mut count = 0;
        while count < IN_FLIGHT {
            let Some((image, label)) = samples.next() else { break };
            let at = (slot + count) * row_len;
            let row = rows.get_mut(at..at + row_len).expect("a batch row per sample");
            load_image::<Fixed>(image, net.side, space.input);
            conv_forwards(net, w, &mut space, count, slot + count, row);
            labels[count] = label;
            count += 1;
        }
        if count == 0 {
            break;
        }
        // Their dense layers together, each layer's weights read once for all of them.
        let group = &mut rows[slot * row_len..(slot + count) * row_len];
        dense_forward(net, w, &mut space, group, (row_len, count));
        let t = span(Slot::Loss);
        for (k, (row, &label)) in group.chunks_exact_mut(row_len).zip(&labels).take(count).enumerate() {
            let logits = &space.samples[k].dense[D - 1].pre;
            let outcome = softmax_cross_entropy::<Fixed>(
                logits,
                logits_frac,
                label as usize,
                &mut row[last_delta_at..],
            );
            stats.record(&outcome, label);
        }
        drop(t);
        let frac = dense_backward(net, w, &mut space, group, (row_len, count));
        for k in 0..count {
            conv_backwards(net, &mut space, k, slot + k, frac);
        }
        slot += count;
        // Samples are in flight two at a time from an even slot and the flush periods are even,
        // so a block fills up exactly at the end of a group (or with the last sample).
        for (layer, (block, c)) in net.conv.iter().zip(space.conv.iter()).enumerate() {
            if slot.is_multiple_of(FLUSH_EVERY[layer]) {
                let write = if fresh[layer] { Write::Set } else { Write::Add };
                conv_flush(layer, block, c, FLUSH_EVERY[layer], (grads, write), &mut space.terms);
                fresh[layer] = false;
            }
        }
    }
    for (layer, (block, c)) in net.conv.iter().zip(space.conv.iter()).enumerate() {
        let pending = slot % FLUSH_EVERY[layer]; // samples since the last flush
        let write = if fresh[layer] { Write::Set } else { Write::Add };
        if pending > 0 {
            conv_flush(layer, block, c, pending, (grads, write), &mut space.terms);
        } else if write == Write::Set {
            // No sample: the step's sums start at zero.
            let (weights, biases) = block.spec.params_mut(grads);
            weights.fill(0);
            biases.fill(0);
        }
    }
    stats
}

/// [`crate::train::evaluate`] on the fast path.
pub(crate) fn evaluate<'s, const D: usize>(
    net: &ConvNet<D>,
    w: Weights<'_, Fixed>,
    samples: impl IntoIterator<Item = (&'s [u8], u8)>,
    scratch: ScratchMut<'_, Fixed>,
) -> BatchStats {
    let mut space = carve(net, scratch);
    prepare(net, w, &mut space);
    let mut stats = BatchStats::default();
    let logits_frac = net.dense[D - 1].spec.acc_frac();
    for (image, label) in samples {
        load_image::<Fixed>(image, net.side, space.input);
        let row = core::mem::take(&mut space.row);
        conv_forwards(net, w, &mut space, 0, 0, row);
        dense_forward(net, w, &mut space, row, (row.len(), 1));
        space.row = row;
        let logits = &space.samples[0].dense[D - 1].pre;
        let outcome: SampleOutcome = evaluate_logits::<Fixed>(logits, logits_frac, label as usize);
        stats.record(&outcome, label);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::pool::MaxPool2;
    use crate::layers::Conv5x5;
    use crate::rng::Rng;

    /// [`pool_then_tanh`] against the definition (tanh of every position plus its bias, then the
    /// pool's first maximum), on windows built to tie: neighbours a rounding step apart inside the
    /// strict range, equal values, and values deep in tanh's flat tails.
    #[test]
    fn pool_then_tanh_keeps_the_definitions_winners() {
        let conv = Conv5x5 { in_ch: 1, out_ch: 3, in_h: 20, in_w: 20 }; // 16 x 16 outputs
        let acc_frac = 27; // Q3.12 inputs step every 2^15 accumulator units
        let step = 1i64 << (acc_frac - 12);
        let biases = [0, 1 << 20, -(3 << 24)]; // Q7.24: 0, 1/16, -3
        let mut rng = Rng::new(21);
        let mut pre = [0i64; 3 * 256];
        for window in pre.chunks_exact_mut(4) {
            let centre = match rng.below(4) {
                0 => 0,
                1 => (rng.below(2 * 4096) as i64 - 4096) * step, // |x| < 1: strict
                2 => (rng.below(2 * 32767) as i64 - 32767) * step, // anywhere
                _ => (rng.below(2) as i64 * 2 - 1) * (30_000 + rng.below(3000) as i64) * step, // flat tails
            };
            for v in window.iter_mut() {
                // within a few rounding steps, often inside the same one
                *v = centre + (rng.below(5) as i64 - 2) * step / 2 + rng.below(3) as i64 - 1;
            }
        }
        // The values were drawn per group of four; the windows are 2 x 2, so the groups straddle
        // two windows each, and both kinds of neighbour occur.
        let (mut pooled, mut argmax) = ([0i16; 192], [0u32; 192]);
        pool_then_tanh(&conv, &pre, &biases, acc_frac, &mut pooled, &mut argmax);
        let mut act = [0i16; 3 * 256];
        for (ch, (a, p)) in act.chunks_exact_mut(256).zip(pre.chunks_exact(256)).enumerate() {
            for (o, &v) in a.iter_mut().zip(p) {
                *o = Fixed::tanh(v + Fixed::bias(biases[ch], acc_frac), acc_frac);
            }
        }
        let (mut want, mut want_at) = ([0i16; 192], [0u32; 192]);
        MaxPool2 { ch: 3, in_h: 16, in_w: 16 }.forward(&act, &mut want, &mut want_at);
        assert_eq!(pooled, want);
        assert_eq!(argmax, want_at);
        let ties = (0..192).filter(|&o| {
            let at = want_at[o] as usize;
            let top = at - at % 2 - (at / 16 % 2) * 16;
            [top, top + 1, top + 16, top + 17].iter().filter(|&&i| act[i] == want[o]).count() > 1
        });
        assert!(ties.count() > 20, "the test builds ties");
    }
}
