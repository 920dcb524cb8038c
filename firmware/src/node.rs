//! The node's part in cluster training: the protocol's node state machine (the same code the
//! simulated nodes run) over the network, with the blob's shard computed on all cores.

use core::sync::atomic::{AtomicU64, Ordering};
use kernels::train::{BatchStats, CoreState};
use kernels::{Fixed, Lenet5, MxLenet, Network, Weights};
use protocol::auth::ClusterKey;
use protocol::blob::{Blob, Settings};
use protocol::node::{Clock, Event, Node, NodeBuffers, NodeConfig, Shard, Transport};
use protocol::wire::{ModelId, ShardSpec};

use spin::Mutex;
use static_cell::ConstStaticCell;

use crate::arch::aarch64::timer::GenericTimer;
use crate::smp::CORES;
use crate::training::{
    batch_gradient_on_cores, LENET5_CORES, LENET5_ROWS, MAX_SAMPLES, MXLENET_CORES, MXLENET_ROWS,
};

/// The largest batch a node takes per step.
pub const MAX_BATCH: usize = 1024;

/// Buffer sizes for the larger model; LeNet-5 uses the front of each.
const SIZES: protocol::node::BufferSizes = NodeBuffers::sizes::<MxLenet>(MAX_SAMPLES, MAX_BATCH);

static MASTER: ConstStaticCell<[i32; SIZES.params]> = ConstStaticCell::new([0; SIZES.params]);
static WORKING: ConstStaticCell<[i16; SIZES.params]> = ConstStaticCell::new([0; SIZES.params]);
static GRADS: ConstStaticCell<[i64; SIZES.params]> = ConstStaticCell::new([0; SIZES.params]);
static MOMENTUM: ConstStaticCell<[i32; SIZES.params]> = ConstStaticCell::new([0; SIZES.params]);
static BASE: ConstStaticCell<[i32; SIZES.params]> = ConstStaticCell::new([0; SIZES.params]);
static MODEL: ConstStaticCell<[u8; SIZES.model]> = ConstStaticCell::new([0; SIZES.model]);
static MODEL_BITMAP: ConstStaticCell<[u8; SIZES.model_bitmap]> =
    ConstStaticCell::new([0; SIZES.model_bitmap]);
static UPLOAD: ConstStaticCell<[u8; SIZES.upload]> = ConstStaticCell::new([0; SIZES.upload]);
static ORDER: ConstStaticCell<[u32; SIZES.order]> = ConstStaticCell::new([0; SIZES.order]);
static SAMPLES: ConstStaticCell<[u32; SIZES.samples]> = ConstStaticCell::new([0; SIZES.samples]);

/// Why the node cannot take part.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub enum NodeError {
    /// The blob's batch is larger than [`MAX_BATCH`].
    BatchTooLarge,
    /// The shard is larger than the firmware's buffers.
    ShardTooLarge,
}

/// The blob's shard, computed on `cores` cores.
struct BlobShard<
    'b,
    N: Network,
    const P: usize,
    const V: usize,
    const C: usize,
    const I: usize,
    const R: usize,
> {
    blob: &'b Blob<&'b [u8]>,
    spec: ShardSpec,
    cores: usize,
    states: &'static [Mutex<CoreState<Fixed, P, V, C, I>>; CORES],
    rows: &'static Mutex<[i16; R]>,
    _net: core::marker::PhantomData<N>,
}

impl<N: Network, const P: usize, const V: usize, const C: usize, const I: usize, const R: usize> Shard
    for BlobShard<'_, N, P, V, C, I, R>
{
    fn spec(&self) -> ShardSpec {
        self.spec
    }
    fn hash(&self) -> u64 {
        self.blob.shard_hash()
    }
    fn cores(&self) -> u8 {
        self.cores as u8
    }
    fn gradient(&mut self, weights: Weights<'_, Fixed>, samples: &[u32], grads: &mut [i64]) -> BatchStats {
        let started = crate::arch::aarch64::pmu::cycles();
        let per_core = batch_gradient_on_cores::<N, P, V, C, I, R>(
            weights,
            self.blob,
            samples,
            self.cores,
            self.states,
            self.rows,
        );
        kernels::simd::add_i64(grads, &self.states[0].lock().grads);
        let mut stats = BatchStats::default();
        for s in &per_core {
            stats.merge(s);
        }
        COMPUTING.fetch_add(crate::arch::aarch64::pmu::cycles().wrapping_sub(started), Ordering::Relaxed);
        stats
    }
}

/// PMU cycles spent computing gradients (under QEMU -icount: instructions of all cores), so that
/// the node's total can be split into training and everything else (network, protocol, waiting).
static COMPUTING: AtomicU64 = AtomicU64::new(0);

/// The generic timer as the protocol's clock.
struct TimerClock(GenericTimer);

impl Clock for TimerClock {
    fn now_us(&mut self) -> u64 {
        self.0.now_us()
    }
}

/// How the node's part ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The master said stop: the run is over.
    Stopped,
    /// The master said reboot: the caller reboots the board (through the watchdog).
    Reboot,
}

