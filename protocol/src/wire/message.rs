//! Message bodies. All integers are little-endian; floats travel as their IEEE-754 bits.

#![forbid(unsafe_code)]

use super::{Reader, WireError, Writer, MAX_PAYLOAD};

/// Message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Node to master: here I am.
    Hello = 1,
    /// Master to node: your job and your join token.
    Assignment = 2,
    /// One piece of a large tensor (model broadcast or gradient upload).
    Chunk = 3,
    /// A transfer arrived whole.
    Ack = 4,
    /// A transfer is missing pieces: these ones.
    Nack = 5,
    /// Master to node: are you there?
    Ping = 6,
    /// Node to master: where I am (also the answer to a ping).
    Status = 7,
    /// Master to node: stop or reboot.
    Control = 8,
}

impl Kind {
    /// The kind for a header byte.
    pub fn from_u8(v: u8) -> Result<Kind, WireError> {
        Ok(match v {
            1 => Kind::Hello,
            2 => Kind::Assignment,
            3 => Kind::Chunk,
            4 => Kind::Ack,
            5 => Kind::Nack,
            6 => Kind::Ping,
            7 => Kind::Status,
            8 => Kind::Control,
            _ => return Err(WireError::BadValue),
        })
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum $name { $($(#[$vmeta])* $variant = $value,)+ }
        impl $name {
            /// The value for a wire byte.
            pub fn from_u8(v: u8) -> Result<Self, WireError> {
                match v { $($value => Ok($name::$variant),)+ _ => Err(WireError::BadValue) }
            }
        }
    };
}

wire_enum! {
    /// How the training set is divided between nodes.
    ShardLayout {
        /// Node k of n holds the k-th contiguous n-th of the training set.
        Contiguous = 0,
        /// Node k of n holds the samples whose index is k modulo n.
        Strided = 1,
    }
}

wire_enum! {
    /// The network.
    ModelId {
        /// The paper's MXNet LeNet.
        MxLenet = 0,
        /// Classic LeNet-5.
        Lenet5 = 1,
    }
}

wire_enum! {
    /// How a step's batch is formed.
    BatchMode {
        /// One global batch per step, split by where its samples live: identical to one-node training.
        Global = 0,
        /// Every node takes `batch` samples of its own shard: MXNet's `dist_sync` setting.
        PerNode = 1,
    }
}

wire_enum! {
    /// What a transfer carries.
    Content {
        /// The model for a step: working weights and master biases.
        Model = 1,
        /// A node's gradient sums and statistics for a step.
        Gradient = 2,
    }
}

wire_enum! {
    /// Control commands.
    Command {
        /// Stop training and wait.
        Stop = 1,
        /// Reboot the node.
        Reboot = 2,
    }
}

wire_enum! {
    /// Where a node is.
    NodeState {
        /// Looking for the master.
        Joining = 0,
        /// Waiting for a model.
        Idle = 1,
        /// Computing a step.
        Computing = 2,
        /// Sending its gradient.
        Uploading = 3,
        /// Stopped by the master.
        Stopped = 4,
    }
}

/// Which samples a node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// Size of the whole training set.
    pub total: u32,
    /// Number of shards.
    pub nodes: u16,
    /// This shard's index.
    pub index: u16,
    /// How the set is divided.
    pub layout: ShardLayout,
}

impl ShardSpec {
    /// Whether global sample `i` is in this shard.
    pub fn contains(&self, i: u32) -> bool {
        self.local_index(i).is_some()
    }

    /// Position of global sample `i` inside this shard, if it is here.
    pub fn local_index(&self, i: u32) -> Option<u32> {
        let (n, k, global) = (self.nodes as u64, self.index as u64, i as u64);
        if i >= self.total || n == 0 {
            return None;
        }
        match self.layout {
            ShardLayout::Contiguous => {
                let start = k * self.total as u64 / n;
                let end = (k + 1) * self.total as u64 / n;
                (start..end).contains(&global).then(|| (global - start) as u32)
            }
            ShardLayout::Strided => (global % n == k).then(|| (global / n) as u32),
        }
    }

    /// The global index of this shard's `local`-th sample.
    pub fn global_index(&self, local: u32) -> u32 {
        let (n, k) = (self.nodes as u64, self.index as u64);
        match self.layout {
            ShardLayout::Contiguous => (k * self.total as u64 / n + local as u64) as u32,
            ShardLayout::Strided => (local as u64 * n + k) as u32,
        }
    }

    /// Number of samples in this shard.
    pub fn len(&self) -> u32 {
        let (n, k, t) = (self.nodes as u64, self.index as u64, self.total as u64);
        if n == 0 {
            return 0;
        }
        match self.layout {
            ShardLayout::Contiguous => ((k + 1) * t / n - k * t / n) as u32,
            ShardLayout::Strided => ((t + n - 1 - k) / n) as u32,
        }
    }

    /// True when the shard holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let spec = ShardSpec {
            total: r.u32()?,
            nodes: r.u16()?,
            index: r.u16()?,
            layout: ShardLayout::from_u8(r.u8()?)?,
        };
        if spec.nodes == 0 || spec.index >= spec.nodes {
            return Err(WireError::BadValue);
        }
        Ok(spec)
    }

