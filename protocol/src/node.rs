//! The node state machine: the same code in the Pi firmware and in `pitrain`'s simulated nodes.
//!
//! A node joins (Hello until an Assignment answers), then repeats: receive the step's model, compute
//! the gradient of its samples of that step, upload it until the master acknowledges. It is driven by
//! [`Node::poll`], generic over the platform: a [`Transport`] for datagrams, a [`Clock`], and a
//! [`Shard`] that holds the node's data and computes gradients (on the Pi, on four cores). All buffers
//! are the caller's ([`NodeBuffers`]), so the firmware keeps them in static memory.
//!
//! Every datagram is authenticated; anything malformed, forged, replayed or out of place is dropped
//! and counted, and changes nothing.

#![forbid(unsafe_code)]

use kernels::train::{apply_update, refresh_working, BatchStats};
use kernels::{Fixed, Network, Weights};

use crate::auth::{ClusterKey, RejectCounts, Rejection, ReplayWindow};
use crate::codec::{decode_model, decode_state, encode_gradient};
use crate::schedule::Schedule;
use crate::transfer::{Outgoing, Reassembly, Received, NACK_SPAN};
use crate::wire::{
    Assignment, Chunk, Command, Content, Header, Hello, Kind, Message, NodeState, ShardSpec, Status,
    MASTER_ID, MAX_DATAGRAM,
};

/// Sends and receives datagrams to and from the master.
pub trait Transport {
    /// Sends one datagram. Failures are not reported: the protocol repeats what matters.
    fn send(&mut self, datagram: &[u8]);
    /// The next waiting datagram, copied into `buf`, or `None` when nothing is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// True while datagrams handed to [`Transport::send`] are still queued here, waiting for the
    /// link. A node's upload timer starts when its burst has left, not when it was queued: on a slow
    /// link (QEMU's USB model moves a full frame in 6 ms) a queued burst takes seconds to leave,
    /// and repeating its last chunk meanwhile only lengthens the queue. The default: never.
    fn sending(&mut self) -> bool {
        false
    }
}

/// A transport lent out: the platform keeps its network stack (to log its counters afterwards).
impl<T: Transport + ?Sized> Transport for &mut T {
    fn send(&mut self, datagram: &[u8]) {
        (**self).send(datagram)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        (**self).recv(buf)
    }
    fn sending(&mut self) -> bool {
        (**self).sending()
    }
}

/// A monotonic clock.
pub trait Clock {
    /// Microseconds since some fixed point.
    fn now_us(&mut self) -> u64;
}

/// The node's data and its compute.
pub trait Shard {
    /// Which samples this node holds.
    fn spec(&self) -> ShardSpec;
    /// Fingerprint of the shard's content.
    fn hash(&self) -> u64;
    /// Cores that share the compute.
    fn cores(&self) -> u8;
    /// Adds the gradients of the local samples `samples` into `grads` (zeroed by the caller).
    fn gradient(&mut self, weights: Weights<'_, Fixed>, samples: &[u32], grads: &mut [i64]) -> BatchStats;
}

/// Timing and identity settings.
#[derive(Clone, Copy, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: u16,
    /// Firmware (or simulator) version announced in Hello.
    pub firmware_version: u32,
    /// The node's Ethernet MAC address, announced in Hello; all zero when it has none.
    pub mac: [u8; 6],
    /// Time between Hellos while joining.
    pub hello_interval_us: u64,
    /// Time without an Ack after which the last upload chunk is sent again.
    pub resend_us: u64,
    /// Time without progress after which a Nack is sent for an incomplete model.
    pub nack_delay_us: u64,
    /// Time without any datagram from the master after which the node joins again.
    pub master_timeout_us: u64,
}

impl NodeConfig {
    /// Settings for a node with id `id` on a local network.
    pub const fn new(id: u16) -> Self {
        NodeConfig {
            id,
            firmware_version: 1,
            mac: [0; 6],
            hello_interval_us: 200_000,
            resend_us: 50_000,
            nack_delay_us: 20_000,
            master_timeout_us: 30_000_000,
        }
    }
}

