//! SD-card images: built from a cluster file with stand-in boot files, read back with the same crates
//! and with Debian's mtools and fsck.fat, inspected, and booted in QEMU from what the image holds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use pitrain::image;
use pitrain::logs::LogTable;
use pitrain::qemu::{build_firmware, workspace_dir, Boot, FirmwareImage};
use protocol::blob::LOAD_ADDRESS;

fn pitrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pitrain"))
        .args(args)
        .env("MNIST_DIR", common::mnist_dir())
        .output()
        .expect("pitrain runs")
}

fn firmware() -> &'static FirmwareImage {
    static IMAGE: OnceLock<FirmwareImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        build_firmware(&workspace_dir().join("target").join("firmware-test"), &[])
            .expect("the firmware builds")
    })
}

/// Stand-in boot files (the real ones are not redistributable here): random bytes, start.elf an ELF.
fn stand_in_boot_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let pattern = |n: usize, seed: u8| {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>()
    };
    let files = vec![
        ("bootcode.bin".to_string(), pattern(52_000, 1)),
        ("start.elf".to_string(), [b"\x7fELF".as_slice(), &pattern(300_000, 2)].concat()),
        ("fixup.dat".to_string(), pattern(7_000, 3)),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    files
}

/// A cluster of two LeNet-5 nodes on the first 128 images, node 1 with a static address.
fn cluster_file(dir: &Path) -> PathBuf {
    let path = dir.join("cluster.toml");
    let o = pitrain(&[
        "cluster",
        "init",
        "--nodes",
        "2",
        "--master",
        "10.0.0.1",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = pitrain(&["cluster", "init", "--out", path.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists"));
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replacen("model = \"mxlenet\"", "model = \"lenet5\"", 1)
        .replacen("epochs = 10", "epochs = 1", 1)
        .replacen("# limit = 6000", "limit = 128", 1);
    // Node 1 gets a static address.
    let second = text.rfind("[[node]]").unwrap();
    let text =
        format!("{}[[node]]\nid = 1\naddress = \"10.0.0.12/24\"\ngateway = \"10.0.0.1\"\n", &text[..second]);
    std::fs::write(&path, text).unwrap();
    path
}

/// Builds node 1's image; returns it, the boot files and the stand-in files' directory.
fn node_image(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let cluster = cluster_file(dir);
    let boot = stand_in_boot_files(&dir.join("firmware"));
    let image = dir.join("node-1.img");
    let o = pitrain(&[
        "image",
        "--cluster",
        cluster.to_str().unwrap(),
        "--node",
        "1",
        "--out",
        image.to_str().unwrap(),
        "--firmware-dir",
        dir.join("firmware").to_str().unwrap(),
        "--kernel",
        firmware().image.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (image, boot)
}

#[test]
fn images_read_back_intact_with_both_tools() {
    let dir = tempfile::tempdir().unwrap();
    let (image_path, boot) = node_image(dir.path());
    let kernel = std::fs::read(&firmware().image).unwrap();
    let listing = image::list(&image_path).expect("the image lists");
    assert_eq!(listing.partitions.len(), 1);
    assert_eq!((listing.partitions[0].kind, listing.partitions[0].start), (0x0c, 1 << 20));
    let mut expected: Vec<(String, Vec<u8>)> = boot.clone();
    expected.push(("kernel8.img".into(), kernel));
    expected.push(("config.txt".into(), image::config_txt("pi-cluster", 1).into_bytes()));
    let blob = image::read_file(&image_path, "node.blob").unwrap();
    expected.push(("node.blob".into(), blob.clone()));
    let checked = protocol::blob::Blob::new_checked(&blob[..]).expect("the image's blob checks");
    assert_eq!((checked.settings().node_id, checked.samples()), (1, 64));
    // The same crates.
    for (name, bytes) in &expected {
        assert_eq!(&image::read_file(&image_path, name).unwrap(), bytes, "{name} via fatfs");
    }
    // mtools, independently: every file by name, byte for byte.
    let target = format!("{}@@1M", image_path.display());
    let mdir =
        Command::new("mdir").args(["-b", "-i", &target, "::"]).output().expect("mdir (mtools) is installed");
    assert!(mdir.status.success(), "{}", String::from_utf8_lossy(&mdir.stderr));
    let listed = String::from_utf8_lossy(&mdir.stdout).to_lowercase();
    for (name, bytes) in &expected {
        assert!(listed.contains(&format!("::/{name}")), "mdir lists {name}: {listed}");
        let copy = dir.path().join(format!("mcopy-{name}"));
        let o = Command::new("mcopy")
            .args(["-n", "-i", &target, &format!("::{name}")])
            .arg(&copy)
            .output()
            .unwrap();
        assert!(o.status.success(), "mcopy {name}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(&std::fs::read(&copy).unwrap(), bytes, "{name} via mcopy");
    }
    // fsck.fat finds nothing to repair in the partition.
    let bytes = std::fs::read(&image_path).unwrap();
    let partition = dir.path().join("partition.img");
    std::fs::write(&partition, &bytes[1 << 20..]).unwrap();
    let fsck = Command::new("fsck.fat").arg("-n").arg(&partition).output().expect("fsck.fat (dosfstools)");
    assert!(
        fsck.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    // And pitrain's own inspection passes.
    let o = pitrain(&["image", "inspect", image_path.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("node.blob: node 1 of 2, 64 samples"), "{out}");
    assert!(out.contains("address 10.0.0.12/24 via 10.0.0.1"), "{out}");
}

/// The firmware taken from an image (its kernel8.img and node blob) boots in QEMU and logs the node
/// and the settings from that image, then trains on its shard.
#[test]
fn the_firmware_from_an_image_boots() {
    let dir = tempfile::tempdir().unwrap();
    let (image_path, _) = node_image(dir.path());
    let kernel = dir.path().join("kernel8.img");
    let blob = dir.path().join("node.blob");
    std::fs::write(&kernel, image::read_file(&image_path, "kernel8.img").unwrap()).unwrap();
    std::fs::write(&blob, image::read_file(&image_path, "node.blob").unwrap()).unwrap();
    let run = Boot { load: vec![(blob, LOAD_ADDRESS as u64)], ..Boot::new(&kernel) }
        .run(|_| {})
        .expect("QEMU runs");
    let table = LogTable::load(&firmware().elf).unwrap();
    let (lines, _) = table.decode_all(&run.serial);
    let log: String = lines.iter().map(|l| format!("{}\n", l.message)).collect();
    assert!(log.contains("node 1 of 2: 64 samples"), "{log}");
    assert!(log.contains("LeNet-5, 1 epochs, batch 64, seed 1, 4 cores"), "{log}");
    assert!(log.contains("network: master 10.0.0.1:7700, node port 7701"), "{log}");
    assert!(log.contains("network: static address 10.0.0.12/24 via 10.0.0.1"), "{log}");
    assert!(log.contains("epoch 1: "), "{log}");
    assert_eq!(run.status, 0, "{log}");
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_file(dir.path());
    let fw = dir.path().join("firmware");
    stand_in_boot_files(&fw);
    let kernel = firmware().image.to_str().unwrap().to_string();
    let build = |extra: &[&str]| {
        let mut args = vec!["image", "--cluster", cluster.to_str().unwrap(), "--kernel", &kernel];
        args.extend_from_slice(extra);
        let o = pitrain(&args);
        assert!(!o.status.success(), "{extra:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let out = dir.path().join("x.img");
    let (fw_s, out_s) = (fw.to_str().unwrap(), out.to_str().unwrap());
    assert!(build(&["--node", "7", "--out", out_s, "--firmware-dir", fw_s]).contains("has no node 7"));
    assert!(build(&["--node", "0", "--out", out_s]).contains("raspi-firmware"));
    std::fs::write(fw.join("start.elf"), b"not an elf").unwrap();
    let err = build(&["--node", "0", "--out", out_s, "--firmware-dir", fw_s]);
    assert!(
        err.contains("start.elf") && err.contains("not an ELF") && err.contains("raspi-firmware"),
        "{err}"
    );
    stand_in_boot_files(&fw);
    std::fs::remove_file(fw.join("fixup.dat")).unwrap();
    let err = build(&["--node", "0", "--out", out_s, "--firmware-dir", fw_s]);
    assert!(err.contains("boot file fixup.dat is missing") && err.contains("non-free-firmware"), "{err}");
    assert!(!out.exists(), "nothing is left behind");
    // A cluster file with a typo names the line and the field.
    let text = std::fs::read_to_string(&cluster).unwrap().replacen("seed = 1", "sed = 1", 1);
    std::fs::write(&cluster, text).unwrap();
    let err = build(&["--node", "0", "--out", out_s, "--firmware-dir", fw_s]);
    assert!(err.contains("cluster.toml: line ") && err.contains("unknown field `sed`"), "{err}");
}

/// `image inspect` names what is wrong with a damaged image.
#[test]
fn inspect_finds_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = node_image(dir.path());
    let mut blob = image::read_file(&good, "node.blob").unwrap();
    blob[300] ^= 1;
    let damaged = dir.path().join("damaged.img");
    let elf_kernel = std::fs::read(&firmware().elf).unwrap();
    image::build(
        &damaged,
        &[("config.txt", b"arm_64bit=1\n"), ("kernel8.img", &elf_kernel), ("node.blob", &blob)],
        1,
    )
    .unwrap();
    let inspection = image::inspect(&damaged).unwrap();
    let problems = inspection.problems.join("\n");
    for expected in [
        "bootcode.bin is missing",
        "config.txt lacks `kernel_address=0x80000`",
        "config.txt lacks `initramfs node.blob 0x10000000`",
        "kernel8.img is an ELF file",
        "node.blob is refused: bad checksum",
    ] {
        assert!(problems.contains(expected), "{expected}: {problems}");
    }
    let o = pitrain(&["image", "inspect", damaged.to_str().unwrap()]);
    assert!(!o.status.success());
    let not_an_image = dir.path().join("zeros.img");
    std::fs::write(&not_an_image, vec![0u8; 4096]).unwrap();
    assert!(image::inspect(&not_an_image).is_err());
}
