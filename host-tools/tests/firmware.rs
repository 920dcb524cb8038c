//! The firmware in QEMU raspi3b, booted from its raw kernel8.img: it logs (defmt over the UART,
//! decoded here with the ELF's table) in EL1, checks the node blob, trains on it and ends the run
//! through semihosting; exceptions are logged and halt.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use pitrain::logs::LogTable;
use pitrain::mnist::Mnist;
use pitrain::qemu::{build_firmware, stage_blob, workspace_dir, Boot, FirmwareImage};
use pitrain::shard::NodePlacement;
use pitrain::trainer::{self, ModelKind, Silent, TrainConfig};
use protocol::blob::LOAD_ADDRESS;

/// The firmware, built once for all tests of this file.
fn firmware() -> &'static FirmwareImage {
    static IMAGE: OnceLock<FirmwareImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        build_firmware(&workspace_dir().join("target").join("firmware-test"), &[])
            .expect("the firmware builds")
    })
}

/// Boots `image` under -icount with `blob` (if any) at the load address, and returns the exit status
/// and the decoded log as text, one line per frame.
fn boot(image: &FirmwareImage, blob: Option<&Path>) -> (i32, String) {
    let load = blob.map(|b| vec![(b.to_path_buf(), LOAD_ADDRESS as u64)]).unwrap_or_default();
    let run = Boot { load, ..Boot::new(&image.image) }.run(|_| {}).expect("QEMU runs");
    let table = LogTable::load(&image.elf).expect("the ELF has a defmt table");
    let (lines, malformed) = table.decode_all(&run.serial);
    let text: String = lines.iter().map(|l| format!("{} {}\n", l.level, l.message)).collect();
    assert_eq!(malformed, 0, "every frame decodes:\n{text}");
    (run.status, text)
}

/// A node blob of the first `limit` training images, one epoch of `model`.
fn blob(dir: &Path, model: ModelKind, limit: usize, cores: u8) -> (std::path::PathBuf, TrainConfig) {
    let data = Mnist::load(&common::mnist_dir()).expect("MNIST loads");
    let config = TrainConfig { model, epochs: 1, limit: Some(limit), threads: 1, ..TrainConfig::default() };
    let placement = NodePlacement { cores, ..NodePlacement::new(1, 0) };
    let bytes = pitrain::shard::node_blob(&data, &config, &placement).expect("a blob");
    let path = dir.join(format!("{model:?}-{limit}-{cores}.blob"));
    std::fs::write(&path, bytes).unwrap();
    (path, config)
}

/// Without a blob the firmware boots, reports the board and refuses to train: "bad magic".
#[test]
fn firmware_boots_and_refuses_a_missing_blob() {
    let image = firmware();
    let size = std::fs::metadata(&image.image).unwrap().len();
    assert!(size > 1000 && size < 1 << 20, "kernel8.img of {size} bytes");
    let (status, log) = boot(image, None);
    assert!(log.contains("INFO pitrain firmware 0.1.0: booted in EL1\n"), "{log}");
    let footprint = kernels::Footprint::of::<kernels::MxLenet, kernels::Fixed>().total(4);
    assert!(log.contains(&format!("MxLenet needs {footprint} bytes")), "{log}");
    assert!(log.contains("MMU and caches on"), "{log}");
    assert!(log.contains("kernels self-check: ok"), "{log}");
    // Under -icount both timers follow the same virtual clock: the delays agree exactly.
    assert!(log.contains("generic timer at 62500000 Hz"), "{log}");
    assert!(log.contains("10 ms by the generic timer = 10000 us by the system timer"), "{log}");
    assert!(log.contains("10 ms by the system timer = 10000 us by the generic timer"), "{log}");
    check_board_line(&log);
    assert!(log.contains("ERROR node blob at 0x10000000 refused: bad magic"), "{log}");
    assert!(!log.contains("epoch 1"), "{log}");
    assert_eq!(status, 5, "{log}");
}

/// The acceptance test of local training: the weights the firmware logs after one epoch on 256
/// images equal the host trainer's, bit for bit, on 1 core and on 4.
#[test]
fn training_in_qemu_matches_the_host_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (path, config) = blob(dir.path(), ModelKind::Mxlenet, 256, 4);
    let data = Mnist::load(&common::mnist_dir()).unwrap();
    let host = trainer::train(&config, &data, &mut Silent).expect("host training");
    let expected = format!("weights {}", host.epochs[0].weight_hash);
    for cores in [1u8, 4] {
        let staged = tempfile::tempdir().unwrap();
        let staged = stage_blob(&path, Some(cores), staged.path()).expect("the blob stages");
        let (status, log) = boot(firmware(), Some(&staged));
        assert!(log.contains("256 samples (shard hash"), "{log}");
        assert!(
            log.contains(&format!("training on {cores} of {} cores", if cores == 1 { 1 } else { 4 })),
            "{log}"
        );
        let epoch = log.lines().find(|l| l.starts_with("INFO epoch 1: ")).unwrap_or_else(|| panic!("{log}"));
        assert!(epoch.ends_with(&expected), "{cores} cores: {epoch}, host {expected}");
        let correct = (host.epochs[0].train_accuracy * 256.0).round() as u64;
        assert!(epoch.contains(&format!("accuracy {correct}/256")), "{epoch}");
        let per_core = if cores == 1 { "[256, 0, 0, 0]" } else { "[64, 64, 64, 64]" };
        assert!(log.contains(&format!("samples per core: {per_core}")), "{log}");
        assert_eq!(status, 0, "{log}");
    }
}

