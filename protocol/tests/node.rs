//! The node state machine against a scripted master: joining, a full step, and refusal of forged,
//! replayed, malformed and out-of-place datagrams without any effect on the node.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use kernels::train::BatchStats;
use kernels::{Fixed, Lenet5, Network, Weights};
use protocol::auth::ClusterKey;
use protocol::codec::{decode_gradient, encode_model, model_len};
use protocol::node::{upload_transfer, Clock, Event, Node, NodeBuffers, NodeConfig, Shard, Transport};
use protocol::transfer::{Outgoing, Reassembly};
use protocol::wire::{
    Assignment, BatchMode, Command, Content, Header, Message, ModelId, NodeState, ShardLayout, ShardSpec,
    MASTER_ID, MAX_DATAGRAM,
};

const KEY: ClusterKey = ClusterKey([42; 32]);
const SPEC: ShardSpec = ShardSpec { total: 100, nodes: 2, index: 1, layout: ShardLayout::Contiguous };

#[derive(Clone, Default)]
struct Wire {
    to_node: Rc<RefCell<VecDeque<Vec<u8>>>>,
    from_node: Rc<RefCell<VecDeque<Vec<u8>>>>,
    /// What `sending` answers: datagrams still queued for a slow link.
    busy: Rc<std::cell::Cell<bool>>,
}

impl Transport for Wire {
    fn send(&mut self, datagram: &[u8]) {
        self.from_node.borrow_mut().push_back(datagram.to_vec());
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let d = self.to_node.borrow_mut().pop_front()?;
        buf[..d.len()].copy_from_slice(&d);
        Some(d.len())
    }
    fn sending(&mut self) -> bool {
        self.busy.get()
    }
}

#[derive(Clone, Default)]
struct FakeClock(Rc<RefCell<u64>>);
impl Clock for FakeClock {
    fn now_us(&mut self) -> u64 {
        *self.0.borrow()
    }
}

/// A shard whose gradient is 1 per sample in every parameter: easy to check.
struct CountingShard;
impl Shard for CountingShard {
    fn spec(&self) -> ShardSpec {
        SPEC
    }
    fn hash(&self) -> u64 {
        7
    }
    fn cores(&self) -> u8 {
        4
    }
    fn gradient(&mut self, _: Weights<'_, Fixed>, samples: &[u32], grads: &mut [i64]) -> BatchStats {
        for g in grads.iter_mut() {
            *g += samples.len() as i64;
        }
        BatchStats { samples: samples.len() as u64, correct: 0, loss_sum: 0 }
    }
}

/// The scripted master's side.
struct Script {
    wire: Wire,
    sequence: u64,
}

impl Script {
    fn seal(&mut self, session: u32, message: &Message<'_>, key: &ClusterKey) -> Vec<u8> {
        self.sequence += 1;
        let header =
            Header { kind: message.kind() as u8, session, sender: MASTER_ID, sequence: self.sequence };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = key.seal(&header, message, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }
    fn deliver(&self, datagram: Vec<u8>) {
        self.wire.to_node.borrow_mut().push_back(datagram);
    }
    fn send(&mut self, session: u32, message: &Message<'_>) -> Vec<u8> {
        let d = self.seal(session, message, &KEY);
        self.deliver(d.clone());
        d
    }
    fn sent_by_node(&self) -> Vec<(Header, Vec<u8>)> {
        self.wire
            .from_node
            .borrow_mut()
            .drain(..)
            .map(|d| {
                let (h, _) = KEY.open(&d).expect("the node's datagrams authenticate");
                (h, d)
            })
            .collect()
    }
}

struct Storage {
    master: Vec<i32>,
    working: Vec<i16>,
    grads: Vec<i64>,
    momentum: Vec<i32>,
    base: Vec<i32>,
    model: Vec<u8>,
    bitmap: Vec<u8>,
    upload: Vec<u8>,
    order: Vec<u32>,
    samples: Vec<u32>,
}

impl Storage {
    fn new() -> Self {
        let s = NodeBuffers::sizes::<Lenet5>(100, 16);
        Storage {
            master: vec![0; s.params],
            working: vec![0; s.params],
            grads: vec![0; s.params],
            momentum: vec![0; s.params],
            base: vec![0; s.params],
            model: vec![0; s.model],
            bitmap: vec![0; s.model_bitmap],
            upload: vec![0; s.upload],
            order: vec![0; s.order],
            samples: vec![0; s.samples],
        }
    }
    fn buffers(&mut self) -> NodeBuffers<'_> {
        NodeBuffers {
            master: &mut self.master,
            working: &mut self.working,
            grads: &mut self.grads,
            momentum: &mut self.momentum,
            base: &mut self.base,
            model: &mut self.model,
            model_bitmap: &mut self.bitmap,
            upload: &mut self.upload,
            order: &mut self.order,
            samples: &mut self.samples,
        }
    }
}

