//! A user-space IPv4 gateway between QEMU nodes and the host's UDP master.
//!
//! Each QEMU raspi3b node's USB Ethernet is a `-netdev dgram` on 127.0.0.1: every frame the guest sends
//! is one UDP datagram to the bridge's frame port (QEMU's `remote.port`), and every datagram the bridge
//! sends to QEMU's `local.port` is one frame to the guest. The guests believe they are boards on a LAN
//! with the master at the gateway address (10.0.0.1); the bridge plays that address. It answers ARP and
//! ICMP echo for it, and turns each node's UDP to the gateway into UDP from a socket of its own on
//! 127.0.0.1, one socket per node, so the unchanged std-UDP master sees one source address per node,
//! as it would see one IP per board. The master's answers to that socket go back to the node as
//! Ethernet/IPv4/UDP frames from the gateway. It is also the nodes' DHCP server: a node that asks
//! (its blob says DHCP, as on a LAN with a router) is offered its configured address.
//!
//! Nothing ever leaves the machine: the bridge sends only to 127.0.0.1 (the master and the QEMU ports),
//! needs no root, no TAP device and no slirp. Each node's link can be shaped (token bucket and one-way
//! latency, both directions) to look like the Pi 3's 100 Mbit/s Ethernet.
//!
//! The bridge runs on one thread ([`Bridge::spawn`]) polling its non-blocking sockets; the
//! [`BridgeHandle`] reads per-node [`NodeCounters`], sends [`ping`](BridgeHandle::ping)s and stops it.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame,
    EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    UdpPacket, UdpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
    UDP_HEADER_LEN,
};

/// The gateway's default address on the nodes' network.
pub const DEFAULT_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The gateway's default MAC: locally administered, unicast.
pub const DEFAULT_GATEWAY_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// The largest Ethernet frame accepted from a guest, without FCS (1514, plus room for a VLAN tag).
pub const MAX_FRAME: usize = 1518;
/// The largest IPv4 packet the bridge sends: a 1500-byte MTU.
const MTU: usize = 1500;
/// The largest UDP payload that fits one frame unfragmented; the guests' smoltcp does not reassemble.
pub const MAX_UDP_PAYLOAD: usize = MTU - IPV4_HEADER_LEN - UDP_HEADER_LEN;
/// The largest ICMP echo payload [`BridgeHandle::ping`] can send.
pub const MAX_PING_PAYLOAD: usize = MTU - IPV4_HEADER_LEN - 8;
/// Bytes a frame occupies on a real wire beyond its header and payload: preamble and start delimiter
/// (8), FCS (4) and inter-frame gap (12). Shaping counts them so 100 Mbit/s means what it does on a Pi.
pub const WIRE_OVERHEAD: usize = 24;

/// Frames a shaped link holds per direction before dropping, like a switch port's buffer.
const MAX_QUEUED_FRAMES: usize = 1024;
/// Frames held per node while its MAC is being resolved.
const MAX_AWAITING_MAC: usize = 64;
/// How often an unanswered ARP request for a node is repeated, and how many times.
const ARP_RETRY: Duration = Duration::from_secs(1);
const ARP_TRIES: u32 = 3;
/// Receive buffer asked for on each socket.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read from one socket per loop turn, so one busy node cannot starve the others.
const READ_BURST: usize = 64;
/// The longest the loop sleeps with nothing scheduled; stopping does not depend on it (it wakes the
/// loop), it only bounds the damage of a lost wake-up.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// TTL of the packets the gateway originates.
const HOP_LIMIT: u8 = 64;
/// The lease the bridge's DHCP server gives: long, the addresses are fixed anyway.
const DHCP_LEASE_SECONDS: u32 = 24 * 3600;
/// The nodes' network is a /24 around the gateway.
const DHCP_SUBNET_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
/// ICMP identifier of the bridge's pings ("pt").
const PING_IDENT: u16 = 0x7074;

/// Errors of the bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The bridge only talks to this machine.
    #[error("{what} {addr} is not on 127.0.0.1: the bridge sends to this machine only")]
    NotLoopback {
        /// Which address.
        what: &'static str,
        /// The address given.
        addr: SocketAddr,
    },
    /// A port of 0 where a real one is needed.
    #[error("{what} is port 0")]
    ZeroPort {
        /// Which port.
        what: String,
    },
    /// Two nodes with the same id.
    #[error("node {0} is configured twice")]
    DuplicateNode(u16),
    /// A node address that cannot work: not unicast, the gateway's, or another node's.
    #[error("node {id}: {ip} is {why}")]
    BadNodeAddress {
        /// The node.
        id: u16,
        /// Its configured address.
        ip: Ipv4Addr,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The gateway's own address or MAC is not unicast.
    #[error("the gateway's {0} is not a unicast address")]
    BadGateway(&'static str),
    /// Shaping with a rate of 0 would never deliver anything.
    #[error("node {0}: a link rate of 0 bit/s")]
    ZeroRate(u16),
    /// A socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Socket setup, polling or the thread failed.
    #[error("bridge I/O: {0}")]
    Io(#[from] io::Error),
    /// No node with this id.
    #[error("no node {0} on the bridge")]
    UnknownNode(u16),
    /// A ping payload larger than one frame carries.
    #[error("a ping payload of {0} bytes does not fit one frame (at most {MAX_PING_PAYLOAD})")]
    PingTooLarge(usize),
    /// No echo reply in time.
    #[error("no echo reply from node {node} within {timeout:?}")]
    PingTimeout {
        /// The node.
        node: u16,
        /// How long the bridge waited.
        timeout: Duration,
    },
    /// The bridge thread is gone (stopped, or failed).
    #[error("the bridge thread has stopped")]
    Stopped,
    /// The bridge thread panicked.
    #[error("the bridge thread panicked")]
    Panicked,
}

/// Link shaping of one node, applied to its frames in each direction separately.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shaping {
    /// Line rate in bits per second (frames count with [`WIRE_OVERHEAD`]).
    pub rate_bps: u64,
    /// One-way latency added to every frame after it is serialised.
    pub latency: Duration,
}

impl Shaping {
    /// The Pi 3's Fast Ethernet, with the given one-way latency.
    pub fn pi3(latency: Duration) -> Shaping {
        Shaping { rate_bps: 100_000_000, latency }
    }
}

/// One QEMU node on the bridge.
#[derive(Clone, Debug)]
pub struct NodeLink {
    /// The node's id (as in the cluster file).
    pub id: u16,
    /// The node's static IPv4 address on the virtual LAN.
    pub ip: Ipv4Addr,
    /// The port the bridge binds on 127.0.0.1 to receive the node's frames: QEMU's `remote.port`.
    /// 0 lets the system choose; read it back with [`Bridge::frame_addr`] before starting QEMU.
    pub bridge_port: u16,
    /// The port QEMU's netdev listens on, where the bridge sends frames for the guest: its `local.port`.
    pub qemu_port: u16,
    /// Link shaping, or none (frames pass as fast as the host moves them).
    pub shaping: Option<Shaping>,
}

impl NodeLink {
    /// Node `id` at its default address ([`default_node_ip`]), a system-chosen bridge port, unshaped.
    /// `None` if the id has no default address.
    pub fn new(id: u16, qemu_port: u16) -> Option<NodeLink> {
        Some(NodeLink { id, ip: default_node_ip(id)?, bridge_port: 0, qemu_port, shaping: None })
    }
}

/// Node k's default address, 10.0.0.(10+k), while it fits below the broadcast address.
pub fn default_node_ip(id: u16) -> Option<Ipv4Addr> {
    let last = u8::try_from(id.checked_add(10)?).ok().filter(|&b| b < 255)?;
    Some(Ipv4Addr::new(10, 0, 0, last))
}

/// What the bridge is.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// The gateway's (the master's) address on the virtual LAN.
    pub gateway_ip: Ipv4Addr,
    /// The gateway's MAC.
    pub gateway_mac: [u8; 6],
    /// The master's real UDP socket on this machine; must be on 127.0.0.1.
    pub master: SocketAddr,
    /// The nodes.
    pub nodes: Vec<NodeLink>,
}

impl BridgeConfig {
    /// The default gateway (10.0.0.1, 02:00:00:00:00:01) in front of `master`, with no nodes yet.
    pub fn new(master: SocketAddr) -> BridgeConfig {
        BridgeConfig {
            gateway_ip: DEFAULT_GATEWAY_IP,
            gateway_mac: DEFAULT_GATEWAY_MAC,
            master,
            nodes: Vec::new(),
        }
    }
}

