//! Building the firmware image and booting it in QEMU's raspi3b machine.
//!
//! `kernel8.img` is the raw image the Pi's boot loader (and QEMU, like the board) starts at 0x80000
//! in EL2 with cores 1-3 parked. The firmware ends a QEMU run through semihosting, so QEMU's exit
//! status is the firmware's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The firmware's bare-metal target.
pub const TARGET: &str = "aarch64-unknown-none";

/// Why building or running failed.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A tool is missing.
    #[error("{tool} is not installed ({hint})")]
    Missing {
        /// The tool.
        tool: String,
        /// How to get it.
        hint: &'static str,
    },
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Failed {
        /// What ran.
        command: String,
        /// What it said.
        detail: String,
    },
    /// QEMU was stopped on request.
    #[error("QEMU was stopped (the firmware had written {0} bytes to its UART)")]
    Stopped(usize),
    /// QEMU did not end in time.
    #[error(
        "QEMU did not finish within {0:?} (the firmware had written {1} bytes to its UART); it was stopped"
    )]
    Timeout(Duration, usize),
}

/// A built firmware.
#[derive(Clone, Debug)]
pub struct FirmwareImage {
    /// The ELF (symbols; the defmt table later).
    pub elf: PathBuf,
    /// The raw image that boots.
    pub image: PathBuf,
}

/// The workspace this `pitrain` was built from.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host-tools sits in the workspace").to_path_buf()
}

