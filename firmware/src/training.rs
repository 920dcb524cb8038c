//! Local training on the node's own shard: the blob's settings, all state in static memory, the
//! batch shared between the cores.
//!
//! Each step is what the host trainer does ([`kernels::train`]): the epoch's seeded order, batches of
//! `batch` samples, a contiguous share per core, exact integer gradient sums, one update. The weights
//! therefore match the host's bit for bit, whatever the number of cores.

use kernels::arith::{Arith, SgdConfig};
use kernels::rng::epoch_order;
use kernels::train::{apply_update, batch_gradient, init_params, refresh_working, weight_hash};
use kernels::train::{BatchStats, CoreState, CoreWork, ModelState};
use kernels::{Fixed, Lenet5, MxLenet, Network, Weights};
use protocol::blob::{Blob, Settings};
use protocol::wire::ModelId;
use spin::Mutex;

use crate::arch::aarch64::pmu;
use crate::smp::{PiCores, CORES};

/// The most samples a shard may hold: the whole MNIST training set.
pub const MAX_SAMPLES: usize = 60_000;

/// Declares a model's static state: its weights and momentum, one gradient-and-scratch space per
/// core, and the batch rows the cores share.
macro_rules! model_state {
    ($model:ident, $cores:ident, $rows:ident, $net:ty) => {
        pub(crate) static $model: Mutex<ModelState<Fixed, { <$net as Network>::PARAMS }>> =
            Mutex::new(ModelState::ZERO);
        pub(crate) static $cores: [Mutex<
            CoreState<
                Fixed,
                { <$net as Network>::PARAMS },
                { <$net as Network>::SCRATCH.vals },
                { <$net as Network>::SCRATCH.accs },
                { <$net as Network>::SCRATCH.indices },
            >,
        >; CORES] = [const { Mutex::new(CoreState::ZERO) }; CORES];
        pub(crate) static $rows: Mutex<[i16; <$net as Network>::BATCH_ROWS]> =
            Mutex::new([0; <$net as Network>::BATCH_ROWS]);
    };
}

model_state!(MXLENET_MODEL, MXLENET_CORES, MXLENET_ROWS, MxLenet);
model_state!(LENET5_MODEL, LENET5_CORES, LENET5_ROWS, Lenet5);

/// The epoch's sample order.
static ORDER: Mutex<[u32; MAX_SAMPLES]> = Mutex::new([0; MAX_SAMPLES]);

/// Why training could not start.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub enum TrainError {
    /// More samples than [`MAX_SAMPLES`].
    ShardTooLarge,
}

/// What a training run did, for the benchmark.
#[derive(Clone, Copy, Debug)]
pub struct TrainSummary {
    /// Samples trained (all epochs).
    pub samples: u64,
    /// PMU cycle-counter ticks spent in the training steps (instructions under QEMU -icount); the
    /// epochs' shuffles and logged weight hashes are left out.
    pub instructions: u64,
    /// Final weight hash.
    pub weight_hash: u64,
    /// Samples each core trained.
    pub per_core: [u64; CORES],
}

/// Trains the blob's model on its shard for its epochs on `cores` cores, logging every epoch.
pub fn train(blob: &Blob<&[u8]>, cores: usize) -> Result<TrainSummary, TrainError> {
    let settings = blob.settings();
    if blob.samples() > MAX_SAMPLES {
        return Err(TrainError::ShardTooLarge);
    }
    Ok(match settings.model {
        ModelId::MxLenet => train_model::<MxLenet, _, _, _, _, _>(
            blob,
            &settings,
            cores,
            &MXLENET_MODEL,
            &MXLENET_CORES,
            &MXLENET_ROWS,
        ),
        ModelId::Lenet5 => train_model::<Lenet5, _, _, _, _, _>(
            blob,
            &settings,
            cores,
            &LENET5_MODEL,
            &LENET5_CORES,
            &LENET5_ROWS,
        ),
    })
}

/// One batch's exact gradient on `cores` cores ([`batch_gradient`]), left in core 0's gradient
/// sums; returns each core's statistics.
pub fn batch_gradient_on_cores<
    N: Network,
    const P: usize,
    const V: usize,
    const C: usize,
    const I: usize,
    const R: usize,
