//! The parameter-server master: synchronous data-parallel SGD over UDP.
//!
//! Each step the master sends the model (working weights and biases) to every live node, collects
//! each node's exact gradient sums, adds them in node order, and applies one update. In Global mode the
//! nodes' sums are the single-process batch gradient, so the weights are bit-identical to
//! `pitrain train` in one process whatever the node count.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernels::heap::HeapModel;
use kernels::train::BatchStats;
use kernels::{Fixed, Network};
use protocol::auth::{ClusterKey, RejectCounts, Rejection, ReplayWindow};
use protocol::codec::{decode_gradient, encode_model, encode_state, max_gradient_len, model_len, state_len};
use protocol::node::{is_last, model_id, upload_transfer};
use protocol::schedule::Schedule;
use protocol::transfer::{bitmap_len, chunk_count, Outgoing, Reassembly, Received, NACK_SPAN};
use protocol::wire::{
    Assignment, Chunk, Command, Content, Header, Hello, Message, Nack, ShardSpec, MASTER_ID, MAX_DATAGRAM,
};

use super::control::{mac_text, version_text, ControlShared, NodeView, Snapshot};
use super::{ClusterConfig, ClusterError, NodeTraffic};

/// Hellos remembered per node, to refuse replayed ones.
const REMEMBERED_NONCES: usize = 16;
/// How long a Reboot is repeated until the node joins again. A node that is computing does not read
/// its NIC, and QEMU's usb-net (like a busy board's) keeps only a frame or two, so a few quick
/// repeats can all be lost; a node that rebooted and joined again (new token) gets none of them.
const REBOOT_PERSIST: Duration = Duration::from_secs(60);
/// Time between the repeats of a Reboot.
const REBOOT_REPEAT: Duration = Duration::from_millis(200);
/// A datagram from a node told to reboot shows it is reading its NIC now: the Reboot goes again at
/// once, but not more often than this.
const REBOOT_ECHO: Duration = Duration::from_millis(20);
/// Time between snapshots for the control channel.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// A Reboot sent to a node that has not joined again yet.
#[derive(Clone, Copy, Debug)]
struct PendingReboot {
    /// The session it was sent in; a new join changes it.
    token: u32,
    first: Instant,
    last: Instant,
}

/// Which missing chunks of an upload a Nack asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holes {
    /// Every one (the last chunk has arrived, so the rest are lost).
    All,
    /// Those before the highest chunk received.
    BeforeHighest,
}

/// What the master knows of one node.
struct Peer {
    id: u16,
    addr: Option<SocketAddr>,
    token: u32,
    nonce: u64,
    old_nonces: VecDeque<u64>,
    window: ReplayWindow,
    shard: Option<ShardSpec>,
    alive: bool,
    model_acked: bool,
    last_model_activity: Instant,
    upload: Reassembly<Vec<u8>>,
    last_upload_chunk: Instant,
    grads: Vec<i64>,
    stats: Option<BatchStats>,
    traffic: NodeTraffic,
    /// The Hello of its current life, and when it came.
    hello: Option<(Hello, Instant)>,
    /// Last authenticated datagram from it.
    last_heard: Option<Instant>,
    /// Last datagram sent to it.
    last_sent: Option<Instant>,
    reboot: Option<PendingReboot>,
    /// Told to stop at the end of the run.
    stopped: bool,
}

/// Result of one step.
pub struct StepOutcome {
    /// Training statistics over the samples that were included.
    pub stats: BatchStats,
    /// Nodes whose gradient was missing (dead or too late).
    pub missing: Vec<u16>,
}

/// The master's state.
pub struct Master<N: Network> {
    config: ClusterConfig,
    key: ClusterKey,
    socket: UdpSocket,
    sequence: u64,
    peers: Vec<Peer>,
    /// The model.
    pub model: HeapModel<Fixed>,
    sgd: <Fixed as kernels::Arith>::Sgd,
    model_bytes: Vec<u8>,
    /// True once the first step began (a node joining later gets the current model at once).
    started: bool,
    step: u32,
    total: u32,
    /// Datagrams refused, by reason.
    pub rejected: RejectCounts,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// The control channel, if the run has one.
    control: Option<Arc<ControlShared>>,
    last_publish: Option<Instant>,
    _net: core::marker::PhantomData<N>,
}