    fn emit(&self, w: &mut Writer<'_>) {
        w.u32(self.total);
        w.u16(self.nodes);
        w.u16(self.index);
        w.u8(self.layout as u8);
    }
}

/// Hello: a node announces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Firmware (or simulator) version.
    pub firmware_version: u32,
    /// Cores it trains on.
    pub cores: u8,
    /// Fresh random number of this boot; the master echoes it in the assignment.
    pub nonce: u64,
    /// Which samples it holds.
    pub shard: ShardSpec,
    /// Fingerprint of its shard's content.
    pub shard_hash: u64,
    /// The node's Ethernet MAC address; all zero when it has none (a simulated node). Wire version 2.
    pub mac: [u8; 6],
    /// Milliseconds since the node booted, when it sent this Hello: the master adds the time since it
    /// heard it to show an uptime without asking the node again. Wire version 2.
    pub uptime_ms: u64,
}

/// Assignment: the master's answer to a hello.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Assignment {
    /// The nonce of the hello this answers.
    pub nonce: u64,
    /// Join token: the session field of every later datagram between the two.
    pub token: u32,
    /// Network.
    pub model: ModelId,
    /// Batch formation.
    pub mode: BatchMode,
    /// Global batch (Global mode) or per-node batch (PerNode mode).
    pub batch: u32,
    /// Local steps between synchronisations (1: every step).
    pub sync_period: u16,
    /// Seed of the sample order.
    pub seed: u64,
    /// Epochs to train.
    pub epochs: u32,
    /// Nodes in the cluster.
    pub nodes: u16,
    /// Learning rate.
    pub learning_rate: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
}

/// One piece of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Transfer id, unique per sender and session.
    pub transfer: u32,
    /// What the transfer carries.
    pub content: Content,
    /// Training step it belongs to.
    pub step: u32,
    /// Bytes in the whole transfer.
    pub total_len: u32,
    /// This piece's index.
    pub index: u16,
    /// This piece's bytes.
    pub data: &'a [u8],
}

/// Bytes of a chunk's own header.
pub const CHUNK_HEADER_LEN: usize = 15;
/// Largest piece of data in one chunk.
pub const CHUNK_DATA: usize = MAX_PAYLOAD - CHUNK_HEADER_LEN;

/// Nack: the pieces of a transfer still missing, as a bitmap starting at piece `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack<'a> {
    /// Transfer id.
    pub transfer: u32,
    /// Index of the piece bit 0 stands for.
    pub base: u16,
    /// Bit i (LSB first) set: piece `base + i` is missing.
    pub missing: &'a [u8],
}

/// A node's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// What it is doing.
    pub state: NodeState,
    /// Step it is at.
    pub step: u32,
    /// Datagrams accepted.
    pub accepted: u64,
    /// Datagrams dropped (malformed, forged, replayed).
    pub rejected: u64,
}

