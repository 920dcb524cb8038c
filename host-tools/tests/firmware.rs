//! The firmware in QEMU raspi3b, booted from its raw kernel8.img: it reports over the UART in EL1 and
//! ends the run through semihosting; exceptions are reported and halt.

use std::time::Duration;

use pitrain::qemu::{build_firmware, run, workspace_dir};

#[test]
fn firmware_boots_in_qemu_raspi3b() {
    let target = workspace_dir().join("target").join("firmware-test");
    let image = build_firmware(&target, &[]).expect("the firmware builds");
    let size = std::fs::metadata(&image.image).unwrap().len();
    assert!(size > 1000 && size < 1 << 20, "kernel8.img of {size} bytes");
    let out = run(&image.image, Duration::from_secs(60), true).expect("QEMU runs");
    let serial = String::from_utf8_lossy(&out.serial);
    assert!(serial.contains("booted in EL1"), "{serial}");
    assert!(serial.contains("MxLenet needs 19924112 bytes"), "{serial}");
    assert!(serial.contains("MMU and caches on"), "{serial}");
    assert!(serial.contains("kernels self-check: ok"), "{serial}");
    // Under -icount both timers follow the same virtual clock: the delays agree exactly.
    assert!(serial.contains("generic timer at 62500000 Hz"), "{serial}");
    assert!(serial.contains("10 ms by the generic timer = 10000 us by the system timer"), "{serial}");
    assert!(serial.contains("10 ms by the system timer = 10000 us by the generic timer"), "{serial}");
    check_board_line(&serial);
    assert_eq!(out.status, 0, "{serial}");
}

/// The mailbox answers: QEMU's raspi3b is a Pi 3B (revision 0xa02082) with a 6-byte MAC and ARM
/// memory below the GPU's share. QEMU does not implement the firmware GPIO expander tag behind
/// the Pi 3B's activity LED, so the LED reports that error instead of "on".
fn check_board_line(serial: &str) {
    let board = serial
        .lines()
        .map(str::trim_end)
        .find(|l| l.starts_with("board: "))
        .unwrap_or_else(|| panic!("{serial}"));
    assert!(board.contains("revision 0xa02082 (Pi 3B, 1024 MiB)"), "{board}");
    let field = |name: &str| {
        let start = board.find(name).unwrap_or_else(|| panic!("no {name:?} in {board}")) + name.len();
        board[start..].split(',').next().unwrap().trim().to_string()
    };
    let mac = field("MAC ");
    let bytes: Vec<_> = mac.split(':').collect();
    assert!(
        bytes.len() == 6 && bytes.iter().all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok()),
        "MAC {mac}"
    );
    let memory = field("ARM memory ");
    let (base, size) = memory.split_once('+').unwrap_or_else(|| panic!("ARM memory {memory}"));
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(hex(base), 0, "{board}");
    assert!(hex(size) > 0 && hex(size) <= 1 << 30, "{board}");
    assert!(field("ARM clock ").ends_with(" Hz"), "{board}");
    let led = serial
        .lines()
        .map(str::trim_end)
        .find(|l| l.starts_with("activity LED: "))
        .unwrap_or_else(|| panic!("{serial}"));
    assert!(led == "activity LED: on" || led.contains("0x00038041"), "{led}");
}

/// An exception is reported with its class, ESR and ELR, and the core halts; under QEMU the run ends
/// with status 2.
#[test]
fn exceptions_are_reported() {
    let target = workspace_dir().join("target").join("firmware-test-fault");
    let image = build_firmware(&target, &["selftest-fault"]).expect("the firmware builds");
    let out = run(&image.image, Duration::from_secs(60), true).expect("QEMU runs");
    let serial = String::from_utf8_lossy(&out.serial);
    assert!(serial.contains("exception: synchronous (BRK instruction), EC 0x3c, ESR 0xf2000042"), "{serial}");
    assert!(serial.contains("ELR 0x8"), "{serial}");
    assert_eq!(out.status, 2, "{serial}");
}
