//! One QEMU raspi3b node with its network up (DWC2 -> the usb-hub QEMU inserts -> usb-net, smoltcp,
//! static address from its blob or DHCP), running the link-test firmware behind the user-space bridge:
//! it answers ping, echoes UDP datagrams of every size intact, and survives random frames and a
//! flood of datagrams.

use std::time::Duration;

use netstack::link_test::Control;
use pitrain::link_test::{link_test_firmware, LinkNode, LinkOptions};
use rand::{Rng, SeedableRng};

/// The NIC's MAC as the firmware uses it: QEMU's usb-net reports the command line's MAC
/// (52:54:00:50:00:00 for node 0) with its first byte forced to 0x40.
const GUEST_MAC: [u8; 6] = [0x40, 0x54, 0x00, 0x50, 0x00, 0x00];
const GUEST_IP: [u8; 4] = [10, 0, 0, 10];

fn start(dir: &std::path::Path, dhcp: bool) -> LinkNode {
    let firmware = link_test_firmware().expect("the link-test firmware builds");
    let options = LinkOptions { firmware: Some(firmware), dhcp, ..LinkOptions::new(dir.to_path_buf()) };
    LinkNode::start(&options).expect("the node boots, gets its address and says it is ready")
}

fn log_text(node: &LinkNode) -> String {
    node.log().join("\n")
}

/// "received N frames" from the node's closing counters line.
fn frames_received(log: &str) -> u64 {
    let line = log.lines().find(|l| l.contains("network: link up; sent")).expect("the counters line");
    let (_, rest) = line.split_once("received ").expect("a received count");
    rest.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a number")
}

#[test]
fn node_answers_ping_and_echoes_udp_of_every_size() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), false);
    let log = log_text(&node);
    assert!(
        log.contains(
            "USB device 1: 0409:55aa class 0x09, full speed, on the root port, configuration 1: hub"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "USB device 2: 0525:a4a2 class 0x02, full speed, on hub 1 port 1, configuration 1: CDC-ECM"
        ),
        "{log}"
    );
    assert!(log.contains("network: up as 10.0.0.10, MAC 40:54:00:50:00:00, answering ping"), "{log}");

    for size in [0, 56, 1472] {
        let rtt = node.ping(&vec![0x33; size], Duration::from_secs(5)).expect("the node answers ping");
        println!("ping {size} bytes: {rtt:?}");
    }
    // Every size, so every frame length from 43 to 1514 bytes, including each multiple of 64 (a
    // full last USB packet, which the NIC must end with a zero-length packet) and 1472, the largest
    // datagram in one 1500-byte frame.
    for size in 1..=1472usize {
        let payload: Vec<u8> = (0..size).map(|i| (i * 13 + size) as u8 | 1).collect();
        node.echo(&payload).unwrap_or_else(|e| panic!("{size}-byte echo: {e}"));
    }
    // The other direction of bulk traffic: the node sends, this side checks every byte.
    let from_node = node.source(50, 1472).expect("the node sources datagrams");
    assert_eq!((from_node.offered, from_node.delivered), (50, 50));
    let to_node = node.sink(200, 1472, Some(32)).expect("the node sinks datagrams");
    assert_eq!(to_node.delivered, 200, "paced datagrams all arrive");
    assert_eq!(to_node.bytes, 200 * 1472);

    let run = node.finish(Duration::from_secs(20)).expect("the node stops when told");
    assert_eq!(run.status, 0);
}

/// Frames a careless or hostile LAN could carry, reproducibly random: junk of any length, junk to
/// the node's MAC, broken IPv4, valid IPv4 headers over junk UDP and ICMP, ARP junk.
fn random_frames(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|k| {
            let len = rng.random_range(1..=1514usize);
            let mut f: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if k % 5 == 0 || f.len() < 34 {
                return f;
            }
            f[0..6].copy_from_slice(&GUEST_MAC);
            match k % 5 {
                1 => f[12..14].copy_from_slice(&[0x08, 0x06]),
                2 => f[12..14].copy_from_slice(&[0x08, 0x00]),
                _ => {
                    f[12..14].copy_from_slice(&[0x08, 0x00]);
                    let total = (len - 14).min(rng.random_range(20..=1500)) as u16;
                    f[14] = 0x45;
                    f[16..18].copy_from_slice(&total.to_be_bytes());
                    f[20..22].copy_from_slice(&[0, 0]);
                    f[22] = 64;
                    f[23] = if k % 5 == 3 { 17 } else { 1 };
                    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
                    f[30..34].copy_from_slice(&GUEST_IP);
                    f[24..26].copy_from_slice(&[0, 0]);
                    let sum = ipv4_checksum(&f[14..34]);
                    f[24..26].copy_from_slice(&sum.to_be_bytes());
                    // Half of the UDP ones go to the node's own port.
                    if k % 10 == 3 && len >= 38 {
                        f[36..38].copy_from_slice(&7701u16.to_be_bytes());
                    }
                }
            }
            f
        })
        .collect()
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn random_frames_and_a_flood_do_not_stop_the_node() {
    let dir = tempfile::tempdir().unwrap();
    // This node asks for its address by DHCP, the board's default; the bridge serves it.
    let node = start(dir.path(), true);
    let log = log_text(&node);
    assert!(log.contains("network: DHCP gave 10.0.0.10/24, router 10.0.0.1"), "{log}");
    assert!(log.contains("network: up as 10.0.0.10"), "{log}");
    let frames = random_frames(10_000, 7);
    // In bursts, each followed by an echo: the node keeps answering all along, and pacing keeps
    // QEMU's queues from dropping the junk before the firmware has seen it.
    let mut injected = 0;
    for (i, burst) in frames.chunks(50).enumerate() {
        injected += node.inject_frames(burst.iter().map(|f| &f[..])).unwrap();
        node.echo(format!("still there after burst {i}").as_bytes())
            .unwrap_or_else(|e| panic!("no echo after {injected} random frames: {e}"));
    }
    assert_eq!(injected, 10_000);
    node.ping(&[1; 56], Duration::from_secs(5)).expect("ping after the random frames");

    // A flood: 10,000 full datagrams as fast as this process sends them; most are lost on the way
    // (QEMU's queue, the socket), and the node must come out of it answering.
    let flood = node.sink(10_000, 1472, None).expect("the node reports after the flood");
    println!(
        "flood: {} of 10000 datagrams reached the node ({:.1}% lost on the way)",
        flood.delivered,
        flood.loss_percent()
    );
    assert!(flood.delivered > 0);
    node.control(Control::Echo).unwrap();
    node.echo(b"after the flood").expect("echo after the flood");
    node.ping(&[2; 1472], Duration::from_secs(5)).expect("ping after the flood");

    let run = node.finish(Duration::from_secs(20)).expect("the node stops when told");
    assert_eq!(run.status, 0);
    let log = std::fs::read_to_string(dir.path().join("link-test-node.log")).unwrap();
    let received = frames_received(&log);
    println!("the NIC driver received {received} frames in all");
    // The junk reached the firmware (not only QEMU's socket): (almost) every injected frame, plus the
    // echoes, pings and flood survivors.
    assert!(received >= 9_900 + flood.delivered, "{received} frames received:\n{log}");
    assert!(log.contains("link test: stopped by the master"), "{log}");
}
