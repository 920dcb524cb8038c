//! Heap-backed model and core storage for hosts (feature `alloc`): the same layout as the static
//! [`ModelState`](crate::train::ModelState) and [`CoreState`](crate::train::CoreState), sized at run
//! time from the [`Network`] constants, for the host trainer, tests and benchmarks. The firmware uses
//! the static containers and never enables this feature.

#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use crate::network::{Network, ScratchMut, Weights};
use crate::train::{apply_update, init_params, refresh_working, BatchStats, CoreWork};
use crate::Arith;

/// Master weights, momentum and working weights of one model.
#[derive(Clone, Debug)]
pub struct HeapModel<A: Arith> {
    /// Master weights and biases.
    pub master: Vec<A::Param>,
    /// Momentum.
    pub momentum: Vec<A::Param>,
    /// Working (rounded) weights.
    pub working: Vec<A::Val>,
}

impl<A: Arith> HeapModel<A> {
    /// A freshly initialised model of network `N` ([`init_params`]), with zero momentum.
    pub fn init<N: Network>(seed: u64) -> Self {
        let mut m = HeapModel {
            master: vec![A::ZERO_PARAM; N::PARAMS],
            momentum: vec![A::ZERO_PARAM; N::PARAMS],
            working: vec![A::ZERO_VAL; N::PARAMS],
        };
        init_params::<N, A>(seed, &mut m.master);
        refresh_working::<N, A>(&m.master, &mut m.working);
        m
    }

    /// The view the passes read.
    pub fn weights(&self) -> Weights<'_, A> {
        Weights { master: &self.master, working: &self.working }
    }

    /// Replaces the master parameters (for example from a checkpoint) and refreshes the working copy.
    pub fn set_master<N: Network>(&mut self, master: &[A::Param]) {
        self.master.copy_from_slice(master);
        refresh_working::<N, A>(&self.master, &mut self.working);
    }

    /// Replaces master parameters and momentum (resuming from a checkpoint) and refreshes the
    /// working copy.
    pub fn restore<N: Network>(&mut self, master: &[A::Param], momentum: &[A::Param]) {
        self.momentum.copy_from_slice(momentum);
        self.set_master::<N>(master);
    }

    /// One optimizer step ([`apply_update`]).
    pub fn update<N: Network>(&mut self, sgd: &A::Sgd, grads: &[A::Acc], batch: u32) {
        apply_update::<N, A>(sgd, &mut self.master, &mut self.momentum, &mut self.working, grads, batch);
    }
}

/// One core's gradient accumulators and scratch space.
#[derive(Clone, Debug)]
pub struct HeapCore<A: Arith> {
    /// Gradient accumulators.
    pub grads: Vec<A::Acc>,
    vals: Vec<A::Val>,
    accs: Vec<A::Acc>,
    indices: Vec<u32>,
}

impl<A: Arith> HeapCore<A> {
    /// Zeroed space for network `N`.
    pub fn new<N: Network>() -> Self {
        HeapCore {
            grads: vec![A::ZERO_ACC; N::PARAMS],
            vals: vec![A::ZERO_VAL; N::SCRATCH.vals],
            accs: vec![A::ZERO_ACC; N::SCRATCH.accs],
            indices: vec![0; N::SCRATCH.indices],
        }
    }

    /// The scratch view, and the gradients beside it.
    pub fn split(&mut self) -> (ScratchMut<'_, A>, &mut [A::Acc]) {
        (
            ScratchMut { vals: &mut self.vals, accs: &mut self.accs, indices: &mut self.indices },
            &mut self.grads,
        )
    }

    /// This core's space for [`crate::train::batch_gradient`].
    pub fn work(&mut self) -> CoreWork<'_, A> {
        let (scratch, grads) = self.split();
        CoreWork { scratch, grads, stats: BatchStats::default() }
    }
}

/// The batch rows the cores of a step share ([`Network::BATCH_ROWS`] values).
pub fn batch_rows<N: Network, A: Arith>() -> Vec<A::Val> {
    vec![A::ZERO_VAL; N::BATCH_ROWS]
}