/// Traffic and drops of one node, as seen by the bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Frames received from the node (before shaping).
    pub frames_from_node: u64,
    /// Their bytes (Ethernet header and payload).
    pub bytes_from_node: u64,
    /// Frames sent to the node (after shaping).
    pub frames_to_node: u64,
    /// Their bytes.
    pub bytes_to_node: u64,
    /// UDP datagrams forwarded from the node to the master.
    pub datagrams_to_master: u64,
    /// UDP datagrams from the master delivered (queued) towards the node.
    pub datagrams_from_master: u64,
    /// Frames that did not parse, or failed a checksum.
    pub malformed: u64,
    /// Well-formed frames the bridge does not handle: IPv6, broadcast IPv4 other than DHCP, other destinations,
    /// fragments, ARP for other addresses, a source address that is not the node's, other protocols.
    pub unsupported: u64,
    /// Frames dropped because a shaped link's queue was full or the node's MAC never resolved.
    pub queue_drops: u64,
    /// Datagrams from the master that cannot be delivered: the node has not sent UDP yet (its port is
    /// unknown) or the datagram does not fit one frame.
    pub undeliverable: u64,
    /// Datagrams on the bridge's sockets from anyone but the node's QEMU or the master.
    pub foreign: u64,
    /// Sends that failed (full socket buffers, mostly).
    pub send_errors: u64,
}

impl NodeCounters {
    /// Everything dropped, for any reason.
    pub fn drops(&self) -> u64 {
        self.malformed
            + self.unsupported
            + self.queue_drops
            + self.undeliverable
            + self.foreign
            + self.send_errors
    }
}

/// Where one node's traffic goes on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    /// The node's id.
    pub id: u16,
    /// Its address on the virtual LAN.
    pub ip: Ipv4Addr,
    /// Where QEMU sends the guest's frames (the bridge's socket): the netdev's `remote` address.
    pub frame_addr: SocketAddr,
    /// Where the bridge sends frames for the guest: the netdev's `local` address.
    pub qemu_addr: SocketAddr,
    /// The node's stand-in socket towards the master: the source address the master sees.
    pub master_side_addr: SocketAddr,
}

impl NodeAddrs {
    /// The QEMU `-netdev` argument connecting a guest NIC to this node's side of the bridge.
    pub fn netdev_arg(&self, netdev_id: &str) -> String {
        format!(
            "dgram,id={netdev_id},local.type=inet,local.host=127.0.0.1,local.port={},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            self.qemu_addr.port(),
            self.frame_addr.port()
        )
    }
}

/// A bridge with its sockets bound, not yet running.
pub struct Bridge {
    gateway: Gateway,
    nodes: Vec<Node>,
    addrs: Vec<NodeAddrs>,
}

/// The running bridge. Dropping it stops the thread.
pub struct BridgeHandle {
    addrs: Vec<NodeAddrs>,
    counters: Arc<Mutex<Vec<NodeCounters>>>,
    commands: mpsc::Sender<Command>,
    stop: Arc<AtomicBool>,
    waker: UnixDatagram,
    thread: Option<JoinHandle<Result<(), BridgeError>>>,
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// A non-blocking UDP socket on `addr` with a receive buffer as large as the system allows up to
/// [`SOCKET_BUFFER`]: a guest's burst (a gradient upload) must wait in the kernel while the thread is
/// descheduled on a loaded machine, not be dropped there.
fn bind(addr: SocketAddr) -> Result<UdpSocket, BridgeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: the system caps it (net.core.rmem_max), which is not an error.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    bind().map_err(|source| BridgeError::Bind { addr, source })
}

impl Bridge {
    /// Checks `config` and binds every socket: each node's frame port and its stand-in socket towards
    /// the master (127.0.0.1, a system-chosen port).
    pub fn new(config: BridgeConfig) -> Result<Bridge, BridgeError> {
        if config.master.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) {
            return Err(BridgeError::NotLoopback { what: "the master", addr: config.master });
        }
        if config.master.port() == 0 {
            return Err(BridgeError::ZeroPort { what: "the master".into() });
        }
        let gateway_mac = EthernetAddress(config.gateway_mac);
        if !gateway_mac.is_unicast() {
            return Err(BridgeError::BadGateway("MAC"));
        }
        if !is_unicast_ip(config.gateway_ip) {
            return Err(BridgeError::BadGateway("IPv4 address"));
        }
        let gateway = Gateway { ip: config.gateway_ip, mac: gateway_mac, master: config.master };
        let now = Instant::now();
        let mut nodes = Vec::with_capacity(config.nodes.len());
        let mut addrs = Vec::with_capacity(config.nodes.len());
        for (i, link) in config.nodes.iter().enumerate() {
            let earlier = &config.nodes[..i];
            if earlier.iter().any(|n| n.id == link.id) {
                return Err(BridgeError::DuplicateNode(link.id));
            }
            let bad = |why| BridgeError::BadNodeAddress { id: link.id, ip: link.ip, why };
            if !is_unicast_ip(link.ip) {
                return Err(bad("not a unicast address"));
            }
            if link.ip == config.gateway_ip {
                return Err(bad("the gateway's address"));
            }
            if earlier.iter().any(|n| n.ip == link.ip) {
                return Err(bad("another node's address"));
            }
            if link.qemu_port == 0 {
                return Err(BridgeError::ZeroPort { what: format!("node {}'s QEMU port", link.id) });
            }
            if link.shaping.is_some_and(|s| s.rate_bps == 0) {
                return Err(BridgeError::ZeroRate(link.id));
            }
            let frames = bind(localhost(link.bridge_port))?;
            let host = bind(localhost(0))?;
            let qemu = localhost(link.qemu_port);
            addrs.push(NodeAddrs {
                id: link.id,
                ip: link.ip,
                frame_addr: frames.local_addr()?,
                qemu_addr: qemu,
                master_side_addr: host.local_addr()?,
            });
            nodes.push(Node {
                id: link.id,
                ip: link.ip,
                frames,
                qemu,
                host,
                mac: None,
                ports: None,
                inbound: Link::new(link.shaping, now),
                outbound: Link::new(link.shaping, now),
                awaiting_mac: VecDeque::new(),
                arp_next: None,
                arp_tries: 0,
            });
        }
        Ok(Bridge { gateway, nodes, addrs })
    }

    /// The addresses of node `id`, if it is on the bridge.
    pub fn node(&self, id: u16) -> Option<NodeAddrs> {
        self.addrs.iter().find(|a| a.id == id).copied()
    }

    /// Where QEMU must send node `id`'s frames (the netdev's `remote.port`).
    pub fn frame_addr(&self, id: u16) -> Option<SocketAddr> {
        self.node(id).map(|a| a.frame_addr)
    }

    /// Starts the bridge on its own thread.
    pub fn spawn(self) -> Result<BridgeHandle, BridgeError> {
        let (waker, wake) = UnixDatagram::pair()?;
        waker.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let (commands, command_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Mutex::new(vec![NodeCounters::default(); self.nodes.len()]));
        let addrs = self.addrs.clone();
        let worker = Worker {
            gateway: self.gateway,
            nodes: self.nodes,
            pings: Vec::new(),
            next_seq: 0,
            wake,
            commands: command_rx,
            stop: stop.clone(),
            counters: counters.clone(),
        };
        let thread = std::thread::Builder::new().name("pitrain-bridge".into()).spawn(move || worker.run())?;
        Ok(BridgeHandle { addrs, counters, commands, stop, waker, thread: Some(thread) })
    }
}

impl BridgeHandle {
    /// The addresses of every node, in configuration order.
    pub fn nodes(&self) -> &[NodeAddrs] {
        &self.addrs
    }

    /// The addresses of node `id`.
    pub fn node(&self, id: u16) -> Option<NodeAddrs> {
        self.addrs.iter().find(|a| a.id == id).copied()
    }

    /// Where QEMU must send node `id`'s frames (the netdev's `remote.port`).
    pub fn frame_addr(&self, id: u16) -> Option<SocketAddr> {
        self.node(id).map(|a| a.frame_addr)
    }

    /// The source address the master sees for node `id`.
    pub fn master_side_addr(&self, id: u16) -> Option<SocketAddr> {
        self.node(id).map(|a| a.master_side_addr)
    }

    /// Node `id`'s counters so far.
    pub fn counters(&self, id: u16) -> Option<NodeCounters> {
        let index = self.addrs.iter().position(|a| a.id == id)?;
        Some(lock(&self.counters)[index])
    }

