//! The node blob: one node's shard of MNIST and its settings, in one file the boot loader places in
//! RAM at [`LOAD_ADDRESS`] (QEMU: `-device loader,file=...,addr=0x10000000,force-raw=on`; a real Pi:
//! `initramfs node.blob 0x10000000` in config.txt). `pitrain shard` writes it; the firmware checks it
//! before it trains on anything.
//!
//! ```text
//! offset  size  field (little-endian)
//!      0     4  magic "PTNB"
//!      4     2  version (1)
//!      6     2  header length (256)
//!      8     4  total length of the blob, trailer included
//!     12     4  samples n
//!     16     4  offset of the images (n x 784 bytes, row-major 28x28, 0 = white)
//!     20     4  offset of the labels (n bytes, 0..9)
//!     24     2  bytes per image (784)
//!     26     2  node id
//!     28     2  nodes in the cluster
//!     30     1  cores to train on (1..4; 0 = all four)
//!     31     1  model (0 MxLenet, 1 LeNet-5)
//!     32     8  seed (initial weights and every epoch's sample order)
//!     40     4  epochs
//!     44     4  samples per step
//!     48     8  learning rate (f64)
//!     56     8  momentum (f64)
//!     64     8  weight decay (f64)
//!     72     4  size of the training set the shard was cut from
//!     76     1  shard layout (0 contiguous, 1 strided)
//!     77     1  network flags (bit 0: static address, else DHCP)
//!     78     6  MAC address (all zero: the board's own)
//!     84     4  IPv4 address (static addressing)
//!     88     1  prefix length
//!     89     3  reserved (zero)
//!     92     4  gateway
//!     96     4  master's IPv4 address
//!    100     2  master's UDP port
//!    102     2  node's UDP port
//!    104     8  shard hash: SHA-256 of the images then the labels, first 8 bytes big-endian
//!    112    32  cluster key (HMAC key of every datagram)
//!    144    80  reserved (zero)
//!    224    32  SHA-256 of the whole blob except these 32 bytes
//!    256     .  images, labels
//!  end-8     8  end marker "PTNB-END": tells a truncated load from a corrupted one
//! ```

#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};

use crate::wire::{ModelId, ShardLayout};

/// Where the boot loader puts the blob: 256 MiB, clear of the firmware (0x80000 and up), of QEMU's
/// device tree (placed at 128 MiB when one is given) and of the GPU's memory at the top of the first
/// GiB.
pub const LOAD_ADDRESS: usize = 0x1000_0000;
/// The most RAM the blob may take from [`LOAD_ADDRESS`] (full MNIST is 47 MB).
pub const MAX_LEN: usize = 0x2000_0000;
/// Header length.
pub const HEADER_LEN: usize = 256;
/// Bytes per image.
pub const IMAGE_BYTES: usize = 28 * 28;
/// The magic number.
pub const MAGIC: [u8; 4] = *b"PTNB";
/// The end marker.
pub const END_MARKER: [u8; 8] = *b"PTNB-END";
/// The format version this build reads and writes.
pub const VERSION: u16 = 1;
/// The most cores a Pi 3 has.
pub const MAX_CORES: u8 = 4;