/// The buffers a node works in, all sized for network `N` (see [`NodeBuffers::sizes`]).
#[derive(Debug)]
pub struct NodeBuffers<'a> {
    /// Master parameters (the node reads only the biases).
    pub master: &'a mut [i32],
    /// Working weights.
    pub working: &'a mut [i16],
    /// Gradient sums of the current step.
    pub grads: &'a mut [i64],
    /// Momentum of the node's own updates (sync period above 1).
    pub momentum: &'a mut [i32],
    /// The master parameters last received (sync period above 1), to upload the change against.
    pub base: &'a mut [i32],
    /// Incoming model reassembly.
    pub model: &'a mut [u8],
    /// Its chunk bitmap.
    pub model_bitmap: &'a mut [u8],
    /// Encoded outgoing gradient.
    pub upload: &'a mut [u8],
    /// The epoch's sample order.
    pub order: &'a mut [u32],
    /// The step's local samples.
    pub samples: &'a mut [u32],
}

/// Element counts of every [`NodeBuffers`] field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSizes {
    /// `master`, `working`, `grads`, `momentum` and `base`.
    pub params: usize,
    /// `model`.
    pub model: usize,
    /// `model_bitmap`.
    pub model_bitmap: usize,
    /// `upload`.
    pub upload: usize,
    /// `order` (the training-set size).
    pub order: usize,
    /// `samples` (the largest batch).
    pub samples: usize,
}

impl NodeBuffers<'_> {
    /// Sizes for network `N`, a training set of `total` samples and batches of up to `batch`.
    pub const fn sizes<N: Network>(total: usize, batch: usize) -> BufferSizes {
        let model = max(crate::codec::model_len::<N>(), crate::codec::state_len::<N>());
        BufferSizes {
            params: N::PARAMS,
            model,
            model_bitmap: crate::transfer::bitmap_len(model),
            upload: crate::codec::max_gradient_len(N::PARAMS),
            order: total,
            samples: batch,
        }
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// What a call to [`Node::poll`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing worth telling.
    Idle,
    /// The node joined (or rejoined) the cluster.
    Joined,
    /// The gradient of this step was computed and its upload started.
    Computed {
        /// The step.
        step: u32,
        /// Samples it covered.
        samples: u32,
    },
    /// The master said stop.
    Stopped,
    /// The master said reboot; the caller should.
    Reboot,
}

/// Counters a node keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Datagrams accepted.
    pub accepted: u64,
    /// Datagrams dropped, by reason.
    pub rejected: RejectCounts,
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent (UDP payload).
    pub bytes_sent: u64,
    /// Bytes received (UDP payload, accepted or not).
    pub bytes_received: u64,
    /// Steps computed.
    pub steps: u64,
}

#[derive(Clone, Copy, Debug)]
struct Upload {
    step: u32,
    len: usize,
    last_activity_us: u64,
}

/// One training node.
pub struct Node<'a, N: Network, T: Transport, C: Clock, S: Shard> {
    config: NodeConfig,
    key: ClusterKey,
    transport: T,
    clock: C,
    shard: S,
    master: &'a mut [i32],
    working: &'a mut [i16],
    grads: &'a mut [i64],
    momentum: &'a mut [i32],
    base: &'a mut [i32],
    sgd: Option<<Fixed as kernels::Arith>::Sgd>,
    model: Reassembly<&'a mut [u8]>,
    upload_buffer: &'a mut [u8],
    order: &'a mut [u32],
    order_len: usize,
    order_epoch: Option<u32>,
    samples: &'a mut [u32],
    state: NodeState,
    nonce: u64,
    nonce_state: u64,
    assignment: Option<Assignment>,
    window: ReplayWindow,
    sequence: u64,
    last_heard_us: u64,
    last_hello_us: Option<u64>,
    last_model_chunk_us: u64,
    /// Step of the last model decoded (its Ack is repeated if the master repeats it).
    model_step: Option<u32>,
    upload: Option<Upload>,
    pending: Option<u32>,
    counters: NodeCounters,
    tx: [u8; MAX_DATAGRAM],
    _net: core::marker::PhantomData<N>,
}

impl<'a, N: Network, T: Transport, C: Clock, S: Shard> Node<'a, N, T, C, S> {
    /// A node that will start joining at its first poll. `entropy` seeds its join nonces: take it from
    /// a hardware random number generator where there is one.
    pub fn new(
        config: NodeConfig,
        key: ClusterKey,
        transport: T,
        clock: C,
        shard: S,
        b: NodeBuffers<'a>,
        entropy: u64,
    ) -> Self {
        let sizes = NodeBuffers::sizes::<N>(shard.spec().total as usize, b.samples.len());
        assert!(
            b.master.len() == sizes.params
                && b.working.len() == sizes.params
                && b.grads.len() == sizes.params
        );
        assert!(
            b.model.len() >= sizes.model && b.upload.len() >= sizes.upload && b.order.len() >= sizes.order
        );
        Node {
            config,
            key,
            transport,
            clock,
            shard,
            master: b.master,
            working: b.working,
            grads: b.grads,
            momentum: b.momentum,
            base: b.base,
            sgd: None,
            model: Reassembly::new(&mut b.model[..sizes.model], b.model_bitmap),
            upload_buffer: b.upload,
            order: b.order,
            order_len: 0,
            order_epoch: None,
            samples: b.samples,
            state: NodeState::Joining,
            nonce: 0,
            nonce_state: entropy,
            assignment: None,
            window: ReplayWindow::default(),
            sequence: 0,
            last_heard_us: 0,
            last_hello_us: None,
            last_model_chunk_us: 0,
            model_step: None,
            upload: None,
            pending: None,
            counters: NodeCounters::default(),
            tx: [0; MAX_DATAGRAM],
            _net: core::marker::PhantomData,
        }
    }