    /// Every node's counters, with its id, in configuration order.
    pub fn all_counters(&self) -> Vec<(u16, NodeCounters)> {
        let counters = lock(&self.counters);
        self.addrs.iter().zip(counters.iter()).map(|(a, c)| (a.id, *c)).collect()
    }

    /// Sends an ICMP echo request with `payload` from the gateway to node `id` and waits up to `timeout`
    /// for the reply; returns the round-trip time, measured by the bridge thread. The time includes
    /// link shaping, and ARP resolution if the node's MAC was not known yet (as the first ping of
    /// ping(8) does).
    pub fn ping(&self, id: u16, payload: &[u8], timeout: Duration) -> Result<Duration, BridgeError> {
        let node = self.addrs.iter().position(|a| a.id == id).ok_or(BridgeError::UnknownNode(id))?;
        if payload.len() > MAX_PING_PAYLOAD {
            return Err(BridgeError::PingTooLarge(payload.len()));
        }
        let (reply, result) = mpsc::channel();
        self.commands
            .send(Command::Ping { node, payload: payload.to_vec(), timeout, reply })
            .map_err(|_| BridgeError::Stopped)?;
        self.wake();
        // The thread answers at the deadline at the latest; the margin covers a descheduled thread.
        match result.recv_timeout(timeout + Duration::from_secs(2)) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(BridgeError::PingTimeout { node: id, timeout }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(BridgeError::Stopped),
        }
    }

    /// Stops the thread and waits for it; returns the error it stopped with, if any.
    pub fn stop(mut self) -> Result<(), BridgeError> {
        self.shutdown()
    }

    fn wake(&self) {
        // A full buffer means a wake-up is already pending, which is all that is needed.
        let _ = self.waker.send(&[0]);
    }

    fn shutdown(&mut self) -> Result<(), BridgeError> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        thread.join().map_err(|_| BridgeError::Panicked)?
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The counters survive a panic of the thread that held them: they are plain numbers.
fn lock(counters: &Mutex<Vec<NodeCounters>>) -> MutexGuard<'_, Vec<NodeCounters>> {
    counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_unicast_ip(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast())
}

/// Requests from the handle to the thread.
enum Command {
    Ping {
        node: usize,
        payload: Vec<u8>,
        timeout: Duration,
        reply: mpsc::Sender<Result<Duration, BridgeError>>,
    },
}

/// The gateway's identity.
#[derive(Clone, Copy)]
struct Gateway {
    ip: Ipv4Addr,
    mac: EthernetAddress,
    master: SocketAddr,
}

/// One direction of a node's link: a token bucket feeding a fixed delay.
struct Link {
    shaping: Option<Shaping>,
    /// Tokens (bits) in the bucket at `stamp`.
    tokens: f64,
    /// When the last frame left the bucket (possibly in the future: frames leave in order).
    stamp: Instant,
    /// Frames with the time they arrive at the far end, in order (departures and the latency are
    /// monotonic, so arrivals are too).
    queue: VecDeque<(Instant, Vec<u8>)>,
}

/// The bucket holds one full-size frame: the link may send one frame back-to-back after being idle,
/// never a burst faster than the line rate.
const BUCKET_BITS: f64 = ((MAX_FRAME + WIRE_OVERHEAD) * 8) as f64;

impl Link {
    fn new(shaping: Option<Shaping>, now: Instant) -> Link {
        Link { shaping, tokens: BUCKET_BITS, stamp: now, queue: VecDeque::new() }
    }

    /// Schedules `frame`; false if the queue is full and the frame is dropped.
    fn push(&mut self, now: Instant, frame: Vec<u8>) -> bool {
        let Some(shaping) = self.shaping else {
            self.queue.push_back((now, frame));
            return true;
        };
        if self.queue.len() >= MAX_QUEUED_FRAMES {
            return false;
        }
        let rate = shaping.rate_bps as f64;
        // The frame cannot start before the previous one has left.
        let start = self.stamp.max(now);
        let refill = start.saturating_duration_since(self.stamp).as_secs_f64() * rate;
        let tokens = (self.tokens + refill).min(BUCKET_BITS);
        let bits = ((frame.len() + WIRE_OVERHEAD) * 8) as f64;
        let departure = if tokens >= bits {
            self.tokens = tokens - bits;
            start
        } else {
            self.tokens = 0.0;
            start + Duration::from_secs_f64((bits - tokens) / rate)
        };
        self.stamp = departure;
        self.queue.push_back((departure + shaping.latency, frame));
        true
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.queue.front().is_some_and(|(at, _)| *at <= now) {
            self.queue.pop_front().map(|(_, frame)| frame)
        } else {
            None
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }
}

/// One node's state in the thread.
struct Node {
    id: u16,
    ip: Ipv4Addr,
    /// Bound to the frame port; receives the guest's frames, sends frames to `qemu`.
    frames: UdpSocket,
    qemu: SocketAddr,
    /// The node's stand-in towards the master.
    host: UdpSocket,
    /// Learned from the node's ARP and IPv4 frames.
    mac: Option<EthernetAddress>,
    /// (gateway port, node port) of the node's latest UDP datagram: where the master's answers go.
    ports: Option<(u16, u16)>,
    /// Frames from the guest on their way to the gateway.
    inbound: Link,
    /// Frames from the gateway on their way to the guest.
    outbound: Link,
    /// Frames for the guest waiting for its MAC (their destination MAC is filled in on resolution).
    awaiting_mac: VecDeque<Vec<u8>>,
    arp_next: Option<Instant>,
    arp_tries: u32,
}

/// A ping in flight.
struct PendingPing {
    node: usize,
    seq: u16,
    payload: Vec<u8>,
    sent: Instant,
    deadline: Instant,
    timeout: Duration,
    reply: mpsc::Sender<Result<Duration, BridgeError>>,
}

/// What the thread owns.
struct Worker {
    gateway: Gateway,
    nodes: Vec<Node>,
    pings: Vec<PendingPing>,
    next_seq: u16,
    wake: UnixDatagram,
    commands: mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
    counters: Arc<Mutex<Vec<NodeCounters>>>,
}

impl Worker {
    fn run(mut self) -> Result<(), BridgeError> {
        // Index 0: the waker; then each node's frame socket and master-side socket.
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.wake.as_raw_fd())
            .chain(self.nodes.iter().flat_map(|n| [n.frames.as_raw_fd(), n.host.as_raw_fd()]))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self
                .next_deadline()
                .map_or(IDLE_TICK, |at| at.saturating_duration_since(Instant::now()).min(IDLE_TICK));
            poll(&mut fds, timeout)?;
            let counters = self.counters.clone();
            let mut counters = lock(&counters);
            if fds[0].revents != 0 {
                while self.wake.recv(&mut buf).is_ok() {}
            }
            while let Ok(command) = self.commands.try_recv() {
                self.command(command, &mut counters);
            }
            for i in 0..self.nodes.len() {
                if fds[1 + 2 * i].revents != 0 {
                    self.read_frames(i, &mut buf, &mut counters[i]);
                }
                if fds[2 + 2 * i].revents != 0 {
                    self.read_master(i, &mut buf, &mut counters[i]);
                }
            }
            let now = Instant::now();
            for i in 0..self.nodes.len() {
                while let Some(frame) = self.nodes[i].inbound.pop_due(now) {
                    self.handle_frame(i, &frame, now, &mut counters[i]);
                }
                let node = &mut self.nodes[i];
                while let Some(frame) = node.outbound.pop_due(now) {
                    let c = &mut counters[i];
                    match node.frames.send_to(&frame, node.qemu) {
                        Ok(_) => {
                            c.frames_to_node += 1;
                            c.bytes_to_node += frame.len() as u64;
                        }
                        Err(_) => c.send_errors += 1,
                    }
                }
                node.arp_timer(&self.gateway, now, &mut counters[i]);
            }
            self.expire_pings(now);
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let links = self.nodes.iter().flat_map(|n| [n.inbound.next_due(), n.outbound.next_due(), n.arp_next]);
        links.chain(self.pings.iter().map(|p| Some(p.deadline))).flatten().min()
    }

    fn command(&mut self, command: Command, counters: &mut [NodeCounters]) {
        let Command::Ping { node, payload, timeout, reply } = command;
        let now = Instant::now();
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let n = &mut self.nodes[node];
        let echo = Icmpv4Repr::EchoRequest { ident: PING_IDENT, seq_no: seq, data: &payload };
        let frame = icmp_frame(&self.gateway, n.mac.unwrap_or(EthernetAddress::BROADCAST), n.ip, &echo);
        n.send(&self.gateway, now, frame, &mut counters[node]);
        self.pings.push(PendingPing {
            node,
            seq,
            payload,
            sent: now,
            deadline: now + timeout,
            timeout,
            reply,
        });
    }