/// Builds the firmware (release, with the given cargo features) and its raw `kernel8.img` next to
/// the ELF.
pub fn build_firmware(target_dir: &Path, features: &[&str]) -> Result<FirmwareImage, QemuError> {
    let workspace = workspace_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&workspace)
        .args(["build", "-p", "firmware", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        .args(["--features", &features.join(",")])
        .output()
        .map_err(|e| QemuError::Failed { command: format!("{cargo} build"), detail: e.to_string() })?;
    if !output.status.success() {
        return Err(QemuError::Failed {
            command: "cargo build -p firmware".into(),
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let elf = target_dir.join(TARGET).join("release").join("firmware");
    let image = elf.with_file_name("kernel8.img");
    let objcopy = llvm_objcopy()?;
    let status =
        Command::new(&objcopy).args(["-O", "binary"]).arg(&elf).arg(&image).status().map_err(|e| {
            QemuError::Failed { command: objcopy.display().to_string(), detail: e.to_string() }
        })?;
    if !status.success() {
        return Err(QemuError::Failed { command: "llvm-objcopy".into(), detail: status.to_string() });
    }
    Ok(FirmwareImage { elf, image })
}

/// `llvm-objcopy` from the toolchain's `llvm-tools` component.
fn llvm_objcopy() -> Result<PathBuf, QemuError> {
    let missing = || QemuError::Missing {
        tool: "llvm-objcopy".into(),
        hint: "rustup component add llvm-tools (rust-toolchain.toml lists it)",
    };
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output().map_err(|_| missing())?;
    let lib = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()).join("lib").join("rustlib");
    std::fs::read_dir(&lib)
        .map_err(|_| missing())?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join("llvm-objcopy"))
        .find(|p| p.is_file())
        .ok_or_else(missing)
}

/// Checks a node blob and copies it into `dir` for QEMU's loader, with its cores setting replaced by
/// `cores` if given. A damaged blob is refused here, before a guest boots.
pub fn stage_blob(blob: &Path, cores: Option<u8>, dir: &Path) -> Result<PathBuf, QemuError> {
    let failed = |detail: String| QemuError::Failed {
        command: format!("reading the node blob {}", blob.display()),
        detail,
    };
    let mut bytes = std::fs::read(blob).map_err(|e| failed(e.to_string()))?;
    let mut checked = protocol::blob::Blob::new_checked(&mut bytes[..]).map_err(|e| failed(e.to_string()))?;
    if let Some(cores) = cores {
        checked.set_cores(cores).map_err(|_| failed(format!("--cores must be 1 to 4, got {cores}")))?;
    }
    let staged = dir.join("node.blob");
    std::fs::write(&staged, &bytes).map_err(|e| failed(e.to_string()))?;
    Ok(staged)
}

/// What a QEMU run gave.
#[derive(Clone, Debug)]
pub struct QemuRun {
    /// QEMU's exit status: the firmware's semihosting exit code.
    pub status: i32,
    /// Everything the firmware wrote to its UART.
    pub serial: Vec<u8>,
}

/// One node's boot: the raw image, what to place in RAM beside it, and how to run.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The raw `kernel8.img`.
    pub image: PathBuf,
    /// Files placed in guest RAM before boot (`-device loader`), with their addresses.
    pub load: Vec<(PathBuf, u64)>,
    /// Give up after this long.
    pub timeout: Duration,
    /// Deterministic: `-icount shift=0,sleep=off`.
    pub icount: bool,
    /// Offer semihosting, through which the firmware ends the run. Without it QEMU behaves like a
    /// board with no debugger: the firmware parks when done and the run ends at the timeout.
    pub semihosting: bool,
    /// More QEMU arguments, e.g. `-device usb-net,netdev=n0 -netdev dgram,...` for a NIC behind the
    /// DWC2 (QEMU then inserts a usb-hub between them).
    pub extra_args: Vec<String>,
    /// When set (by another thread: Ctrl-C, the end of a cluster run), QEMU is stopped.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Let a guest reset (the firmware's watchdog reboot) restart the machine, reloading the kernel
    /// and blobs, as a board does. Off (`-no-reboot`): a reset ends QEMU, which single-boot runs
    /// and tests want.
    pub reboot: bool,
}

impl Boot {
    /// Boots `image` alone, deterministically, with a generous timeout.
    pub fn new(image: &Path) -> Boot {
        Boot {
            image: image.to_path_buf(),
            load: Vec::new(),
            timeout: Duration::from_secs(120),
            icount: true,
            semihosting: true,
            extra_args: Vec::new(),
            stop: None,
            reboot: false,
        }
    }

    /// Boots on a raspi3b with semihosting and collects the UART output; `on_output` sees it as it
    /// arrives.
    pub fn run(&self, mut on_output: impl FnMut(&[u8])) -> Result<QemuRun, QemuError> {
        let mut command = Command::new("qemu-system-aarch64");
        command
            .args(["-M", "raspi3b", "-display", "none", "-monitor", "none", "-serial", "stdio"])
            .args(if self.reboot { &[][..] } else { &["-no-reboot"][..] })
            .arg("-kernel")
            .arg(&self.image)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (file, address) in &self.load {
            let mut arg = std::ffi::OsString::from("loader,file=");
            arg.push(file);
            arg.push(format!(",addr={address:#x},force-raw=on"));
            command.arg("-device").arg(arg);
        }
        if self.icount {
            command.args(["-icount", "shift=0,sleep=off"]);
        }
        if self.semihosting {
            command.arg("-semihosting");
        }
        command.args(&self.extra_args);
        // If the thread that started QEMU dies (pitrain killed, a panic), the kernel kills QEMU too,
        // so no guest outlives its run.
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl, which is
        // async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|_| QemuError::Missing {
            tool: "qemu-system-aarch64".into(),
            hint: "Debian: apt-get install -t bookworm-backports qemu-system-arm (.ci/run does this)",
        })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (chunks, arrivals) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                if chunks.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let complaints = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let started = Instant::now();
        let mut serial = Vec::new();
        let mut take = |chunk: Vec<u8>, serial: &mut Vec<u8>| {
            on_output(&chunk);
            serial.extend_from_slice(&chunk);
        };
        let status = loop {
            match arrivals.recv_timeout(Duration::from_millis(20)) {
                Ok(chunk) => take(chunk, &mut serial),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // QEMU closed its output: it is exiting.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    break child.wait().map_err(|e| QemuError::Failed {
                        command: "qemu-system-aarch64".into(),
                        detail: e.to_string(),
                    })?;
                }
            }
            let stopped = self.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
            if started.elapsed() > self.timeout || stopped {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                while let Ok(chunk) = arrivals.try_recv() {
                    take(chunk, &mut serial);
                }
                if stopped {
                    return Err(QemuError::Stopped(serial.len()));
                }
                return Err(QemuError::Timeout(self.timeout, serial.len()));
            }
        };
        let _ = reader.join();
        while let Ok(chunk) = arrivals.try_recv() {
            take(chunk, &mut serial);
        }
        let complaints = complaints.join().unwrap_or_default();
        if status.code().is_none() || (serial.is_empty() && !complaints.trim().is_empty()) {
            return Err(QemuError::Failed {
                command: "qemu-system-aarch64".into(),
                detail: format!("{status}: {}", complaints.trim()),
            });
        }
        Ok(QemuRun { status: status.code().unwrap_or(-1), serial })
    }
}