/// Runs the node until the master stops it or asks for a reboot. `mac` is announced in Hello.
pub fn run(
    blob: &Blob<&[u8]>,
    cores: usize,
    transport: impl Transport,
    entropy: u64,
    mac: [u8; 6],
) -> Result<Outcome, NodeError> {
    let settings = blob.settings();
    if settings.batch as usize > MAX_BATCH {
        return Err(NodeError::BatchTooLarge);
    }
    if settings.shard_total as usize > MAX_SAMPLES {
        return Err(NodeError::ShardTooLarge);
    }
    Ok(match settings.model {
        ModelId::MxLenet => {
            let statics = (&MXLENET_CORES, &MXLENET_ROWS);
            run_model::<MxLenet, _, _, _, _, _>(blob, &settings, cores, statics, transport, entropy, mac)
        }
        ModelId::Lenet5 => {
            let statics = (&LENET5_CORES, &LENET5_ROWS);
            run_model::<Lenet5, _, _, _, _, _>(blob, &settings, cores, statics, transport, entropy, mac)
        }
    })
}

/// A model's per-core states and the batch rows its cores share.
type CoreStatics<const P: usize, const V: usize, const C: usize, const I: usize, const R: usize> =
    (&'static [Mutex<CoreState<Fixed, P, V, C, I>>; CORES], &'static Mutex<[i16; R]>);

fn run_model<N: Network, const P: usize, const V: usize, const C: usize, const I: usize, const R: usize>(
    blob: &Blob<&[u8]>,
    settings: &Settings,
    cores: usize,
    (states, rows): CoreStatics<P, V, C, I, R>,
    transport: impl Transport,
    entropy: u64,
    mac: [u8; 6],
) -> Outcome {
    let spec = ShardSpec {
        total: settings.shard_total,
        nodes: settings.nodes,
        index: settings.node_id,
        layout: settings.shard_layout,
    };
    let shard =
        BlobShard::<N, P, V, C, I, R> { blob, spec, cores, states, rows, _net: core::marker::PhantomData };
    let sizes = NodeBuffers::sizes::<N>(settings.shard_total as usize, settings.batch as usize);
    let buffers = NodeBuffers {
        master: &mut MASTER.take()[..sizes.params],
        working: &mut WORKING.take()[..sizes.params],
        grads: &mut GRADS.take()[..sizes.params],
        momentum: &mut MOMENTUM.take()[..sizes.params],
        base: &mut BASE.take()[..sizes.params],
        model: &mut MODEL.take()[..sizes.model],
        model_bitmap: &mut MODEL_BITMAP.take()[..sizes.model_bitmap],
        upload: &mut UPLOAD.take()[..sizes.upload],
        order: &mut ORDER.take()[..sizes.order],
        samples: &mut SAMPLES.take()[..sizes.samples],
    };
    let config = NodeConfig { firmware_version: FIRMWARE_VERSION, mac, ..NodeConfig::new(settings.node_id) };
    let key = ClusterKey(settings.cluster_key);
    let mut node: Node<'_, N, _, _, _> =
        Node::new(config, key, transport, TimerClock(GenericTimer::new()), shard, buffers, entropy);
    defmt::info!("node {=u16}: joining the master", settings.node_id);
    // Under QEMU -icount shift=0,sleep=off this counts the guest's instructions (all cores).
    crate::arch::aarch64::pmu::start_cycle_counter();
    let waited_before = crate::drivers::dwc2::waiting_cycles();
    loop {
        match node.poll() {
            Event::Joined => defmt::info!("node {=u16}: joined", settings.node_id),
            Event::Computed { step, samples } => {
                defmt::debug!("step {=u32}: {=u32} samples", step, samples)
            }
            Event::Stopped => {
                let c = node.counters();
                defmt::info!(
                    "node {=u16}: {=u64} PMU cycles since joining (instructions under QEMU -icount): {=u64} computing gradients, {=u64} waiting for the USB controller",
                    settings.node_id,
                    crate::arch::aarch64::pmu::cycles(),
                    COMPUTING.load(Ordering::Relaxed),
                    crate::drivers::dwc2::waiting_cycles().wrapping_sub(waited_before)
                );
                defmt::info!(
                    "node {=u16}: stopped by the master after {=u64} steps; datagrams sent {=u64} ({=u64} bytes), accepted {=u64}, {=u64} bytes received",
                    settings.node_id,
                    c.steps,
                    c.sent,
                    c.bytes_sent,
                    c.accepted,
                    c.bytes_received
                );
                return Outcome::Stopped;
            }
            Event::Reboot => {
                defmt::info!(
                    "node {=u16}: the master asked for a reboot after {=u64} steps",
                    settings.node_id,
                    node.counters().steps
                );
                return Outcome::Reboot;
            }
            _ => {}
        }
    }
}

/// The version announced in Hello: major, minor, patch of the crate, one byte each.
const FIRMWARE_VERSION: u32 = {
    const fn digit(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut v = 0;
        let mut i = 0;
        while i < b.len() {
            v = v * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        v
    }
    (digit(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
        | (digit(env!("CARGO_PKG_VERSION_MINOR")) << 8)
        | digit(env!("CARGO_PKG_VERSION_PATCH"))
};
