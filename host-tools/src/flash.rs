//! `pitrain flash`: writes an image to an SD card, and refuses every card that is not one.
//!
//! Before a byte is written the target is examined: it must not hold the running system, must have
//! nothing mounted, must be at least as large as the image, and must look like a card (removable, or
//! an SD/MMC or USB disk). `--allow-non-card` overrides only the last check (loop devices and image
//! files in tests), and the confirmation repeats that it was given. The image is written with a
//! progress bar, synced, read back and compared by SHA-256. A write that fails or is interrupted says
//! that the card is incomplete.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// Bytes per write.
const CHUNK: usize = 4 << 20;

/// Why flashing did not happen or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The target was examined and refused; nothing was written.
    #[error("refusing to write to {target}:\n  {}\nnothing was written", reasons.join("\n  "))]
    Refused {
        /// The device or file.
        target: PathBuf,
        /// Every reason.
        reasons: Vec<String>,
    },
    /// The target cannot be examined.
    #[error("cannot use {target}: {message}")]
    Unusable {
        /// The device or file.
        target: PathBuf,
        /// Why.
        message: String,
    },
    /// The user did not confirm.
    #[error("not confirmed; nothing was written")]
    NotConfirmed,
    /// Writing failed part way.
    #[error("writing {target} failed after {written} of {total} bytes: {message}. The card is incomplete and will not boot; flash it again")]
    WriteFailed {
        /// The device or file.
        target: PathBuf,
        /// Bytes written.
        written: u64,
        /// Bytes to write.
        total: u64,
        /// Why.
        message: String,
    },
    /// Ctrl-C during the write.
    #[error("interrupted after writing {written} of {total} bytes to {target}. The card is incomplete and will not boot; flash it again")]
    Interrupted {
        /// The device or file.
        target: PathBuf,
        /// Bytes written.
        written: u64,
        /// Bytes to write.
        total: u64,
    },
    /// What was read back differs from the image.
    #[error("verification failed: {target} reads back with SHA-256 {found}, the image has {expected}. The card is faulty or was changed during the write")]
    VerifyFailed {
        /// The device or file.
        target: PathBuf,
        /// The image's digest.
        expected: String,
        /// The card's digest.
        found: String,
    },
    /// The image could not be read.
    #[error("cannot read the image {path}: {message}")]
    Image {
        /// The image.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A mounted filesystem, from /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Device number (major, minor) of the mounted filesystem.
    pub device: (u32, u32),
    /// Where it is mounted.
    pub mount_point: String,
    /// What it was mounted from.
    pub source: String,
}

/// What is in use on this machine.
#[derive(Clone, Debug, Default)]
pub struct SystemState {
    /// Mounted filesystems.
    pub mounts: Vec<Mount>,
    /// Active swap devices (device paths).
    pub swaps: Vec<String>,
}

impl SystemState {
    /// Reads /proc/self/mountinfo and /proc/swaps.
    pub fn read() -> SystemState {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        SystemState::parse(&mountinfo, &swaps)
    }

