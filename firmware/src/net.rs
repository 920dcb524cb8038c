//! The node's network interface: the DWC2 host controller, enumeration of the USB tree behind it
//! (hubs included) and the Ethernet class driver for the network device found, all logged. Without a
//! controller or device (e.g. QEMU without `-device usb-net`) it says so and the node goes on
//! without a network.

use usb::enumerate::{read_configuration, Enumerator, Found, CONFIG_BUFFER};
use usb::ethernet::{Device, EthernetClass, Kind};
use usb::host::Speed;

use crate::arch::aarch64::timer::GenericTimer;
use crate::bsp::rpi3;
use crate::drivers::dwc2::Dwc2;
use crate::drivers::mailbox::{MacAddress, Mailbox};

/// The Ethernet device, over the controller.
pub type Ethernet = Device<Dwc2>;

/// Brings up USB and the Ethernet device; `None` (logged) when there is none.
pub fn bring_up() -> Option<Ethernet> {
    let timer = GenericTimer::new();
    let start = timer.now_us();
    // SAFETY: the mailbox block is at this address and mapped as device memory; `report_board`'s
    // `Mailbox` is gone, so this is the only one.
    let mut mailbox = unsafe { Mailbox::new(rpi3::MAILBOX_BASE) };
    // The vendor chips need the board's MAC (their EEPROM-less default is random); CDC-ECM has its own.
    let board_mac = mailbox.mac_address().map(|m| m.0).unwrap_or([0x02, 0, 0, 0, 0, 1]);
    // SAFETY: the DWC2 is at this address on the BCM2837, mapped as device memory, and nothing else
    // drives it.
    let mut host = match unsafe { Dwc2::init(rpi3::USB_BASE, &mut mailbox) } {
        Ok(host) => host,
        Err(error) => {
            defmt::warn!(
                "USB: {} after {=u64} ms; continuing without a network",
                error,
                (timer.now_us() - start) / 1000
            );
            return None;
        }
    };
    defmt::info!(
        "USB: DWC2 core {=u32:#010x}, {=usize} host channels, {=str}-speed device on the root port ({=u64} ms)",
        host.core_id(),
        host.channel_count(),
        speed_name(host.root_speed()),
        (timer.now_us() - start) / 1000
    );
    let mut tree = Enumerator::new();
    let speed = host.root_speed();
    if let Err(error) = tree.enumerate(&mut host, speed) {
        defmt::warn!(
            "USB: enumeration failed: {}; continuing without a network",
            defmt::Debug2Format(&error)
        );
        return None;
    }
    for device in tree.devices() {
        log_device(device);
    }
    if let Some((at, error)) = tree.last_skip() {
        defmt::warn!(
            "USB: {=u32} device(s) skipped, the last at {}: {}",
            tree.skipped(),
            defmt::Debug2Format(&at),
            defmt::Debug2Format(&error)
        );
    }
    let Some(&found) = tree.network() else {
        defmt::warn!(
            "USB: no network device among {=usize}; continuing without a network",
            tree.devices().count()
        );
        return None;
    };
    let kind = found.network?;
    let mut buffer = [0u8; CONFIG_BUFFER];
    let config = match read_configuration(&mut host, found.handle, found.configuration_index, &mut buffer) {
        Ok(config) => config,
        Err(error) => {
            defmt::warn!(
                "USB: configuration of device {=u8}: {}",
                found.handle.address,
                defmt::Debug2Format(&error)
            );
            return None;
        }
    };
    match Device::open(host, found.handle, kind, &config, board_mac) {
        Ok(mut device) => {
            let link = match device.link_up() {
                Ok(true) => "up",
                Ok(false) => "down",
                Err(_) => "unknown",
            };
            defmt::info!(
                "Ethernet: {=str} driver on USB device {=u8}, MAC {}, link {=str} ({=u64} ms since USB power-on)",
                kind_name(kind),
                found.handle.address,
                defmt::Display2Format(&MacAddress(device.mac_address())),
                link,
                (timer.now_us() - start) / 1000
            );
            Some(device)
        }
        Err(error) => {
            defmt::warn!(
                "Ethernet: {=str} driver failed to open: {}",
                kind_name(kind),
                defmt::Debug2Format(&error)
            );
            None
        }
    }
}

