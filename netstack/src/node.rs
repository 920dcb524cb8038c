//! A node's interface and sockets: ARP, ICMP echo (smoltcp answers pings itself), one UDP socket to
//! the master, and DHCP unless the node blob gives a static address.

use protocol::node::Transport;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{dhcpv4, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address, Ipv4Cidr};
use usb::ethernet::EthernetClass;

use crate::phy::EthernetDevice;

/// Datagrams each way the UDP socket can hold: a whole model broadcast's burst (609 for MxLenet)
/// would not fit in a Pi's spare RAM twice over, so the protocol's selective repeat covers the rest.
pub const UDP_PACKETS: usize = 256;
/// Bytes each way: UDP_PACKETS full datagrams.
pub const UDP_BYTES: usize = UDP_PACKETS * 1472;

/// Storage for a [`NodeNet`]'s sockets and packet metadata: a `static` on the board (taken once,
/// e.g. through a `ConstStaticCell`), leaked from the heap in tests. The payload bytes are apart, in
/// [`NetBuffers`]: smoltcp's metadata initialiser is not all zeros, so a static holding both would
/// be stored whole in the firmware image instead of in `.bss`.
pub struct NetStorage<'s> {
    sockets: [SocketStorage<'s>; 2],
    rx_meta: [udp::PacketMetadata; UDP_PACKETS],
    tx_meta: [udp::PacketMetadata; UDP_PACKETS],
}

impl NetStorage<'_> {
    /// Empty storage, usable in a `static` initialiser.
    pub const EMPTY: Self = NetStorage {
        sockets: [SocketStorage::EMPTY; 2],
        rx_meta: [udp::PacketMetadata::EMPTY; UDP_PACKETS],
        tx_meta: [udp::PacketMetadata::EMPTY; UDP_PACKETS],
    };
}

/// The UDP socket's payload buffers, each way: all zeros, so a `static` of them costs the image
/// nothing.
pub struct NetBuffers {
    rx: [u8; UDP_BYTES],
    tx: [u8; UDP_BYTES],
}

impl NetBuffers {
    /// Zeroed buffers, usable in a `static` initialiser.
    pub const ZERO: Self = NetBuffers { rx: [0; UDP_BYTES], tx: [0; UDP_BYTES] };
}

/// How the node gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// From a DHCP server.
    Dhcp,
    /// Fixed (from the node blob).
    Static {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Default gateway, if any.
        gateway: Option<Ipv4Address>,
    },
}

/// Network settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The MAC address to send from.
    pub mac: [u8; 6],
    /// Addressing.
    pub addressing: Addressing,
    /// The UDP port the node listens on.
    pub node_port: u16,
    /// The master.
    pub master: IpEndpoint,
}

/// Something worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// DHCP gave an address.
    Configured {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Router, if offered.
        router: Option<Ipv4Address>,
    },
    /// The DHCP lease was lost.
    Deconfigured,
}

/// A node's network stack.
pub struct NodeNet<'a, E: EthernetClass> {
    device: EthernetDevice<E>,
    iface: Interface,
    sockets: SocketSet<'a>,
    udp: SocketHandle,
    dhcp: Option<SocketHandle>,
    master: IpEndpoint,
    clock: fn() -> u64,
}