    /// Parses the two files' text.
    pub fn parse(mountinfo: &str, swaps: &str) -> SystemState {
        let mounts = mountinfo
            .lines()
            .filter_map(|line| {
                // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (major, minor) = fields.get(2)?.split_once(':')?;
                let dash = fields.iter().position(|&f| f == "-")?;
                Some(Mount {
                    device: (major.parse().ok()?, minor.parse().ok()?),
                    mount_point: unescape(fields.get(4)?),
                    source: unescape(fields.get(dash + 2)?),
                })
            })
            .collect();
        let swaps = swaps.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(unescape).collect();
        SystemState { mounts, swaps }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match u8::from_str_radix(rest.get(i + 1..i + 4).unwrap_or(""), 8) {
            Ok(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            Err(_) => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out + rest
}

/// What kind of thing the target is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A whole-disk block device.
    Disk {
        /// Its name in /sys/block.
        name: String,
        /// Its device number.
        device: (u32, u32),
        /// Its partitions: name and device number.
        partitions: Vec<(String, (u32, u32))>,
        /// /sys/block/NAME/removable.
        removable: bool,
        /// "SD/MMC", "USB" or the bus it is on.
        transport: String,
    },
    /// A regular file (an image file standing in for a card).
    File,
}

/// An examined target.
#[derive(Clone, Debug)]
pub struct Target {
    /// The path given.
    pub path: PathBuf,
    /// What it is.
    pub kind: TargetKind,
    /// Size in bytes.
    pub size: u64,
    /// Vendor and model, as the kernel reports them.
    pub model: String,
}

fn read_sys(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Linux's split of a `dev_t`.
fn major_minor(rdev: u64) -> (u32, u32) {
    (
        ((rdev >> 8) & 0xfff) as u32 | ((rdev >> 32) & !0xfff) as u32,
        ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32,
    )
}

impl Target {
    /// Looks at `path`: a whole-disk block device or a regular file.
    pub fn examine(path: &Path) -> Result<Target, FlashError> {
        let unusable = |message: String| FlashError::Unusable { target: path.to_path_buf(), message };
        let meta = std::fs::metadata(path).map_err(|e| unusable(e.to_string()))?;
        if meta.file_type().is_file() {
            return Ok(Target {
                path: path.to_path_buf(),
                kind: TargetKind::File,
                size: meta.len(),
                model: "regular file".into(),
            });
        }
        if !meta.file_type().is_block_device() {
            return Err(unusable("it is neither a block device (a card reader's disk, e.g. /dev/sdX or /dev/mmcblkN) nor an image file".into()));
        }
        let device = major_minor(meta.rdev());
        let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", device.0, device.1));
        let real = std::fs::canonicalize(&sys).map_err(|e| unusable(format!("{}: {e}", sys.display())))?;
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if real.join("partition").exists() {
            let disk = real.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("?");
            return Err(unusable(format!(
                "it is partition {name} of /dev/{disk}: give the whole card, /dev/{disk}"
            )));
        }
        let mut partitions = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&real) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p.join("partition").exists() {
                    if let Some(dev) = read_sys(&p.join("dev")).as_deref().and_then(parse_dev) {
                        partitions.push((entry.file_name().to_string_lossy().into_owned(), dev));
                    }
                }
            }
        }
        partitions.sort();
        let sectors: u64 = read_sys(&real.join("size")).and_then(|s| s.parse().ok()).unwrap_or(0);
        let removable = read_sys(&real.join("removable")).as_deref() == Some("1");
        let transport = if name.starts_with("mmcblk") {
            "SD/MMC".to_string()
        } else if real.to_string_lossy().contains("/usb") {
            "USB".to_string()
        } else if real.to_string_lossy().contains("/virtual/") {
            "virtual".to_string()
        } else {
            "internal".to_string()
        };
        let vendor = read_sys(&real.join("device/vendor")).unwrap_or_default();
        let model = read_sys(&real.join("device/model")).unwrap_or_default();
        let model = format!("{vendor} {model}").trim().to_string();
        Ok(Target {
            path: path.to_path_buf(),
            kind: TargetKind::Disk { name, device, partitions, removable, transport },
            size: sectors * 512,
            model: if model.is_empty() { "unknown model".into() } else { model },
        })
    }

    /// Every reason not to write `image_len` bytes here. `allow_non_card` waives only the
    /// looks-like-a-card check.
    pub fn refusals(&self, image_len: u64, system: &SystemState, allow_non_card: bool) -> Vec<String> {
        let mut reasons = Vec::new();
        if let TargetKind::Disk { name, device, partitions, removable, transport } = &self.kind {
            let ours: Vec<(u32, u32)> =
                std::iter::once(*device).chain(partitions.iter().map(|p| p.1)).collect();
            let names: Vec<String> =
                std::iter::once(name.clone()).chain(partitions.iter().map(|p| p.0.clone())).collect();
            let on_target =
                |m: &Mount| ours.contains(&m.device) || names.iter().any(|n| m.source == format!("/dev/{n}"));
            const SYSTEM: [&str; 5] = ["/", "/boot", "/boot/efi", "/usr", "/var"];
            let system_mounts: Vec<&Mount> = system
                .mounts
                .iter()
                .filter(|m| on_target(m) && SYSTEM.contains(&m.mount_point.as_str()))
                .collect();
            let swap =
                system.swaps.iter().filter(|s| names.iter().any(|n| **s == format!("/dev/{n}"))).count();
            if !system_mounts.is_empty() || swap > 0 {
                let points: Vec<&str> = system_mounts.iter().map(|m| m.mount_point.as_str()).collect();
                reasons.push(format!(
                    "it holds the running system (mounted at {}{})",
                    points.join(", "),
                    if swap > 0 { "; swap" } else { "" }
                ));
            }
            let mounted: Vec<String> = system
                .mounts
                .iter()
                .filter(|m| on_target(m))
                .map(|m| format!("{} on {}", m.source, m.mount_point))
                .collect();
            if !mounted.is_empty() {
                reasons
                    .push(format!("it has mounted partitions: {} (unmount them first)", mounted.join(", ")));
            }
            let card = *removable || transport == "SD/MMC" || transport == "USB";
            if !card && !allow_non_card {
                reasons.push(format!(
                    "it does not look like an SD card: not removable, and on the {transport} bus rather than SD/MMC or USB (--allow-non-card overrides this check only)"
                ));
            }
        } else if !allow_non_card {
            reasons.push("it is a regular file, not a card (--allow-non-card to write an image file)".into());
        }
        if self.size < image_len {
            reasons.push(format!(
                "it is smaller than the image: {} bytes, the image needs {image_len}",
                self.size
            ));
        }
        reasons
    }