fn log_device(d: &Found) {
    let what = match (d.is_hub, d.network) {
        (true, _) => "hub",
        (false, Some(kind)) => kind_name(kind),
        (false, None) => "no driver: skipped",
    };
    let vid = d.descriptor.vendor_id;
    let pid = d.descriptor.product_id;
    let speed = speed_name(d.handle.speed);
    match d.parent {
        None => defmt::info!(
            "USB device {=u8}: {=u16:04x}:{=u16:04x} class {=u8:#04x}, {=str} speed, on the root port, configuration {=u8}: {=str}",
            d.handle.address, vid, pid, d.descriptor.class, speed, d.configuration_value, what
        ),
        Some(at) => defmt::info!(
            "USB device {=u8}: {=u16:04x}:{=u16:04x} class {=u8:#04x}, {=str} speed, on hub {=u8} port {=u8}, configuration {=u8}: {=str}",
            d.handle.address, vid, pid, d.descriptor.class, speed, at.hub_address, at.port, d.configuration_value, what
        ),
    }
}

fn speed_name(s: Speed) -> &'static str {
    match s {
        Speed::Low => "low",
        Speed::Full => "full",
        Speed::High => "high",
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::CdcEcm => "CDC-ECM",
        Kind::Smsc95xx => "SMSC95xx",
        Kind::Lan78xx => "LAN78xx",
    }
}

#[cfg(feature = "selftest-net")]
/// A broadcast ARP request "who has `target`? tell `sender`" from `mac` (RFC 826), 42 bytes.
pub fn arp_request(mac: usb::ethernet::MacAddress, sender: [u8; 4], target: [u8; 4]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xFF; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet (1), IPv4 (0x0800), 6-byte and 4-byte addresses, request (1).
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&sender);
    f[38..42].copy_from_slice(&target);
    f
}

/// How long the self-test waits for a frame from the host.
#[cfg(feature = "selftest-net")]
const SELF_TEST_WAIT_MS: u64 = 10_000;

/// Test builds: sends a broadcast ARP request, then echoes the first frame that arrives.
#[cfg(feature = "selftest-net")]
pub fn self_test(eth: &mut Ethernet) {
    let mac = eth.mac_address();
    let frame = arp_request(mac, [10, 0, 2, 15], [10, 0, 2, 2]);
    match eth.send(&frame) {
        Ok(()) => defmt::info!("net self-test: sent a {=usize}-byte ARP request", frame.len()),
        Err(e) => {
            defmt::error!("net self-test: send failed: {}", defmt::Debug2Format(&e));
            return;
        }
    }
    let timer = GenericTimer::new();
    let start = timer.now_us();
    let mut buf = [0u8; usb::ethernet::MAX_FRAME];
    while timer.now_us() - start < SELF_TEST_WAIT_MS * 1000 {
        match eth.receive(&mut buf) {
            Ok(Some(n)) => {
                let kind = if n >= 14 { u16::from_be_bytes([buf[12], buf[13]]) } else { 0 };
                let mut source = [0u8; 6];
                source.copy_from_slice(&buf[6..12]);
                defmt::info!(
                    "net self-test: received a {=usize}-byte frame from {}, type {=u16:#06x}",
                    n,
                    defmt::Display2Format(&MacAddress(source)),
                    kind
                );
                match eth.send(&buf[..n]) {
                    Ok(()) => defmt::info!("net self-test: echoed {=usize} bytes", n),
                    Err(e) => defmt::error!("net self-test: echo failed: {}", defmt::Debug2Format(&e)),
                }
                return;
            }
            Ok(None) => {}
            Err(e) => defmt::warn!("net self-test: receive: {}", defmt::Debug2Format(&e)),
        }
    }
    defmt::error!("net self-test: no frame within {=u64} ms", SELF_TEST_WAIT_MS);
}

/// The sockets' storage, taken once.
static NET_STORAGE: static_cell::ConstStaticCell<netstack::node::NetStorage<'static>> =
    static_cell::ConstStaticCell::new(netstack::node::NetStorage::EMPTY);
/// The UDP socket's payload buffers (zeros: in `.bss`), taken once.
static NET_BUFFERS: static_cell::ConstStaticCell<netstack::node::NetBuffers> =
    static_cell::ConstStaticCell::new(netstack::node::NetBuffers::ZERO);

/// The network stack over the Ethernet device.
pub type Network = netstack::node::NodeNet<'static, Ethernet>;

fn now_us() -> u64 {
    GenericTimer::new().now_us()
}

/// How long a node waits for a DHCP lease before it goes on trying in the background.
const DHCP_WAIT_US: u64 = 10_000_000;

/// The MAC the node uses: the blob's if it gives one, else the device's own.
pub fn node_mac(eth: &Ethernet, net: &protocol::blob::NetSettings) -> [u8; 6] {
    if net.mac == [0; 6] {
        eth.mac_address()
    } else {
        net.mac
    }
}

