//! The single-process trainer: synchronous mini-batch SGD over the host's cores.
//!
//! Every step takes the next `batch` samples of the epoch's global order ([`kernels::rng::epoch_order`]),
//! gives each thread a contiguous share, sums the threads' exact gradients and applies one update. The
//! result is bit-identical for any thread count, which the tests check.

use std::time::Instant;

use kernels::arith::{Arith, Fixed, Float};
use kernels::heap::{batch_rows, HeapCore, HeapModel};
use kernels::rng::epoch_order;
use kernels::train::{batch_gradient, evaluate, weight_hash, BatchStats, Cores};
use kernels::{Lenet5, MxLenet, Network, SgdConfig, Weights};
use serde::Serialize;

use crate::mnist::{Mnist, Split};

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The paper's MXNet LeNet (conv 20, conv 50, fc 500, fc 10).
    Mxlenet,
    /// Classic LeNet-5 (6-16-120-84-10 on a 32x32 padded input).
    Lenet5,
}

/// Which arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ArithKind {
    /// The product: fixed-point integers, bit-reproducible.
    Fixed,
    /// The f32 reference, for comparison.
    F32,
}

/// Everything that determines a training run.
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    /// Network.
    pub model: ModelKind,
    /// Arithmetic.
    pub arith: ArithKind,
    /// Passes over the training set.
    pub epochs: u32,
    /// Samples per step.
    pub batch: usize,
    /// Optimizer settings.
    #[serde(flatten)]
    pub sgd: SgdConfigRecord,
    /// Seed of the initial weights and of every epoch's sample order.
    pub seed: u64,
    /// Train on the first `limit` training images only.
    pub limit: Option<usize>,
    /// Worker threads sharing each batch (does not change the result).
    pub threads: usize,
    /// Continue from a checkpoint instead of starting from the seeded initialisation.
    #[serde(rename = "resumed_from_epoch", serialize_with = "resume_epoch")]
    pub resume: Option<Resume>,
}

fn resume_epoch<S: serde::Serializer>(r: &Option<Resume>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(r.as_ref().map_or(0, |r| r.epoch))
}

/// The state a run continues from: fixed-point master parameters and momentum after `epoch` epochs.
#[derive(Clone, PartialEq, Eq)]
pub struct Resume {
    /// Epochs already trained.
    pub epoch: u32,
    /// Master parameters (Q7.24).
    pub master: Vec<i32>,
    /// Momentum (Q7.24).
    pub momentum: Vec<i32>,
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resume(after epoch {}, {} parameters)", self.epoch, self.master.len())
    }
}

impl Resume {
    /// Puts this state into `model` (any arithmetic; exact for fixed point).
    pub fn apply<N: Network, A: Arith>(&self, model: &mut HeapModel<A>) {
        let convert = |v: &[i32]| -> Vec<A::Param> {
            v.iter().map(|&p| A::param_from_f64(<Fixed as Arith>::param_to_f64(p))).collect()
        };
        model.restore::<N>(&convert(&self.master), &convert(&self.momentum));
    }
}

/// [`SgdConfig`] in a serialisable form.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SgdConfigRecord {
    /// Learning rate.
    pub learning_rate: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay (weights only).
    pub weight_decay: f64,
}

impl From<SgdConfigRecord> for SgdConfig {
    fn from(r: SgdConfigRecord) -> Self {
        SgdConfig { learning_rate: r.learning_rate, momentum: r.momentum, weight_decay: r.weight_decay }
    }
}

impl Default for TrainConfig {
    /// The paper's setting: MxLenet, batch 64, lr 0.05, momentum 0.9, weight decay 1e-4, 10 epochs.
    fn default() -> Self {
        let sgd = SgdConfig::default();
        TrainConfig {
            model: ModelKind::Mxlenet,
            arith: ArithKind::Fixed,
            epochs: 10,
            batch: 64,
            sgd: SgdConfigRecord {
                learning_rate: sgd.learning_rate,
                momentum: sgd.momentum,
                weight_decay: sgd.weight_decay,
            },
            seed: 1,
            limit: None,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            resume: None,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// Batch size zero.
    #[error("--batch must be at least 1")]
    ZeroBatch,
    /// No threads.
    #[error("--threads must be at least 1")]
    ZeroThreads,
    /// A hyperparameter that is not a finite number in range.
    #[error("--{name} must be a finite number in {range}, got {value}")]
    Hyper {
        /// Option name.
        name: &'static str,
        /// Allowed range.
        range: &'static str,
        /// Given value.
        value: f64,
    },
    /// Nothing to train on.
    #[error("--limit 0 leaves no training images")]
    NoSamples,
}

impl TrainConfig {
    /// The training images this run uses: all of them, or the first `limit`.
    pub fn training_set(&self, data: &Mnist) -> Split {
        let all = data.train.clone();
        match self.limit {
            Some(n) => all.truncated(n),
            None => all,
        }
    }

    /// Checks the settings before any work starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch == 0 {
            return Err(ConfigError::ZeroBatch);
        }
        if self.threads == 0 {
            return Err(ConfigError::ZeroThreads);
        }
        if self.limit == Some(0) {
            return Err(ConfigError::NoSamples);
        }
        let checks = [
            (
                "lr",
                "(0, 10]",
                self.sgd.learning_rate,
                self.sgd.learning_rate > 0.0 && self.sgd.learning_rate <= 10.0,
            ),
            ("momentum", "[0, 1)", self.sgd.momentum, (0.0..1.0).contains(&self.sgd.momentum)),
            ("weight-decay", "[0, 1)", self.sgd.weight_decay, (0.0..1.0).contains(&self.sgd.weight_decay)),
        ];
        for (name, range, value, ok) in checks {
            if !ok {
                return Err(ConfigError::Hyper { name, range, value });
            }
        }
        Ok(())
    }
}