impl<N: Network> Master<N> {
    /// A master bound to `socket`, for a training set of `total` samples.
    pub fn new(
        config: ClusterConfig,
        key: ClusterKey,
        socket: UdpSocket,
        total: u32,
    ) -> Result<Self, ClusterError> {
        socket.set_read_timeout(Some(Duration::from_millis(1))).map_err(ClusterError::Socket)?;
        let now = Instant::now();
        let peers = (0..config.nodes)
            .map(|id| Peer {
                id,
                addr: None,
                token: 0,
                nonce: 0,
                old_nonces: VecDeque::new(),
                window: ReplayWindow::default(),
                shard: None,
                alive: false,
                model_acked: true,
                last_model_activity: now,
                upload: Reassembly::new(
                    vec![0u8; max_gradient_len(N::PARAMS)],
                    vec![0u8; bitmap_len(max_gradient_len(N::PARAMS))],
                ),
                last_upload_chunk: now,
                grads: vec![0; N::PARAMS],
                stats: None,
                traffic: NodeTraffic::default(),
                hello: None,
                last_heard: None,
                last_sent: None,
                reboot: None,
                stopped: false,
            })
            .collect();
        let sgd = <Fixed as kernels::Arith>::sgd_constants(&config.train.sgd.into());
        let payload_len = if config.sync_period > 1 { state_len::<N>() } else { model_len::<N>() };
        let mut model = HeapModel::<Fixed>::init::<N>(config.train.seed);
        if let Some(resume) = &config.train.resume {
            resume.apply::<N, Fixed>(&mut model);
        }
        let control = config.control.clone();
        let mut master = Master {
            config,
            key,
            socket,
            sequence: 0,
            peers,
            model,
            sgd,
            model_bytes: vec![0; payload_len],
            started: false,
            step: 0,
            total,
            rejected: RejectCounts::default(),
            rx: vec![0; 65536],
            tx: vec![0; MAX_DATAGRAM],
            control: None,
            last_publish: None,
            _net: core::marker::PhantomData,
        };
        master.control = control;
        master.publish();
        Ok(master)
    }

    /// True once `pitrain cluster stop` (or [`ControlShared::request_stop`]) asked the run to stop.
    pub fn stop_requested(&self) -> bool {
        self.control.as_ref().is_some_and(|c| c.stop_requested())
    }

    /// Publishes the nodes' state for the control channel.
    pub fn publish(&mut self) {
        let Some(control) = &self.control else { return };
        let now = Instant::now();
        self.last_publish = Some(now);
        let nodes = self
            .peers
            .iter()
            .map(|p| {
                let state = if p.stopped {
                    "stopped"
                } else if p.reboot.is_some() {
                    "rebooting"
                } else if p.alive {
                    if self.started {
                        "training"
                    } else {
                        "joined"
                    }
                } else if p.hello.is_some() {
                    "dropped"
                } else {
                    "waiting"
                };
                let hello = p.hello.map(|(h, _)| h);
                NodeView {
                    id: p.id,
                    state: state.into(),
                    firmware: hello.map(|h| version_text(h.firmware_version)),
                    address: p.addr.map(|a| a.to_string()),
                    mac: hello.and_then(|h| mac_text(h.mac)),
                    cores: hello.map(|h| h.cores),
                    shard_samples: hello.map(|h| h.shard.len()),
                    shard_hash: hello.map(|h| format!("{:016x}", h.shard_hash)),
                    uptime_s: p
                        .hello
                        .map(|(h, at)| h.uptime_ms as f64 / 1000.0 + now.duration_since(at).as_secs_f64()),
                    last_heard_s: p.last_heard.map(|t| now.duration_since(t).as_secs_f64()),
                    joins: p.traffic.joins,
                    steps: p.traffic.steps,
                }
            })
            .collect();
        let schedule = self.schedule();
        control.publish(Snapshot {
            model: N::NAME.to_string(),
            steps_per_epoch: schedule.syncs_per_epoch(self.config.sync_period),
            epochs: self.config.train.epochs,
            step: self.started.then_some(self.step),
            nodes,
            taken: None,
        });
    }