mod field {
    use crate::wire::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: Field = 4..6;
    pub const HEADER_LEN: Field = 6..8;
    pub const TOTAL_LEN: Field = 8..12;
    pub const SAMPLES: Field = 12..16;
    pub const IMAGES: Field = 16..20;
    pub const LABELS: Field = 20..24;
    pub const IMAGE_BYTES: Field = 24..26;
    pub const NODE_ID: Field = 26..28;
    pub const NODES: Field = 28..30;
    pub const CORES: usize = 30;
    pub const MODEL: usize = 31;
    pub const SEED: Field = 32..40;
    pub const EPOCHS: Field = 40..44;
    pub const BATCH: Field = 44..48;
    pub const LEARNING_RATE: Field = 48..56;
    pub const MOMENTUM: Field = 56..64;
    pub const WEIGHT_DECAY: Field = 64..72;
    pub const SHARD_TOTAL: Field = 72..76;
    pub const SHARD_LAYOUT: usize = 76;
    pub const NET_FLAGS: usize = 77;
    pub const MAC: Field = 78..84;
    pub const ADDRESS: Field = 84..88;
    pub const PREFIX: usize = 88;
    pub const GATEWAY: Field = 92..96;
    pub const MASTER_ADDRESS: Field = 96..100;
    pub const MASTER_PORT: Field = 100..102;
    pub const NODE_PORT: Field = 102..104;
    pub const SHARD_HASH: Field = 104..112;
    pub const CLUSTER_KEY: Field = 112..144;
    pub const CHECKSUM: Field = 224..256;
}

/// Why a blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// No "PTNB" at the start: nothing (or something else) was loaded there.
    BadMagic,
    /// A format version this build does not read.
    BadVersion,
    /// Shorter than its header, or than the length it declares.
    Truncated,
    /// Declares a length beyond [`MAX_LEN`] or shorter than its parts.
    BadLength,
    /// Images or labels lie outside the blob, overlap the header or each other.
    BadLayout,
    /// A setting out of range (model, cores, node id, batch, a label above 9, ...).
    BadSetting,
    /// The SHA-256 does not match: the content was damaged.
    BadChecksum,
}

impl BlobError {
    /// A short description, for logs.
    pub const fn as_str(&self) -> &'static str {
        match self {
            BlobError::BadMagic => "bad magic (no node blob at the load address)",
            BlobError::BadVersion => "unsupported blob version",
            BlobError::Truncated => "truncated (shorter than its declared length)",
            BlobError::BadLength => "bad length",
            BlobError::BadLayout => "images or labels outside the blob",
            BlobError::BadSetting => "a setting is out of range",
            BlobError::BadChecksum => "bad checksum (content damaged)",
        }
    }
}

impl core::fmt::Display for BlobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Network settings for the node (used by the networking firmware).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetSettings {
    /// Use `address`/`prefix`/`gateway` instead of DHCP.
    pub static_address: bool,
    /// MAC address; all zero means the board's own.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub address: [u8; 4],
    /// Prefix length of the address.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: [u8; 4],
    /// The master's IPv4 address.
    pub master_address: [u8; 4],
    /// The master's UDP port.
    pub master_port: u16,
    /// The node's UDP port.
    pub node_port: u16,
}

/// Everything in the header except the layout of the data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// This node's id.
    pub node_id: u16,
    /// Nodes in the cluster.
    pub nodes: u16,
    /// Cores to train on, 1 to 4 (0 in the blob means all four; parsed as 4).
    pub cores: u8,
    /// Network.
    pub model: ModelId,
    /// Seed of the initial weights and of the sample order.
    pub seed: u64,
    /// Epochs of local training.
    pub epochs: u32,
    /// Samples per step.
    pub batch: u32,
    /// Learning rate.
    pub learning_rate: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Size of the training set the shard was cut from.
    pub shard_total: u32,
    /// How the shard was cut.
    pub shard_layout: ShardLayout,
    /// Networking.
    pub net: NetSettings,
    /// The cluster key.
    pub cluster_key: [u8; 32],
}

/// Bytes a blob of `samples` samples takes.
pub const fn blob_len(samples: usize) -> usize {
    HEADER_LEN + samples * (IMAGE_BYTES + 1) + END_MARKER.len()
}