/// One epoch's figures.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Wall time of training plus validation, seconds.
    pub seconds: f64,
    /// Mean training loss over the epoch's steps (weights changing as it goes).
    pub train_loss: f64,
    /// Training accuracy over the epoch's steps.
    pub train_accuracy: f64,
    /// Mean loss on the test set after the epoch.
    pub test_loss: f64,
    /// Accuracy on the test set after the epoch.
    pub test_accuracy: f64,
    /// Fingerprint of the master weights after the epoch ([`weight_hash`]).
    pub weight_hash: String,
    /// Nodes in the run (1 for a single process).
    pub nodes: u16,
    /// Mean UDP payload bytes the master sent to each node this epoch (0 in one process).
    pub bytes_to_node: u64,
    /// Mean UDP payload bytes each node sent to the master this epoch.
    pub bytes_from_node: u64,
    /// Nodes whose gradients were missing in some step of the epoch (their shard's samples were
    /// left out of those steps), space-separated.
    pub missing_nodes: String,
}

/// Told about progress as training runs.
pub trait Observer {
    /// An epoch with `steps` steps begins.
    fn epoch_started(&mut self, _epoch: u32, _steps: usize) {}
    /// One step finished.
    fn step_done(&mut self) {}
    /// An epoch finished.
    fn epoch_done(&mut self, _report: &EpochReport) {}
    /// The state after epoch `epoch`: master parameters and momentum as named tensors.
    fn checkpoint(&mut self, _epoch: u32, _tensors: Vec<Tensor>) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// A named parameter tensor of the trained model.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// `conv1.weight` and so on.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian values: `i32` Q7.24 for fixed point, `f32` for the reference.
    pub data: Vec<u8>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// Per-epoch figures.
    pub epochs: Vec<EpochReport>,
    /// The final master parameters.
    pub tensors: Vec<Tensor>,
}