    fn expire_pings(&mut self, now: Instant) {
        let nodes = &self.nodes;
        self.pings.retain(|p| {
            if p.deadline > now {
                return true;
            }
            let _ =
                p.reply.send(Err(BridgeError::PingTimeout { node: nodes[p.node].id, timeout: p.timeout }));
            false
        });
    }

    /// Reads the guest's frames into the inbound link.
    fn read_frames(&mut self, i: usize, buf: &mut [u8], c: &mut NodeCounters) {
        let node = &mut self.nodes[i];
        for _ in 0..READ_BURST {
            let (n, from) = match node.frames.recv_from(buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Errors queued on the socket (an ICMP port unreachable from a QEMU not yet listening)
                // are about an earlier send; the socket itself is fine.
                Err(_) => continue,
            };
            // QEMU's dgram netdev sends from its local port; anything else is not the guest.
            if from != node.qemu {
                c.foreign += 1;
                continue;
            }
            c.frames_from_node += 1;
            c.bytes_from_node += n as u64;
            if n > MAX_FRAME {
                c.malformed += 1;
            } else if !node.inbound.push(Instant::now(), buf[..n].to_vec()) {
                c.queue_drops += 1;
            }
        }
    }

    /// Reads the master's datagrams for node `i` and sends them on as frames.
    fn read_master(&mut self, i: usize, buf: &mut [u8], c: &mut NodeCounters) {
        let gateway = self.gateway;
        let node = &mut self.nodes[i];
        for _ in 0..READ_BURST {
            let (n, from) = match node.host.recv_from(buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            if from != gateway.master {
                c.foreign += 1;
                continue;
            }
            let Some((gateway_port, node_port)) = node.ports.filter(|_| n <= MAX_UDP_PAYLOAD) else {
                c.undeliverable += 1;
                continue;
            };
            c.datagrams_from_master += 1;
            let dst_mac = node.mac.unwrap_or(EthernetAddress::BROADCAST);
            let frame = udp_frame(&gateway, dst_mac, node.ip, gateway_port, node_port, &buf[..n]);
            node.send(&gateway, Instant::now(), frame, c);
        }
    }

    /// A frame from guest `i` that has crossed its link.
    fn handle_frame(&mut self, i: usize, frame: &[u8], now: Instant, c: &mut NodeCounters) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            c.malformed += 1;
            return;
        };
        if !eth.src_addr().is_unicast() {
            c.malformed += 1;
            return;
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => self.nodes[i].handle_arp(&self.gateway, &eth, now, c),
            EthernetProtocol::Ipv4 if eth.dst_addr() == self.gateway.mac => self.handle_ipv4(i, &eth, now, c),
            EthernetProtocol::Ipv4 if eth.dst_addr().is_broadcast() => self.handle_broadcast(i, &eth, now, c),
            _ => c.unsupported += 1,
        }
    }

    /// A broadcast IPv4 frame: only a DHCP client's (from 0.0.0.0 or its own address, to
    /// 255.255.255.255, UDP 68 to 67) is answered.
    fn handle_broadcast(&mut self, i: usize, eth: &EthernetFrame<&[u8]>, now: Instant, c: &mut NodeCounters) {
        let Some((ip, ip_repr)) = ipv4_of(eth, c) else { return };
        if ip_repr.next_header != IpProtocol::Udp || !ip_repr.dst_addr.is_broadcast() {
            c.unsupported += 1;
            return;
        }
        let Some((udp, udp_repr)) = udp_of(&ip, &ip_repr, c) else { return };
        if (udp_repr.src_port, udp_repr.dst_port) != (DHCP_CLIENT_PORT, DHCP_SERVER_PORT) {
            c.unsupported += 1;
            return;
        }
        let gateway = self.gateway;
        self.nodes[i].handle_dhcp(&gateway, udp.payload(), now, c);
    }

    fn handle_ipv4(&mut self, i: usize, eth: &EthernetFrame<&[u8]>, now: Instant, c: &mut NodeCounters) {
        let caps = ChecksumCapabilities::default();
        let gateway = self.gateway;
        let node = &mut self.nodes[i];
        let Some((ip, ip_repr)) = ipv4_of(eth, c) else { return };
        // A node speaking from another address (DHCP, misconfiguration) could not get answers.
        if ip_repr.src_addr != node.ip || ip_repr.dst_addr != gateway.ip {
            c.unsupported += 1;
            return;
        }
        node.learn(eth.src_addr(), now, c);
        match ip_repr.next_header {
            IpProtocol::Udp => {
                let Some((udp, udp_repr)) = udp_of(&ip, &ip_repr, c) else { return };
                if (udp_repr.src_port, udp_repr.dst_port) == (DHCP_CLIENT_PORT, DHCP_SERVER_PORT) {
                    // A lease renewal, sent to the server directly.
                    node.handle_dhcp(&gateway, udp.payload(), now, c);
                    return;
                }
                node.ports = Some((udp_repr.dst_port, udp_repr.src_port));
                match node.host.send_to(udp.payload(), gateway.master) {
                    Ok(_) => c.datagrams_to_master += 1,
                    Err(_) => c.send_errors += 1,
                }
            }
            IpProtocol::Icmp => {
                let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
                    c.malformed += 1;
                    return;
                };
                let Ok(icmp_repr) = Icmpv4Repr::parse(&icmp, &caps) else {
                    c.malformed += 1;
                    return;
                };
                match icmp_repr {
                    Icmpv4Repr::EchoRequest { ident, seq_no, data } => {
                        let reply = Icmpv4Repr::EchoReply { ident, seq_no, data };
                        let mac = eth.src_addr();
                        node.send(&gateway, now, icmp_frame(&gateway, mac, node.ip, &reply), c);
                    }
                    Icmpv4Repr::EchoReply { ident: PING_IDENT, seq_no, data } => {
                        let found = self
                            .pings
                            .iter()
                            .position(|p| p.node == i && p.seq == seq_no && p.payload == data);
                        match found {
                            Some(k) => {
                                let ping = self.pings.swap_remove(k);
                                let _ = ping.reply.send(Ok(now.saturating_duration_since(ping.sent)));
                            }
                            // Late (timed out) or not ours.
                            None => c.unsupported += 1,
                        }
                    }
                    _ => c.unsupported += 1,
                }
            }
            _ => c.unsupported += 1,
        }
    }
}

impl Node {
    /// Sends a frame from the gateway to the guest, resolving its MAC first if needed.
    fn send(&mut self, gateway: &Gateway, now: Instant, frame: Vec<u8>, c: &mut NodeCounters) {
        if self.mac.is_some() {
            if !self.outbound.push(now, frame) {
                c.queue_drops += 1;
            }
            return;
        }
        if self.awaiting_mac.len() >= MAX_AWAITING_MAC {
            c.queue_drops += 1;
            return;
        }
        self.awaiting_mac.push_back(frame);
        if self.arp_next.is_none() {
            self.arp_tries = 0;
            self.arp_next = Some(now);
            self.arp_timer(gateway, now, c);
        }
    }