    /// What the confirmation shows.
    pub fn describe(&self) -> String {
        match &self.kind {
            TargetKind::Disk { name, partitions, removable, transport, .. } => {
                let parts = if partitions.is_empty() {
                    "no partitions".to_string()
                } else {
                    partitions.iter().map(|p| format!("/dev/{}", p.0)).collect::<Vec<_>>().join(", ")
                };
                format!(
                    "/dev/{name}: {}, {:.1} GB, {transport}{}, current partitions: {parts}",
                    self.model,
                    self.size as f64 / 1e9,
                    if *removable { ", removable" } else { "" }
                )
            }
            TargetKind::File => format!("{}: a regular file of {} bytes", self.path.display(), self.size),
        }
    }
}

/// Writes `image` to `target` (already examined and confirmed), calling `progress(bytes)` as it
/// goes; stops with [`FlashError::Interrupted`] when `stop` is set. Then syncs, reads back and
/// compares SHA-256. Returns the digest.
pub fn write_and_verify(
    image: &Path,
    target: &Target,
    stop: &AtomicBool,
    mut progress: impl FnMut(u64),
) -> Result<String, FlashError> {
    let image_error =
        |e: std::io::Error| FlashError::Image { path: image.to_path_buf(), message: e.to_string() };
    let mut source = std::fs::File::open(image).map_err(image_error)?;
    let total = source.metadata().map_err(image_error)?.len();
    let mut options = std::fs::File::options();
    options.write(true).read(true);
    if matches!(target.kind, TargetKind::Disk { .. }) {
        // O_EXCL on a block device: fails with EBUSY if anything (a mount) holds it.
        options.custom_flags(libc::O_EXCL);
    }
    let failed = |written: u64, e: std::io::Error| FlashError::WriteFailed {
        target: target.path.clone(),
        written,
        total,
        message: e.to_string(),
    };
    let mut card = options.open(&target.path).map_err(|e| failed(0, e))?;
    let mut expected = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut written = 0u64;
    while written < total {
        if stop.load(Ordering::Relaxed) {
            return Err(FlashError::Interrupted { target: target.path.clone(), written, total });
        }
        let n = source.read(&mut buffer).map_err(image_error)?;
        if n == 0 {
            return Err(FlashError::Image {
                path: image.to_path_buf(),
                message: "it shrank while being written".into(),
            });
        }
        card.write_all(&buffer[..n]).map_err(|e| failed(written, e))?;
        expected.update(&buffer[..n]);
        written += n as u64;
        progress(written);
    }
    card.sync_all().map_err(|e| failed(written, e))?;
    // Read back what the card holds, not what the page cache remembers.
    // SAFETY: posix_fadvise only advises the kernel about this open file's cache.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&card),
            0,
            total as i64,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    card.seek(SeekFrom::Start(0)).map_err(|e| failed(written, e))?;
    let mut found = Sha256::new();
    let mut remaining = total;
    while remaining > 0 {
        let want = remaining.min(CHUNK as u64) as usize;
        card.read_exact(&mut buffer[..want]).map_err(|e| failed(written, e))?;
        found.update(&buffer[..want]);
        remaining -= want as u64;
    }
    let (expected, found) = (hex(&expected.finalize()), hex(&found.finalize()));
    if expected != found {
        return Err(FlashError::VerifyFailed { target: target.path.clone(), expected, found });
    }
    Ok(expected)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Examines `device`, refuses it or asks for confirmation (unless `yes`), writes, verifies.
pub fn flash(
    image: &Path,
    device: &Path,
    yes: bool,
    allow_non_card: bool,
    stop: &AtomicBool,
    confirm: &mut dyn FnMut(&str) -> bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<String, FlashError> {
    let image_len = std::fs::metadata(image)
        .map_err(|e| FlashError::Image { path: image.to_path_buf(), message: e.to_string() })?
        .len();
    let target = Target::examine(device)?;
    if same_file(image, device) {
        return Err(FlashError::Refused {
            target: device.to_path_buf(),
            reasons: vec!["it is the image itself".into()],
        });
    }
    let reasons = target.refusals(image_len, &SystemState::read(), allow_non_card);
    if !reasons.is_empty() {
        return Err(FlashError::Refused { target: device.to_path_buf(), reasons });
    }
    let mut question = format!(
        "This overwrites everything on {}\nwith {} ({} bytes).",
        target.describe(),
        image.display(),
        image_len
    );
    if allow_non_card {
        question.push_str(
            "\nNote: --allow-non-card was given, so the check that this is an SD card was skipped.",
        );
    }
    if !yes && !confirm(&question) {
        return Err(FlashError::NotConfirmed);
    }
    if yes {
        println!("{question}");
    }
    write_and_verify(image, &target, stop, |n| progress(n, image_len))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 8:17 / /media/card\\040one rw - vfat /dev/sdb1 rw
31 22 179:1 / /boot rw - vfat /dev/mmcblk0p1 rw
";

    fn disk(
        name: &str,
        device: (u32, u32),
        partitions: &[(&str, (u32, u32))],
        removable: bool,
        transport: &str,
    ) -> Target {
        Target {
            path: PathBuf::from(format!("/dev/{name}")),
            kind: TargetKind::Disk {
                name: name.into(),
                device,
                partitions: partitions.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
                removable,
                transport: transport.into(),
            },
            size: 8_000_000_000,
            model: "Generic SD".into(),
        }
    }

    #[test]
    fn mountinfo_and_swaps_parse() {
        let s =
            SystemState::parse(MOUNTINFO, "Filename Type Size Used Priority\n/dev/sdc2 partition 1 0 -2\n");
        assert_eq!(s.mounts.len(), 3);
        assert_eq!(s.mounts[1].mount_point, "/media/card one");
        assert_eq!(s.mounts[1].device, (8, 17));
        assert_eq!(s.swaps, ["/dev/sdc2"]);
    }

    #[test]
    fn each_refusal_is_named() {
        let system = SystemState::parse(MOUNTINFO, "Filename Type\n/dev/sdc2 partition 1 0 -2\n");
        let good = disk("sdd", (8, 48), &[], true, "USB");
        assert!(good.refusals(1 << 20, &system, false).is_empty());
        let root = disk("vda", (254, 0), &[], false, "internal");
        let reasons = root.refusals(1 << 20, &system, true);
        assert!(reasons[0].contains("holds the running system (mounted at /)"), "{reasons:?}");
        let boot = disk("mmcblk0", (179, 0), &[("mmcblk0p1", (179, 1))], true, "SD/MMC");
        assert!(boot.refusals(1 << 20, &system, false)[0].contains("running system (mounted at /boot)"));
        let mounted = disk("sdb", (8, 16), &[("sdb1", (8, 17))], true, "USB");
        let reasons = mounted.refusals(1 << 20, &system, false);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].contains("mounted partitions: /dev/sdb1 on /media/card one"), "{reasons:?}");
        let swap = disk("sdc", (8, 32), &[("sdc2", (8, 34))], true, "USB");
        assert!(swap.refusals(1 << 20, &system, false)[0].contains("swap"));
        let internal = disk("nvme0n1", (259, 0), &[], false, "internal");
        assert!(internal.refusals(1 << 20, &system, false)[0].contains("does not look like an SD card"));
        assert!(internal.refusals(1 << 20, &system, true).is_empty(), "the override waives only that check");
        assert!(good.refusals(9_000_000_000, &system, false)[0].contains("smaller than the image"));
        let file = Target { path: "/tmp/x".into(), kind: TargetKind::File, size: 10, model: String::new() };
        assert!(file.refusals(5, &system, false)[0].contains("regular file"));
        assert!(file.refusals(5, &system, true).is_empty());
    }
}
