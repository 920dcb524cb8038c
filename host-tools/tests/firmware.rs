//! The firmware boots in QEMU raspi3b from its raw kernel8.img, reports over the UART in EL1, and ends
//! the run through semihosting with status 0.

use std::time::Duration;

use pitrain::qemu::{build_firmware, run, workspace_dir};

#[test]
fn firmware_boots_in_qemu_raspi3b() {
    let target = workspace_dir().join("target").join("firmware-test");
    let image = build_firmware(&target).expect("the firmware builds");
    let size = std::fs::metadata(&image.image).unwrap().len();
    assert!(size > 1000 && size < 1 << 20, "kernel8.img of {size} bytes");
    let out = run(&image.image, Duration::from_secs(60), true).expect("QEMU runs");
    let serial = String::from_utf8_lossy(&out.serial);
    assert!(serial.contains("booted in EL1"), "{serial}");
    assert!(serial.contains("MxLenet needs 19924112 bytes"), "{serial}");
    assert_eq!(out.status, 0, "{serial}");
}