    /// Asks for the guest's MAC while frames wait for it; gives them up after [`ARP_TRIES`].
    fn arp_timer(&mut self, gateway: &Gateway, now: Instant, c: &mut NodeCounters) {
        let Some(at) = self.arp_next.filter(|at| *at <= now) else { return };
        if self.arp_tries >= ARP_TRIES {
            c.queue_drops += self.awaiting_mac.len() as u64;
            self.awaiting_mac.clear();
            self.arp_next = None;
            return;
        }
        self.arp_tries += 1;
        self.arp_next = Some(at.max(now) + ARP_RETRY);
        let request = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: gateway.mac,
            source_protocol_addr: gateway.ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: self.ip,
        };
        if !self.outbound.push(now, arp_frame(gateway.mac, EthernetAddress::BROADCAST, &request)) {
            c.queue_drops += 1;
        }
    }

    /// Records the guest's MAC and releases what waited for it.
    fn learn(&mut self, mac: EthernetAddress, now: Instant, c: &mut NodeCounters) {
        self.mac = Some(mac);
        self.arp_next = None;
        while let Some(mut frame) = self.awaiting_mac.pop_front() {
            frame[..6].copy_from_slice(mac.as_bytes());
            if !self.outbound.push(now, frame) {
                c.queue_drops += 1;
            }
        }
    }

    /// Answers the node's DHCP client: the only address it is offered is its configured one, with
    /// the gateway as router and server.
    fn handle_dhcp(&mut self, gateway: &Gateway, message: &[u8], now: Instant, c: &mut NodeCounters) {
        let Ok(packet) = DhcpPacket::new_checked(message) else {
            c.malformed += 1;
            return;
        };
        let Ok(request) = DhcpRepr::parse(&packet) else {
            c.malformed += 1;
            return;
        };
        let wanted = request.requested_ip.unwrap_or(request.client_ip);
        let answer = match request.message_type {
            DhcpMessageType::Discover => DhcpMessageType::Offer,
            DhcpMessageType::Request if wanted == self.ip => DhcpMessageType::Ack,
            DhcpMessageType::Request => DhcpMessageType::Nak,
            // Release, decline, inform: nothing to keep track of.
            _ => {
                c.unsupported += 1;
                return;
            }
        };
        let client = request.client_hardware_address;
        if !client.is_unicast() {
            c.malformed += 1;
            return;
        }
        self.learn(client, now, c);
        let offered = answer != DhcpMessageType::Nak;
        let reply = DhcpRepr {
            message_type: answer,
            transaction_id: request.transaction_id,
            secs: 0,
            client_hardware_address: client,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: if offered { self.ip } else { Ipv4Addr::UNSPECIFIED },
            server_ip: gateway.ip,
            router: offered.then_some(gateway.ip),
            subnet_mask: offered.then_some(DHCP_SUBNET_MASK),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(gateway.ip),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: offered.then_some(DHCP_LEASE_SECONDS),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut payload = vec![0u8; reply.buffer_len()];
        if reply.emit(&mut DhcpPacket::new_unchecked(&mut payload[..])).is_err() {
            c.send_errors += 1;
            return;
        }
        // To the broadcast address: the client has no address yet to receive a unicast on.
        let frame =
            udp_frame(gateway, client, Ipv4Addr::BROADCAST, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, &payload);
        if !self.outbound.push(now, frame) {
            c.queue_drops += 1;
        }
    }

    fn handle_arp(
        &mut self,
        gateway: &Gateway,
        eth: &EthernetFrame<&[u8]>,
        now: Instant,
        c: &mut NodeCounters,
    ) {
        let dst = eth.dst_addr();
        if !(dst.is_broadcast() || dst == gateway.mac) {
            c.unsupported += 1;
            return;
        }
        let Ok(packet) = ArpPacket::new_checked(eth.payload()) else {
            c.malformed += 1;
            return;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            c.malformed += 1;
            return;
        };
        // Requests, replies and gratuitous ARP from the node all say where it is.
        let from_node = source_protocol_addr == self.ip && source_hardware_addr.is_unicast();
        if from_node {
            self.learn(source_hardware_addr, now, c);
        }
        match operation {
            ArpOperation::Request
                if target_protocol_addr == gateway.ip && source_hardware_addr.is_unicast() =>
            {
                let reply = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: gateway.mac,
                    source_protocol_addr: gateway.ip,
                    target_hardware_addr: source_hardware_addr,
                    target_protocol_addr: source_protocol_addr,
                };
                if !self.outbound.push(now, arp_frame(gateway.mac, source_hardware_addr, &reply)) {
                    c.queue_drops += 1;
                }
            }
            ArpOperation::Reply if from_node => {}
            _ => c.unsupported += 1,
        }
    }
}

/// Waits until a socket is readable or `timeout` passes. ppoll, for timers finer than poll's
/// milliseconds: a 1514-byte frame lasts 123 µs at 100 Mbit/s.
fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> Result<(), BridgeError> {
    let spec = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structures and `spec`
    // a valid timespec; a null signal mask leaves the thread's mask alone.
    let ready = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &spec, std::ptr::null()) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error.into());
        }
        fds.iter_mut().for_each(|fd| fd.revents = 0);
    }
    Ok(())
}

/// The IPv4 packet of a frame, parsed and its header checksum checked; counted and `None` when
/// malformed, or a fragment (whether smoltcp refuses fragments depends on a feature another crate in
/// the build may turn on, and the gateway never reassembles).
fn ipv4_of<'f>(
    eth: &EthernetFrame<&'f [u8]>,
    c: &mut NodeCounters,
) -> Option<(Ipv4Packet<&'f [u8]>, Ipv4Repr)> {
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        c.malformed += 1;
        return None;
    };
    let Ok(repr) = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()) else {
        c.malformed += 1;
        return None;
    };
    if ip.more_frags() || ip.frag_offset() != 0 {
        c.unsupported += 1;
        return None;
    }
    Some((ip, repr))
}

/// The UDP datagram of an IPv4 packet, its checksum checked; counted and `None` when malformed.
fn udp_of<'p>(
    ip: &Ipv4Packet<&'p [u8]>,
    repr: &Ipv4Repr,
    c: &mut NodeCounters,
) -> Option<(UdpPacket<&'p [u8]>, UdpRepr)> {
    let (src, dst) = (IpAddress::Ipv4(repr.src_addr), IpAddress::Ipv4(repr.dst_addr));
    let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
        c.malformed += 1;
        return None;
    };
    let Ok(udp_repr) = UdpRepr::parse(&udp, &src, &dst, &ChecksumCapabilities::default()) else {
        c.malformed += 1;
        return None;
    };
    Some((udp, udp_repr))
}

fn arp_frame(src: EthernetAddress, dst: EthernetAddress, repr: &ArpRepr) -> Vec<u8> {
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + repr.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr { src_addr: src, dst_addr: dst, ethertype: EthernetProtocol::Arp }.emit(&mut eth);
    repr.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    buf
}

/// An Ethernet/IPv4 frame from the gateway to `dst_ip`, its transport part written by `fill`.
fn ipv4_frame(
    gateway: &Gateway,
    dst_mac: EthernetAddress,
    dst_ip: Ipv4Addr,
    protocol: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + payload_len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr { src_addr: gateway.mac, dst_addr: dst_mac, ethertype: EthernetProtocol::Ipv4 }
        .emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    let repr = Ipv4Repr {
        src_addr: gateway.ip,
        dst_addr: dst_ip,
        next_header: protocol,
        payload_len,
        hop_limit: HOP_LIMIT,
    };
    repr.emit(&mut ip, &ChecksumCapabilities::default());
    fill(ip.payload_mut());
    buf
}

