//! The firmware's USB stack in QEMU raspi3b: DWC2 root port -> the usb-hub QEMU inserts -> usb-net
//! (CDC-ECM), with the NIC's frames carried as UDP datagrams on 127.0.0.1 (`-netdev dgram`, one raw
//! Ethernet frame per datagram). The `selftest-net` firmware sends a broadcast ARP request after
//! bring-up and echoes the first frame it receives; this test plays the other end.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pitrain::logs::LogTable;
use pitrain::qemu::{build_firmware, workspace_dir, Boot};

/// The NIC's MAC on the QEMU command line; the device reports it with the first byte forced to 0x40
/// (hw/usb/dev-network.c builds iMACAddress that way).
const NIC_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x02];
const GUEST_MAC: [u8; 6] = [0x40, 0x54, 0x00, 0x77, 0x00, 0x02];
const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

fn mac_text(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A free UDP port on 127.0.0.1 (bound, then released for QEMU to take).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn frames_flow_both_ways_through_dwc2_hub_and_usb_net() {
    let started = Instant::now();
    let image = build_firmware(&workspace_dir().join("target").join("firmware-test-net"), &["selftest-net"])
        .expect("the firmware builds");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host_port = socket.local_addr().unwrap().port();
    let guest_port = free_port();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let boot = Boot {
        extra_args: vec![
            "-device".into(),
            format!("usb-net,netdev=n0,mac={}", mac_text(&NIC_MAC)),
            "-netdev".into(),
            format!(
                "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={guest_port},\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={host_port}"
            ),
        ],
        timeout: Duration::from_secs(60),
        ..Boot::new(&image.image)
    };
    let qemu = std::thread::spawn(move || boot.run(|_| {}));

    // The guest's ARP request: broadcast, from its MAC, "who has 10.0.2.2? tell 10.0.2.15".
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).expect("a frame from the guest within 30 s");
    let frame = &buf[..n];
    assert_eq!(from.port(), guest_port);
    assert_eq!(n, 42, "{frame:02x?}");
    assert_eq!(&frame[0..6], &[0xFF; 6]);
    assert_eq!(&frame[6..12], &GUEST_MAC, "source MAC {}", mac_text(&frame[6..12]));
    assert_eq!(&frame[12..14], &[0x08, 0x06]);
    assert_eq!(&frame[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
    assert_eq!(
        (&frame[22..28], &frame[28..32], &frame[38..42]),
        (&GUEST_MAC[..], &[10, 0, 2, 15][..], &[10, 0, 2, 2][..])
    );

    // Answer with an ARP reply of 70 bytes (more than one 64-byte USB packet, not a multiple of 64).
    let mut reply = vec![0u8; 70];
    reply[0..6].copy_from_slice(&GUEST_MAC);
    reply[6..12].copy_from_slice(&HOST_MAC);
    reply[12..14].copy_from_slice(&[0x08, 0x06]);
    reply[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    reply[22..28].copy_from_slice(&HOST_MAC);
    reply[28..32].copy_from_slice(&[10, 0, 2, 2]);
    reply[32..38].copy_from_slice(&GUEST_MAC);
    reply[38..42].copy_from_slice(&[10, 0, 2, 15]);
    for (i, b) in reply[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    socket.send_to(&reply, ("127.0.0.1", guest_port)).unwrap();
    // The firmware echoes it back unchanged.
    let (n, _) = socket.recv_from(&mut buf).expect("the echo within 30 s");
    assert_eq!(&buf[..n], &reply[..]);

    let run = qemu.join().unwrap().expect("QEMU runs");
    let table = LogTable::load(&image.elf).expect("the ELF has a defmt table");
    let (lines, malformed) = table.decode_all(&run.serial);
    let log: String = lines.iter().map(|l| format!("{} {}\n", l.level, l.message)).collect();
    assert_eq!(malformed, 0, "{log}");
    assert!(log.contains("-speed device on the root port"), "{log}");
    assert!(
        log.contains(
            "INFO USB device 1: 0409:55aa class 0x09, full speed, on the root port, configuration 1: hub"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "INFO USB device 2: 0525:a4a2 class 0x02, full speed, on hub 1 port 1, configuration 1: CDC-ECM"
        ),
        "{log}"
    );
    let mac = mac_text(&GUEST_MAC);
    assert!(
        log.contains(&format!("INFO Ethernet: CDC-ECM driver on USB device 2, MAC {mac}, link up")),
        "{log}"
    );
    assert!(log.contains("INFO net self-test: sent a 42-byte ARP request"), "{log}");
    assert!(
        log.contains(&format!(
            "INFO net self-test: received a 70-byte frame from {}, type 0x0806",
            mac_text(&HOST_MAC)
        )),
        "{log}"
    );
    assert!(log.contains("INFO net self-test: echoed 70 bytes"), "{log}");
    // No node blob was given: the firmware goes on to refuse it, as without a network.
    assert_eq!(run.status, 5, "{log}");
    eprintln!("usb-net test took {:?} (build included)", started.elapsed());
}
