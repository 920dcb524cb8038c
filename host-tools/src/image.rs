//! SD-card images for the nodes: `pitrain image` and `pitrain image inspect`.
//!
//! An image is an MBR with one FAT32 partition (type 0x0C, starting at 1 MiB), built with `mbrman`
//! and `fatfs`, holding what a Pi 3 boots from: the GPU's boot files (`bootcode.bin`, `start.elf`,
//! `fixup.dat`, from the user's copy of the Raspberry Pi firmware), `config.txt`, the firmware's
//! `kernel8.img` and the node blob. File times are fixed, so the same inputs give the same image.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protocol::blob::{Blob, LOAD_ADDRESS};

/// Bytes per sector.
const SECTOR: u64 = 512;
/// The partition starts at 1 MiB, as SD cards' erase blocks like it.
const PARTITION_START: u64 = 1 << 20;
/// The smallest partition: FAT32 needs at least 65,525 clusters.
const MIN_PARTITION: u64 = 64 << 20;
/// MBR type of FAT32 with LBA addressing, which the Pi's boot ROM reads.
const FAT32_LBA: u8 = 0x0C;
/// The first instruction of the pitrain firmware (`mrs x1, mpidr_el1`), to recognise its image.
const FIRMWARE_ENTRY: u32 = 0xd538_00a1;

/// The file names on the boot partition.
pub const CONFIG_TXT: &str = "config.txt";
/// The firmware image.
pub const KERNEL: &str = "kernel8.img";
/// The node blob.
pub const NODE_BLOB: &str = "node.blob";

/// The GPU boot files a Pi 3 needs, with what makes each plausible.
pub const BOOT_FILES: [&str; 3] = ["bootcode.bin", "start.elf", "fixup.dat"];

/// Where to get the boot files, for error messages.
pub const BOOT_FILES_HINT: &str =
    "they come with the Raspberry Pi firmware: Debian's raspi-firmware package \
(in the non-free-firmware component) installs them in /usr/lib/raspi-firmware, or take the boot/ folder of \
github.com/raspberrypi/firmware; pass that folder as --firmware-dir";

/// Why an image could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A boot file is missing.
    #[error("boot file {name} is missing from {dir}: {hint}", hint = BOOT_FILES_HINT)]
    MissingBootFile {
        /// Which.
        name: &'static str,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A boot file is not what its name says.
    #[error("{path} does not look like the Pi's {name}: {problem}; {hint}", hint = BOOT_FILES_HINT)]
    WrongBootFile {
        /// Which.
        name: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// The image has no usable FAT32 boot partition.
    #[error("{path}: {message}")]
    NotAnImage {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |e| ImageError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// Reads and checks the three boot files from `dir`.
pub fn read_boot_files(dir: &Path) -> Result<Vec<(&'static str, Vec<u8>)>, ImageError> {
    let mut files = Vec::new();
    for name in BOOT_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(ImageError::MissingBootFile { name, dir: dir.to_path_buf() });
        }
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let wrong =
            |problem: &str| ImageError::WrongBootFile { name, path: path.clone(), problem: problem.into() };
        match name {
            // The VideoCore firmware is an ELF file.
            "start.elf" if !bytes.starts_with(b"\x7fELF") => return Err(wrong("it is not an ELF file")),
            _ if bytes.is_empty() => return Err(wrong("it is empty")),
            _ if bytes.len() > 16 << 20 => return Err(wrong("it is larger than 16 MiB")),
            _ => {}
        }
        files.push((name, bytes));
    }
    Ok(files)
}

/// The `config.txt` of node `node` of cluster `cluster`.
pub fn config_txt(cluster: &str, node: u16) -> String {
    format!(
        "# Raspberry Pi 3 boot configuration of pitrain node {node} of cluster \"{cluster}\" (written by `pitrain image`).
# The GPU boot loader reads it before it starts the ARM cores.

# 64-bit firmware, linked for 0x80000, entered there in EL2 on core 0 (cores 1-3 wait in the spin table).
arm_64bit=1
kernel={KERNEL}
kernel_address=0x80000

# The PL011 UART on GPIO14/15 (header pins 8 and 10) carries the node's defmt log at 115200 baud:
# `pitrain logs --elf firmware --serial /dev/ttyUSB0`.
enable_uart=1

# The node blob (this node's shard, its settings and the cluster key) where the firmware reads it.
initramfs {NODE_BLOB} {LOAD_ADDRESS:#x}
"
    )
}

/// A byte range of a file, seen as a whole disk (for `fatfs`).
struct PartitionIo<F> {
    file: F,
    start: u64,
    len: u64,
    position: u64,
}

impl<F: Seek> PartitionIo<F> {
    fn new(mut file: F, start: u64, len: u64) -> std::io::Result<Self> {
        file.seek(SeekFrom::Start(start))?;
        Ok(PartitionIo { file, start, len, position: 0 })
    }
}

impl<F: Read + Seek> Read for PartitionIo<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.len - self.position.min(self.len)) as usize);
        let n = self.file.read(&mut buf[..n])?;
        self.position += n as u64;
        Ok(n)
    }
}

