//! Which samples each step trains on: the global batch schedule, computed identically by the master
//! and every node from the seed alone.

#![forbid(unsafe_code)]

use kernels::rng::epoch_order;

use crate::wire::{BatchMode, ShardSpec};

/// The schedule of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Batch formation.
    pub mode: BatchMode,
    /// Global batch (Global) or per-node batch (PerNode).
    pub batch: u32,
    /// Training-set size.
    pub total: u32,
    /// Nodes.
    pub nodes: u16,
    /// Seed.
    pub seed: u64,
}

impl Schedule {
    /// Steps in one epoch. Global: `ceil(total / batch)`. PerNode: `ceil(total / (batch * nodes))`, so
    /// an epoch still passes over (about) the whole training set once.
    pub fn steps_per_epoch(&self) -> u32 {
        let per_step = match self.mode {
            BatchMode::Global => self.batch as u64,
            BatchMode::PerNode => self.batch as u64 * self.nodes as u64,
        };
        (self.total as u64).div_ceil(per_step.max(1)) as u32
    }

    /// The epoch a step belongs to.
    pub fn epoch_of(&self, step: u32) -> u32 {
        step / self.steps_per_epoch()
    }

    /// Synchronisations per epoch when nodes take `period` local steps between them. The last one of
    /// an epoch may cover fewer steps: a synchronisation never spans two epochs.
    pub fn syncs_per_epoch(&self, period: u32) -> u32 {
        self.steps_per_epoch().div_ceil(period.max(1))
    }

    /// The steps synchronisation `sync` covers: `first..first + count`.
    pub fn sync_steps(&self, sync: u32, period: u32) -> (u32, u32) {
        let period = period.max(1);
        let per_epoch = self.syncs_per_epoch(period);
        let (epoch, within) = (sync / per_epoch, sync % per_epoch);
        let spe = self.steps_per_epoch();
        let start = within * period;
        (epoch * spe + start, period.min(spe - start))
    }

    /// Seed of a node's own sample order in PerNode mode.
    fn node_seed(&self, shard: &ShardSpec) -> u64 {
        self.seed.wrapping_add((shard.index as u64 + 1) << 40)
    }

    /// The order `samples_of` needs for `epoch`: the global order (Global, `total` entries) or this
    /// shard's own order (PerNode, shard-length entries). `order` must be at least that long.
    pub fn fill_order(&self, shard: &ShardSpec, epoch: u32, order: &mut [u32]) -> usize {
        match self.mode {
            BatchMode::Global => {
                epoch_order(self.seed, epoch, &mut order[..self.total as usize]);
                self.total as usize
            }
            BatchMode::PerNode => {
                let n = shard.len() as usize;
                epoch_order(self.node_seed(shard), epoch, &mut order[..n]);
                n
            }
        }
    }

    /// The local sample indices of `shard` that train in `step`, written into `out`; `order` is what
    /// [`fill_order`](Self::fill_order) gave for the step's epoch. Returns how many.
    pub fn samples_of(&self, shard: &ShardSpec, step: u32, order: &[u32], out: &mut [u32]) -> usize {
        let t = (step % self.steps_per_epoch()) as usize;
        let b = self.batch as usize;
        let start = (t * b).min(order.len());
        let end = (start + b).min(order.len());
        let mut n = 0;
        for &i in &order[start..end] {
            let local = match self.mode {
                BatchMode::Global => shard.local_index(i),
                BatchMode::PerNode => Some(i),
            };
            if let Some(local) = local {
                out[n] = local;
                n += 1;
            }
        }
        n
    }

    /// Global indices in the whole batch of `step` (Global mode), for the master's bookkeeping.
    pub fn global_batch<'o>(&self, step: u32, order: &'o [u32]) -> &'o [u32] {
        let t = (step % self.steps_per_epoch()) as usize;
        let b = self.batch as usize;
        let start = (t * b).min(order.len());
        &order[start..(start + b).min(order.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ShardLayout;

    #[test]
    fn global_batches_are_split_without_loss() {
        let s = Schedule { mode: BatchMode::Global, batch: 64, total: 1000, nodes: 3, seed: 4 };
        assert_eq!(s.steps_per_epoch(), 16);
        let mut order = [0u32; 1000];
        let mut parts = [0u32; 64];
        for layout in [ShardLayout::Contiguous, ShardLayout::Strided] {
            let shards = [0, 1, 2].map(|index| ShardSpec { total: 1000, nodes: 3, index, layout });
            s.fill_order(&shards[0], 2, &mut order);
            for step in 32..48 {
                let whole = s.global_batch(step, &order);
                let mut covered = 0;
                for shard in &shards {
                    let n = s.samples_of(shard, step, &order, &mut parts);
                    for &local in &parts[..n] {
                        assert!(whole.contains(&shard.global_index(local)));
                    }
                    covered += n;
                }
                assert_eq!(covered, whole.len());
            }
        }
    }

    #[test]
    fn synchronisations_cover_every_step_once() {
        let s = Schedule { mode: BatchMode::Global, batch: 64, total: 1000, nodes: 3, seed: 4 };
        for period in [1, 3, 16, 40] {
            let mut next = 0;
            for sync in 0..3 * s.syncs_per_epoch(period) {
                let (first, count) = s.sync_steps(sync, period);
                assert_eq!(first, next, "period {period}");
                assert!(count >= 1 && count <= period);
                assert_eq!(s.epoch_of(first), s.epoch_of(first + count - 1), "no sync spans epochs");
                next = first + count;
            }
            assert_eq!(next, 3 * s.steps_per_epoch());
        }
    }

    #[test]
    fn per_node_batches_come_from_the_own_shard() {
        let s = Schedule { mode: BatchMode::PerNode, batch: 10, total: 95, nodes: 3, seed: 4 };
        assert_eq!(s.steps_per_epoch(), 4);
        let shard = ShardSpec { total: 95, nodes: 3, index: 2, layout: ShardLayout::Contiguous };
        let mut order = [0u32; 95];
        let n = s.fill_order(&shard, 0, &mut order);
        assert_eq!(n, shard.len() as usize);
        let mut out = [0u32; 10];
        let mut seen = 0;
        for step in 0..4 {
            let k = s.samples_of(&shard, step, &order[..n], &mut out);
            assert!(out[..k].iter().all(|&l| l < shard.len()));
            seen += k;
        }
        assert_eq!(seen, shard.len() as usize);
    }
}
