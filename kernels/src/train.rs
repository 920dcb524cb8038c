//! Training around the networks: seeded initialisation, the optimizer step, batch statistics, the
//! weight hash, and the statically sized state containers with their footprint.
//!
//! A training step is: every core calls [`Network::train_sample`] for its share of the batch, adding
//! into its own gradient accumulators; the accumulators are summed (exactly, in any order); then
//! [`apply_update`] runs once with the batch size. Only `apply_update` rounds, so the step's result does
//! not depend on how the batch was split.

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

/// Trains on a run of samples, adding their gradients into `grads`. `samples` yields
/// `(image, label)`; this is one core's share of a batch.
pub fn accumulate<'s, N: Network, A: Arith>(
    weights: Weights<'_, A>,
    samples: impl IntoIterator<Item = (&'s [u8], u8)>,
    scratch: &mut ScratchMut<'_, A>,
    grads: &mut [A::Acc],
) -> BatchStats {
    N::accumulate::<A>(weights, samples, scratch.reborrow(), grads)
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
}

/// Static memory a network needs, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Master and working weights.
    pub weights: usize,
    /// Optimizer state (momentum).
    pub optimizer: usize,
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
            gradients_per_core: p * core::mem::size_of::<A::Acc>(),
            activations_per_core: ScratchSize::bytes::<A>(N::SCRATCH),
        }
    }
    /// Total for `cores` cores.
    pub const fn total(&self, cores: usize) -> usize {
        self.weights + self.optimizer + cores * (self.gradients_per_core + self.activations_per_core)
    }
}
