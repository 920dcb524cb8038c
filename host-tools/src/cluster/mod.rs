//! Training on a cluster: the UDP master and its nodes (simulated on this machine for now).

pub mod control;
pub mod master;
pub mod qemu_nodes;
pub mod sim;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernels::heap::HeapCore;
use kernels::{Fixed, Lenet5, MxLenet, Network};
use protocol::auth::ClusterKey;
use protocol::fault::FaultConfig;
use protocol::node::{NodeConfig, NodeCounters};
use protocol::wire::{BatchMode, ShardLayout, ShardSpec};
use serde::Serialize;

use crate::mnist::Mnist;
use crate::trainer::{
    checkpoint_tensors, evaluate_split, model_tensors, ArithKind, ConfigError, EpochReport, ModelKind,
    Observer, TrainConfig, TrainOutcome,
};
use master::Master;
pub use sim::{KillPlan, MasterProgress, Revive};

/// How a cluster run is set up.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterConfig {
    /// Model, epochs, batch, optimizer, seed, limit; `threads` is the cores each simulated node uses.
    pub train: TrainConfig,
    /// Number of nodes.
    pub nodes: u16,
    /// Batch formation.
    #[serde(serialize_with = "lowercase_debug")]
    pub mode: BatchMode,
    /// How the training set is divided.
    #[serde(serialize_with = "lowercase_debug")]
    pub layout: ShardLayout,
    /// Local steps each node takes between synchronisations. 1: synchronous SGD, every step (in
    /// Global mode identical to one process). Above 1: nodes update their own copies and the master
    /// averages the changes (local SGD).
    pub sync_period: u32,
    /// A node whose gradient has not arrived this long after the step began is dropped.
    #[serde(skip)]
    pub step_deadline: Duration,
    /// How long to wait for all nodes to join.
    #[serde(skip)]
    pub join_timeout: Duration,
    /// When every node has been dropped, how long to wait for one to rejoin before giving up. Nodes
    /// rejoin after 30 s without word from the master, so this must be longer.
    #[serde(skip)]
    pub rejoin_timeout: Duration,
    /// Silence after which the last model chunk is sent again.
    #[serde(skip)]
    pub resend: Duration,
    /// The master pings a joined node it has said nothing to for this long, so that the node does
    /// not give up its session while the master waits for others.
    #[serde(skip)]
    pub keepalive: Duration,
    /// Silence from the master after which a simulated node joins again. Firmware nodes use
    /// `NodeConfig::new`'s 30 s; tests shorten it to show that the keepalive holds a node.
    #[serde(skip)]
    pub node_master_timeout: Duration,
    /// Silence after which a Nack is sent for an incomplete upload.
    #[serde(skip)]
    pub nack_delay: Duration,
    /// Faults the simulated nodes' transports inject (both directions).
    #[serde(skip)]
    pub faults: FaultConfig,
    /// A node to kill (and maybe revive): a simulated node's thread goes silent, a QEMU node's
    /// process is killed (see [`qemu_nodes`]).
    #[serde(skip)]
    pub kill: Option<KillPlan>,
    /// Run the nodes as QEMU raspi3b guests booting the firmware instead of simulated threads.
    #[serde(skip)]
    pub qemu: Option<qemu_nodes::QemuOptions>,
    /// Nodes started elsewhere (boards, or `pitrain node` processes) that reach the master at the
    /// cluster file's address with the cluster file's key; none are started here.
    #[serde(skip)]
    pub external: Option<ExternalNodes>,
    /// The control channel the master serves (`pitrain cluster status|stop|reboot`); see
    /// [`control::ControlServer`].
    #[serde(skip)]
    pub control: Option<Arc<control::ControlShared>>,
}

