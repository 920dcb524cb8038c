//! Simulated nodes: the protocol's node state machine on host threads, each with its own UDP socket
//! on 127.0.0.1 and only its own shard of the data, talking to the master exactly as a board would.

use std::net::{SocketAddr, UdpSocket};

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernels::heap::{batch_rows, HeapCore};
use kernels::train::{batch_gradient, BatchStats};
use kernels::{Fixed, Network, Weights};
use protocol::auth::ClusterKey;
use protocol::fault::{FaultConfig, FaultyTransport};
use protocol::node::{Clock, Event, Node, NodeBuffers, NodeConfig, NodeCounters, Shard, Transport};
use protocol::wire::ShardSpec;
use sha2::{Digest, Sha256};

use crate::mnist::Split;
use crate::trainer::Threads;

/// A UDP socket connected to the master.
pub struct UdpTransport {
    socket: UdpSocket,
}

impl UdpTransport {
    /// A socket on an ephemeral port, connected to `master`: on 127.0.0.1 for a master on this
    /// machine, else on every interface. `recv` waits up to 1 ms.
    pub fn connect(master: SocketAddr) -> std::io::Result<Self> {
        let socket = if master.ip().is_loopback() {
            super::local_socket()?
        } else {
            super::udp_socket(SocketAddr::from(([0, 0, 0, 0], 0)))?
        };
        socket.connect(master)?;
        socket.set_read_timeout(Some(Duration::from_millis(1)))?;
        Ok(UdpTransport { socket })
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, datagram: &[u8]) {
        // Losses are the protocol's business: it repeats what matters.
        let _ = self.socket.send(datagram);
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.socket.recv(buf).ok()
    }
}

/// Microseconds since the node started.
pub struct StdClock(Instant);

impl Clock for StdClock {
    fn now_us(&mut self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// A node's own samples and the cores (threads) it computes on.
pub struct SimShard<N: Network> {
    spec: ShardSpec,
    data: Split,
    hash: u64,
    cores: Vec<HeapCore<Fixed>>,
    /// The batch rows the cores share.
    rows: Vec<i16>,
    _net: core::marker::PhantomData<N>,
}

impl<N: Network> SimShard<N> {
    /// Copies shard `spec` out of the whole training set (the node keeps only this copy), to compute
    /// on `cores` threads.
    pub fn new(spec: ShardSpec, train: &Split, cores: usize) -> Self {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for local in 0..spec.len() {
            let (image, label) = train.sample(spec.global_index(local) as usize);
            images.extend_from_slice(image);
            labels.push(label);
        }
        let mut hasher = Sha256::new();
        hasher.update(&images);
        hasher.update(&labels);
        let hash = u64::from_be_bytes(hasher.finalize()[..8].try_into().expect("8 bytes"));
        let cores = (0..cores.max(1)).map(|_| HeapCore::new::<N>()).collect();
        SimShard {
            spec,
            data: Split::new(images, labels),
            hash,
            cores,
            rows: batch_rows::<N, Fixed>(),
            _net: core::marker::PhantomData,
        }
    }
}

impl<N: Network> Shard for SimShard<N> {
    fn spec(&self) -> ShardSpec {
        self.spec
    }
    fn hash(&self) -> u64 {
        self.hash
    }
    fn cores(&self) -> u8 {
        self.cores.len() as u8
    }
    /// The exact gradient of `samples` on the shard's cores ([`batch_gradient`]), added into `grads`.
    fn gradient(&mut self, weights: Weights<'_, Fixed>, samples: &[u32], grads: &mut [i64]) -> BatchStats {
        let data = &self.data;
        let mut work: Vec<_> = self.cores.iter_mut().map(|core| core.work()).collect();
        let sample = |i: u32| data.sample(i as usize);
        let stats =
            batch_gradient::<N, Fixed, _>(&Threads, weights, samples, &sample, &mut work, &mut self.rows);
        kernels::simd::add_i64(grads, work[0].grads);
        stats
    }
}

/// When a simulated node dies, and whether it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillPlan {
    /// The node.
    pub node: u16,
    /// It goes silent right after computing this step.
    pub step: u32,
    /// When it boots again (with a new nonce, so it rejoins); `None`: it stays dead.
    pub revive: Option<Revive>,
}

/// When a killed simulated node boots again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revive {
    /// This long after it died: what a power cycle looks like.
    After(Duration),
    /// As soon as the master has begun this (global) step: the same moment in the training on any
    /// machine, however fast, which is what tests need.
    AtStep(u32),
}

