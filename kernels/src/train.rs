//! Training around the networks: seeded initialisation, the optimizer step, batch statistics, the
//! weight hash, and the statically sized state containers with their footprint.
//!
//! A training step is [`batch_gradient`], then [`apply_update`] once with the batch size. The
//! gradient is exact integer sums over the batch's samples, which do not depend on how the batch is
//! split between cores, blocks or nodes; only `apply_update` rounds.

#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};

use crate::layers::SampleOutcome;
use crate::network::{Network, ScratchMut, ScratchSize, Weights};
use crate::rng::Rng;
use crate::Arith;

/// MXNet's Xavier initialiser as the paper's example configures it (Gaussian, factor "in", magnitude
/// 2): every weight is drawn from N(0, 2 / fan_in); biases are zero. Layers draw in order from one
/// generator seeded with `seed`.
pub fn init_params<N: Network, A: Arith>(seed: u64, master: &mut [A::Param]) {
    assert_eq!(master.len(), N::PARAMS);
    let mut rng = Rng::new(seed);
    for layer in N::LAYERS {
        let std_dev = libm::sqrt(2.0 / layer.fan_in as f64);
        let (weights, biases) = layer.params_mut(master);
        for w in weights {
            *w = A::param_from_f64(rng.gaussian() * std_dev);
        }
        biases.fill(A::param_from_f64(0.0));
    }
}

/// Rounds the master weights into the working copies (each layer in its own format).
pub fn refresh_working<N: Network, A: Arith>(master: &[A::Param], working: &mut [A::Val]) {
    assert!(master.len() == N::PARAMS && working.len() == N::PARAMS);
    for layer in N::LAYERS {
        let range = layer.weight_range();
        A::to_working(&master[range.clone()], layer.weight_frac, &mut working[range]);
        // Biases are read from the master copy; their working slots stay zero.
    }
}

/// One optimizer step from the summed gradients of `batch` samples, then a refresh of the working
/// weights.
pub fn apply_update<N: Network, A: Arith>(
    sgd: &A::Sgd,
    master: &mut [A::Param],
    momentum: &mut [A::Param],
    working: &mut [A::Val],
    grads: &[A::Acc],
    batch: u32,
) {
    assert!(grads.len() == N::PARAMS && momentum.len() == N::PARAMS);
    let _t = crate::profile::span(crate::profile::Slot::Update);
    for layer in N::LAYERS {
        let (w, b) = layer.params_mut(master);
        let (mw, mb) = layer.params_mut(momentum);
        A::sgd_step(sgd, w, mw, &grads[layer.weight_range()], layer.weight_grad_frac(), batch, true);
        A::sgd_step(sgd, b, mb, &grads[layer.bias_range()], layer.bias_grad_frac(), batch, false);
    }
    refresh_working::<N, A>(master, working);
}

/// The `part`-th of `parts` contiguous shares of `len` items; share sizes differ by at most one. How
/// every trainer (host threads, the Pi's cores) divides a batch.
pub fn share_range(len: usize, parts: usize, part: usize) -> core::ops::Range<usize> {
    part * len / parts..(part + 1) * len / parts
}

/// Fraction bits of [`BatchStats::loss_sum`].
pub const LOSS_FRAC: u32 = 24;

/// Counts over some samples, kept as integers so that sums over cores and nodes are exact and the
/// reported figures do not depend on the split either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Samples seen.
    pub samples: u64,
    /// Samples predicted right.
    pub correct: u64,
    /// Sum of the per-sample losses, each rounded to [`LOSS_FRAC`] fraction bits.
    pub loss_sum: i64,
}

impl BatchStats {
    /// Counts one sample.
    pub fn record(&mut self, outcome: &SampleOutcome, label: u8) {
        self.samples += 1;
        self.correct += (outcome.predicted == label as usize) as u64;
        self.loss_sum += crate::fixed::from_f64(outcome.loss, LOSS_FRAC);
    }
    /// Adds another count.
    pub fn merge(&mut self, other: &BatchStats) {
        self.samples += other.samples;
        self.correct += other.correct;
        self.loss_sum += other.loss_sum;
    }
    /// Mean loss (0 when empty).
    pub fn mean_loss(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            crate::fixed::to_f64(self.loss_sum, LOSS_FRAC) / self.samples as f64
        }
    }
    /// Fraction predicted right (0 when empty).
    pub fn accuracy(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.correct as f64 / self.samples as f64
        }
    }
}

/// Samples of a step whose dense-layer rows the cores share at once ([`batch_gradient`] goes
/// through a larger batch in blocks of this many).
pub const BLOCK: usize = crate::fast::BLOCK;