impl<F: Write + Seek> Write for PartitionIo<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min((self.len - self.position.min(self.len)) as usize);
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "past the end of the partition"));
        }
        let n = self.file.write(&buf[..n])?;
        self.position += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl<F: Seek> Seek for PartitionIo<F> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.position as i128 + d as i128,
        };
        if target < 0 || target > self.len as i128 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek outside the partition"));
        }
        self.position = target as u64;
        self.file.seek(SeekFrom::Start(self.start + self.position))?;
        Ok(self.position)
    }
}

/// The fixed time stamped on every file, so images are reproducible.
#[derive(Debug)]
struct FixedTime;

static FIXED_TIME: FixedTime = FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date { year: 2017, month: 1, day: 1 }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time { hour: 0, min: 0, sec: 0, millis: 0 },
        }
    }
}

/// Writes a bootable image holding `files` (name, content) to `out`, atomically.
pub fn build(out: &Path, files: &[(&str, &[u8])], volume_id: u32) -> Result<(), ImageError> {
    let content: u64 = files.iter().map(|(_, b)| (b.len() as u64).div_ceil(4096) * 4096).sum();
    let partition = (content + (16 << 20)).div_ceil(1 << 20).max(MIN_PARTITION >> 20) << 20;
    // The largest cluster that still leaves FAT32's minimum cluster count, with room to spare.
    let cluster =
        [4096u32, 2048, 1024, 512].into_iter().find(|&c| partition / c as u64 >= 70_000).unwrap_or(512);
    let partial = out.with_extension("partial");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let write = || -> Result<(), ImageError> {
        let fail = io_error(&partial);
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(&fail)?;
        file.set_len(PARTITION_START + partition).map_err(&fail)?;
        let table_error = |e: mbrman::Error| ImageError::Io { path: partial.clone(), message: e.to_string() };
        let mut mbr =
            mbrman::MBR::new_from(&mut file, SECTOR as u32, volume_id.to_le_bytes()).map_err(table_error)?;
        mbr[1] = mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys: FAT32_LBA,
            last_chs: mbrman::CHS::empty(),
            starting_lba: (PARTITION_START / SECTOR) as u32,
            sectors: (partition / SECTOR) as u32,
        };
        mbr.write_into(&mut file).map_err(table_error)?;
        let options = fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(cluster)
            .volume_id(volume_id)
            .volume_label(*b"PITRAIN    ");
        fatfs::format_volume(
            PartitionIo::new(&mut file, PARTITION_START, partition).map_err(&fail)?,
            options,
        )
        .map_err(&fail)?;
        {
            let disk = PartitionIo::new(&mut file, PARTITION_START, partition).map_err(&fail)?;
            let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new().time_provider(&FIXED_TIME))
                .map_err(&fail)?;
            for (name, bytes) in files {
                let mut f = fs.root_dir().create_file(name).map_err(&fail)?;
                f.truncate().map_err(&fail)?;
                f.write_all(bytes).map_err(&fail)?;
                f.flush().map_err(&fail)?;
            }
            fs.unmount().map_err(&fail)?;
        }
        file.sync_all().map_err(&fail)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out).map_err(io_error(out))
}

/// A partition-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// 1-based number.
    pub number: usize,
    /// MBR type byte.
    pub kind: u8,
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub size: u64,
}

/// What an image holds.
#[derive(Clone, Debug)]
pub struct ImageListing {
    /// The partitions.
    pub partitions: Vec<PartitionInfo>,
    /// Files in the boot partition's root, with their sizes.
    pub files: Vec<(String, u64)>,
    /// The FAT type and volume label.
    pub volume: String,
}

/// Opens the boot partition of an image file.
fn open_boot(path: &Path) -> Result<(std::fs::File, Vec<PartitionInfo>), ImageError> {
    let mut file = std::fs::File::options().read(true).write(true).open(path).map_err(io_error(path))?;
    let not_image = |message: String| ImageError::NotAnImage { path: path.to_path_buf(), message };
    let mbr = mbrman::MBR::read_from(&mut file, SECTOR as u32)
        .map_err(|e| not_image(format!("no MBR partition table ({e})")))?;
    let partitions: Vec<PartitionInfo> = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(number, p)| PartitionInfo {
            number,
            kind: p.sys,
            start: p.starting_lba as u64 * SECTOR,
            size: p.sectors as u64 * SECTOR,
        })
        .collect();
    if partitions.first().is_none_or(|p| p.number != 1 || !matches!(p.kind, 0x0B | 0x0C)) {
        return Err(not_image("partition 1 is not a FAT32 partition (type 0x0B or 0x0C)".into()));
    }
    Ok((file, partitions))
}