/// Brings up smoltcp on the Ethernet device with the blob's network settings: its MAC if it gives
/// one (else the device's own: QEMU's per-instance NIC MAC, or the board's from the mailbox on the
/// vendor chips), its static address or DHCP, and the master's address. Logs the outcome.
pub fn interface(eth: Ethernet, net: &protocol::blob::NetSettings) -> Network {
    use netstack::node::{endpoint, Addressing, NetConfig};
    use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
    let mac = node_mac(&eth, net);
    let addressing = if net.static_address {
        Addressing::Static {
            address: Ipv4Cidr::new(Ipv4Address::from(net.address), net.prefix),
            gateway: (net.gateway != [0; 4]).then(|| Ipv4Address::from(net.gateway)),
        }
    } else {
        Addressing::Dhcp
    };
    let config = NetConfig {
        mac,
        addressing,
        node_port: net.node_port,
        master: endpoint(net.master_address, net.master_port),
    };
    let mut network =
        netstack::node::NodeNet::new(eth, &config, NET_STORAGE.take(), NET_BUFFERS.take(), now_us);
    let start = now_us();
    while network.address().is_none() && now_us() - start < DHCP_WAIT_US {
        if let Some(netstack::node::NetEvent::Configured { address, router }) = network.poll() {
            let [a, b, c, d] = address.address().octets();
            let [r0, r1, r2, r3] = router.map_or([0; 4], |r| r.octets());
            defmt::info!(
                "network: DHCP gave {=u8}.{=u8}.{=u8}.{=u8}/{=u8}, router {=u8}.{=u8}.{=u8}.{=u8}",
                a,
                b,
                c,
                d,
                address.prefix_len(),
                r0,
                r1,
                r2,
                r3
            );
        }
    }
    match network.address() {
        Some(address) => {
            let [a, b, c, d] = address.octets();
            defmt::info!(
                "network: up as {=u8}.{=u8}.{=u8}.{=u8}, MAC {}, answering ping",
                a,
                b,
                c,
                d,
                defmt::Display2Format(&MacAddress(mac))
            );
        }
        None => defmt::warn!("network: no DHCP lease after 10 s; still asking"),
    }
    network
}

/// Logs the adapter's link state and traffic counters.
pub fn log_counters(network: &mut Network) {
    let link = match network.adapter().link_up() {
        Ok(true) => "up",
        Ok(false) => "down",
        Err(_) => "unknown",
    };
    let c = network.adapter().counters();
    defmt::info!(
        "network: link {=str}; sent {=u32} frames ({=u32} bytes, {=u32} errors), received {=u32} frames ({=u32} bytes), dropped {=u32} bad + {=u32} unparsed + {=u32} too long",
        link, c.tx_frames, c.tx_bytes, c.tx_errors, c.rx_frames, c.rx_bytes, c.rx_errors, c.rx_framing_errors, c.rx_dropped
    );
}

/// Link-test builds (feature `link-test`): instead of training, the node answers the master's link
/// test ([`netstack::link_test`]) through the same stack and socket, then logs what it did. (Always
/// compiled, so that the ordinary build checks it; only link-test builds call it.)
pub fn link_test(network: &mut Network) {
    use crate::arch::aarch64::pmu;
    use netstack::link_test::{run, Link};
    use protocol::node::Transport;

    struct Board<'n>(&'n mut Network);

    impl Link for Board<'_> {
        fn poll(&mut self) {
            self.0.poll();
        }
        fn try_send(&mut self, datagram: &[u8]) -> bool {
            self.0.try_send(datagram)
        }
        fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
            self.0.recv(buf)
        }
        fn now_us(&self) -> u64 {
            now_us()
        }
        fn instructions(&self) -> u64 {
            pmu::cycles()
        }
        fn waiting(&self) -> u64 {
            crate::drivers::dwc2::waiting_cycles()
        }
    }

    defmt::info!("link test: answering the master (echo, sink, source) instead of training");
    pmu::start_cycle_counter();
    let mut buf = [0u8; 1472];
    let summary = run(&mut Board(network), &mut buf);
    defmt::info!(
        "link test: {=str}; {=u64} datagrams received, {=u64} sent, {=u64} sends failed, {=u64} PMU cycles",
        if summary.stopped { "stopped by the master" } else { "ended after 120 s of silence" },
        summary.received,
        summary.sent,
        summary.send_failures,
        pmu::cycles()
    );
}
