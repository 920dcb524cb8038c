//! The firmware in QEMU raspi3b, booted from its raw kernel8.img: it logs (defmt over the UART,
//! decoded here with the ELF's table) in EL1 and ends the run through semihosting; exceptions are
//! logged and halt.

use pitrain::logs::LogTable;
use pitrain::qemu::{build_firmware, workspace_dir, Boot, FirmwareImage};

/// Boots `image` under -icount and returns the exit status and the decoded log as text, one line
/// per frame.
fn boot(image: &FirmwareImage) -> (i32, String) {
    let run = Boot::new(&image.image).run(|_| {}).expect("QEMU runs");
    let table = LogTable::load(&image.elf).expect("the ELF has a defmt table");
    let (lines, malformed) = table.decode_all(&run.serial);
    let text: String = lines.iter().map(|l| format!("{} {}\n", l.level, l.message)).collect();
    assert_eq!(malformed, 0, "every frame decodes:\n{text}");
    (run.status, text)
}

#[test]
fn firmware_boots_in_qemu_raspi3b() {
    let target = workspace_dir().join("target").join("firmware-test");
    let image = build_firmware(&target, &[]).expect("the firmware builds");
    let size = std::fs::metadata(&image.image).unwrap().len();
    assert!(size > 1000 && size < 1 << 20, "kernel8.img of {size} bytes");
    let (status, log) = boot(&image);
    assert!(log.contains("INFO pitrain firmware 0.1.0: booted in EL1\n"), "{log}");
    assert!(log.contains("MxLenet needs 19924112 bytes"), "{log}");
    assert!(log.contains("MMU and caches on"), "{log}");
    assert!(log.contains("kernels self-check: ok"), "{log}");
    // Under -icount both timers follow the same virtual clock: the delays agree exactly.
    assert!(log.contains("generic timer at 62500000 Hz"), "{log}");
    assert!(log.contains("10 ms by the generic timer = 10000 us by the system timer"), "{log}");
    assert!(log.contains("10 ms by the system timer = 10000 us by the generic timer"), "{log}");
    check_board_line(&log);
    assert_eq!(status, 0, "{log}");
}

/// The mailbox answers: QEMU's raspi3b is a Pi 3B (revision 0xa02082) with a 6-byte MAC and ARM
/// memory below the GPU's share. QEMU does not implement the firmware GPIO expander tag behind
/// the Pi 3B's activity LED, so the LED reports that error instead of "on".
fn check_board_line(log: &str) {
    let board = log.lines().find_map(|l| l.strip_prefix("INFO board: ")).unwrap_or_else(|| panic!("{log}"));
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
    let led = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("INFO ").or(l.strip_prefix("WARN ")).filter(|l| l.starts_with("activity LED: "))
        })
        .unwrap_or_else(|| panic!("{log}"));
    assert!(led == "activity LED: on" || led.contains("0x00038041"), "{led}");
}

/// An exception is logged with its class, ESR and ELR, and the core halts; under QEMU the run ends
/// with status 2.
#[test]
fn exceptions_are_reported() {
    let target = workspace_dir().join("target").join("firmware-test-fault");
    let image = build_firmware(&target, &["selftest-fault"]).expect("the firmware builds");
    let (status, log) = boot(&image);
    assert!(log.contains("ERROR exception: synchronous (BRK instruction), EC 0x3c, ESR 0xf2000042"), "{log}");
    assert!(log.contains("ELR 0x8"), "{log}");
    assert_eq!(status, 2, "{log}");
}