/// Lists an image's partitions and the boot partition's files.
pub fn list(path: &Path) -> Result<ImageListing, ImageError> {
    let (mut file, partitions) = open_boot(path)?;
    let boot = &partitions[0];
    let fail = io_error(path);
    let disk = PartitionIo::new(&mut file, boot.start, boot.size).map_err(&fail)?;
    let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new()).map_err(&fail)?;
    let volume = format!("{:?} \"{}\"", fs.fat_type(), fs.volume_label().trim_end());
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.map_err(&fail)?;
        if entry.is_file() {
            files.push((entry.file_name(), entry.len()));
        }
    }
    Ok(ImageListing { partitions, files, volume })
}

/// Reads one file from an image's boot partition.
pub fn read_file(path: &Path, name: &str) -> Result<Vec<u8>, ImageError> {
    let (mut file, partitions) = open_boot(path)?;
    let boot = &partitions[0];
    let fail = io_error(path);
    let disk = PartitionIo::new(&mut file, boot.start, boot.size).map_err(&fail)?;
    let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new()).map_err(&fail)?;
    let mut f = fs
        .root_dir()
        .open_file(name)
        .map_err(|e| ImageError::NotAnImage { path: path.to_path_buf(), message: format!("{name}: {e}") })?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(&fail)?;
    Ok(bytes)
}

/// What `pitrain image inspect` found: a report, and the problems (none for a good image).
#[derive(Clone, Debug)]
pub struct Inspection {
    /// Human-readable lines.
    pub report: Vec<String>,
    /// What is wrong.
    pub problems: Vec<String>,
}

/// Lists an image and checks its config.txt, kernel and node blob.
pub fn inspect(path: &Path) -> Result<Inspection, ImageError> {
    let listing = list(path)?;
    let mut report = Vec::new();
    let mut problems = Vec::new();
    for p in &listing.partitions {
        report.push(format!(
            "partition {}: type {:#04x}, {} MiB from {} KiB",
            p.number,
            p.kind,
            p.size >> 20,
            p.start >> 10
        ));
    }
    report.push(format!("boot partition: {}", listing.volume));
    for (name, size) in &listing.files {
        report.push(format!("  {name:<14} {size:>10} bytes"));
    }
    let has = |name: &str| listing.files.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    for name in BOOT_FILES.iter().chain(&[CONFIG_TXT, KERNEL, NODE_BLOB]) {
        if !has(name) {
            problems.push(format!("{name} is missing"));
        }
    }
    if has(CONFIG_TXT) {
        let text = String::from_utf8_lossy(&read_file(path, CONFIG_TXT)?).into_owned();
        let settings: Vec<&str> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        let initramfs = format!("initramfs {NODE_BLOB} {LOAD_ADDRESS:#x}");
        let kernel = format!("kernel={KERNEL}");
        for required in
            ["arm_64bit=1", kernel.as_str(), "kernel_address=0x80000", "enable_uart=1", &initramfs]
        {
            if !settings.contains(&required) {
                problems.push(format!("config.txt lacks `{required}`"));
            }
        }
    }
    if has(KERNEL) {
        let kernel = read_file(path, KERNEL)?;
        if kernel.starts_with(b"\x7fELF") {
            problems.push(
                "kernel8.img is an ELF file; the Pi boots the raw image (llvm-objcopy -O binary)".into(),
            );
        } else if kernel.len() < 4
            || u32::from_le_bytes(kernel[..4].try_into().expect("4 bytes")) != FIRMWARE_ENTRY
        {
            problems.push("kernel8.img does not start with the pitrain firmware's entry".into());
        } else {
            report.push(format!("kernel8.img: pitrain firmware, {} bytes", kernel.len()));
        }
    }
    if has(NODE_BLOB) {
        let bytes = read_file(path, NODE_BLOB)?;
        match Blob::new_checked(&bytes[..]) {
            Ok(blob) => report.push(describe_blob(&blob)),
            Err(e) => problems.push(format!("node.blob is refused: {e}")),
        }
    }
    Ok(Inspection { report, problems })
}

/// One line about a node blob's settings (the key only as a fingerprint).
pub fn describe_blob(blob: &Blob<&[u8]>) -> String {
    use sha2::Digest;
    let s = blob.settings();
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    let address = if s.net.static_address {
        format!("{}/{} via {}", ip(s.net.address), s.net.prefix, ip(s.net.gateway))
    } else {
        "DHCP".into()
    };
    let mac = if s.net.mac == [0; 6] {
        "the board's".into()
    } else {
        s.net.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
    };
    let key = sha2::Sha256::digest(s.cluster_key);
    format!(
        "node.blob: node {} of {}, {} samples (shard hash {:016x}), {:?}, {} epochs, batch {}, seed {}, {} cores; \
master {}:{}, node port {}, address {address}, MAC {mac}; key fingerprint {:02x}{:02x}{:02x}{:02x}",
        s.node_id,
        s.nodes,
        blob.samples(),
        blob.shard_hash(),
        s.model,
        s.epochs,
        s.batch,
        s.seed,
        s.cores,
        ip(s.net.master_address),
        s.net.master_port,
        s.net.node_port,
        key[0],
        key[1],
        key[2],
        key[3],
    )
}