>(
    weights: Weights<'_, Fixed>,
    blob: &Blob<&[u8]>,
    batch: &[u32],
    cores: usize,
    core_states: &[Mutex<CoreState<Fixed, P, V, C, I>>; CORES],
    rows: &Mutex<[i16; R]>,
) -> [BatchStats; CORES] {
    let mut guards = core_states.each_ref().map(|state| state.lock());
    let mut work: [CoreWork<'_, Fixed>; CORES] = guards.each_mut().map(|state| state.work());
    let sample = |i: u32| blob.sample(i as usize);
    let mut rows = rows.lock();
    let cores = cores.clamp(1, CORES);
    batch_gradient::<N, Fixed, _>(&PiCores, weights, batch, &sample, &mut work[..cores], &mut rows[..]);
    core::array::from_fn(|core| if core < cores { work[core].stats } else { BatchStats::default() })
}

fn train_model<N: Network, const P: usize, const V: usize, const C: usize, const I: usize, const R: usize>(
    blob: &Blob<&[u8]>,
    settings: &Settings,
    cores: usize,
    model: &Mutex<ModelState<Fixed, P>>,
    core_states: &[Mutex<CoreState<Fixed, P, V, C, I>>; CORES],
    rows: &Mutex<[i16; R]>,
) -> TrainSummary {
    let mut model = model.lock();
    let mut order = ORDER.lock();
    let order = &mut order[..blob.samples()];
    let sgd = Fixed::sgd_constants(&SgdConfig {
        learning_rate: settings.learning_rate,
        momentum: settings.momentum,
        weight_decay: settings.weight_decay,
    });
    let ModelState { master, momentum, working } = &mut *model;
    init_params::<N, Fixed>(settings.seed, master);
    momentum.fill(Fixed::ZERO_PARAM);
    refresh_working::<N, Fixed>(master, working);
    pmu::start_cycle_counter();
    kernels::profile::install(pmu::cycles);
    let _ = kernels::profile::take();
    let mut samples = 0;
    let mut per_core = [0; CORES];
    // Instructions outside the steps (each epoch's shuffle, hash and log line) are not counted:
    // per sample they vanish on a real shard, but not on a benchmark's short one.
    let mut outside_steps = 0;
    for epoch in 0..settings.epochs {
        let outside = pmu::cycles();
        epoch_order(settings.seed, epoch, order);
        outside_steps += pmu::cycles() - outside;
        let mut stats = BatchStats::default();
        for batch in order.chunks(settings.batch as usize) {
            let per_core_stats = batch_gradient_on_cores::<N, P, V, C, I, R>(
                model.weights(),
                blob,
                batch,
                cores,
                core_states,
                rows,
            );
            for (total, core) in per_core.iter_mut().zip(&per_core_stats) {
                stats.merge(core);
                *total += core.samples;
            }
            let sum = core_states[0].lock();
            let ModelState { master, momentum, working } = &mut *model;
            apply_update::<N, Fixed>(&sgd, master, momentum, working, &sum.grads, batch.len() as u32);
        }
        samples += stats.samples;
        let outside = pmu::cycles();
        defmt::info!(
            "epoch {=u32}: loss {=f64} accuracy {=u64}/{=u64} weights {=u64:016x}",
            epoch + 1,
            stats.mean_loss(),
            stats.correct,
            stats.samples,
            weight_hash::<Fixed>(&model.master)
        );
        outside_steps += pmu::cycles() - outside;
    }
    let instructions = pmu::cycles() - outside_steps;
    log_profile::<N>(samples);
    TrainSummary { samples, instructions, weight_hash: weight_hash::<Fixed>(&model.master), per_core }
}

/// With the `profile` feature: instructions per sample of every layer and phase, the rest of the
/// step, and each layer's gradient-accumulator bytes per sample (see [`kernels::profile`]).
fn log_profile<N: Network>(samples: u64) {
    use kernels::profile::{take, Phase, Slot, ENABLED};
    if !ENABLED || samples == 0 {
        return;
    }
    let report = take();
    for (i, layer) in N::LAYERS.iter().enumerate() {
        let phase = |p| report.ticks(Slot::Layer(i, p)) / samples;
        defmt::info!(
            "profile {=str}: forward {=u64} weight-gradient {=u64} input-gradient {=u64} traffic {=u64}",
            layer.name,
            phase(Phase::Forward),
            phase(Phase::WeightGradient),
            phase(Phase::InputGradient),
            report.traffic(i) / samples
        );
    }
    defmt::info!(
        "profile step: prepare {=u64} loss {=u64} update {=u64} reduce {=u64}",
        report.ticks(Slot::Prepare) / samples,
        report.ticks(Slot::Loss) / samples,
        report.ticks(Slot::Update) / samples,
        report.ticks(Slot::Reduce) / samples
    );
}
