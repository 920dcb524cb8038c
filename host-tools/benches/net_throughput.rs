//! UDP throughput between this machine and one QEMU raspi3b node, both ways, through the node's
//! whole network path (DWC2, the hub QEMU inserts, usb-net, smoltcp, its UDP socket) and the
//! user-space bridge; and what it costs the node in guest instructions per payload byte, counted
//! exactly under `-icount shift=0,sleep=off`.
//!
//! `cargo bench -p host-tools --bench net_throughput [-- DATAGRAMS]` (default 4000 of 1472 bytes).
//! Megabytes per second are wall-clock figures of an emulated board on this machine, printed next to
//! the Pi 3's 100 Mbit/s line rate for scale; instruction counts are independent of the machine.

use std::time::Duration;

use pitrain::link_test::{link_test_firmware, LinkNode, LinkOptions, Transfer, SINK_BURST};

/// The payload a 100 Mbit/s Ethernet carries at most in 1472-byte UDP datagrams, MB/s: each
/// datagram takes 1472 + 28 (IPv4, UDP) + 14 (Ethernet) + 24 (preamble, FCS, gap) bytes of wire time.
const PI3_LINE_RATE_MB_S: f64 = 100e6 / 8.0 * 1472.0 / (1472.0 + 28.0 + 14.0 + 24.0) / 1e6;

fn row(what: &str, t: &Transfer, icount: bool) {
    let cost = if icount {
        format!(
            "{:>9.1} instr/byte, {:>6.1} of them not waiting for the USB controller",
            t.instructions_per_byte(),
            t.working_instructions_per_byte()
        )
    } else {
        String::new()
    };
    println!(
        "  {what:<15} {:>6} / {:<6} datagrams ({:>5.1}% lost) {:>8.2} MB/s ({:>5.2}x the Pi 3 line rate){cost}",
        t.delivered,
        t.offered,
        t.loss_percent(),
        t.megabytes_per_second(),
        t.megabytes_per_second() / PI3_LINE_RATE_MB_S,
    );
}

fn main() {
    let count: u32 =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let firmware = link_test_firmware().expect("the link-test firmware builds");
    let dir = tempfile::tempdir().expect("a temporary folder");
    println!(
        "UDP, 1472-byte datagrams, {count} each way; Pi 3 line rate {PI3_LINE_RATE_MB_S:.2} MB/s of payload"
    );
    for icount in [false, true] {
        let options = LinkOptions {
            firmware: Some(firmware.clone()),
            icount,
            ..LinkOptions::new(dir.path().join(if icount { "icount" } else { "realtime" }))
        };
        let node = LinkNode::start(&options).expect("the node boots and is ready");
        let to_node = node.sink(u64::from(count), 1472, Some(SINK_BURST)).expect("master -> node");
        let from_node = node.source(count, 1472).expect("node -> master");
        let run = node.finish(Duration::from_secs(10)).expect("the node stops");
        assert_eq!(run.status, 0);
        println!("{}:", if icount { "-icount shift=0,sleep=off (instructions exact)" } else { "real time" });
        row("master -> node", &to_node, icount);
        row("node -> master", &from_node, icount);
    }
}
