//! MNIST on the host: the IDX reader, checksum verification, and where the data set is found.
//!
//! The four standard files are accepted gzip-compressed (`*.gz`, detected by content) or raw. Every
//! file is checked completely before it is used: magic number, dimensions, record count, exact length,
//! and the SHA-256 of its uncompressed content against the published sums. A damaged file gives an
//! [`MnistError`] naming the file and what is wrong with it.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Environment variable naming a directory with the MNIST files (used by tests and CI).
pub const ENV_DIR: &str = "MNIST_DIR";

/// Which of the four files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MnistFile {
    /// 60,000 training images.
    TrainImages,
    /// 60,000 training labels.
    TrainLabels,
    /// 10,000 test images.
    TestImages,
    /// 10,000 test labels.
    TestLabels,
}

impl MnistFile {
    /// All four, in download order.
    pub const ALL: [MnistFile; 4] =
        [MnistFile::TrainImages, MnistFile::TrainLabels, MnistFile::TestImages, MnistFile::TestLabels];

    /// The standard file name, without `.gz`.
    pub const fn name(self) -> &'static str {
        match self {
            MnistFile::TrainImages => "train-images-idx3-ubyte",
            MnistFile::TrainLabels => "train-labels-idx1-ubyte",
            MnistFile::TestImages => "t10k-images-idx3-ubyte",
            MnistFile::TestLabels => "t10k-labels-idx1-ubyte",
        }
    }

    /// SHA-256 of the uncompressed content, as published with the data set.
    pub const fn sha256(self) -> &'static str {
        match self {
            MnistFile::TrainImages => "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            MnistFile::TrainLabels => "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            MnistFile::TestImages => "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            MnistFile::TestLabels => "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        }
    }

    const fn is_images(self) -> bool {
        matches!(self, MnistFile::TrainImages | MnistFile::TestImages)
    }

    /// Records the file must hold.
    pub const fn count(self) -> usize {
        match self {
            MnistFile::TrainImages | MnistFile::TrainLabels => 60_000,
            MnistFile::TestImages | MnistFile::TestLabels => 10_000,
        }
    }

    /// IDX magic number: unsigned bytes, then the number of dimensions.
    const fn magic(self) -> u32 {
        if self.is_images() {
            0x0000_0803
        } else {
            0x0000_0801
        }
    }

    /// Exact uncompressed length: header plus records.
    const fn expected_len(self) -> usize {
        if self.is_images() {
            16 + self.count() * 28 * 28
        } else {
            8 + self.count()
        }
    }
}

/// What is wrong with a data file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file does not exist (neither raw nor `.gz`).
    #[error("not found (looked for {0} and {0}.gz)")]
    Missing(String),
    /// Reading failed.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// The gzip stream is damaged or cut short.
    #[error("the gzip stream is corrupt or truncated: {0}")]
    Gzip(std::io::Error),
    /// Too short to hold its header.
    #[error("too short for an IDX header ({0} bytes)")]
    NoHeader(usize),
    /// Wrong magic number.
    #[error("magic number is {found:#010x}, expected {expected:#010x} (is this the right file?)")]
    Magic {
        /// What the file has.
        found: u32,
        /// What this file must have.
        expected: u32,
    },
    /// Wrong record count or image size in the header.
    #[error("header says {found}, expected {expected}")]
    Dimensions {
        /// What the header says.
        found: String,
        /// What this file must say.
        expected: String,
    },
    /// Shorter than the header promises.
    #[error("truncated: {found} bytes of content, expected {expected}")]
    Truncated {
        /// Bytes present.
        found: usize,
        /// Bytes required.
        expected: usize,
    },
    /// Longer than the header promises.
    #[error("{extra} unexpected bytes after the last record")]
    TrailingBytes {
        /// Bytes beyond the end.
        extra: usize,
    },
    /// The content is not the published content.
    #[error("SHA-256 of the content is {found}, expected {expected} (the file is corrupt or not MNIST)")]
    Checksum {
        /// Actual digest.
        found: String,
        /// Published digest.
        expected: &'static str,
    },
}

/// An MNIST file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("MNIST file {}: {problem}", path.display())]
pub struct MnistError {
    /// The file (or where it was expected).
    pub path: PathBuf,
    /// What is wrong.
    pub problem: Problem,
}

/// No directory with the data set was given or found.
#[derive(Debug, thiserror::Error)]
#[error(
    "no MNIST data: pass --data DIR, set {ENV_DIR}=DIR, or run `pitrain data fetch` (looked in {})",
    looked.display()
)]
pub struct NoData {
    /// The cache directory that was tried last.
    pub looked: PathBuf,
}

/// Images and labels of one split.
#[derive(Clone)]
pub struct Split {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Split({} samples)", self.labels.len())
    }
}