/// The shard hash the node reports when it joins: SHA-256 over the images then the labels, first
/// eight bytes, big-endian.
pub fn shard_hash(images: &[u8], labels: &[u8]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(images);
    hasher.update(labels);
    u64::from_be_bytes(hasher.finalize()[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// A checked, zero-copy view of a blob.
#[derive(Debug, Clone)]
pub struct Blob<T: AsRef<[u8]>> {
    buffer: T,
}

fn u16_at(b: &[u8], f: crate::wire::Field) -> u16 {
    u16::from_le_bytes(b[f].try_into().expect("two bytes"))
}
fn u32_at(b: &[u8], f: crate::wire::Field) -> u32 {
    u32::from_le_bytes(b[f].try_into().expect("four bytes"))
}
fn u64_at(b: &[u8], f: crate::wire::Field) -> u64 {
    u64::from_le_bytes(b[f].try_into().expect("eight bytes"))
}

/// Reads the declared total length from a blob's header, so that a loader that sees only raw memory
/// knows how much to look at. Checks the magic, version and header length first.
pub fn declared_len(header: &[u8]) -> Result<usize, BlobError> {
    if header.len() < HEADER_LEN {
        return Err(BlobError::Truncated);
    }
    if header[field::MAGIC] != MAGIC {
        return Err(BlobError::BadMagic);
    }
    if u16_at(header, field::VERSION) != VERSION || u16_at(header, field::HEADER_LEN) as usize != HEADER_LEN {
        return Err(BlobError::BadVersion);
    }
    let total = u32_at(header, field::TOTAL_LEN) as usize;
    if !(blob_len(0)..=MAX_LEN).contains(&total) {
        return Err(BlobError::BadLength);
    }
    Ok(total)
}

/// The SHA-256 a blob carries: everything but the checksum field.
fn checksum(b: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(&b[..field::CHECKSUM.start]);
    hasher.update(&b[field::CHECKSUM.end..]);
    hasher.finalize().into()
}

impl<T: AsRef<[u8]>> Blob<T> {
    /// Checks everything: header, lengths, layout, settings, labels and checksum. `buffer` may be
    /// longer than the blob (raw memory); the blob is its first [`declared_len`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, BlobError> {
        let b = buffer.as_ref();
        let total = declared_len(b)?;
        if b.len() < total {
            return Err(BlobError::Truncated);
        }
        let b = &b[..total];
        if b[total - END_MARKER.len()..] != END_MARKER {
            // What lies at the declared end is not the marker: the loaded file stopped short.
            return Err(BlobError::Truncated);
        }
        let samples = u32_at(b, field::SAMPLES) as usize;
        if total != blob_len(samples) {
            return Err(BlobError::BadLength);
        }
        let images = u32_at(b, field::IMAGES) as usize;
        let labels = u32_at(b, field::LABELS) as usize;
        let data_end = total - END_MARKER.len();
        let images_end = images.checked_add(samples * IMAGE_BYTES).ok_or(BlobError::BadLayout)?;
        let labels_end = labels.checked_add(samples).ok_or(BlobError::BadLayout)?;
        let apart = images_end <= labels || labels_end <= images;
        if u16_at(b, field::IMAGE_BYTES) as usize != IMAGE_BYTES
            || images < HEADER_LEN
            || labels < HEADER_LEN
            || images_end > data_end
            || labels_end > data_end
            || !apart
        {
            return Err(BlobError::BadLayout);
        }
        if checksum(b) != b[field::CHECKSUM] {
            return Err(BlobError::BadChecksum);
        }
        let blob = Blob { buffer };
        let s = blob.settings_unchecked()?;
        let labels_ok = blob.labels().iter().all(|&l| l < 10);
        if s.nodes == 0
            || s.node_id >= s.nodes
            || s.batch == 0
            || s.cores == 0
            || s.cores > MAX_CORES
            || !labels_ok
        {
            return Err(BlobError::BadSetting);
        }
        Ok(blob)
    }

    fn bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..u32_at(b, field::TOTAL_LEN) as usize]
    }

    fn settings_unchecked(&self) -> Result<Settings, BlobError> {
        let b = self.bytes();
        let bad = |_| BlobError::BadSetting;
        let mut mac = [0; 6];
        mac.copy_from_slice(&b[field::MAC]);
        let ip = |f: crate::wire::Field| -> [u8; 4] { b[f].try_into().expect("four bytes") };
        let mut cluster_key = [0; 32];
        cluster_key.copy_from_slice(&b[field::CLUSTER_KEY]);
        Ok(Settings {
            node_id: u16_at(b, field::NODE_ID),
            nodes: u16_at(b, field::NODES),
            cores: match b[field::CORES] {
                0 => MAX_CORES,
                n => n,
            },
            model: ModelId::from_u8(b[field::MODEL]).map_err(bad)?,
            seed: u64_at(b, field::SEED),
            epochs: u32_at(b, field::EPOCHS),
            batch: u32_at(b, field::BATCH),
            learning_rate: f64::from_bits(u64_at(b, field::LEARNING_RATE)),
            momentum: f64::from_bits(u64_at(b, field::MOMENTUM)),
            weight_decay: f64::from_bits(u64_at(b, field::WEIGHT_DECAY)),
            shard_total: u32_at(b, field::SHARD_TOTAL),
            shard_layout: ShardLayout::from_u8(b[field::SHARD_LAYOUT]).map_err(bad)?,
            net: NetSettings {
                static_address: b[field::NET_FLAGS] & 1 != 0,
                mac,
                address: ip(field::ADDRESS),
                prefix: b[field::PREFIX],
                gateway: ip(field::GATEWAY),
                master_address: ip(field::MASTER_ADDRESS),
                master_port: u16_at(b, field::MASTER_PORT),
                node_port: u16_at(b, field::NODE_PORT),
            },
            cluster_key,
        })
    }

    /// The settings (checked on construction).
    pub fn settings(&self) -> Settings {
        self.settings_unchecked().expect("checked in new_checked")
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Always false: a blob has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        u32_at(self.bytes(), field::SAMPLES) as usize
    }

    /// All images, back to back.
    pub fn images(&self) -> &[u8] {
        let b = self.bytes();
        let start = u32_at(b, field::IMAGES) as usize;
        &b[start..start + self.samples() * IMAGE_BYTES]
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        let b = self.bytes();
        let start = u32_at(b, field::LABELS) as usize;
        &b[start..start + self.samples()]
    }

    /// Sample `i`: its image and label.
    pub fn sample(&self, i: usize) -> (&[u8], u8) {
        (&self.images()[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES], self.labels()[i])
    }

    /// The shard hash recorded when the blob was written.
    pub fn shard_hash(&self) -> u64 {
        u64_at(self.bytes(), field::SHARD_HASH)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Blob<T> {
    /// Changes the cores setting and reseals the checksum (`pitrain qemu run --cores`).
    pub fn set_cores(&mut self, cores: u8) -> Result<(), BlobError> {
        if cores == 0 || cores > MAX_CORES {
            return Err(BlobError::BadSetting);
        }
        let total = self.len();
        let b = &mut self.buffer.as_mut()[..total];
        b[field::CORES] = cores;
        let sum = checksum(b);
        b[field::CHECKSUM].copy_from_slice(&sum);
        Ok(())
    }
}

/// Writes a blob into `out`, which must be exactly [`blob_len`]`(labels.len())` bytes; `images` holds
/// `labels.len()` images of [`IMAGE_BYTES`] bytes.
pub fn emit(settings: &Settings, images: &[u8], labels: &[u8], out: &mut [u8]) -> Result<(), BlobError> {
    let samples = labels.len();
    if images.len() != samples * IMAGE_BYTES || out.len() != blob_len(samples) || out.len() > MAX_LEN {
        return Err(BlobError::BadLength);
    }
    let s = settings;
    if s.nodes == 0
        || s.node_id >= s.nodes
        || s.batch == 0
        || s.cores > MAX_CORES
        || labels.iter().any(|&l| l > 9)
    {
        return Err(BlobError::BadSetting);
    }
    out.fill(0);
    let images_at = HEADER_LEN;
    let labels_at = images_at + images.len();
    let put = |out: &mut [u8], f: crate::wire::Field, bytes: &[u8]| out[f].copy_from_slice(bytes);
    put(out, field::MAGIC, &MAGIC);
    put(out, field::VERSION, &VERSION.to_le_bytes());
    put(out, field::HEADER_LEN, &(HEADER_LEN as u16).to_le_bytes());
    put(out, field::TOTAL_LEN, &(out.len() as u32).to_le_bytes());
    put(out, field::SAMPLES, &(samples as u32).to_le_bytes());
    put(out, field::IMAGES, &(images_at as u32).to_le_bytes());
    put(out, field::LABELS, &(labels_at as u32).to_le_bytes());
    put(out, field::IMAGE_BYTES, &(IMAGE_BYTES as u16).to_le_bytes());
    put(out, field::NODE_ID, &s.node_id.to_le_bytes());
    put(out, field::NODES, &s.nodes.to_le_bytes());
    out[field::CORES] = s.cores;
    out[field::MODEL] = s.model as u8;
    put(out, field::SEED, &s.seed.to_le_bytes());
    put(out, field::EPOCHS, &s.epochs.to_le_bytes());
    put(out, field::BATCH, &s.batch.to_le_bytes());
    put(out, field::LEARNING_RATE, &s.learning_rate.to_bits().to_le_bytes());
    put(out, field::MOMENTUM, &s.momentum.to_bits().to_le_bytes());
    put(out, field::WEIGHT_DECAY, &s.weight_decay.to_bits().to_le_bytes());
    put(out, field::SHARD_TOTAL, &s.shard_total.to_le_bytes());
    out[field::SHARD_LAYOUT] = s.shard_layout as u8;
    out[field::NET_FLAGS] = s.net.static_address as u8;
    put(out, field::MAC, &s.net.mac);
    put(out, field::ADDRESS, &s.net.address);
    out[field::PREFIX] = s.net.prefix;
    put(out, field::GATEWAY, &s.net.gateway);
    put(out, field::MASTER_ADDRESS, &s.net.master_address);
    put(out, field::MASTER_PORT, &s.net.master_port.to_le_bytes());
    put(out, field::NODE_PORT, &s.net.node_port.to_le_bytes());
    put(out, field::SHARD_HASH, &shard_hash(images, labels).to_le_bytes());
    put(out, field::CLUSTER_KEY, &s.cluster_key);
    out[images_at..labels_at].copy_from_slice(images);
    out[labels_at..labels_at + samples].copy_from_slice(labels);
    let end = out.len();
    out[end - END_MARKER.len()..].copy_from_slice(&END_MARKER);
    let sum = checksum(out);
    out[field::CHECKSUM].copy_from_slice(&sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    fn settings() -> Settings {
        Settings {
            node_id: 1,
            nodes: 3,
            cores: 4,
            model: ModelId::Lenet5,
            seed: 7,
            epochs: 2,
            batch: 64,
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            shard_total: 60_000,
            shard_layout: ShardLayout::Strided,
            net: NetSettings {
                static_address: true,
                mac: [2, 0, 0, 0, 0, 1],
                address: [10, 0, 0, 2],
                prefix: 24,
                gateway: [10, 0, 0, 1],
                master_address: [10, 0, 0, 1],
                master_port: 7700,
                node_port: 7701,
            },
            cluster_key: [0x5a; 32],
        }
    }

    fn sample_blob(samples: usize) -> Vec<u8> {
        let images: Vec<u8> = (0..samples * IMAGE_BYTES).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..samples).map(|i| (i % 10) as u8).collect();
        let mut out = vec![0; blob_len(samples)];
        emit(&settings(), &images, &labels, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let bytes = sample_blob(5);
        let blob = Blob::new_checked(&bytes[..]).unwrap();
        assert_eq!(blob.settings(), settings());
        assert_eq!(blob.samples(), 5);
        let (image, label) = blob.sample(3);
        assert_eq!(label, 3);
        assert_eq!(image[0], (3 * IMAGE_BYTES * 7 % 256) as u8);
        assert_eq!(blob.shard_hash(), shard_hash(blob.images(), blob.labels()));
        // Raw memory beyond the blob is ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xAB; 100]);
        assert_eq!(Blob::new_checked(&longer[..]).unwrap().samples(), 5);
    }

    #[test]
    fn damage_is_named() {
        let good = sample_blob(4);
        let damaged = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Blob::new_checked(&b[..]).map(|_| ())
        };
        assert_eq!(damaged(&|b| b[0] = b'X'), Err(BlobError::BadMagic));
        assert_eq!(damaged(&|b| b.fill(0)), Err(BlobError::BadMagic));
        assert_eq!(damaged(&|b| b[4] = 9), Err(BlobError::BadVersion));
        assert_eq!(damaged(&|b| b.truncate(HEADER_LEN - 1)), Err(BlobError::Truncated));
        assert_eq!(damaged(&|b| b.truncate(1000)), Err(BlobError::Truncated));
        // A short load into zeroed memory: full length present, but no end marker.
        assert_eq!(
            damaged(&|b| {
                let n = b.len();
                b[n - 500..].fill(0)
            }),
            Err(BlobError::Truncated)
        );
        assert_eq!(damaged(&|b| b[HEADER_LEN + 10] ^= 1), Err(BlobError::BadChecksum));
        assert_eq!(damaged(&|b| b[field::SEED.start] ^= 1), Err(BlobError::BadChecksum));
        assert_eq!(
            damaged(&|b| b[8..12].copy_from_slice(&u32::MAX.to_le_bytes())),
            Err(BlobError::BadLength)
        );
        assert_eq!(damaged(&|b| b[16..20].copy_from_slice(&3u32.to_le_bytes())), Err(BlobError::BadLayout));
        assert_eq!(
            damaged(&|b| b[20..24].copy_from_slice(&u32::MAX.to_le_bytes())),
            Err(BlobError::BadLayout)
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let images = [0u8; IMAGE_BYTES];
        let mut out = vec![0; blob_len(1)];
        let mut s = settings();
        assert_eq!(emit(&s, &images, &[10], &mut out), Err(BlobError::BadSetting));
        s.node_id = 3;
        assert_eq!(emit(&s, &images, &[1], &mut out), Err(BlobError::BadSetting));
        let mut s = settings();
        s.batch = 0;
        assert_eq!(emit(&s, &images, &[1], &mut out), Err(BlobError::BadSetting));
        assert_eq!(emit(&settings(), &images, &[1], &mut out[1..]), Err(BlobError::BadLength));
        assert_eq!(emit(&settings(), &images[1..], &[1], &mut out), Err(BlobError::BadLength));
        // A sealed blob whose model byte is unknown is refused even with a valid checksum.
        emit(&settings(), &images, &[1], &mut out).unwrap();
        out[field::MODEL] = 9;
        let sum = checksum(&out);
        out[field::CHECKSUM].copy_from_slice(&sum);
        assert_eq!(Blob::new_checked(&out[..]).map(|_| ()), Err(BlobError::BadSetting));
    }

    #[test]
    fn cores_can_be_changed_and_resealed() {
        let mut bytes = sample_blob(2);
        let mut blob = Blob::new_checked(&mut bytes[..]).unwrap();
        blob.set_cores(1).unwrap();
        assert_eq!(blob.set_cores(5), Err(BlobError::BadSetting));
        let blob = Blob::new_checked(&bytes[..]).unwrap();
        assert_eq!(blob.settings().cores, 1);
        bytes[field::CORES] = 0;
        let sum = checksum(&bytes);
        bytes[field::CHECKSUM].copy_from_slice(&sum);
        assert_eq!(Blob::new_checked(&bytes[..]).unwrap().settings().cores, MAX_CORES, "0 means all four");
    }
}