impl ClusterConfig {
    /// `nodes` simulated nodes in Global mode with the given training settings.
    pub fn new(train: TrainConfig, nodes: u16) -> Self {
        ClusterConfig {
            train,
            nodes,
            mode: BatchMode::Global,
            layout: ShardLayout::Contiguous,
            sync_period: 1,
            step_deadline: Duration::from_secs(10),
            join_timeout: Duration::from_secs(20),
            rejoin_timeout: Duration::from_secs(90),
            resend: Duration::from_millis(50),
            keepalive: Duration::from_secs(3),
            node_master_timeout: Duration::from_micros(NodeConfig::new(0).master_timeout_us),
            nack_delay: Duration::from_millis(20),
            faults: FaultConfig::default(),
            kill: None,
            qemu: None,
            external: None,
            control: None,
        }
    }
}

/// The socket a master for nodes started elsewhere listens on, and the key they hold.
#[derive(Clone)]
pub struct ExternalNodes {
    /// Bound to the master address and port of the cluster file (the nodes send there).
    socket: Arc<UdpSocket>,
    /// The cluster key.
    key: [u8; 32],
}

impl ExternalNodes {
    /// Listens on `address` for nodes holding `key`.
    pub fn listen(address: SocketAddr, key: [u8; 32]) -> Result<Self, ClusterError> {
        let socket = udp_socket(address).map_err(|source| ClusterError::Listen { address, source })?;
        Ok(ExternalNodes { socket: Arc::new(socket), key })
    }
}

impl core::fmt::Debug for ExternalNodes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The key stays out of logs and error messages.
        f.debug_struct("ExternalNodes").field("socket", &self.socket).finish_non_exhaustive()
    }
}

fn lowercase_debug<T: core::fmt::Debug, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:?}").to_lowercase())
}

/// Bytes and datagrams between the master and one node (UDP payloads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeTraffic {
    /// Master to node.
    pub bytes_to_node: u64,
    /// Node to master (accepted or not).
    pub bytes_from_node: u64,
    /// Datagrams master to node.
    pub datagrams_to_node: u64,
    /// Datagrams node to master.
    pub datagrams_from_node: u64,
    /// Steps this node contributed to.
    pub steps: u64,
    /// Times it joined.
    pub joins: u64,
}

/// A cluster run that could not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Settings a cluster cannot run.
    #[error("{0}")]
    Unsupported(String),
    /// Socket trouble.
    #[error("UDP socket: {0}")]
    Socket(std::io::Error),
    /// The master cannot listen where the cluster file says the nodes will send.
    #[error("cannot listen on {address} ({source}): the nodes send to the master address and port of the cluster file, so this machine must hold that address (check `ip -4 addr`) and the port must be free")]
    Listen {
        /// The cluster file's master address and port.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Nodes that never joined.
    #[error("nodes {missing:?} did not join in time")]
    JoinTimeout {
        /// Their ids.
        missing: Vec<u16>,
    },
    /// Every node was dropped and none came back.
    #[error("every node was dropped by step {step} and none rejoined within {waited:?}: check that they still run")]
    AllNodesLost {
        /// The step that could not run.
        step: u32,
        /// How long the master waited.
        waited: Duration,
    },
}

/// What a cluster run produced.
pub struct ClusterOutcome {
    /// Per-epoch figures and the final weights.
    pub outcome: TrainOutcome,
    /// Traffic per node over the whole run.
    pub traffic: Vec<NodeTraffic>,
    /// The nodes' own counters.
    pub node_counters: Vec<NodeCounters>,
    /// Set when the run was stopped on request before its last epoch ended.
    pub stopped: Option<Stopped>,
}

/// Where a run stopped on request (`pitrain cluster stop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Steps completed over the whole run (the last one fully, with every update applied).
    pub steps_done: u32,
    /// Steps per epoch.
    pub steps_per_epoch: u32,
    /// Epochs completed (their figures and checkpoints are written).
    pub epochs_done: u32,
}