    /// Carries out reboot requests, repeats Reboots not yet obeyed, and publishes a snapshot now
    /// and then. Called from every receive loop, so requests are served within milliseconds.
    fn serve_control(&mut self) {
        let Some(control) = self.control.clone() else { return };
        for request in control.take_reboots() {
            match request {
                Some(id) => self.reboot(id),
                None => (0..self.config.nodes).for_each(|id| self.reboot(id)),
            }
        }
        let now = Instant::now();
        for id in 0..self.config.nodes {
            self.repeat_reboot(id, now, REBOOT_REPEAT);
        }
        if self.last_publish.is_none_or(|t| now.duration_since(t) >= PUBLISH_EVERY) {
            self.publish();
        }
    }

    /// Pings every joined node the master has said nothing to for `config.keepalive`. A node
    /// joins again after 30 s without a word from the master (`NodeConfig::master_timeout_us`), and
    /// in normal operation the master can be silent towards a node for longer than that: while it
    /// waits for the other nodes (up to the step deadline, 120 s with QEMU nodes), for the last node
    /// to join, or for a dropped node to come back. Without the ping such a node would give up its
    /// session and lose its place in the step.
    fn keep_alive(&mut self, now: Instant) {
        for id in 0..self.config.nodes {
            let p = &self.peers[id as usize];
            let quiet = p.last_sent.is_none_or(|t| now.duration_since(t) >= self.config.keepalive);
            if p.alive && p.reboot.is_none() && !p.stopped && quiet {
                let token = p.token;
                self.send_to(id, token, &Message::Ping { nonce: self.sequence + 1 });
            }
        }
    }

    /// Sends node `id` its pending Reboot again if the last one is `gap` old.
    fn repeat_reboot(&mut self, id: u16, now: Instant, gap: Duration) {
        let p = &self.peers[id as usize];
        let Some(r) = p.reboot else { return };
        if r.token == p.token
            && now.duration_since(r.first) < REBOOT_PERSIST
            && now.duration_since(r.last) >= gap
        {
            self.send_to(id, r.token, &Message::Control(Command::Reboot));
            self.peers[id as usize].reboot = Some(PendingReboot { last: now, ..r });
        }
    }

    /// Tells node `id` to reboot. It counts as gone at once, so the current step does not wait for
    /// it; it comes back with a new Hello and gets the current model.
    fn reboot(&mut self, id: u16) {
        let p = &mut self.peers[id as usize];
        // A node that never joined cannot be reached (its address is unknown).
        if p.addr.is_none() {
            return;
        }
        p.alive = false;
        let token = p.token;
        let now = Instant::now();
        p.reboot = Some(PendingReboot { token, first: now, last: now });
        self.send_to(id, token, &Message::Control(Command::Reboot));
        self.publish();
    }