/// The step the master is working on, published for simulated nodes that wait for a step to revive.
#[derive(Clone, Debug, Default)]
pub struct MasterProgress(Arc<AtomicU32>);

impl MasterProgress {
    /// Records that the master has begun `step`.
    pub fn begin(&self, step: u32) {
        self.0.store(step, Ordering::Relaxed);
    }

    /// The step the master began last.
    pub fn step(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a simulated node is told when it starts, besides its shard. (Not `Debug`: it holds the key.)
#[derive(Clone)]
pub struct SimNode {
    /// Its id.
    pub id: u16,
    /// The cluster key.
    pub key: ClusterKey,
    /// The master's socket.
    pub master: SocketAddr,
    /// The largest batch it may be asked to take.
    pub max_batch: usize,
    /// Faults its transport injects.
    pub faults: FaultConfig,
    /// The run's kill plan (it acts only if the plan names this node).
    pub kill: Option<KillPlan>,
    /// The master's progress, for a revival at a step.
    pub progress: MasterProgress,
    /// Silence from the master after which the node joins again (the firmware's is
    /// `NodeConfig::new`'s 30 s).
    pub master_timeout: Duration,
    /// Set when the run ends.
    pub shutdown: Arc<AtomicBool>,
}

/// Runs one simulated node until the master stops it or `shutdown` is set; returns its counters
/// (of its last life). A Reboot from the master starts a new life at once (after
/// [`SIMULATED_BOOT`]), as a kill plan's revival does.
pub fn run_node<N: Network>(node: SimNode, mut shard: SimShard<N>) -> std::io::Result<NodeCounters> {
    let kill = node.kill.filter(|k| k.node == node.id);
    let mut killed = false;
    loop {
        let life = live::<N>(&node, shard, if killed { None } else { kill })?;
        match life {
            Life::Ended(counters) => return Ok(counters),
            Life::Rebooted(s) => {
                // What a board does when the master says reboot: a new life with a new nonce,
                // after a moment for the "boot".
                std::thread::sleep(SIMULATED_BOOT);
                shard = s;
            }
            Life::Killed(s, counters) => {
                killed = true;
                let died = Instant::now();
                let revive = kill.and_then(|k| k.revive);
                // Silent until revival (or, if it stays dead, until the run ends).
                loop {
                    if node.shutdown.load(Ordering::Relaxed) {
                        return Ok(counters);
                    }
                    let due = match revive {
                        Some(Revive::After(pause)) => died.elapsed() >= pause,
                        Some(Revive::AtStep(step)) => node.progress.step() >= step,
                        None => false,
                    };
                    if due {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                shard = s;
            }
        }
    }
}

/// Runs a cluster file's node in this process, in place of its board: `placement` (from
/// [`ClusterFile::placement`](crate::cluster_file::ClusterFile::placement)) gives its shard of
/// `train` (the training set after the file's limit) and its key; the file gives the master and the
/// model. `threads` threads compute. Returns its counters when the master stops it or `shutdown`
/// is set.
pub fn run_file_node(
    file: &crate::cluster_file::ClusterFile,
    placement: &crate::shard::NodePlacement,
    train: &Split,
    threads: usize,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<NodeCounters> {
    let id = placement.node;
    let spec =
        ShardSpec { total: train.len() as u32, nodes: placement.nodes, index: id, layout: placement.layout };
    let node = SimNode {
        id,
        key: ClusterKey(placement.cluster_key),
        master: SocketAddr::from((file.master.address, file.master.port)),
        max_batch: file.training.batch,
        faults: FaultConfig::default(),
        kill: None,
        progress: MasterProgress::default(),
        master_timeout: Duration::from_micros(NodeConfig::new(id).master_timeout_us),
        shutdown,
    };
    match file.training.model {
        crate::trainer::ModelKind::Mxlenet => {
            run_node::<kernels::MxLenet>(node, SimShard::new(spec, train, threads))
        }
        crate::trainer::ModelKind::Lenet5 => {
            run_node::<kernels::Lenet5>(node, SimShard::new(spec, train, threads))
        }
    }
}

/// The version simulated nodes announce: pitrain's, major, minor and patch one byte each (the
/// firmware's rule), so `pitrain cluster status` shows which build simulates them.
pub const SIMULATOR_VERSION: u32 = {
    const fn number(s: &str) -> u32 {
        let b = s.as_bytes();
        let (mut v, mut i) = (0, 0);
        while i < b.len() {
            v = v * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        v
    }
    (number(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
        | (number(env!("CARGO_PKG_VERSION_MINOR")) << 8)
        | number(env!("CARGO_PKG_VERSION_PATCH"))
};

/// How long a simulated node takes to "boot" after a reboot.
const SIMULATED_BOOT: Duration = Duration::from_millis(200);

enum Life<N: Network> {
    Ended(NodeCounters),
    /// The master said reboot.
    Rebooted(SimShard<N>),
    Killed(SimShard<N>, NodeCounters),
}

/// One boot of a node: fresh buffers, socket and nonce.
fn live<N: Network>(sim: &SimNode, shard: SimShard<N>, kill: Option<KillPlan>) -> std::io::Result<Life<N>> {
    let sizes = NodeBuffers::sizes::<N>(shard.spec().total as usize, sim.max_batch);
    let mut master_params = vec![0i32; sizes.params];
    let mut working = vec![0i16; sizes.params];
    let mut grads = vec![0i64; sizes.params];
    let mut momentum = vec![0i32; sizes.params];
    let mut base = vec![0i32; sizes.params];
    let mut model = vec![0u8; sizes.model];
    let mut model_bitmap = vec![0u8; sizes.model_bitmap];
    let mut upload = vec![0u8; sizes.upload];
    let mut order = vec![0u32; sizes.order];
    let mut samples = vec![0u32; sizes.samples];
    let buffers = NodeBuffers {
        master: &mut master_params,
        working: &mut working,
        grads: &mut grads,
        momentum: &mut momentum,
        base: &mut base,
        model: &mut model,
        model_bitmap: &mut model_bitmap,
        upload: &mut upload,
        order: &mut order,
        samples: &mut samples,
    };
    let faults = FaultConfig {
        seed: sim.faults.seed ^ ((sim.id as u64 + 1) << 32) ^ rand::random::<u32>() as u64,
        ..sim.faults
    };
    let transport = FaultyTransport::new(UdpTransport::connect(sim.master)?, faults);
    let config = NodeConfig {
        firmware_version: SIMULATOR_VERSION,
        master_timeout_us: sim.master_timeout.as_micros() as u64,
        ..NodeConfig::new(sim.id)
    };
    let mut node: Node<'_, N, _, _, _> = Node::new(
        config,
        sim.key.clone(),
        transport,
        StdClock(Instant::now()),
        shard,
        buffers,
        rand::random(),
    );
    while !sim.shutdown.load(Ordering::Relaxed) {
        match node.poll() {
            Event::Stopped => break,
            Event::Reboot => return Ok(Life::Rebooted(node.into_shard())),
            Event::Computed { step, .. } if kill.is_some_and(|k| step >= k.step) => {
                let counters = node.counters();
                return Ok(Life::Killed(node.into_shard(), counters));
            }
            _ => {}
        }
    }
    Ok(Life::Ended(node.counters()))
}