/// Trains as configured on `data`.
pub fn train(
    config: &TrainConfig,
    data: &Mnist,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, ConfigError> {
    config.validate()?;
    Ok(match (config.model, config.arith) {
        (ModelKind::Mxlenet, ArithKind::Fixed) => Run::<MxLenet, Fixed>::new(config).train(data, observer),
        (ModelKind::Mxlenet, ArithKind::F32) => Run::<MxLenet, Float>::new(config).train(data, observer),
        (ModelKind::Lenet5, ArithKind::Fixed) => Run::<Lenet5, Fixed>::new(config).train(data, observer),
        (ModelKind::Lenet5, ArithKind::F32) => Run::<Lenet5, Float>::new(config).train(data, observer),
    })
}

struct Run<N: Network, A: Arith> {
    config: TrainConfig,
    sgd: A::Sgd,
    model: HeapModel<A>,
    /// One per thread.
    cores: Vec<HeapCore<A>>,
    /// The batch rows the threads share.
    rows: Vec<A::Val>,
    _net: core::marker::PhantomData<N>,
}

impl<N: Network, A: Arith> Run<N, A> {
    fn new(config: &TrainConfig) -> Self {
        let mut model = HeapModel::init::<N>(config.seed);
        if let Some(resume) = &config.resume {
            resume.apply::<N, A>(&mut model);
        }
        Run {
            config: config.clone(),
            sgd: A::sgd_constants(&config.sgd.into()),
            model,
            cores: (0..config.threads).map(|_| HeapCore::new::<N>()).collect(),
            rows: batch_rows::<N, A>(),
            _net: core::marker::PhantomData,
        }
    }

    fn train(mut self, data: &Mnist, observer: &mut dyn Observer) -> TrainOutcome {
        let train_set = self.config.training_set(data);
        let mut order = vec![0u32; train_set.len()];
        let mut epochs = Vec::new();
        let first = self.config.resume.as_ref().map_or(0, |r| r.epoch);
        for epoch in first..self.config.epochs {
            let started = Instant::now();
            epoch_order(self.config.seed, epoch, &mut order);
            observer.epoch_started(epoch + 1, order.len().div_ceil(self.config.batch));
            let mut train_stats = BatchStats::default();
            for batch in order.chunks(self.config.batch) {
                train_stats.merge(&self.step(&train_set, batch));
                observer.step_done();
            }
            let test_stats = self.evaluate(&data.test);
            let report = EpochReport {
                epoch: epoch + 1,
                seconds: started.elapsed().as_secs_f64(),
                train_loss: train_stats.mean_loss(),
                train_accuracy: train_stats.accuracy(),
                test_loss: test_stats.mean_loss(),
                test_accuracy: test_stats.accuracy(),
                weight_hash: format!("{:016x}", weight_hash::<A>(&self.model.master)),
                nodes: 1,
                bytes_to_node: 0,
                bytes_from_node: 0,
                missing_nodes: String::new(),
            };
            observer.epoch_done(&report);
            observer.checkpoint(epoch + 1, checkpoint_tensors::<N, A>(&self.model));
            epochs.push(report);
        }
        TrainOutcome { epochs, tensors: self.tensors() }
    }

    /// One synchronous step: the exact gradient of `batch` on the threads ([`batch_gradient`]), then
    /// one update.
    fn step(&mut self, set: &Split, batch: &[u32]) -> BatchStats {
        let weights = self.model.weights();
        let mut work: Vec<_> = self.cores.iter_mut().map(|core| core.work()).collect();
        let sample = |i: u32| set.sample(i as usize);
        let stats = batch_gradient::<N, A, _>(&Threads, weights, batch, &sample, &mut work, &mut self.rows);
        let grads = work.swap_remove(0).grads;
        self.model.update::<N>(&self.sgd, grads, batch.len() as u32);
        stats
    }

    fn evaluate(&mut self, set: &Split) -> BatchStats {
        evaluate_split::<N, A>(self.model.weights(), &mut self.cores, set)
    }

    fn tensors(&self) -> Vec<Tensor> {
        model_tensors::<N, A>(&self.model.master)
    }
}

/// Evaluates `set` on all `cores` (one thread each).
pub fn evaluate_split<N: Network, A: Arith>(
    weights: Weights<'_, A>,
    cores: &mut [HeapCore<A>],
    set: &Split,
) -> BatchStats {
    let all: Vec<u32> = (0..set.len() as u32).collect();
    on_threads(cores, &all, |core, share| {
        let (mut scratch, _) = core.split();
        evaluate::<N, A>(weights, share.iter().map(|&i| set.sample(i as usize)), &mut scratch)
    })
}

/// Master parameters and momentum (prefixed `momentum.`) as named tensors.
pub fn checkpoint_tensors<N: Network, A: Arith>(model: &HeapModel<A>) -> Vec<Tensor> {
    let mut tensors = model_tensors::<N, A>(&model.master);
    for mut t in model_tensors::<N, A>(&model.momentum) {
        t.name = format!("momentum.{}", t.name);
        tensors.push(t);
    }
    tensors
}

/// The master parameters as named tensors, for checkpoints.
pub fn model_tensors<N: Network, A: Arith>(master: &[A::Param]) -> Vec<Tensor> {
    let mut out = Vec::new();
    for layer in N::LAYERS {
        for (suffix, range, shape) in [
            ("weight", layer.weight_range(), layer.weight_shape.to_vec()),
            ("bias", layer.bias_range(), vec![layer.outputs()]),
        ] {
            let data = master[range].iter().flat_map(|&p| A::param_le_bytes(p)).collect();
            out.push(Tensor { name: format!("{}.{suffix}", layer.name), shape, data });
        }
    }
    out
}

/// Runs `work` on one thread per core, each with its contiguous share of `items`, and adds up the
/// statistics.
pub(crate) fn on_threads<C: Send, F>(cores: &mut [C], items: &[u32], work: F) -> BatchStats
where
    F: Fn(&mut C, &[u32]) -> BatchStats + Sync,
{
    let shares = share(items, cores.len());
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = cores
            .iter_mut()
            .zip(shares)
            .map(|(core, share)| scope.spawn(move || work(core, share)))
            .collect();
        let mut total = BatchStats::default();
        for handle in handles {
            total.merge(&handle.join().expect("a training thread panicked"));
        }
        total
    })
}

/// [`Cores`] as threads of this process: one item on the calling thread, each other on a thread
/// of its own.
pub(crate) struct Threads;

impl Cores for Threads {
    fn run<T: Send>(&self, items: impl Iterator<Item = T>, job: &(dyn Fn(usize, T) + Sync)) {
        std::thread::scope(|scope| {
            let mut items = items.enumerate();
            let here = items.next();
            let handles: Vec<_> = items.map(|(core, item)| scope.spawn(move || job(core, item))).collect();
            if let Some((core, item)) = here {
                job(core, item);
            }
            for handle in handles {
                handle.join().expect("a training thread panicked");
            }
        })
    }
}

/// Splits `items` into `parts` contiguous shares whose sizes differ by at most one.
pub fn share<T>(items: &[T], parts: usize) -> Vec<&[T]> {
    (0..parts).map(|k| &items[kernels::train::share_range(items.len(), parts, k)]).collect()
}