impl<'a, E: EthernetClass> NodeNet<'a, E> {
    /// Brings the interface up on `adapter` with `config`, its sockets in `storage` and `buffers`;
    /// `clock` gives the time in microseconds (smoltcp's timers: ARP, DHCP).
    pub fn new(
        adapter: E,
        config: &NetConfig,
        storage: &'a mut NetStorage<'a>,
        buffers: &'a mut NetBuffers,
        clock: fn() -> u64,
    ) -> Self {
        let now_us = clock();
        let mut device = EthernetDevice::new(adapter);
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        // A different seed per node keeps their ports and DHCP transaction ids apart.
        iface_config.random_seed = u64::from_le_bytes([
            config.mac[0],
            config.mac[1],
            config.mac[2],
            config.mac[3],
            config.mac[4],
            config.mac[5],
            0,
            0,
        ]);
        let mut iface = Interface::new(iface_config, &mut device, Instant::from_micros(now_us as i64));
        let NetStorage { sockets, rx_meta, tx_meta } = storage;
        let NetBuffers { rx: rx_data, tx: tx_data } = buffers;
        let mut sockets = SocketSet::new(&mut sockets[..]);
        let mut udp = udp::Socket::new(
            udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
            udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
        );
        udp.bind(config.node_port).expect("a fresh socket binds to a non-zero port");
        let udp = sockets.add(udp);
        let dhcp = match config.addressing {
            Addressing::Dhcp => Some(sockets.add(dhcpv4::Socket::new())),
            Addressing::Static { address, gateway } => {
                iface.update_ip_addrs(|addrs| {
                    let _ = addrs.push(IpCidr::Ipv4(address));
                });
                if let Some(gateway) = gateway {
                    let _ = iface.routes_mut().add_default_ipv4_route(gateway);
                }
                None
            }
        };
        NodeNet { device, iface, sockets, udp, dhcp, master: config.master, clock }
    }

    /// Moves frames and runs the timers; returns a DHCP event when one happened.
    pub fn poll(&mut self) -> Option<NetEvent> {
        let now = Instant::from_micros((self.clock)() as i64);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let handle = self.dhcp?;
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll()? {
            dhcpv4::Event::Configured(c) => NetEvent::Configured { address: c.address, router: c.router },
            dhcpv4::Event::Deconfigured => NetEvent::Deconfigured,
        };
        match event {
            NetEvent::Configured { address, router } => {
                self.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(address));
                });
                match router {
                    Some(r) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
            }
            NetEvent::Deconfigured => {
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
        Some(event)
    }

    /// The node's IPv4 address, once it has one.
    pub fn address(&self) -> Option<Ipv4Address> {
        self.iface.ipv4_addr()
    }

    /// Queues one datagram to the master; `false` when the socket's send buffer is full (or the
    /// datagram is larger than it), so that a sender that must not lose it can poll and try again.
    pub fn try_send(&mut self, datagram: &[u8]) -> bool {
        let master = self.master;
        self.sockets.get_mut::<udp::Socket>(self.udp).send_slice(datagram, master).is_ok()
    }

    /// The adapter (MAC, link state, counters).
    pub fn adapter(&mut self) -> &mut E {
        self.device.adapter()
    }
}

impl<E: EthernetClass> Transport for NodeNet<'_, E> {
    fn send(&mut self, datagram: &[u8]) {
        if !self.try_send(datagram) {
            // Full: push frames out and try once more; after that the protocol repeats what matters.
            self.poll();
            let _ = self.try_send(datagram);
        }
    }

    fn sending(&mut self) -> bool {
        self.sockets.get::<udp::Socket>(self.udp).send_queue() > 0
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.poll();
        let master = self.master.addr;
        let socket = self.sockets.get_mut::<udp::Socket>(self.udp);
        loop {
            let (n, meta) = socket.recv_slice(buf).ok()?;
            // Only the master's datagrams reach the protocol (which authenticates them anyway).
            if meta.endpoint.addr == master {
                return Some(n);
            }
        }
    }
}

/// The master's endpoint from the blob's address bytes and port.
pub fn endpoint(address: [u8; 4], port: u16) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::from(address)), port)
}