fn assignment(nonce: u64) -> Assignment {
    Assignment {
        nonce,
        token: 0x5150,
        model: ModelId::Lenet5,
        mode: BatchMode::Global,
        batch: 16,
        sync_period: 1,
        seed: 3,
        epochs: 1,
        nodes: 2,
        learning_rate: 0.05,
        momentum: 0.9,
        weight_decay: 1e-4,
    }
}

#[test]
fn joins_trains_a_step_and_refuses_bad_datagrams() {
    let wire = Wire::default();
    let clock = FakeClock::default();
    let mut storage = Storage::new();
    let mut node: Node<'_, Lenet5, _, _, _> =
        Node::new(NodeConfig::new(1), KEY, wire.clone(), clock.clone(), CountingShard, storage.buffers(), 99);
    let mut master = Script { wire, sequence: 0 };

    // Joining: a Hello goes out.
    assert_eq!(node.poll(), Event::Idle);
    let sent = master.sent_by_node();
    assert_eq!(sent.len(), 1);
    let Message::Hello(hello) = KEY.open(&sent[0].1).unwrap().1 else { panic!("expected a hello") };
    assert_eq!((hello.shard, hello.cores, hello.shard_hash), (SPEC, 4, 7));

    // An assignment for another nonce is refused; the right one is taken.
    master.send(0, &Message::Assignment(assignment(hello.nonce ^ 1)));
    assert_eq!(node.poll(), Event::Idle);
    assert_eq!(node.counters().rejected.unexpected, 1);
    master.send(0, &Message::Assignment(assignment(hello.nonce)));
    assert_eq!(node.poll(), Event::Joined);
    assert_eq!(node.state(), NodeState::Idle);

    // Bad datagrams: forged, malformed, wrong session, replayed. None changes the state.
    let forged = master.seal(0x5150, &Message::Control(Command::Stop), &ClusterKey([1; 32]));
    master.deliver(forged);
    master.deliver(vec![0x50, 0x54, 1, 8, 0, 0]);
    master.deliver(vec![0xff; 300]);
    master.send(0x9999, &Message::Control(Command::Stop));
    let ping = master.send(0x5150, &Message::Ping { nonce: 1 });
    master.deliver(ping.clone());
    master.deliver(ping);
    assert_eq!(node.poll(), Event::Idle);
    let c = node.counters();
    assert_eq!(c.rejected.forged, 1);
    assert_eq!(c.rejected.malformed, 2);
    assert_eq!(c.rejected.unexpected, 2);
    assert_eq!(c.rejected.replayed, 2, "the ping's two replays");
    assert_eq!(node.state(), NodeState::Idle);
    let answers = master.sent_by_node();
    assert_eq!(answers.len(), 1, "one status for the one genuine ping");

    // A step: the model arrives (out of order), the node computes and uploads.
    let working: Vec<i16> = (0..Lenet5::PARAMS).map(|i| (i % 100) as i16).collect();
    let biases: Vec<i32> = (0..Lenet5::PARAMS).map(|i| i as i32).collect();
    let mut model = vec![0u8; model_len::<Lenet5>()];
    encode_model::<Lenet5>(&working, &biases, &mut model);
    let out = Outgoing::new(upload_transfer(0), Content::Model, 0, &model);
    for i in (0..out.chunks()).rev() {
        master.send(0x5150, &Message::Chunk(out.chunk(i)));
    }
    let event = node.poll();
    let Event::Computed { step: 0, samples } = event else {
        panic!("expected a computed step, got {event:?}")
    };
    assert!(samples > 0 && samples <= 16);

    // The master gets an Ack for its model and the whole gradient.
    let mut bytes = vec![0u8; protocol::codec::max_gradient_len(Lenet5::PARAMS)];
    let mut bitmap = vec![0u8; protocol::transfer::bitmap_len(bytes.len())];
    let mut upload = Reassembly::new(&mut bytes[..], &mut bitmap[..]);
    let mut acked = false;
    for (header, d) in master.sent_by_node() {
        assert_eq!(header.session, 0x5150);
        match KEY.open(&d).unwrap().1 {
            Message::Ack { transfer } => acked |= transfer == upload_transfer(0),
            Message::Chunk(chunk) => {
                if upload.current().is_none() {
                    upload.start(&chunk).unwrap();
                }
                upload.accept(&chunk).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(acked);
    let mut grads = vec![0i64; Lenet5::PARAMS];
    let stats = decode_gradient(upload.data().expect("whole gradient"), &mut grads).unwrap();
    assert_eq!(stats.samples, samples as u64);
    assert!(grads.iter().all(|&g| g == samples as i64));

    // Stop.
    master.send(0x5150, &Message::Control(Command::Stop));
    assert_eq!(node.poll(), Event::Stopped);
    assert_eq!(node.state(), NodeState::Stopped);
}

/// Hello announces the MAC and the uptime; a genuine Reboot is reported to the platform (which
/// restarts the node), a Reboot under another session is not.
#[test]
fn hello_carries_mac_and_uptime_and_reboot_is_reported() {
    let wire = Wire::default();
    let clock = FakeClock::default();
    *clock.0.borrow_mut() = 2_500_000;
    let mut storage = Storage::new();
    let config = NodeConfig { mac: [0x52, 0x54, 0, 0x50, 0, 1], ..NodeConfig::new(1) };
    let mut node: Node<'_, Lenet5, _, _, _> =
        Node::new(config, KEY, wire.clone(), clock.clone(), CountingShard, storage.buffers(), 5);
    let mut master = Script { wire, sequence: 0 };
    assert_eq!(node.poll(), Event::Idle);
    let sent = master.sent_by_node();
    let Message::Hello(hello) = KEY.open(&sent[0].1).unwrap().1 else { panic!("expected a hello") };
    assert_eq!((hello.mac, hello.uptime_ms), ([0x52, 0x54, 0, 0x50, 0, 1], 2_500));
    master.send(0, &Message::Assignment(assignment(hello.nonce)));
    assert_eq!(node.poll(), Event::Joined);
    master.send(0x9999, &Message::Control(Command::Reboot));
    assert_eq!(node.poll(), Event::Idle);
    master.send(0x5150, &Message::Control(Command::Reboot));
    assert_eq!(node.poll(), Event::Reboot);
}

/// On a slow link the upload burst is still queued long after it was handed over: the node repeats
/// its last chunk only once the queue has drained and the master has then stayed silent.
#[test]
fn the_upload_is_repeated_only_after_the_burst_has_left() {
    let wire = Wire::default();
    let clock = FakeClock::default();
    let mut storage = Storage::new();
    let config = NodeConfig::new(1);
    let mut node: Node<'_, Lenet5, _, _, _> =
        Node::new(config, KEY, wire.clone(), clock.clone(), CountingShard, storage.buffers(), 99);
    let mut master = Script { wire: wire.clone(), sequence: 0 };
    node.poll();
    let Message::Hello(hello) = KEY.open(&master.sent_by_node()[0].1).unwrap().1 else { panic!() };
    master.send(0, &Message::Assignment(assignment(hello.nonce)));
    assert_eq!(node.poll(), Event::Joined);
    let mut model = vec![0u8; model_len::<Lenet5>()];
    encode_model::<Lenet5>(&vec![0; Lenet5::PARAMS], &vec![0; Lenet5::PARAMS], &mut model);
    let out = Outgoing::new(upload_transfer(0), Content::Model, 0, &model);
    for i in 0..out.chunks() {
        master.send(0x5150, &Message::Chunk(out.chunk(i)));
    }
    assert!(matches!(node.poll(), Event::Computed { step: 0, .. }));
    let burst = master.sent_by_node().len();
    assert!(burst > 10, "the model's Ack and the gradient's chunks");

    // The link is slow: the burst is still queued for ten resend periods. Nothing is repeated.
    wire.busy.set(true);
    for _ in 0..10 {
        *clock.0.borrow_mut() += config.resend_us;
        node.poll();
    }
    assert!(master.sent_by_node().is_empty(), "nothing repeated while the burst is queued");
    // It has left: the timer starts now, and one resend period later the last chunk goes again.
    wire.busy.set(false);
    *clock.0.borrow_mut() += config.resend_us - 1;
    node.poll();
    assert!(master.sent_by_node().is_empty(), "not before a whole resend period of silence");
    *clock.0.borrow_mut() += 1;
    node.poll();
    let repeated = master.sent_by_node();
    assert_eq!(repeated.len(), 1);
    let Message::Chunk(chunk) = KEY.open(&repeated[0].1).unwrap().1 else { panic!("a chunk") };
    assert!(protocol::node::is_last(&chunk));
}