impl Split {
    /// Builds a split from raw 28x28 images and their labels.
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Self {
        assert_eq!(images.len(), labels.len() * kernels::IMAGE_PIXELS);
        Split { images, labels }
    }
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Sample `i`: its 784 pixels and its label.
    pub fn sample(&self, i: usize) -> (&[u8], u8) {
        let p = kernels::IMAGE_PIXELS;
        (&self.images[i * p..(i + 1) * p], self.labels[i])
    }
    /// The first `n` samples (all when `n` is larger).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.images.truncate(n * kernels::IMAGE_PIXELS);
        self.labels.truncate(n);
        self
    }
}

/// The whole data set.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// 60,000 training samples.
    pub train: Split,
    /// 10,000 test samples.
    pub test: Split,
}

impl Mnist {
    /// Loads and verifies the four files in `dir`.
    pub fn load(dir: &Path) -> Result<Mnist, MnistError> {
        let split = |images: MnistFile, labels: MnistFile| -> Result<Split, MnistError> {
            Ok(Split { images: read_file(dir, images)?, labels: read_file(dir, labels)? })
        };
        Ok(Mnist {
            train: split(MnistFile::TrainImages, MnistFile::TrainLabels)?,
            test: split(MnistFile::TestImages, MnistFile::TestLabels)?,
        })
    }
}

/// Where the data set is: `--data`, else `$MNIST_DIR`, else the download cache if it holds the files.
pub fn locate(data: Option<&Path>) -> Result<PathBuf, NoData> {
    if let Some(dir) = data {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(ENV_DIR) {
        return Ok(PathBuf::from(dir));
    }
    let cache = default_cache_dir();
    if MnistFile::ALL.iter().all(|f| find(&cache, *f).is_some()) {
        Ok(cache)
    } else {
        Err(NoData { looked: cache })
    }
}

/// `$XDG_CACHE_HOME/pitrain/mnist`, else `~/.cache/pitrain/mnist`, else `./.pitrain-cache/mnist`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".pitrain-cache"));
    base.join("pitrain").join("mnist")
}

/// The path of `file` in `dir`, raw or `.gz`.
fn find(dir: &Path, file: MnistFile) -> Option<PathBuf> {
    let raw = dir.join(file.name());
    let gz = dir.join(format!("{}.gz", file.name()));
    [gz, raw].into_iter().find(|p| p.is_file())
}

/// Reads, decompresses and checks one file; returns its records (pixels or labels) without header.
pub fn read_file(dir: &Path, file: MnistFile) -> Result<Vec<u8>, MnistError> {
    let path = find(dir, file).ok_or_else(|| MnistError {
        path: dir.join(file.name()),
        problem: Problem::Missing(file.name().to_string()),
    })?;
    let bytes = std::fs::read(&path).map_err(|e| MnistError { path: path.clone(), problem: e.into() })?;
    parse(file, &bytes).map_err(|problem| MnistError { path, problem })
}

/// Checks one file's bytes (compressed or not) and returns its records.
pub fn parse(file: MnistFile, bytes: &[u8]) -> Result<Vec<u8>, Problem> {
    let content = decompress(bytes)?;
    check_content(file, &content)?;
    let header = if file.is_images() { 16 } else { 8 };
    // The checksum pins the content, so labels are known to be digits.
    Ok(content[header..].to_vec())
}

fn decompress(bytes: &[u8]) -> Result<Vec<u8>, Problem> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map_err(Problem::Gzip)?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Header, length and checksum of uncompressed content.
pub fn check_content(file: MnistFile, content: &[u8]) -> Result<(), Problem> {
    let header_len = if file.is_images() { 16 } else { 8 };
    if content.len() < header_len {
        return Err(Problem::NoHeader(content.len()));
    }
    let word = |i: usize| u32::from_be_bytes(content[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if word(0) != file.magic() {
        return Err(Problem::Magic { found: word(0), expected: file.magic() });
    }
    let (found, expected) = if file.is_images() {
        (
            format!("{} images of {}x{}", word(1), word(2), word(3)),
            format!("{} images of 28x28", file.count()),
        )
    } else {
        (format!("{} labels", word(1)), format!("{} labels", file.count()))
    };
    if found != expected {
        return Err(Problem::Dimensions { found, expected });
    }
    let expected_len = file.expected_len();
    if content.len() < expected_len {
        return Err(Problem::Truncated { found: content.len(), expected: expected_len });
    }
    if content.len() > expected_len {
        return Err(Problem::TrailingBytes { extra: content.len() - expected_len });
    }
    let digest = Sha256::digest(content);
    let found: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if found != file.sha256() {
        return Err(Problem::Checksum { found, expected: file.sha256() });
    }
    Ok(())
}