/// Trains with a master and `config.nodes` simulated nodes on 127.0.0.1.
pub fn train_simulated(
    config: &ClusterConfig,
    data: &Mnist,
    observer: &mut dyn Observer,
) -> Result<ClusterOutcome, ClusterError> {
    config.train.validate()?;
    if config.train.arith != ArithKind::Fixed {
        return Err(ClusterError::Unsupported(
            "the f32 reference trains in one process only (use --local)".into(),
        ));
    }
    if config.nodes == 0 {
        return Err(ClusterError::Unsupported("--nodes must be at least 1".into()));
    }
    if config.sync_period == 0 || config.sync_period > u16::MAX as u32 {
        return Err(ClusterError::Unsupported(format!(
            "--sync-period must be in 1..=65535, got {}",
            config.sync_period
        )));
    }
    match config.train.model {
        ModelKind::Mxlenet => run::<MxLenet>(config, data, observer),
        ModelKind::Lenet5 => run::<Lenet5>(config, data, observer),
    }
}

fn run<N: Network>(
    config: &ClusterConfig,
    data: &Mnist,
    observer: &mut dyn Observer,
) -> Result<ClusterOutcome, ClusterError> {
    let train = config.train.training_set(data);
    let total = train.len() as u32;
    let (key_bytes, socket) = match &config.external {
        Some(e) => (e.key, e.socket.try_clone().map_err(ClusterError::Socket)?),
        None => (rand::random(), local_socket().map_err(ClusterError::Socket)?),
    };
    let key = ClusterKey(key_bytes);
    let address = socket.local_addr().map_err(ClusterError::Socket)?;
    let mut master = Master::<N>::new(config.clone(), key.clone(), socket, total)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let progress = MasterProgress::default();
    let max_batch = config.train.batch;
    let mut qemu = None;
    let mut nodes = Vec::new();
    match &config.qemu {
        Some(options) => {
            qemu = Some(qemu_nodes::QemuNodes::launch(config, options, data, key_bytes, address, &progress)?)
        }
        // They join by themselves.
        None if config.external.is_some() => {}
        None => {
            for id in 0..config.nodes {
                let spec = ShardSpec { total, nodes: config.nodes, index: id, layout: config.layout };
                let shard = sim::SimShard::<N>::new(spec, &train, config.train.threads);
                let node = sim::SimNode {
                    id,
                    key: key.clone(),
                    master: address,
                    max_batch,
                    faults: config.faults,
                    kill: config.kill,
                    progress: progress.clone(),
                    master_timeout: config.node_master_timeout,
                    shutdown: shutdown.clone(),
                };
                nodes.push(std::thread::spawn(move || sim::run_node::<N>(node, shard)));
            }
        }
    }
    drop(train);

    let result = drive(&mut master, config, data, &progress, observer);
    master.stop_all();
    if let Some(qemu) = qemu {
        // The firmware ends its QEMU run when the master says stop; stragglers are stopped.
        for (id, run) in qemu.shutdown(Duration::from_secs(20)).into_iter().enumerate() {
            if let Err(e) = run {
                eprintln!("QEMU node {id}: {e}");
            }
        }
    }
    // Nodes stop on the master's word; the flag catches any that missed it.
    std::thread::sleep(Duration::from_millis(50));
    shutdown.store(true, Ordering::Relaxed);
    let mut node_counters = Vec::new();
    for handle in nodes {
        if let Ok(Ok(c)) = handle.join() {
            node_counters.push(c);
        }
    }
    let (epochs, stopped) = result?;
    Ok(ClusterOutcome {
        outcome: TrainOutcome { epochs, tensors: model_tensors::<N, Fixed>(&master.model.master) },
        traffic: master.traffic(),
        node_counters,
        stopped,
    })
}