    /// The schedule every node follows.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            mode: self.config.mode,
            batch: self.config.train.batch as u32,
            total: self.total,
            nodes: self.config.nodes,
            seed: self.config.train.seed,
        }
    }

    /// Traffic per node so far.
    pub fn traffic(&self) -> Vec<NodeTraffic> {
        self.peers.iter().map(|p| p.traffic).collect()
    }

    /// Waits until every node has joined.
    pub fn join(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        while self.peers.iter().any(|p| !p.alive) {
            if self.stop_requested() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let missing = self.peers.iter().filter(|p| !p.alive).map(|p| p.id).collect();
                return Err(ClusterError::JoinTimeout { missing });
            }
            self.receive_once();
        }
        Ok(())
    }

    fn send_to(&mut self, id: u16, session: u32, message: &Message<'_>) {
        let Some(addr) = self.peers[id as usize].addr else { return };
        self.sequence += 1;
        let header =
            Header { kind: message.kind() as u8, session, sender: MASTER_ID, sequence: self.sequence };
        if let Ok(n) = self.key.seal(&header, message, &mut self.tx) {
            // A full socket buffer loses the datagram; the protocol repeats what matters.
            let _ = self.socket.send_to(&self.tx[..n], addr);
            self.peers[id as usize].last_sent = Some(Instant::now());
            self.peers[id as usize].traffic.bytes_to_node += n as u64;
            self.peers[id as usize].traffic.datagrams_to_node += 1;
        }
    }

    fn send_model_chunk(&mut self, id: u16, index: u16) {
        let token = self.peers[id as usize].token;
        let bytes = std::mem::take(&mut self.model_bytes);
        let out = Outgoing::new(upload_transfer(self.step), Content::Model, self.step, &bytes);
        self.send_to(id, token, &Message::Chunk(out.chunk(index)));
        self.model_bytes = bytes;
    }

    fn send_model(&mut self, id: u16) {
        let count = chunk_count(self.model_bytes.len()) as u16;
        for i in 0..count {
            self.send_model_chunk(id, i);
        }
        let p = &mut self.peers[id as usize];
        p.model_acked = false;
        p.last_model_activity = Instant::now();
    }

    /// Runs step `step`: broadcast, collect, aggregate, update. When every node has been dropped it
    /// first waits for one to rejoin, rather than run steps that nobody computes.
    pub fn step(&mut self, step: u32) -> Result<StepOutcome, ClusterError> {
        self.step = step;
        self.started = true;
        self.publish();
        if !self.peers.iter().any(|p| p.alive) {
            let waited = Instant::now();
            while !self.peers.iter().any(|p| p.alive) {
                if self.stop_requested() {
                    // Nothing to compute with; the caller ends the run after this empty step.
                    return Ok(StepOutcome {
                        stats: BatchStats::default(),
                        missing: self.peers.iter().map(|p| p.id).collect(),
                    });
                }
                if waited.elapsed() > self.config.rejoin_timeout {
                    return Err(ClusterError::AllNodesLost { step, waited: self.config.rejoin_timeout });
                }
                self.receive_once();
            }
        }
        let n = if self.config.sync_period > 1 {
            encode_state(&self.model.master, &mut self.model_bytes)
        } else {
            encode_model::<N>(&self.model.working, &self.model.master, &mut self.model_bytes)
        };
        debug_assert_eq!(n, self.model_bytes.len());
        for id in 0..self.config.nodes {
            let p = &mut self.peers[id as usize];
            p.stats = None;
            p.upload.reset();
            if p.alive {
                self.send_model(id);
            }
        }
        let started = Instant::now();
        loop {
            if self.peers.iter().all(|p| !p.alive || p.stats.is_some()) {
                break;
            }
            if started.elapsed() > self.config.step_deadline {
                for p in self.peers.iter_mut().filter(|p| p.alive && p.stats.is_none()) {
                    p.alive = false;
                }
                break;
            }
            self.receive_once();
            self.timers();
        }
        // Exact aggregation in node order.
        let mut total = BatchStats::default();
        let mut missing = Vec::new();
        let mut sum = vec![0i64; N::PARAMS];
        for p in &self.peers {
            match &p.stats {
                Some(s) => {
                    total.merge(s);
                    for (a, &g) in sum.iter_mut().zip(&p.grads) {
                        *a += g;
                    }
                }
                None => missing.push(p.id),
            }
        }
        let contributors = (self.peers.len() - missing.len()) as i64;
        if self.config.sync_period > 1 {
            // Model averaging: the mean of the nodes' parameter changes, rounded once.
            if contributors > 0 {
                let mut master = self.model.master.clone();
                for (m, &d) in master.iter_mut().zip(&sum) {
                    *m = kernels::fixed::saturate_i32(*m as i64 + kernels::fixed::div_round(d, contributors));
                }
                let momentum = self.model.momentum.clone();
                self.model.restore::<N>(&master, &momentum);
            }
        } else if total.samples > 0 {
            self.model.update::<N>(&self.sgd, &sum, total.samples as u32);
        }
        for p in self.peers.iter_mut().filter(|p| p.stats.is_some()) {
            p.traffic.steps += 1;
        }
        Ok(StepOutcome { stats: total, missing })
    }

    /// Tells every node to stop.
    pub fn stop_all(&mut self) {
        // Spread over a quarter second: a NIC that is still busy (QEMU's usb-net takes one frame at a
        // time) drops a burst, and a Stop lost would leave a node waiting for the next step.
        for round in 0..5 {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            for id in 0..self.config.nodes {
                if self.peers[id as usize].addr.is_some() {
                    let token = self.peers[id as usize].token;
                    self.send_to(id, token, &Message::Control(Command::Stop));
                    self.peers[id as usize].stopped = true;
                }
            }
        }
        self.publish();
    }

    fn timers(&mut self) {
        let now = Instant::now();
        for id in 0..self.config.nodes {
            let p = &self.peers[id as usize];
            if !p.alive {
                continue;
            }
            if !p.model_acked && now.duration_since(p.last_model_activity) >= self.config.resend {
                let last = chunk_count(self.model_bytes.len()) as u16 - 1;
                self.send_model_chunk(id, last);
                self.peers[id as usize].last_model_activity = now;
            }
            let p = &self.peers[id as usize];
            if p.stats.is_none()
                && p.upload.current().is_some()
                && now.duration_since(p.last_upload_chunk) >= self.config.nack_delay
            {
                // Holes only: a slow node may still be sending the rest of its burst, and asking
                // for that too would only queue it twice. A lost tail shows when the node repeats
                // its last chunk.
                self.send_upload_nack(id, Holes::BeforeHighest);
                self.peers[id as usize].last_upload_chunk = now;
            }
        }
    }

    fn send_upload_nack(&mut self, id: u16, holes: Holes) {
        let mut scratch = [0u8; NACK_SPAN / 8];
        let upload = &self.peers[id as usize].upload;
        let nack = match holes {
            Holes::All => upload.nack(&mut scratch),
            Holes::BeforeHighest => upload.gaps(&mut scratch),
        };
        if let Some(nack) = nack {
            let (transfer, base, missing) = (nack.transfer, nack.base, nack.missing.to_vec());
            let token = self.peers[id as usize].token;
            self.send_to(id, token, &Message::Nack(Nack { transfer, base, missing: &missing }));
        }
    }

    fn receive_once(&mut self) {
        let mut rx = std::mem::take(&mut self.rx);
        if let Ok((n, from)) = self.socket.recv_from(&mut rx) {
            if let Err(r) = self.handle(&rx[..n], from) {
                self.rejected.count(r);
            }
        }
        self.rx = rx;
        self.keep_alive(Instant::now());
        self.serve_control();
    }

    fn handle(&mut self, bytes: &[u8], from: SocketAddr) -> Result<(), Rejection> {
        let (header, message) = self.key.open(bytes)?;
        let id = header.sender;
        if id >= self.config.nodes {
            return Err(Rejection::Unexpected);
        }
        self.peers[id as usize].traffic.bytes_from_node += bytes.len() as u64;
        self.peers[id as usize].traffic.datagrams_from_node += 1;
        self.peers[id as usize].last_heard = Some(Instant::now());
        if let Message::Hello(hello) = message {
            return self.hello(id, &hello, header.session, from);
        }
        let p = &mut self.peers[id as usize];
        if p.addr.is_none() || header.session != p.token {
            return Err(Rejection::Unexpected);
        }
        p.window.accept(header.sequence)?;
        p.addr = Some(from);
        self.repeat_reboot(id, Instant::now(), REBOOT_ECHO);
        match message {
            Message::Chunk(chunk) if chunk.content == Content::Gradient => self.gradient_chunk(id, &chunk),
            Message::Ack { transfer } => {
                if transfer == upload_transfer(self.step) {
                    self.peers[id as usize].model_acked = true;
                }
                Ok(())
            }
            Message::Nack(nack) => {
                if nack.transfer != upload_transfer(self.step) {
                    return Ok(());
                }
                self.peers[id as usize].last_model_activity = Instant::now();
                let out = Outgoing::new(nack.transfer, Content::Model, self.step, &self.model_bytes);
                let requested: Vec<u16> = out.requested(&nack).collect();
                for i in requested {
                    self.send_model_chunk(id, i);
                }
                Ok(())
            }
            Message::Status(_) => Ok(()),
            _ => Err(Rejection::Unexpected),
        }
    }

    fn hello(&mut self, id: u16, hello: &Hello, session: u32, from: SocketAddr) -> Result<(), Rejection> {
        let expected =
            ShardSpec { total: self.total, nodes: self.config.nodes, index: id, layout: self.config.layout };
        if session != 0 || hello.shard != expected {
            return Err(Rejection::Unexpected);
        }
        let p = &mut self.peers[id as usize];
        if p.old_nonces.contains(&hello.nonce) {
            return Err(Rejection::Replayed);
        }
        if p.addr.is_none() || hello.nonce != p.nonce {
            // A new join (or a rejoin after a reboot): new token, fresh replay window.
            if p.addr.is_some() {
                p.old_nonces.push_back(p.nonce);
                if p.old_nonces.len() > REMEMBERED_NONCES {
                    p.old_nonces.pop_front();
                }
            }
            p.nonce = hello.nonce;
            p.token = loop {
                let t: u32 = rand::random();
                if t != 0 {
                    break t;
                }
            };
            p.window = ReplayWindow::default();
            p.shard = Some(hello.shard);
            p.alive = true;
            p.reboot = None;
            p.stopped = false;
            p.traffic.joins += 1;
        }
        // Repeated Hellos of the same join refresh the uptime they carry.
        p.hello = Some((*hello, Instant::now()));
        p.addr = Some(from);
        let token = p.token;
        let assignment = Assignment {
            nonce: hello.nonce,
            token,
            model: model_id::<N>(),
            mode: self.config.mode,
            batch: self.config.train.batch as u32,
            sync_period: self.config.sync_period as u16,
            seed: self.config.train.seed,
            epochs: self.config.train.epochs,
            nodes: self.config.nodes,
            learning_rate: self.config.train.sgd.learning_rate,
            momentum: self.config.train.sgd.momentum,
            weight_decay: self.config.train.sgd.weight_decay,
        };
        self.send_to(id, 0, &Message::Assignment(assignment));
        // A node joining mid-step gets the current model at once. (Only once per join would spare a
        // slow link, such as QEMU's usb-net under load, a copy per repeated Hello, but it changed
        // which steps a revived simulated node makes in the kill tests; not done yet.)
        if self.started && self.peers[id as usize].stats.is_none() {
            self.send_model(id);
        }
        Ok(())
    }

    fn gradient_chunk(&mut self, id: u16, chunk: &Chunk<'_>) -> Result<(), Rejection> {
        let token = self.peers[id as usize].token;
        if chunk.step != self.step {
            // An upload from a step already aggregated: acknowledge so the node stops repeating it.
            // A node dropped for lateness is evidently alive again and gets the next model.
            if chunk.step < self.step {
                // Not a node told to reboot, though: that one is gone until it joins again.
                if self.peers[id as usize].reboot.is_none() {
                    self.peers[id as usize].alive = true;
                }
                self.send_to(id, token, &Message::Ack { transfer: chunk.transfer });
                return Ok(());
            }
            return Err(Rejection::Unexpected);
        }
        let p = &mut self.peers[id as usize];
        if p.stats.is_some() {
            self.send_to(id, token, &Message::Ack { transfer: chunk.transfer });
            return Ok(());
        }
        if p.upload.current().is_none_or(|(t, _, _)| t != chunk.transfer) {
            p.upload.start(chunk).map_err(|_| Rejection::Unexpected)?;
        }
        p.last_upload_chunk = Instant::now();
        match p.upload.accept(chunk) {
            Ok(Received::Complete) => {
                let stats = decode_gradient(p.upload.data().expect("complete"), &mut p.grads)
                    .map_err(|_| Rejection::Unexpected)?;
                p.stats = Some(stats);
                p.alive = p.reboot.is_none();
                self.send_to(id, token, &Message::Ack { transfer: chunk.transfer });
                Ok(())
            }
            Ok(Received::Progress) if is_last(chunk) && p.upload.received() > 1 => {
                // The last piece came after others, but some before it did not: ask for them at once.
                self.send_upload_nack(id, Holes::All);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(_) => Err(Rejection::Unexpected),
        }
    }
}
