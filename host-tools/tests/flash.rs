//! `pitrain flash`: every refusal writes nothing and says why; a flash verifies; an interrupted or
//! failed write says the card is incomplete. Against regular files everywhere, and as root against a
//! loop device (CI runs as root, so there it must work).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use pitrain::flash::{write_and_verify, FlashError, Target, TargetKind};

/// Runs `pitrain flash` with `input` on standard input.
fn flash(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitrain"))
        .arg("flash")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal may end the process before it reads its input: a closed pipe is no failure here.
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.unwrap(),
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A 3 MiB stand-in image with varied content.
fn image(dir: &Path) -> PathBuf {
    let path = dir.join("node.img");
    let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn refused(args: &[&str], input: &str, expected: &str) {
    let o = flash(args, input);
    let out = text(&o);
    assert!(!o.status.success(), "{args:?} should fail: {out}");
    assert!(out.contains(expected), "{args:?}: expected {expected:?} in {out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn regular_files_refusals_and_a_verified_flash() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let card = dir.path().join("card.bin");
    std::fs::write(&card, vec![0u8; 4 << 20]).unwrap();
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![0u8; 1 << 20]).unwrap();
    let (img_s, card_s, small_s) = (img.to_str().unwrap(), card.to_str().unwrap(), small.to_str().unwrap());
    refused(&[img_s, "--device", card_s, "--yes"], "", "it is a regular file, not a card");
    refused(&[img_s, "--device", small_s, "--yes", "--allow-non-card"], "", "smaller than the image");
    refused(&[img_s, "--device", img_s, "--yes", "--allow-non-card"], "", "it is the image itself");
    refused(&[img_s, "--device", card_s, "--allow-non-card"], "no\n", "not confirmed; nothing was written");
    refused(&[img_s, "--device", "/dev/null", "--yes"], "", "neither a block device");
    refused(&[img_s, "--device", "/nonexistent/sdz", "--yes"], "", "cannot use /nonexistent/sdz");
    assert!(std::fs::read(&card).unwrap().iter().all(|&b| b == 0), "refusals write nothing");
    assert!(std::fs::read(&small).unwrap().iter().all(|&b| b == 0), "refusals write nothing");

    let o = flash(&[img_s, "--device", card_s, "--allow-non-card"], "yes\n");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("--allow-non-card was given"), "the confirmation repeats the override: {out}");
    assert!(out.contains("written, synced and verified"), "{out}");
    let written = std::fs::read(&card).unwrap();
    let image_bytes = std::fs::read(&img).unwrap();
    assert_eq!(&written[..image_bytes.len()], &image_bytes[..]);
}

#[test]
fn interrupted_and_failed_writes_say_the_card_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let card = dir.path().join("card.bin");
    std::fs::write(&card, vec![0u8; 4 << 20]).unwrap();
    let target = Target::examine(&card).unwrap();
    // Ctrl-C arrives during the write (the handler sets this flag).
    let stop = AtomicBool::new(true);
    let err = write_and_verify(&img, &target, &stop, |_| {}).unwrap_err();
    assert!(matches!(err, FlashError::Interrupted { written: 0, .. }), "{err}");
    assert!(err.to_string().contains("The card is incomplete and will not boot; flash it again"), "{err}");
    // A device that fails every write.
    let full =
        Target { path: "/dev/full".into(), kind: TargetKind::File, size: 1 << 40, model: String::new() };
    let err = write_and_verify(&img, &full, &AtomicBool::new(false), |_| {}).unwrap_err();
    assert!(err.to_string().contains("writing /dev/full failed after 0 of 3145728 bytes"), "{err}");
    assert!(err.to_string().contains("card is incomplete"), "{err}");
    let ok = write_and_verify(&img, &target, &AtomicBool::new(false), |_| {});
    assert!(ok.is_ok(), "{ok:?}");
    let _ = Ordering::Relaxed;
}

/// Root only (CI runs as root): a loop device is not a card; with the override it flashes and
/// verifies; mounted, it is refused.
#[test]
fn loop_device_as_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs as root and must run this test");
        eprintln!("skipped: loop devices need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let backing = dir.path().join("loop.bin");
    std::fs::write(&backing, vec![0u8; 8 << 20]).unwrap();
    let out = Command::new("losetup").args(["-f", "--show"]).arg(&backing).output().expect("losetup");
    assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
    let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
    struct Detach(String, PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.1).status();
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let mount_point = dir.path().join("mnt");
    let _guard = Detach(device.clone(), mount_point.clone());
    let img_s = img.to_str().unwrap();
    refused(&[img_s, "--device", &device, "--yes"], "", "does not look like an SD card");
    let o = flash(&[img_s, "--device", &device, "--yes", "--allow-non-card"], "");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("written, synced and verified"));
    let on_disk = std::fs::read(&backing).unwrap();
    assert_eq!(&on_disk[..3 << 20], &std::fs::read(&img).unwrap()[..]);
    // Mounted: refused, nothing written.
    // ext4: the kernel that runs the root filesystem has it (vfat may be a module that is absent).
    let mkfs =
        Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&device).output().expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.status.success(), "{}", String::from_utf8_lossy(&mkfs.stderr));
    std::fs::create_dir(&mount_point).unwrap();
    let mount = Command::new("mount").arg(&device).arg(&mount_point).output().unwrap();
    assert!(mount.status.success(), "mount: {}", String::from_utf8_lossy(&mount.stderr));
    let before = std::fs::read(&backing).unwrap();
    refused(&[img_s, "--device", &device, "--yes", "--allow-non-card"], "", "has mounted partitions");
    assert!(std::fs::read(&backing).unwrap() == before, "nothing written");
}

/// `--cluster` walks through the nodes' cards one after another, waiting for each.
#[test]
fn a_whole_cluster_card_by_card() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_pitrain"))
        .args(["cluster", "init", "--nodes", "2", "--out", cluster.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("node-0.img"), vec![0xA0; 1 << 20]).unwrap();
    std::fs::write(images.join("node-1.img"), vec![0xA1; 1 << 20]).unwrap();
    let card = dir.path().join("reader.bin");
    std::fs::write(&card, vec![0u8; 2 << 20]).unwrap();
    let args = [
        "--cluster",
        cluster.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--device",
        card.to_str().unwrap(),
        "--allow-non-card",
        "--yes",
    ];
    let o = flash(&args, "\n\n");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Insert the card for node 0") && out.contains("Insert the card for node 1"),
        "{out}"
    );
    assert!(out.contains("node 1: written, synced and verified"), "{out}");
    assert_eq!(
        std::fs::read(&card).unwrap()[..1 << 20],
        vec![0xA1; 1 << 20][..],
        "the last card holds node 1"
    );
    // Without a card change (no more input) it stops before the next node and says so.
    let o = flash(&args, "\n");
    assert!(!o.status.success() && text(&o).contains("stopped before node 1"), "{}", text(&o));
    std::fs::remove_file(images.join("node-1.img")).unwrap();
    let o = flash(&args, "\n\n");
    assert!(!o.status.success() && text(&o).contains("node-1.img is missing"), "{}", text(&o));
}