/// The cores a step runs on: the Pi's four, the host's threads, or one after another.
pub trait Cores {
    /// Calls `job(core, item)` for each item, each on its own core (`core` counts from 0), all at
    /// once, and returns when every call has returned. There are at most as many items as cores.
    fn run<T: Send>(&self, items: impl Iterator<Item = T>, job: &(dyn Fn(usize, T) + Sync));
}

/// [`Cores`] that are one after another on the calling thread: tests, benchmarks, single-core
/// callers. The integers are the same as on parallel cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl Cores for Sequential {
    fn run<T: Send>(&self, items: impl Iterator<Item = T>, job: &(dyn Fn(usize, T) + Sync)) {
        for (core, item) in items.enumerate() {
            job(core, item);
        }
    }
}

/// One core's space in [`batch_gradient`]: its scratch, its gradient sums, and the statistics of
/// the samples it trained in the last call.
pub struct CoreWork<'a, A: Arith> {
    /// The core's scratch.
    pub scratch: ScratchMut<'a, A>,
    /// The core's gradient sums (`PARAMS` values); after [`batch_gradient`], the first core's hold
    /// the batch's gradient.
    pub grads: &'a mut [A::Acc],
    /// What the core's samples scored.
    pub stats: BatchStats,
}

/// The exact gradient of `batch` (sample indices, read through `sample`) on the cores of `work`
/// (one entry per core), left in `work[0].grads`; returns the batch's statistics.
///
/// The batch goes in blocks of [`BLOCK`] samples. In each block every core takes a contiguous
/// share, runs its samples' forward and backward passes, writes (in the first block) or adds their
/// convolution gradients into its own sums and leaves their dense inputs and deltas in its share of the block's `rows`
/// (`N::BATCH_ROWS` values, shared); then every core computes a part of the dense layers'
/// gradients over the whole block ([`Network::dense_part`]) straight into the first core's sums,
/// so those `i64` sums are touched once per block, however many cores there are. At the end the
/// other cores' convolution sums are added into the first core's. Arithmetic that does not defer
/// the dense gradients ([`Arith::DEFERS_DENSE`]) adds everything per core and sums it all.
pub fn batch_gradient<'s, N: Network, A: Arith, S>(
    cores: &impl Cores,
    weights: Weights<'_, A>,
    batch: &[u32],
    sample: &S,
    work: &mut [CoreWork<'_, A>],
    rows: &mut [A::Val],
) -> BatchStats
where
    S: Fn(u32) -> (&'s [u8], u8) + Sync,
    A::Val: Send,
    A::Acc: Send,
{
    let parts = work.len();
    assert!(parts > 0, "at least one core");
    assert_eq!(rows.len(), N::BATCH_ROWS, "the batch rows of network {}", N::NAME);
    let row = N::BATCH_ROW;
    let dense = N::dense_params();
    // The part each core sums itself: the convolutions' where the dense gradients are deferred.
    let own = if A::DEFERS_DENSE { 0..dense.start } else { 0..N::PARAMS };
    for core in work.iter_mut() {
        core.stats = BatchStats::default();
    }
    for (b, block) in batch.chunks(BLOCK).enumerate() {
        let shares = (0..parts).map(|k| share_range(block.len(), parts, k));
        let mut rest = &mut rows[..];
        let row_parts = shares.clone().map(move |share| {
            let (part, tail) = core::mem::take(&mut rest).split_at_mut(share.len() * row);
            rest = tail;
            part
        });
        cores.run(work.iter_mut().zip(shares).zip(row_parts), &|_, ((core, share), rows)| {
            let samples = block[share].iter().map(|&i| sample(i));
            let stats =
                N::accumulate::<A>(weights, samples, core.scratch.reborrow(), core.grads, b == 0, rows);
            core.stats.merge(&stats);
        });
        if A::DEFERS_DENSE {
            let rows = &*rows;
            let mut rest = &mut work[0].grads[dense.clone()];
            let mut at = dense.start;
            let outs = (0..parts).map(move |k| {
                let part = N::dense_part(parts, k);
                assert_eq!(part.start, at, "contiguous parts");
                let (out, tail) = core::mem::take(&mut rest).split_at_mut(part.len());
                (rest, at) = (tail, part.end);
                (part, out)
            });
            cores.run(outs, &|_, (part, out)| {
                N::dense_gradients::<A>(rows, block.len(), part, out, b == 0);
            });
        }
    }
    if batch.is_empty() {
        for core in work.iter_mut() {
            core.grads.fill(A::ZERO_ACC);
        }
    }
    let _t = crate::profile::span(crate::profile::Slot::Reduce);
    let (first, others) = work.split_first_mut().expect("at least one core");
    let mut total = first.stats;
    for other in others {
        A::add_accs(&mut first.grads[own.clone()], &other.grads[own.clone()]);
        total.merge(&other.stats);
    }
    total
}

/// Evaluates a run of samples.
pub fn evaluate<'s, N: Network, A: Arith>(
    weights: Weights<'_, A>,
    samples: impl IntoIterator<Item = (&'s [u8], u8)>,
    scratch: &mut ScratchMut<'_, A>,
) -> BatchStats {
    N::evaluate_all::<A>(weights, samples, scratch.reborrow())
}

impl<'a, A: Arith> ScratchMut<'a, A> {
    /// A shorter-lived view of the same scratch space.
    pub fn reborrow(&mut self) -> ScratchMut<'_, A> {
        ScratchMut { vals: self.vals, accs: self.accs, indices: self.indices }
    }
}