fn udp_frame(
    gateway: &Gateway,
    dst_mac: EthernetAddress,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    ipv4_frame(gateway, dst_mac, dst_ip, IpProtocol::Udp, UDP_HEADER_LEN + payload.len(), |l4| {
        let (src, dst) = (IpAddress::Ipv4(gateway.ip), IpAddress::Ipv4(dst_ip));
        UdpRepr { src_port, dst_port }.emit(
            &mut UdpPacket::new_unchecked(l4),
            &src,
            &dst,
            payload.len(),
            |b| b.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
    })
}

fn icmp_frame(gateway: &Gateway, dst_mac: EthernetAddress, dst_ip: Ipv4Addr, repr: &Icmpv4Repr) -> Vec<u8> {
    ipv4_frame(gateway, dst_mac, dst_ip, IpProtocol::Icmp, repr.buffer_len(), |l4| {
        repr.emit(&mut Icmpv4Packet::new_unchecked(l4), &ChecksumCapabilities::default());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicBool;
    use std::thread;

    /// Long enough for a loaded 2-core machine, short enough to fail fast.
    const WAIT: Duration = Duration::from_secs(5);
    const GATEWAY: Ipv4Addr = DEFAULT_GATEWAY_IP;
    const GATEWAY_MAC: EthernetAddress = EthernetAddress(DEFAULT_GATEWAY_MAC);
    const MASTER_PORT: u16 = 7700;
    const NODE_PORT: u16 = 7701;

    /// A guest as QEMU presents it: a UDP socket on its `local.port` that exchanges raw frames with
    /// the bridge.
    struct FakeNode {
        id: u16,
        socket: UdpSocket,
        mac: EthernetAddress,
        ip: Ipv4Addr,
        bridge: SocketAddr,
    }

    impl FakeNode {
        fn send(&self, frame: &[u8]) {
            self.socket.send_to(frame, self.bridge).unwrap();
        }

        /// The next frame, skipping those `keep` refuses.
        fn recv_where(&self, keep: impl Fn(&[u8]) -> bool) -> Vec<u8> {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = self.socket.recv_from(&mut buf).expect("a frame from the bridge in time");
                assert_eq!(from, self.bridge, "frames come from the bridge's frame port");
                if keep(&buf[..n]) {
                    return buf[..n].to_vec();
                }
            }
        }

        fn recv(&self) -> Vec<u8> {
            self.recv_where(|_| true)
        }

        /// Nothing arrives within `wait`.
        fn assert_silent(&self, wait: Duration) {
            self.socket.set_read_timeout(Some(wait)).unwrap();
            let mut buf = [0u8; 2048];
            let got = self.socket.recv_from(&mut buf);
            self.socket.set_read_timeout(Some(WAIT)).unwrap();
            assert!(got.is_err(), "unexpected frame {:02x?}", &buf[..got.unwrap().0]);
        }

        /// The node as a sender of IPv4 frames to the gateway (the frame builders take the sender's
        /// identity as a `Gateway`).
        fn me(&self) -> Gateway {
            Gateway { ip: self.ip, mac: self.mac, master: localhost(1) }
        }

        fn udp_to_gateway(&self, payload: &[u8]) -> Vec<u8> {
            udp_frame(&self.me(), GATEWAY_MAC, GATEWAY, NODE_PORT, MASTER_PORT, payload)
        }
    }

    struct Setup {
        master: UdpSocket,
        bridge: BridgeHandle,
        nodes: Vec<FakeNode>,
    }

    fn setup(shaping: &[Option<Shaping>]) -> Setup {
        let master = UdpSocket::bind("127.0.0.1:0").unwrap();
        master.set_read_timeout(Some(WAIT)).unwrap();
        let mut config = BridgeConfig::new(master.local_addr().unwrap());
        let mut sockets = Vec::new();
        for (id, shaping) in shaping.iter().enumerate() {
            let id = id as u16;
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(WAIT)).unwrap();
            let mut link = NodeLink::new(id, socket.local_addr().unwrap().port()).unwrap();
            link.shaping = *shaping;
            config.nodes.push(link);
            sockets.push(socket);
        }
        let bridge = Bridge::new(config).unwrap().spawn().unwrap();
        let nodes = sockets
            .into_iter()
            .enumerate()
            .map(|(id, socket)| {
                let id = id as u16;
                FakeNode {
                    id,
                    socket,
                    mac: EthernetAddress([0x40, 0x54, 0x00, 0x77, 0x00, id as u8]),
                    ip: default_node_ip(id).unwrap(),
                    bridge: bridge.frame_addr(id).unwrap(),
                }
            })
            .collect();
        Setup { master, bridge, nodes }
    }

    /// "who-has `target`? tell `node`", written byte by byte rather than with the code under test.
    fn arp_request(node: &FakeNode, target: Ipv4Addr) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(node.mac.as_bytes());
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(node.mac.as_bytes());
        f.extend_from_slice(&node.ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    }

    /// The frame's Ethernet and IPv4 headers, with the IPv4 checksum checked.
    fn parse_ipv4(frame: &[u8]) -> (EthernetRepr, Ipv4Repr, Vec<u8>) {
        let eth = EthernetFrame::new_checked(frame).expect("an Ethernet frame");
        let eth_repr = EthernetRepr::parse(&eth).unwrap();
        assert_eq!(eth_repr.ethertype, EthernetProtocol::Ipv4);
        let ip = Ipv4Packet::new_checked(eth.payload()).expect("an IPv4 packet");
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        assert!(!ip.more_frags() && ip.frag_offset() == 0);
        let ip_repr = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).unwrap();
        (eth_repr, ip_repr, ip.payload().to_vec())
    }

    /// A UDP frame's addresses, ports and payload, with both checksums checked.
    fn parse_udp(frame: &[u8]) -> (EthernetRepr, Ipv4Repr, UdpRepr, Vec<u8>) {
        let (eth, ip, l4) = parse_ipv4(frame);
        assert_eq!(ip.next_header, IpProtocol::Udp);
        let udp = UdpPacket::new_checked(&l4[..]).expect("a UDP datagram");
        let (src, dst) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(ip.dst_addr));
        assert_ne!(udp.checksum(), 0, "the bridge always fills the UDP checksum");
        assert!(udp.verify_checksum(&src, &dst), "UDP checksum");
        let repr = UdpRepr::parse(&udp, &src, &dst, &ChecksumCapabilities::default()).unwrap();
        (eth, ip, repr, udp.payload().to_vec())
    }

    fn is_udp(frame: &[u8]) -> bool {
        frame.len() > 23 && frame[12..14] == [0x08, 0x00] && frame[23] == 17
    }

    /// A DHCP client's broadcast from `node`, as smoltcp's DHCP socket sends it.
    fn dhcp_from(node: &FakeNode, message_type: DhcpMessageType, requested: Option<Ipv4Addr>) -> Vec<u8> {
        let repr = DhcpRepr {
            message_type,
            transaction_id: 0x1234_5678,
            secs: 0,
            client_hardware_address: node.mac,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: requested,
            client_identifier: Some(node.mac),
            server_identifier: requested.map(|_| GATEWAY),
            parameter_request_list: Some(&[1, 3, 6]),
            dns_servers: None,
            max_size: Some(1432),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut payload = vec![0u8; repr.buffer_len()];
        repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..])).unwrap();
        let me = Gateway { ip: Ipv4Addr::UNSPECIFIED, mac: node.mac, master: node.bridge };
        udp_frame(
            &me,
            EthernetAddress::BROADCAST,
            Ipv4Addr::BROADCAST,
            DHCP_CLIENT_PORT,
            DHCP_SERVER_PORT,
            &payload,
        )
    }

    fn dhcp_reply(frame: &[u8]) -> (EthernetRepr, Ipv4Repr, DhcpMessageType, Ipv4Addr, Option<Ipv4Addr>) {
        let (eth, ip, udp, payload) = parse_udp(frame);
        assert_eq!((udp.src_port, udp.dst_port), (DHCP_SERVER_PORT, DHCP_CLIENT_PORT));
        let packet = DhcpPacket::new_checked(&payload[..]).unwrap();
        let repr = DhcpRepr::parse(&packet).unwrap();
        assert_eq!(repr.transaction_id, 0x1234_5678);
        assert_eq!(repr.server_identifier, Some(GATEWAY));
        (eth, ip, repr.message_type, repr.your_ip, repr.router)
    }

    #[test]
    fn dhcp_offers_and_acknowledges_the_node_its_own_address_only() {
        let s = setup(&[None, None]);
        let node = &s.nodes[1];
        node.send(&dhcp_from(node, DhcpMessageType::Discover, None));
        let (eth, ip, kind, yours, router) = dhcp_reply(&node.recv());
        assert_eq!((eth.src_addr, eth.dst_addr), (GATEWAY_MAC, node.mac));
        assert_eq!((ip.src_addr, ip.dst_addr), (GATEWAY, Ipv4Addr::BROADCAST));
        assert_eq!((kind, yours, router), (DhcpMessageType::Offer, node.ip, Some(GATEWAY)));
        assert_eq!(node.ip, Ipv4Addr::new(10, 0, 0, 11), "node 1's configured address");

        node.send(&dhcp_from(node, DhcpMessageType::Request, Some(node.ip)));
        let (_, _, kind, yours, _) = dhcp_reply(&node.recv());
        assert_eq!((kind, yours), (DhcpMessageType::Ack, node.ip));

        node.send(&dhcp_from(node, DhcpMessageType::Request, Some(Ipv4Addr::new(10, 0, 0, 10))));
        let (_, _, kind, yours, _) = dhcp_reply(&node.recv());
        assert_eq!(
            (kind, yours),
            (DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED),
            "node 0's address is not node 1's"
        );

        // Other broadcasts are not answered.
        let mut other = dhcp_from(node, DhcpMessageType::Discover, None);
        let udp_at = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN;
        other[udp_at + 2..udp_at + 4].copy_from_slice(&9999u16.to_be_bytes());
        other[udp_at + 6..udp_at + 8].copy_from_slice(&[0, 0]);
        node.send(&other);
        node.assert_silent(Duration::from_millis(200));
        let c = s.bridge.counters(1).unwrap();
        assert_eq!((c.frames_from_node, c.frames_to_node, c.unsupported), (4, 3, 1), "{c:?}");
        s.bridge.stop().unwrap();
    }

    #[test]
    fn arp_for_the_gateway_is_answered_and_other_arp_ignored() {
        let s = setup(&[None]);
        let node = &s.nodes[0];
        node.send(&arp_request(node, GATEWAY));
        let reply = node.recv();
        assert_eq!(reply.len(), 42);
        assert_eq!(&reply[0..6], node.mac.as_bytes(), "to the asker");
        assert_eq!(&reply[6..12], &DEFAULT_GATEWAY_MAC);
        assert_eq!(&reply[12..22], &[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2], "an ARP reply");
        assert_eq!(&reply[22..28], &DEFAULT_GATEWAY_MAC);
        assert_eq!(&reply[28..32], &GATEWAY.octets());
        assert_eq!(&reply[32..38], node.mac.as_bytes());
        assert_eq!(&reply[38..42], &node.ip.octets());

        node.send(&arp_request(node, Ipv4Addr::new(10, 0, 0, 99)));
        node.assert_silent(Duration::from_millis(200));
        let c = s.bridge.counters(0).unwrap();
        assert_eq!((c.frames_from_node, c.frames_to_node, c.unsupported), (2, 1, 1), "{c:?}");
        s.bridge.stop().unwrap();
    }

    #[test]
    fn udp_reaches_the_master_and_its_reply_comes_back_as_a_correct_frame() {
        let s = setup(&[None]);
        let node = &s.nodes[0];
        node.send(&node.udp_to_gateway(b"hello master"));
        let mut buf = [0u8; 2048];
        let (n, from) = s.master.recv_from(&mut buf).expect("the datagram reaches the master");
        assert_eq!(&buf[..n], b"hello master");
        assert_eq!(Some(from), s.bridge.master_side_addr(0));
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

        // The master answers whoever wrote, as it does with real boards.
        s.master.send_to(b"hello node", from).unwrap();
        let (eth, ip, udp, payload) = parse_udp(&node.recv());
        assert_eq!((eth.src_addr, eth.dst_addr), (GATEWAY_MAC, node.mac), "MAC learned from the frame");
        assert_eq!((ip.src_addr, ip.dst_addr), (GATEWAY, node.ip));
        assert_eq!((udp.src_port, udp.dst_port), (MASTER_PORT, NODE_PORT));
        assert_eq!(payload, b"hello node");

        // Largest datagram that fits a frame, both ways.
        let big: Vec<u8> = (0..MAX_UDP_PAYLOAD).map(|i| i as u8).collect();
        node.send(&node.udp_to_gateway(&big));
        let (n, _) = s.master.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &big[..]);
        s.master.send_to(&big, from).unwrap();
        let frame = node.recv();
        assert_eq!(frame.len(), 1514);
        assert_eq!(parse_udp(&frame).3, big);
        // One byte more cannot go without fragmenting, which the guests cannot reassemble.
        s.master.send_to(&vec![0; MAX_UDP_PAYLOAD + 1], from).unwrap();
        node.assert_silent(Duration::from_millis(200));

        let c = s.bridge.counters(0).unwrap();
        assert_eq!((c.frames_from_node, c.bytes_from_node), (2, 14 + 20 + 8 + 12 + 1514), "{c:?}");
        assert_eq!((c.frames_to_node, c.bytes_to_node), (2, 14 + 20 + 8 + 10 + 1514), "{c:?}");
        assert_eq!((c.datagrams_to_master, c.datagrams_from_master), (2, 2), "{c:?}");
        assert_eq!((c.undeliverable, c.drops()), (1, 1), "{c:?}");
        s.bridge.stop().unwrap();
    }

    #[test]
    fn each_node_has_its_own_address_at_the_master() {
        let s = setup(&[None, None]);
        let mut buf = [0u8; 64];
        let mut sources = Vec::new();
        for node in &s.nodes {
            node.send(&node.udp_to_gateway(&[node.id as u8]));
            let (n, from) = s.master.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[node.id as u8]);
            assert_eq!(Some(from), s.bridge.master_side_addr(node.id));
            sources.push(from);
        }
        assert_ne!(sources[0], sources[1], "one source address per node, like one IP per board");
        // Answers go to the node behind the address, in reverse order to show it is not "the last one".
        for (id, from) in sources.iter().enumerate().rev() {
            s.master.send_to(&[0xa0 + id as u8], from).unwrap();
        }
        for node in &s.nodes {
            let (_, ip, _, payload) = parse_udp(&node.recv());
            assert_eq!((ip.dst_addr, payload), (node.ip, vec![0xa0 + node.id as u8]));
        }
        s.bridge.stop().unwrap();
    }

    #[test]
    fn icmp_echo_to_the_gateway_is_answered() {
        let s = setup(&[None]);
        let node = &s.nodes[0];
        let request = Icmpv4Repr::EchoRequest { ident: 0x1234, seq_no: 7, data: b"are you there" };
        node.send(&icmp_frame(&node.me(), GATEWAY_MAC, GATEWAY, &request));
        let (eth, ip, l4) = parse_ipv4(&node.recv());
        assert_eq!((eth.src_addr, eth.dst_addr), (GATEWAY_MAC, node.mac));
        assert_eq!((ip.src_addr, ip.dst_addr, ip.next_header), (GATEWAY, node.ip, IpProtocol::Icmp));
        let icmp = Icmpv4Packet::new_checked(&l4[..]).unwrap();
        assert!(icmp.verify_checksum(), "ICMP checksum");
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap(),
            Icmpv4Repr::EchoReply { ident: 0x1234, seq_no: 7, data: b"are you there" }
        );
        s.bridge.stop().unwrap();
    }

    /// Answers ARP for the node's address and echo requests, like smoltcp does, until `done`.
    fn answer_pings(node: FakeNode, done: Arc<AtomicBool>) -> thread::JoinHandle<(u32, u32)> {
        thread::spawn(move || {
            node.socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let (mut arps, mut echoes) = (0, 0);
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::SeqCst) {
                let Ok((n, _)) = node.socket.recv_from(&mut buf) else { continue };
                let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
                match eth.ethertype() {
                    EthernetProtocol::Arp => {
                        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
                        let ArpRepr::EthernetIpv4 {
                            operation: ArpOperation::Request,
                            source_hardware_addr,
                            source_protocol_addr,
                            target_protocol_addr,
                            ..
                        } = arp
                        else {
                            panic!("{arp:?}")
                        };
                        assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
                        assert_eq!((source_hardware_addr, source_protocol_addr), (GATEWAY_MAC, GATEWAY));
                        assert_eq!(target_protocol_addr, node.ip);
                        arps += 1;
                        let reply = ArpRepr::EthernetIpv4 {
                            operation: ArpOperation::Reply,
                            source_hardware_addr: node.mac,
                            source_protocol_addr: node.ip,
                            target_hardware_addr: GATEWAY_MAC,
                            target_protocol_addr: GATEWAY,
                        };
                        node.send(&arp_frame(node.mac, GATEWAY_MAC, &reply));
                    }
                    _ => {
                        let (eth, ip, l4) = parse_ipv4(&buf[..n]);
                        assert_eq!((eth.dst_addr, ip.src_addr, ip.dst_addr), (node.mac, GATEWAY, node.ip));
                        let icmp = Icmpv4Packet::new_checked(&l4[..]).unwrap();
                        let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
                        let Icmpv4Repr::EchoRequest { ident, seq_no, data } = repr else {
                            panic!("{repr:?}")
                        };
                        echoes += 1;
                        let reply = Icmpv4Repr::EchoReply { ident, seq_no, data };
                        node.send(&icmp_frame(&node.me(), GATEWAY_MAC, GATEWAY, &reply));
                    }
                }
            }
            (arps, echoes)
        })
    }

    #[test]
    fn ping_measures_a_node_that_answers_and_times_out_on_one_that_does_not() {
        let mut s = setup(&[None, None]);
        let silent = s.nodes.pop().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let responder = answer_pings(s.nodes.pop().unwrap(), done.clone());

        // The first ping resolves the node's MAC first.
        for payload in [&b"ping"[..], &[0x55; MAX_PING_PAYLOAD][..], b""] {
            let rtt = s.bridge.ping(0, payload, WAIT).expect("an echo reply");
            assert!(rtt < WAIT, "{rtt:?}");
        }
        assert!(matches!(
            s.bridge.ping(0, &[0; MAX_PING_PAYLOAD + 1], WAIT),
            Err(BridgeError::PingTooLarge(1473))
        ));
        assert!(matches!(s.bridge.ping(9, b"", WAIT), Err(BridgeError::UnknownNode(9))));

        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let result = s.bridge.ping(1, b"anyone?", timeout);
        assert!(matches!(result, Err(BridgeError::PingTimeout { node: 1, .. })), "{result:?}");
        assert!(started.elapsed() >= timeout);
        // The silent node was asked for its MAC, and not sent the echo request blind.
        let asked = silent.recv();
        assert_eq!((&asked[0..6], &asked[12..14]), (&[0xff; 6][..], &[0x08, 0x06][..]));

        done.store(true, Ordering::SeqCst);
        assert_eq!(responder.join().unwrap(), (1, 3));
        s.bridge.stop().unwrap();
    }

    #[test]
    fn malformed_and_unsupported_frames_are_counted_and_dropped() {
        let s = setup(&[None]);
        let node = &s.nodes[0];
        let good = node.udp_to_gateway(b"fine");

        let mut bad_ip_checksum = good.clone();
        bad_ip_checksum[14 + 8] ^= 1; // TTL
        let mut bad_udp_checksum = good.clone();
        *bad_udp_checksum.last_mut().unwrap() ^= 1;
        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut broadcast = good.clone();
        broadcast[0..6].copy_from_slice(&[0xff; 6]);
        let stranger = Gateway { ip: Ipv4Addr::new(10, 0, 0, 200), ..node.me() };
        let wrong_source = udp_frame(&stranger, GATEWAY_MAC, GATEWAY, NODE_PORT, MASTER_PORT, b"x");
        let elsewhere = udp_frame(&node.me(), GATEWAY_MAC, Ipv4Addr::new(10, 0, 0, 2), 1, 2, b"x");
        for frame in
            [&good[..5], &bad_ip_checksum, &bad_udp_checksum, &ipv6, &broadcast, &wrong_source, &elsewhere]
        {
            node.send(frame);
        }
        // A datagram on the frame port from anyone but QEMU.
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&good, node.bridge).unwrap();
        // Deterministic garbage, never a panic: mutations of a good frame and random lengths.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Sent in batches the bridge has taken in before the next, so the kernel never drops any.
        let wait_taken = |count: u64| {
            let started = Instant::now();
            while s.bridge.counters(0).unwrap().frames_from_node + s.bridge.counters(0).unwrap().foreign
                < count
            {
                assert!(started.elapsed() < WAIT, "the bridge takes in frames");
                thread::sleep(Duration::from_millis(1));
            }
        };
        wait_taken(8);
        for i in 0..300 {
            if i % 20 == 0 {
                wait_taken(8 + i);
            }
            let mut frame = good.clone();
            frame.truncate(next() as usize % (good.len() + 1));
            for _ in 0..(next() % 4) {
                if !frame.is_empty() {
                    let at = next() as usize % frame.len();
                    frame[at] = next() as u8;
                }
            }
            node.send(&frame);
        }
        // Frames are handled in order: once the good one is at the master, the rest were seen.
        node.send(&node.udp_to_gateway(b"last"));
        let mut buf = [0u8; 64];
        loop {
            // Some mutations leave a valid frame (a changed source MAC, say): those arrive too.
            let (n, _) = s.master.recv_from(&mut buf).expect("a good frame still gets through");
            if &buf[..n] == b"last" {
                break;
            }
        }
        let c = s.bridge.counters(0).unwrap();
        assert_eq!(c.frames_from_node, 7 + 300 + 1, "{c:?}");
        assert_eq!(c.foreign, 1, "{c:?}");
        assert!(c.malformed >= 3, "{c:?}");
        assert!(c.unsupported >= 4, "{c:?}");

        // The master-side socket takes datagrams from the master only.
        let from = s.bridge.master_side_addr(0).unwrap();
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"sneaky", from).unwrap();
        s.master.send_to(b"real", from).unwrap();
        let (_, _, _, payload) = parse_udp(&node.recv_where(is_udp));
        assert_eq!(payload, b"real");
        assert_eq!(s.bridge.counters(0).unwrap().foreign, 2);
        s.bridge.stop().unwrap();
    }

    #[test]
    fn the_master_cannot_reach_a_node_before_it_speaks() {
        let s = setup(&[None]);
        s.master.send_to(b"too early", s.bridge.master_side_addr(0).unwrap()).unwrap();
        s.nodes[0].assert_silent(Duration::from_millis(200));
        assert_eq!(s.bridge.counters(0).unwrap().undeliverable, 1);
        s.bridge.stop().unwrap();
    }

    #[test]
    fn shaping_spreads_a_burst_at_the_line_rate_both_ways() {
        let rate_bps = 1_000_000;
        let latency = Duration::from_millis(20);
        let s = setup(&[Some(Shaping { rate_bps, latency })]);
        let node = &s.nodes[0];
        let payload = [0x5a; MAX_UDP_PAYLOAD];
        let frame = node.udp_to_gateway(&payload);
        assert_eq!(frame.len(), 1514);
        let count = 50;
        // 49 frames wait for the line after the first (the bucket holds one), then the latency.
        let expected =
            Duration::from_secs_f64(((count - 1) * (1514 + WIRE_OVERHEAD) * 8) as f64 / rate_bps as f64)
                + latency;

        let started = Instant::now();
        for _ in 0..count {
            node.send(&frame);
        }
        let mut buf = [0u8; 2048];
        let mut from = None;
        for _ in 0..count {
            let (n, source) = s.master.recv_from(&mut buf).expect("every frame arrives");
            assert_eq!(n, MAX_UDP_PAYLOAD);
            from = Some(source);
        }
        let up = started.elapsed();
        assert!(up >= expected.mul_f64(0.9), "node to master: {up:?}, expected about {expected:?}");

        let started = Instant::now();
        for _ in 0..count {
            s.master.send_to(&payload, from.unwrap()).unwrap();
        }
        for _ in 0..count {
            assert_eq!(node.recv_where(is_udp).len(), 1514);
        }
        let down = started.elapsed();
        assert!(down >= expected.mul_f64(0.9), "master to node: {down:?}, expected about {expected:?}");
        eprintln!("50 full frames at 1 Mbit/s + 20 ms: up {up:?}, down {down:?}, model {expected:?}");

        let c = s.bridge.counters(0).unwrap();
        assert_eq!((c.frames_from_node, c.frames_to_node, c.drops()), (50, 50, 0), "{c:?}");
        s.bridge.stop().unwrap();
    }

    #[test]
    fn configuration_mistakes_are_refused() {
        let loopback = localhost(7700);
        let node = |id| NodeLink::new(id, 40000 + id).unwrap();
        let with = |nodes: Vec<NodeLink>| BridgeConfig { nodes, ..BridgeConfig::new(loopback) };

        let remote = BridgeConfig::new("10.0.0.1:7700".parse().unwrap());
        assert!(matches!(Bridge::new(remote), Err(BridgeError::NotLoopback { .. })));
        let other_loopback = BridgeConfig::new("127.0.0.2:7700".parse().unwrap());
        assert!(matches!(Bridge::new(other_loopback), Err(BridgeError::NotLoopback { .. })));
        assert!(matches!(Bridge::new(with(vec![node(1), node(1)])), Err(BridgeError::DuplicateNode(1))));
        let clash = NodeLink { ip: DEFAULT_GATEWAY_IP, ..node(2) };
        assert!(matches!(Bridge::new(with(vec![clash])), Err(BridgeError::BadNodeAddress { id: 2, .. })));
        let same_ip = NodeLink { ip: default_node_ip(1).unwrap(), ..node(2) };
        assert!(matches!(
            Bridge::new(with(vec![node(1), same_ip])),
            Err(BridgeError::BadNodeAddress { id: 2, .. })
        ));
        let stalled = NodeLink { shaping: Some(Shaping { rate_bps: 0, latency: Duration::ZERO }), ..node(3) };
        assert!(matches!(Bridge::new(with(vec![stalled])), Err(BridgeError::ZeroRate(3))));
        let no_qemu = NodeLink { qemu_port: 0, ..node(4) };
        assert!(matches!(Bridge::new(with(vec![no_qemu])), Err(BridgeError::ZeroPort { .. })));

        assert_eq!(default_node_ip(0), Some(Ipv4Addr::new(10, 0, 0, 10)));
        assert_eq!(default_node_ip(244), Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(default_node_ip(245), None);

        let bridge = Bridge::new(with(vec![node(5)])).unwrap();
        let addrs = bridge.node(5).unwrap();
        assert_eq!(
            addrs.netdev_arg("n0"),
            format!(
                "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=40005,remote.type=inet,\
                 remote.host=127.0.0.1,remote.port={}",
                addrs.frame_addr.port()
            )
        );
        // Dropping the handle stops the thread.
        drop(bridge.spawn().unwrap());
    }
}