    /// Where the node is.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// Its counters.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// The shard (for the platform's own use between polls).
    pub fn shard(&mut self) -> &mut S {
        &mut self.shard
    }

    /// Ends the node, giving back its shard.
    pub fn into_shard(self) -> S {
        self.shard
    }

    /// Receives and handles every waiting datagram, runs the timers, and computes a step when a
    /// model has arrived.
    pub fn poll(&mut self) -> Event {
        let mut event = Event::Idle;
        let mut rx = [0u8; MAX_DATAGRAM];
        while let Some(n) = self.transport.recv(&mut rx) {
            self.counters.bytes_received += n as u64;
            match self.handle(&rx[..n.min(MAX_DATAGRAM)]) {
                Ok(Event::Idle) => self.counters.accepted += 1,
                Ok(e) => {
                    self.counters.accepted += 1;
                    event = e;
                    if matches!(e, Event::Reboot) {
                        return e;
                    }
                }
                Err(r) => self.counters.rejected.count(r),
            }
        }
        self.timers();
        if let Some(step) = self.pending.take() {
            event = self.compute(step);
        }
        event
    }

    fn next_nonce(&mut self) -> u64 {
        // SplitMix64: distinct nonces from one entropy seed.
        self.nonce_state = self.nonce_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.nonce_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn send(&mut self, session: u32, message: &Message<'_>) {
        self.sequence += 1;
        let header =
            Header { kind: message.kind() as u8, session, sender: self.config.id, sequence: self.sequence };
        if let Ok(n) = self.key.seal(&header, message, &mut self.tx) {
            self.transport.send(&self.tx[..n]);
            self.counters.sent += 1;
            self.counters.bytes_sent += n as u64;
        }
    }

    fn token(&self) -> u32 {
        self.assignment.map_or(0, |a| a.token)
    }

    fn sync_period(&self) -> u32 {
        self.assignment.map_or(1, |a| a.sync_period as u32)
    }

    fn rejoin(&mut self) {
        self.state = NodeState::Joining;
        self.assignment = None;
        self.last_hello_us = None;
        self.upload = None;
        self.pending = None;
        self.model.reset();
        self.model_step = None;
    }

    fn handle(&mut self, bytes: &[u8]) -> Result<Event, Rejection> {
        let (header, message) = self.key.open(bytes)?;
        if header.sender != MASTER_ID {
            return Err(Rejection::Unexpected);
        }
        let now = self.clock.now_us();
        if let Message::Assignment(a) = message {
            // Answers our current Hello only: a replayed old assignment carries an old nonce.
            if self.state != NodeState::Joining || a.nonce != self.nonce || header.session != 0 {
                return Err(Rejection::Unexpected);
            }
            if a.nodes != self.shard.spec().nodes
                || a.sync_period == 0
                || a.batch as usize > self.samples.len()
            {
                return Err(Rejection::Unexpected);
            }
            self.assignment = Some(a);
            let config = kernels::SgdConfig {
                learning_rate: a.learning_rate,
                momentum: a.momentum,
                weight_decay: a.weight_decay,
            };
            self.sgd = Some(<Fixed as kernels::Arith>::sgd_constants(&config));
            self.momentum.fill(0);
            self.window = ReplayWindow::default();
            self.sequence = 0;
            self.order_epoch = None;
            self.state = NodeState::Idle;
            self.last_heard_us = now;
            return Ok(Event::Joined);
        }
        if self.assignment.is_none() || header.session != self.token() {
            return Err(Rejection::Unexpected);
        }
        self.window.accept(header.sequence)?;
        self.last_heard_us = now;
        match message {
            Message::Chunk(chunk) if chunk.content == Content::Model => self.model_chunk(&chunk, now),
            Message::Ack { transfer } => {
                match self.upload {
                    Some(u) if transfer == upload_transfer(u.step) => {
                        self.upload = None;
                        if self.state == NodeState::Uploading {
                            self.state = NodeState::Idle;
                        }
                    }
                    _ => {}
                }
                Ok(Event::Idle)
            }
            Message::Nack(nack) => {
                if let Some(u) = self.upload.as_mut() {
                    u.last_activity_us = now;
                    let u = *u;
                    let out = Outgoing::new(
                        upload_transfer(u.step),
                        Content::Gradient,
                        u.step,
                        &self.upload_buffer[..u.len],
                    );
                    let requested: heapless::Vec<u16, NACK_SPAN> = out.requested(&nack).collect();
                    for &i in &requested {
                        self.send_upload_chunk(u, i);
                    }
                }
                Ok(Event::Idle)
            }
            Message::Ping { .. } => {
                let status = Status {
                    state: self.state,
                    step: self.model_step.unwrap_or(0),
                    accepted: self.counters.accepted,
                    rejected: self.counters.rejected.total(),
                };
                self.send(self.token(), &Message::Status(status));
                Ok(Event::Idle)
            }
            Message::Control(Command::Stop) => {
                self.state = NodeState::Stopped;
                self.upload = None;
                Ok(Event::Stopped)
            }
            Message::Control(Command::Reboot) => Ok(Event::Reboot),
            _ => Err(Rejection::Unexpected),
        }
    }

    fn model_chunk(&mut self, chunk: &Chunk<'_>, now: u64) -> Result<Event, Rejection> {
        if self.state == NodeState::Stopped {
            return Err(Rejection::Unexpected);
        }
        // The model of a step already decoded: the master did not get our Ack.
        if self.model_step.is_some_and(|s| chunk.step <= s) {
            if self.model_step == Some(chunk.step) {
                self.send(self.token(), &Message::Ack { transfer: chunk.transfer });
                return Ok(Event::Idle);
            }
            return Err(Rejection::Unexpected);
        }
        let newer = self.model.current().is_none_or(|(transfer, _, step)| {
            chunk.step > step || (chunk.step == step && chunk.transfer != transfer)
        });
        if newer {
            self.model.start(chunk).map_err(|_| Rejection::Unexpected)?;
        }
        self.last_model_chunk_us = now;
        match self.model.accept(chunk) {
            Ok(Received::Complete) => {
                self.send(self.token(), &Message::Ack { transfer: chunk.transfer });
                let data = self.model.data().expect("complete");
                if self.sync_period() == 1 {
                    decode_model::<N>(data, self.working, self.master).map_err(|_| Rejection::Unexpected)?;
                } else {
                    decode_state(data, self.master).map_err(|_| Rejection::Unexpected)?;
                    self.base.copy_from_slice(self.master);
                    refresh_working::<N, Fixed>(self.master, self.working);
                }
                self.model_step = Some(chunk.step);
                self.model.reset();
                self.pending = Some(chunk.step);
                Ok(Event::Idle)
            }
            Ok(Received::Progress) if is_last(chunk) && self.model.received() > 1 => {
                // The last piece came after others, but some before it did not: ask for them at once.
                self.send_model_nack();
                Ok(Event::Idle)
            }
            Ok(_) => Ok(Event::Idle),
            Err(_) => Err(Rejection::Unexpected),
        }
    }

    fn send_model_nack(&mut self) {
        let mut scratch = [0u8; NACK_SPAN / 8];
        let mut copy = [0u8; NACK_SPAN / 8];
        let nack = self.model.nack(&mut scratch).map(|n| {
            copy[..n.missing.len()].copy_from_slice(n.missing);
            (n.transfer, n.base, n.missing.len())
        });
        if let Some((transfer, base, len)) = nack {
            let message = Message::Nack(crate::wire::Nack { transfer, base, missing: &copy[..len] });
            self.send(self.token(), &message);
        }
    }

    fn timers(&mut self) {
        let now = self.clock.now_us();
        match self.state {
            NodeState::Joining => {
                let due =
                    self.last_hello_us.is_none_or(|t| now.saturating_sub(t) >= self.config.hello_interval_us);
                if due {
                    if self.last_hello_us.is_none() {
                        self.nonce = self.next_nonce();
                    }
                    self.last_hello_us = Some(now);
                    let hello = Hello {
                        firmware_version: self.config.firmware_version,
                        cores: self.shard.cores(),
                        nonce: self.nonce,
                        shard: self.shard.spec(),
                        shard_hash: self.shard.hash(),
                        mac: self.config.mac,
                        uptime_ms: now / 1000,
                    };
                    self.send(0, &Message::Hello(hello));
                }
                return;
            }
            NodeState::Stopped => return,
            _ => {}
        }
        if now.saturating_sub(self.last_heard_us) >= self.config.master_timeout_us {
            self.rejoin();
            return;
        }
        if let Some(u) = self.upload.as_mut() {
            if self.transport.sending() {
                u.last_activity_us = now;
            }
        }
        if let Some(u) = self.upload {
            if now.saturating_sub(u.last_activity_us) >= self.config.resend_us {
                let last = crate::transfer::chunk_count(u.len) as u16 - 1;
                self.send_upload_chunk(u, last);
                if let Some(u) = self.upload.as_mut() {
                    u.last_activity_us = now;
                }
            }
        }
        if self.model.current().is_some()
            && now.saturating_sub(self.last_model_chunk_us) >= self.config.nack_delay_us
        {
            self.send_model_nack();
            self.last_model_chunk_us = now;
        }
    }

    fn send_upload_chunk(&mut self, u: Upload, index: u16) {
        let token = self.token();
        self.sequence += 1;
        let out =
            Outgoing::new(upload_transfer(u.step), Content::Gradient, u.step, &self.upload_buffer[..u.len]);
        let chunk = Message::Chunk(out.chunk(index));
        let header = Header {
            kind: Kind::Chunk as u8,
            session: token,
            sender: self.config.id,
            sequence: self.sequence,
        };
        if let Ok(n) = self.key.seal(&header, &chunk, &mut self.tx) {
            self.transport.send(&self.tx[..n]);
            self.counters.sent += 1;
            self.counters.bytes_sent += n as u64;
        }
    }

    /// Trains the steps of synchronisation `sync` and starts the upload: with a sync period of 1 the
    /// gradient sums of the one step; otherwise the parameter change over the local steps, each step
    /// updating the node's own copy.
    fn compute(&mut self, sync: u32) -> Event {
        let (Some(a), Some(sgd)) = (self.assignment, self.sgd) else { return Event::Idle };
        let spec = self.shard.spec();
        let schedule =
            Schedule { mode: a.mode, batch: a.batch, total: spec.total, nodes: a.nodes, seed: a.seed };
        let period = self.sync_period();
        let (first, count) = schedule.sync_steps(sync, period);
        self.state = NodeState::Computing;
        let mut stats = BatchStats::default();
        let mut total = 0;
        for step in first..first + count {
            let epoch = schedule.epoch_of(step);
            if self.order_epoch != Some(epoch) {
                self.order_len = schedule.fill_order(&spec, epoch, self.order);
                self.order_epoch = Some(epoch);
            }
            let n = schedule.samples_of(&spec, step, &self.order[..self.order_len], self.samples);
            self.grads.fill(0);
            let weights = Weights { master: self.master, working: self.working };
            stats.merge(&self.shard.gradient(weights, &self.samples[..n], self.grads));
            total += n;
            if period > 1 && n > 0 {
                apply_update::<N, Fixed>(
                    &sgd,
                    self.master,
                    self.momentum,
                    self.working,
                    self.grads,
                    n as u32,
                );
            }
        }
        if period > 1 {
            for ((g, &m), &b) in self.grads.iter_mut().zip(self.master.iter()).zip(self.base.iter()) {
                *g = m as i64 - b as i64;
            }
        }
        let len = encode_gradient(&stats, self.grads, self.upload_buffer);
        let upload = Upload { step: sync, len, last_activity_us: self.clock.now_us() };
        self.upload = Some(upload);
        self.state = NodeState::Uploading;
        for i in 0..crate::transfer::chunk_count(len) as u16 {
            self.send_upload_chunk(upload, i);
        }
        self.counters.steps += 1;
        Event::Computed { step: sync, samples: total as u32 }
    }
}

/// The wire id of network `N`.
pub fn model_id<N: Network>() -> crate::wire::ModelId {
    if N::NAME == kernels::Lenet5::NAME {
        crate::wire::ModelId::Lenet5
    } else {
        crate::wire::ModelId::MxLenet
    }
}

/// True for the last chunk of its transfer.
pub fn is_last(chunk: &Chunk<'_>) -> bool {
    chunk.index as usize + 1 == crate::transfer::chunk_count(chunk.total_len as usize)
}

/// Transfer id of the gradient upload of `step` (model broadcasts use the same rule on the master).
pub const fn upload_transfer(step: u32) -> u32 {
    step.wrapping_add(1)
}