/// SHA-256 of the master parameters (little-endian), shortened to 64 bits: the fingerprint logged per
/// epoch and compared across node counts and machines.
pub fn weight_hash<A: Arith>(master: &[A::Param]) -> u64 {
    let mut hasher = Sha256::new();
    for &p in master {
        hasher.update(A::param_le_bytes(p));
    }
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// A model's master weights, momentum and working weights: `P` parameters, all static.
#[derive(Clone, Debug)]
pub struct ModelState<A: Arith, const P: usize> {
    /// Master weights and biases.
    pub master: [A::Param; P],
    /// Momentum.
    pub momentum: [A::Param; P],
    /// Working (rounded) weights.
    pub working: [A::Val; P],
}

impl<A: Arith, const P: usize> ModelState<A, P> {
    /// All zero, usable in a `static` initialiser.
    pub const ZERO: Self =
        ModelState { master: [A::ZERO_PARAM; P], momentum: [A::ZERO_PARAM; P], working: [A::ZERO_VAL; P] };

    /// The view the passes read.
    pub fn weights(&self) -> Weights<'_, A> {
        Weights { master: &self.master, working: &self.working }
    }
}

/// One core's static training space: its gradient accumulators and its scratch (`V` values, `C`
/// accumulators, `I` indices; see [`Network::SCRATCH`]).
#[derive(Clone, Debug)]
pub struct CoreState<A: Arith, const P: usize, const V: usize, const C: usize, const I: usize> {
    /// Gradient accumulators.
    pub grads: [A::Acc; P],
    vals: [A::Val; V],
    accs: [A::Acc; C],
    indices: [u32; I],
}

impl<A: Arith, const P: usize, const V: usize, const C: usize, const I: usize> CoreState<A, P, V, C, I> {
    /// All zero, usable in a `static` initialiser.
    pub const ZERO: Self = CoreState {
        grads: [A::ZERO_ACC; P],
        vals: [A::ZERO_VAL; V],
        accs: [A::ZERO_ACC; C],
        indices: [0; I],
    };

    /// The scratch view, and the gradients beside it.
    pub fn split(&mut self) -> (ScratchMut<'_, A>, &mut [A::Acc]) {
        (
            ScratchMut { vals: &mut self.vals, accs: &mut self.accs, indices: &mut self.indices },
            &mut self.grads,
        )
    }

    /// This core's space for [`batch_gradient`].
    pub fn work(&mut self) -> CoreWork<'_, A> {
        let (scratch, grads) = self.split();
        CoreWork { scratch, grads, stats: BatchStats::default() }
    }
}

/// Static memory a network needs, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Master and working weights.
    pub weights: usize,
    /// Optimizer state (momentum).
    pub optimizer: usize,
    /// The batch rows the cores share ([`batch_gradient`]).
    pub batch_rows: usize,
    /// Gradient accumulators, per core.
    pub gradients_per_core: usize,
    /// Activations and other scratch, per core.
    pub activations_per_core: usize,
}

impl Footprint {
    /// The footprint of network `N` in arithmetic `A`.
    pub const fn of<N: Network, A: Arith>() -> Footprint {
        let p = N::PARAMS;
        Footprint {
            weights: p * (core::mem::size_of::<A::Param>() + core::mem::size_of::<A::Val>()),
            optimizer: p * core::mem::size_of::<A::Param>(),
            batch_rows: N::BATCH_ROWS * core::mem::size_of::<A::Val>(),
            gradients_per_core: p * core::mem::size_of::<A::Acc>(),
            activations_per_core: ScratchSize::bytes::<A>(N::SCRATCH),
        }
    }
    /// Total for `cores` cores.
    pub const fn total(&self, cores: usize) -> usize {
        self.weights
            + self.optimizer
            + self.batch_rows
            + cores * (self.gradients_per_core + self.activations_per_core)
    }
}