/// Any message body, borrowing from the datagram it came in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Message<'a> {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Assignment`].
    Assignment(Assignment),
    /// See [`Chunk`].
    Chunk(Chunk<'a>),
    /// A transfer arrived whole.
    Ack {
        /// Transfer id.
        transfer: u32,
    },
    /// See [`Nack`].
    Nack(Nack<'a>),
    /// Are you there? The node answers with its status.
    Ping {
        /// Echoed in the answer.
        nonce: u64,
    },
    /// See [`Status`].
    Status(Status),
    /// See [`Command`].
    Control(Command),
}

impl<'a> Message<'a> {
    /// The header kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Assignment(_) => Kind::Assignment,
            Message::Chunk(_) => Kind::Chunk,
            Message::Ack { .. } => Kind::Ack,
            Message::Nack(_) => Kind::Nack,
            Message::Ping { .. } => Kind::Ping,
            Message::Status(_) => Kind::Status,
            Message::Control(_) => Kind::Control,
        }
    }

    /// Parses a body of the given kind. Every byte must be accounted for.
    pub fn parse(kind: u8, body: &'a [u8]) -> Result<Message<'a>, WireError> {
        let mut r = Reader::new(body);
        let message = match Kind::from_u8(kind)? {
            Kind::Hello => Message::Hello(Hello {
                firmware_version: r.u32()?,
                cores: r.u8()?,
                nonce: r.u64()?,
                shard: ShardSpec::parse(&mut r)?,
                shard_hash: r.u64()?,
                mac: r.take(6)?.try_into().map_err(|_| WireError::Truncated)?,
                uptime_ms: r.u64()?,
            }),
            Kind::Assignment => Message::Assignment(Assignment {
                nonce: r.u64()?,
                token: r.u32()?,
                model: ModelId::from_u8(r.u8()?)?,
                mode: BatchMode::from_u8(r.u8()?)?,
                batch: r.u32()?,
                sync_period: r.u16()?,
                seed: r.u64()?,
                epochs: r.u32()?,
                nodes: r.u16()?,
                learning_rate: f64::from_bits(r.u64()?),
                momentum: f64::from_bits(r.u64()?),
                weight_decay: f64::from_bits(r.u64()?),
            }),
            Kind::Chunk => {
                let chunk = Chunk {
                    transfer: r.u32()?,
                    content: Content::from_u8(r.u8()?)?,
                    step: r.u32()?,
                    total_len: r.u32()?,
                    index: r.u16()?,
                    data: &[],
                };
                let data = r.rest();
                if data.is_empty() && chunk.total_len != 0 {
                    return Err(WireError::Truncated);
                }
                return Ok(Message::Chunk(Chunk { data, ..chunk }));
            }
            Kind::Ack => Message::Ack { transfer: r.u32()? },
            Kind::Nack => {
                let transfer = r.u32()?;
                let base = r.u16()?;
                return Ok(Message::Nack(Nack { transfer, base, missing: r.rest() }));
            }
            Kind::Ping => Message::Ping { nonce: r.u64()? },
            Kind::Status => Message::Status(Status {
                state: NodeState::from_u8(r.u8()?)?,
                step: r.u32()?,
                accepted: r.u64()?,
                rejected: r.u64()?,
            }),
            Kind::Control => Message::Control(Command::from_u8(r.u8()?)?),
        };
        r.finish()?;
        Ok(message)
    }

    /// Body length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Hello(_) => 4 + 1 + 8 + 9 + 8 + 6 + 8,
            Message::Assignment(_) => 8 + 4 + 1 + 1 + 4 + 2 + 8 + 4 + 2 + 24,
            Message::Chunk(c) => CHUNK_HEADER_LEN + c.data.len(),
            Message::Ack { .. } => 4,
            Message::Nack(n) => 6 + n.missing.len(),
            Message::Ping { .. } => 8,
            Message::Status(_) => 1 + 4 + 16,
            Message::Control(_) => 1,
        }
    }

    /// Never true: every message has a body.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the body into `out` (at least [`len`](Self::len) bytes); fails if it would not fit a
    /// datagram.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if self.len() > MAX_PAYLOAD || out.len() < self.len() {
            return Err(WireError::TooLong);
        }
        let mut w = Writer::new(out);
        match self {
            Message::Hello(h) => {
                w.u32(h.firmware_version);
                w.u8(h.cores);
                w.u64(h.nonce);
                h.shard.emit(&mut w);
                w.u64(h.shard_hash);
                w.put(&h.mac);
                w.u64(h.uptime_ms);
            }
            Message::Assignment(a) => {
                w.u64(a.nonce);
                w.u32(a.token);
                w.u8(a.model as u8);
                w.u8(a.mode as u8);
                w.u32(a.batch);
                w.u16(a.sync_period);
                w.u64(a.seed);
                w.u32(a.epochs);
                w.u16(a.nodes);
                w.u64(a.learning_rate.to_bits());
                w.u64(a.momentum.to_bits());
                w.u64(a.weight_decay.to_bits());
            }
            Message::Chunk(c) => {
                w.u32(c.transfer);
                w.u8(c.content as u8);
                w.u32(c.step);
                w.u32(c.total_len);
                w.u16(c.index);
                w.put(c.data);
            }
            Message::Ack { transfer } => w.u32(*transfer),
            Message::Nack(n) => {
                w.u32(n.transfer);
                w.u16(n.base);
                w.put(n.missing);
            }
            Message::Ping { nonce } => w.u64(*nonce),
            Message::Status(s) => {
                w.u8(s.state as u8);
                w.u32(s.step);
                w.u64(s.accepted);
                w.u64(s.rejected);
            }
            Message::Control(c) => w.u8(*c as u8),
        }
        debug_assert_eq!(w.written(), self.len());
        Ok(w.written())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message<'_>) {
        let mut buf = [0u8; MAX_PAYLOAD];
        let n = m.emit(&mut buf).unwrap();
        assert_eq!(n, m.len());
        assert_eq!(Message::parse(m.kind() as u8, &buf[..n]).unwrap(), m);
        // Any shorter body is refused, never misread.
        for cut in 0..n {
            assert!(
                Message::parse(m.kind() as u8, &buf[..cut]).is_err()
                    || matches!(m, Message::Chunk(_) | Message::Nack(_))
            );
        }
    }

    const SHARD: ShardSpec = ShardSpec { total: 60_000, nodes: 3, index: 1, layout: ShardLayout::Strided };

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello(Hello {
            firmware_version: 3,
            cores: 4,
            nonce: 77,
            shard: SHARD,
            shard_hash: 5,
            mac: [0x52, 0x54, 0, 0x50, 0, 1],
            uptime_ms: 123_456,
        }));
        round_trip(Message::Assignment(Assignment {
            nonce: 77,
            token: 0xABCD,
            model: ModelId::MxLenet,
            mode: BatchMode::PerNode,
            batch: 64,
            sync_period: 1,
            seed: 9,
            epochs: 10,
            nodes: 3,
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
        }));
        let data = [9u8; CHUNK_DATA];
        round_trip(Message::Chunk(Chunk {
            transfer: 1,
            content: Content::Gradient,
            step: 12,
            total_len: 100_000,
            index: 3,
            data: &data,
        }));
        round_trip(Message::Ack { transfer: 4 });
        round_trip(Message::Nack(Nack { transfer: 4, base: 128, missing: &[0b1010, 0xff] }));
        round_trip(Message::Ping { nonce: 1 });
        round_trip(Message::Status(Status {
            state: NodeState::Computing,
            step: 3,
            accepted: 10,
            rejected: 2,
        }));
        round_trip(Message::Control(Command::Reboot));
    }

    /// The Hello body byte for byte, so a change of layout cannot pass unnoticed (it needs a new
    /// wire version).
    #[test]
    fn hello_layout_is_pinned() {
        let hello = Message::Hello(Hello {
            firmware_version: 0x0001_0203,
            cores: 4,
            nonce: 0x1122_3344_5566_7788,
            shard: SHARD,
            shard_hash: 0x0102_0304_0506_0708,
            mac: [0x52, 0x54, 0x00, 0x50, 0x00, 0x01],
            uptime_ms: 0x0A0B,
        });
        let mut buf = [0u8; 64];
        let n = hello.emit(&mut buf).unwrap();
        #[rustfmt::skip]
        let expected: [u8; 44] = [
            0x03, 0x02, 0x01, 0x00, // firmware version
            4, // cores
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // nonce
            0x60, 0xEA, 0, 0, 3, 0, 1, 0, 1, // shard: total, nodes, index, layout
            8, 7, 6, 5, 4, 3, 2, 1, // shard hash
            0x52, 0x54, 0x00, 0x50, 0x00, 0x01, // MAC
            0x0B, 0x0A, 0, 0, 0, 0, 0, 0, // uptime in ms
        ];
        assert_eq!(&buf[..n], &expected);
        // A version-1 Hello (no MAC, no uptime) is refused, not misread.
        assert_eq!(Message::parse(1, &buf[..n - 14]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(Message::parse(0, &[]).unwrap_err(), WireError::BadValue);
        assert_eq!(Message::parse(8, &[3]).unwrap_err(), WireError::BadValue);
        assert_eq!(Message::parse(4, &[1, 2, 3, 4, 5]).unwrap_err(), WireError::TooLong);
        // A shard index outside the shard count.
        let mut buf = [0u8; 64];
        let hello = Message::Hello(Hello {
            firmware_version: 1,
            cores: 1,
            nonce: 1,
            shard: SHARD,
            shard_hash: 0,
            mac: [0; 6],
            uptime_ms: 0,
        });
        let n = hello.emit(&mut buf).unwrap();
        buf[4 + 1 + 8 + 6] = 3; // index = 3 of 3 shards
        assert_eq!(Message::parse(1, &buf[..n]).unwrap_err(), WireError::BadValue);
        let too_big = [0u8; CHUNK_DATA + 1];
        let chunk = Message::Chunk(Chunk {
            transfer: 1,
            content: Content::Model,
            step: 0,
            total_len: 1,
            index: 0,
            data: &too_big,
        });
        assert_eq!(chunk.emit(&mut [0u8; 2000]).unwrap_err(), WireError::TooLong);
    }

    #[test]
    fn shards_partition_the_set() {
        for layout in [ShardLayout::Contiguous, ShardLayout::Strided] {
            for nodes in [1u16, 2, 3, 7, 10] {
                let total = 1003;
                let mut owners = [0u8; 1003];
                let mut sizes = 0;
                for index in 0..nodes {
                    let s = ShardSpec { total, nodes, index, layout };
                    sizes += s.len();
                    for local in 0..s.len() {
                        let g = s.global_index(local);
                        assert_eq!(s.local_index(g), Some(local));
                        owners[g as usize] += 1;
                    }
                }
                assert_eq!(sizes, total);
                assert!(owners.iter().all(|&o| o == 1), "{layout:?} {nodes}");
            }
        }
    }
}