#[cfg(test)]
mod tests {
    use std::boxed::Box;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::vec::Vec;

    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet,
        Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
    };
    use usb::ethernet::{Counters, EthError, MacAddress};

    use super::*;

    type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

    /// One end of an in-memory cable.
    struct Cable {
        mac: MacAddress,
        inbox: Queue,
        outbox: Queue,
    }

    impl EthernetClass for Cable {
        fn send(&mut self, frame: &[u8]) -> Result<(), EthError> {
            self.outbox.borrow_mut().push_back(frame.to_vec());
            Ok(())
        }
        fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, EthError> {
            Ok(self.inbox.borrow_mut().pop_front().map(|f| {
                buf[..f.len()].copy_from_slice(&f);
                f.len()
            }))
        }
        fn mac_address(&self) -> MacAddress {
            self.mac
        }
        fn link_up(&mut self) -> Result<bool, EthError> {
            Ok(true)
        }
        fn counters(&self) -> Counters {
            Counters::default()
        }
    }

    std::thread_local! {
        static NOW: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// The tests' clock: advanced by hand.
    fn now() -> u64 {
        NOW.with(|n| n.get())
    }

    fn set_time(us: u64) {
        NOW.with(|n| n.set(us));
    }

    fn storage() -> &'static mut NetStorage<'static> {
        Box::leak(Box::new(NetStorage::EMPTY))
    }

    fn buffers() -> &'static mut NetBuffers {
        Box::leak(Box::new(NetBuffers::ZERO))
    }

    fn cidr(a: [u8; 4], prefix: u8) -> Ipv4Cidr {
        Ipv4Cidr::new(Ipv4Address::from(a), prefix)
    }

    fn node(
        mac: MacAddress,
        inbox: &Queue,
        outbox: &Queue,
        addressing: Addressing,
        port: u16,
        master: IpEndpoint,
    ) -> NodeNet<'static, Cable> {
        let cable = Cable { mac, inbox: inbox.clone(), outbox: outbox.clone() };
        let config = NetConfig { mac, addressing, node_port: port, master };
        NodeNet::new(cable, &config, storage(), buffers(), now)
    }

    fn fixed(a: [u8; 4]) -> Addressing {
        Addressing::Static { address: cidr(a, 24), gateway: None }
    }

    #[test]
    fn udp_flows_both_ways_after_arp() {
        let (ab, ba): (Queue, Queue) = Default::default();
        let mut a =
            node([2, 0, 0, 0, 0, 2], &ba, &ab, fixed([10, 0, 0, 2]), 7701, endpoint([10, 0, 0, 1], 7700));
        let mut b =
            node([2, 0, 0, 0, 0, 1], &ab, &ba, fixed([10, 0, 0, 1]), 7700, endpoint([10, 0, 0, 2], 7701));
        a.send(b"from the node");
        let mut buf = [0u8; 1500];
        let mut got = None;
        for t in 1..20 {
            set_time(t * 1000);
            a.poll();
            set_time(t * 1000);
            b.poll();
            if let Some(n) = b.recv(&mut buf) {
                got = Some(buf[..n].to_vec());
                break;
            }
        }
        assert_eq!(got.as_deref(), Some(&b"from the node"[..]), "ARP resolved and the datagram arrived");
        b.send(b"from the master");
        let mut back = None;
        for t in 20..40 {
            set_time(t * 1000);
            b.poll();
            if let Some(n) = a.recv(&mut buf) {
                back = Some(buf[..n].to_vec());
                break;
            }
        }
        assert_eq!(back.as_deref(), Some(&b"from the master"[..]));
        assert_eq!(a.address(), Some(Ipv4Address::new(10, 0, 0, 2)));
    }

    /// A host on the wire, built from smoltcp's wire types.
    struct Host {
        mac: EthernetAddress,
        ip: Ipv4Address,
    }

    impl Host {
        fn frame(
            &self,
            to: EthernetAddress,
            ethertype: EthernetProtocol,
            payload_len: usize,
            fill: impl FnOnce(&mut [u8]),
        ) -> Vec<u8> {
            let eth = EthernetRepr { src_addr: self.mac, dst_addr: to, ethertype };
            let mut bytes = std::vec![0u8; eth.buffer_len() + payload_len];
            let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
            eth.emit(&mut frame);
            fill(frame.payload_mut());
            bytes
        }

        /// Answers an ARP request for `self.ip` in `frame`, if it is one.
        fn answer_arp(&self, frame: &[u8]) -> Option<Vec<u8>> {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            if eth.ethertype() != EthernetProtocol::Arp {
                return None;
            }
            let ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            } = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?
            else {
                return None;
            };
            if target_protocol_addr != self.ip {
                return None;
            }
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.mac,
                source_protocol_addr: self.ip,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            Some(self.frame(source_hardware_addr, EthernetProtocol::Arp, reply.buffer_len(), |p| {
                reply.emit(&mut ArpPacket::new_unchecked(p))
            }))
        }
    }

    #[test]
    fn answers_ping() {
        let (to_node, from_node): (Queue, Queue) = Default::default();
        let mut a = node(
            [2, 0, 0, 0, 0, 2],
            &to_node,
            &from_node,
            fixed([10, 0, 0, 2]),
            7701,
            endpoint([10, 0, 0, 1], 7700),
        );
        let host = Host { mac: EthernetAddress([2, 0, 0, 0, 0, 9]), ip: Ipv4Address::new(10, 0, 0, 9) };
        let data = b"are you there";
        let echo = Icmpv4Repr::EchoRequest { ident: 0x1234, seq_no: 7, data };
        let ip = Ipv4Repr {
            src_addr: host.ip,
            dst_addr: Ipv4Address::new(10, 0, 0, 2),
            next_header: IpProtocol::Icmp,
            payload_len: echo.buffer_len(),
            hop_limit: 64,
        };
        let request = host.frame(
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            EthernetProtocol::Ipv4,
            ip.buffer_len() + echo.buffer_len(),
            |p| {
                let mut packet = Ipv4Packet::new_unchecked(p);
                ip.emit(&mut packet, &Default::default());
                echo.emit(&mut Icmpv4Packet::new_unchecked(packet.payload_mut()), &Default::default());
            },
        );
        // Like ping, ask every round: the first request only makes the node resolve our MAC (smoltcp
        // does not learn neighbours from IP traffic), the next one is answered.
        let mut reply = None;
        for t in 1..20 {
            to_node.borrow_mut().push_back(request.clone());
            set_time(t * 1000);
            a.poll();
            while let Some(frame) = from_node.borrow_mut().pop_front() {
                if let Some(answer) = host.answer_arp(&frame) {
                    to_node.borrow_mut().push_back(answer);
                    continue;
                }
                let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
                let packet = Ipv4Packet::new_checked(eth.payload()).unwrap();
                let icmp = Icmpv4Packet::new_checked(packet.payload()).unwrap();
                reply = Some(Icmpv4Repr::parse(&icmp, &Default::default()).unwrap().to_owned_reply());
            }
            if reply.is_some() {
                break;
            }
        }
        assert_eq!(
            reply,
            Some((0x1234, 7, data.to_vec())),
            "an echo reply with the same id, sequence and data"
        );
    }

    trait OwnedReply {
        fn to_owned_reply(&self) -> (u16, u16, Vec<u8>);
    }
    impl OwnedReply for Icmpv4Repr<'_> {
        fn to_owned_reply(&self) -> (u16, u16, Vec<u8>) {
            match self {
                Icmpv4Repr::EchoReply { ident, seq_no, data } => (*ident, *seq_no, data.to_vec()),
                other => panic!("not an echo reply: {other:?}"),
            }
        }
    }

    #[test]
    fn dhcp_asks_by_broadcast() {
        let (to_node, from_node): (Queue, Queue) = Default::default();
        let mut a = node(
            [2, 0, 0, 0, 0, 2],
            &to_node,
            &from_node,
            Addressing::Dhcp,
            7701,
            endpoint([10, 0, 0, 1], 7700),
        );
        assert_eq!(a.address(), None);
        set_time(1000);
        a.poll();
        let frame = from_node.borrow_mut().pop_front().expect("a DHCP discover");
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(eth.src_addr(), EthernetAddress([2, 0, 0, 0, 0, 2]));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (68, 67));
    }

    #[test]
    fn only_the_master_is_heard() {
        let (ab, ba): (Queue, Queue) = Default::default();
        let mut a =
            node([2, 0, 0, 0, 0, 2], &ba, &ab, fixed([10, 0, 0, 2]), 7701, endpoint([10, 0, 0, 1], 7700));
        // Node b is not a's master (that is 10.0.0.1); it sends to a anyway.
        let mut b =
            node([2, 0, 0, 0, 0, 3], &ab, &ba, fixed([10, 0, 0, 3]), 7700, endpoint([10, 0, 0, 2], 7701));
        b.send(b"not from the master");
        let mut buf = [0u8; 64];
        for t in 1..20 {
            set_time(t * 1000);
            b.poll();
            assert_eq!(a.recv(&mut buf), None);
            set_time(t * 1000);
            a.poll();
        }
    }
}
