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
    assert_eq!(out.status, 0, "{serial}");
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