fn drive<N: Network>(
    master: &mut Master<N>,
    config: &ClusterConfig,
    data: &Mnist,
    progress: &MasterProgress,
    observer: &mut dyn Observer,
) -> Result<(Vec<EpochReport>, Option<Stopped>), ClusterError> {
    master.join(config.join_timeout)?;
    let schedule = master.schedule();
    let steps = schedule.syncs_per_epoch(config.sync_period);
    let first = config.train.resume.as_ref().map_or(0, |r| r.epoch);
    // A stop request is honoured between steps: the step under way is finished and applied, so the
    // weights written are those of a whole number of steps.
    let stopped =
        |done: u32, epochs_done: u32| Stopped { steps_done: done, steps_per_epoch: steps, epochs_done };
    if master.stop_requested() {
        return Ok((Vec::new(), Some(stopped(first * steps, first))));
    }
    let mut eval_cores: Vec<HeapCore<Fixed>> =
        (0..config.train.threads.max(1)).map(|_| HeapCore::new::<N>()).collect();
    let mut reports = Vec::new();
    for epoch in first..config.train.epochs {
        let started = Instant::now();
        let before = master.traffic();
        observer.epoch_started(epoch + 1, steps as usize);
        let mut stats = kernels::BatchStats::default();
        let mut missing_nodes: Vec<u16> = Vec::new();
        let mut stopped_after: Option<u32> = None;
        for t in 0..steps {
            progress.begin(epoch * steps + t);
            let outcome = master.step(epoch * steps + t)?;
            stats.merge(&outcome.stats);
            for id in outcome.missing {
                if !missing_nodes.contains(&id) {
                    missing_nodes.push(id);
                }
            }
            observer.step_done();
            if master.stop_requested() && (t + 1 < steps || epoch + 1 < config.train.epochs) {
                stopped_after = Some(t + 1);
                break;
            }
        }
        if let Some(done) = stopped_after.filter(|&done| done < steps) {
            return Ok((reports, Some(stopped(epoch * steps + done, epoch))));
        }
        reports.push(finish_epoch(
            master,
            config,
            data,
            observer,
            epoch,
            started,
            &before,
            stats,
            missing_nodes,
            &mut eval_cores,
        ));
        if stopped_after.is_some() {
            // The stop came with the epoch's last step: the epoch is reported and checkpointed.
            return Ok((reports, Some(stopped((epoch + 1) * steps, epoch + 1))));
        }
    }
    Ok((reports, None))
}

/// Validates the model after an epoch, reports the epoch and writes its checkpoint.
#[allow(clippy::too_many_arguments)]
fn finish_epoch<N: Network>(
    master: &mut Master<N>,
    config: &ClusterConfig,
    data: &Mnist,
    observer: &mut dyn Observer,
    epoch: u32,
    started: Instant,
    before: &[NodeTraffic],
    stats: kernels::BatchStats,
    missing_nodes: Vec<u16>,
    eval_cores: &mut [HeapCore<Fixed>],
) -> EpochReport {
    {
        let test = evaluate_split::<N, Fixed>(master.model.weights(), eval_cores, &data.test);
        let after = master.traffic();
        let n = config.nodes as u64;
        let to: u64 = after.iter().zip(before).map(|(a, b)| a.bytes_to_node - b.bytes_to_node).sum();
        let from: u64 = after.iter().zip(before).map(|(a, b)| a.bytes_from_node - b.bytes_from_node).sum();
        let report = EpochReport {
            epoch: epoch + 1,
            seconds: started.elapsed().as_secs_f64(),
            train_loss: stats.mean_loss(),
            train_accuracy: stats.accuracy(),
            test_loss: test.mean_loss(),
            test_accuracy: test.accuracy(),
            weight_hash: format!("{:016x}", kernels::train::weight_hash::<Fixed>(&master.model.master)),
            nodes: config.nodes,
            bytes_to_node: to / n,
            bytes_from_node: from / n,
            missing_nodes: missing_nodes.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "),
        };
        observer.epoch_done(&report);
        observer.checkpoint(epoch + 1, checkpoint_tensors::<N, Fixed>(&master.model));
        report
    }
}

/// Socket buffer size asked for: a whole gradient upload (about 1,300 datagrams of MxLenet) must fit
/// while the receiver is busy. The kernel caps it at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 8 << 20;

/// A UDP socket on an ephemeral 127.0.0.1 port with large buffers.
pub fn local_socket() -> std::io::Result<UdpSocket> {
    udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A UDP socket bound to `address`, with large buffers.
pub fn udp_socket(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: smaller buffers only cost retransmissions.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&address.into())?;
    Ok(socket.into())
}