/// Damaged blobs are refused with a log line naming the damage and exit status 5, never trained on.
#[test]
fn damaged_blobs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = blob(dir.path(), ModelKind::Lenet5, 16, 1);
    let good = std::fs::read(&path).unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("magic", [b"XXXX".as_slice(), &good[4..]].concat(), "bad magic"),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "checksum",
            {
                let mut b = good.clone();
                b[protocol::blob::HEADER_LEN + 100] ^= 0x40;
                b
            },
            "bad checksum",
        ),
    ];
    for (name, bytes, expected) in cases {
        let damaged = dir.path().join(format!("{name}.blob"));
        std::fs::write(&damaged, bytes).unwrap();
        let (status, log) = boot(firmware(), Some(&damaged));
        assert!(log.contains(&format!("ERROR node blob at 0x10000000 refused: {expected}")), "{name}: {log}");
        assert!(!log.contains("training on"), "{name}: {log}");
        assert_eq!(status, 5, "{name}: {log}");
    }
}

/// Without a semihosting host (as on a real board) the end of a run is logged and the core parks
/// quietly instead of faulting; QEMU then runs until it is stopped.
#[test]
fn without_semihosting_the_firmware_parks() {
    let image = firmware();
    let mut serial = Vec::new();
    let boot =
        Boot { semihosting: false, timeout: std::time::Duration::from_secs(5), ..Boot::new(&image.image) };
    let outcome = boot.run(|bytes| serial.extend_from_slice(bytes));
    assert!(matches!(outcome, Err(pitrain::qemu::QemuError::Timeout(..))), "{outcome:?}");
    let table = LogTable::load(&image.elf).unwrap();
    let (lines, _) = table.decode_all(&serial);
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.starts_with("node blob at 0x10000000 refused")), "{messages:?}");
    assert_eq!(messages.last(), Some(&"halted with status 5"), "{messages:?}");
    assert!(!messages.iter().any(|m| m.starts_with("exception")), "{messages:?}");
}

/// A panic is logged with its message and location, and the run ends with status 101.
#[test]
fn panics_are_reported() {
    let target = workspace_dir().join("target").join("firmware-test-panic");
    let image = build_firmware(&target, &["selftest-panic"]).expect("the firmware builds");
    let (status, log) = boot(&image, None);
    let line = log.lines().find(|l| l.starts_with("ERROR panic: ")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("self-test: deliberate panic") && line.contains("firmware/src/main.rs"), "{line}");
    assert_eq!(status, 101, "{log}");
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
    let (status, log) = boot(&image, None);
    assert!(log.contains("ERROR exception: synchronous (BRK instruction), EC 0x3c, ESR 0xf2000042"), "{log}");
    // ELR points at the brk instruction, inside the firmware's code.
    let elr = log.split("ELR 0x").nth(1).and_then(|t| t.split(',').next()).expect("an ELR");
    let elr = u64::from_str_radix(elr, 16).unwrap();
    let map = pitrain::memmap::MemoryMap::read(&image.elf).unwrap();
    let text = map.sections.iter().find(|s| s.name == ".text").unwrap();
    assert!((text.address..text.address + text.size).contains(&elr), "ELR {elr:#x} outside .text: {log}");
    assert_eq!(status, 2, "{log}");
}

/// The static memory map: all training state (weights, the cores' spaces, the batch rows they
/// share) is in `.bss`, sized as the kernels' footprint says,
/// below the node blob area; no heap allocator is linked.
#[test]
fn memory_map_is_static() {
    use kernels::{Fixed, Footprint, MxLenet};
    let map = pitrain::memmap::MemoryMap::read(&firmware().elf).expect("the ELF reads");
    let footprint = Footprint::of::<MxLenet, Fixed>();
    let model =
        map.statics.iter().find(|s| s.name == "firmware::training::MXLENET_MODEL").expect("model state");
    let cores =
        map.statics.iter().find(|s| s.name == "firmware::training::MXLENET_CORES").expect("core states");
    assert_eq!(model.section, ".bss");
    assert!(model.size as usize >= footprint.weights + footprint.optimizer, "{model:?}");
    assert!(
        cores.size as usize >= 4 * (footprint.gradients_per_core + footprint.activations_per_core),
        "{cores:?}"
    );
    let rows = map.statics.iter().find(|s| s.name == "firmware::training::MXLENET_ROWS").expect("batch rows");
    assert_eq!(rows.section, ".bss");
    assert!(rows.size as usize >= footprint.batch_rows, "{rows:?}");
    let end = map.sections.iter().map(|s| s.address + s.size).max().unwrap();
    assert!(end <= LOAD_ADDRESS as u64, "the firmware ends at {end:#x}, in the blob area");
    assert!(map.allocator_symbols.is_empty(), "{:?}", map.allocator_symbols);
    let report = map.report();
    assert!(report.contains("heap allocator: none linked"), "{report}");
    assert!(report.contains("node blob area: 0x10000000 .. 0x30000000"), "{report}");
}

/// `pitrain logs --serial` decodes a serial device as the bytes arrive: here a pseudo-terminal
/// standing in for a USB-UART adapter, fed with a real boot's UART output.
#[test]
fn logs_decodes_a_serial_device() {
    use serialport::SerialPort;
    use std::io::{BufRead, Write};
    let (mut adapter, node_side) = serialport::TTYPort::pair().expect("a pseudo-terminal");
    let device = node_side.name().expect("the pty's name");
    let run = Boot::new(&firmware().image).run(|_| {}).expect("QEMU runs");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitrain"))
        .args(["logs", "--elf", firmware().elf.to_str().unwrap(), "--serial", &device, "--baud", "115200"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    adapter.write_all(&run.serial).unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match arrived.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(line) if line.contains("refused: bad magic") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no decoded line about the blob; saw: {seen:#?}");
    assert!(seen.iter().any(|l| l.contains("INFO  pitrain firmware 0.1.0: booted in EL1")), "{seen:#?}");
    drop(node_side);
}
