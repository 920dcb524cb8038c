//! `pitrain data fetch`: downloads MNIST into a cache directory and verifies it.
//!
//! Each file is downloaded to a temporary name, verified (gzip stream, header, length, SHA-256 of the
//! content), and only then renamed into place, so the cache never holds a damaged file. Files already
//! present and valid are not downloaded again.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::mnist::{self, MnistFile, Problem};

/// Where the files are published (gzip-compressed IDX).
pub const DEFAULT_URL: &str = "https://storage.googleapis.com/cvdf-datasets/mnist/";

/// Largest download accepted for one file (the training images are about 10 MB).
const MAX_DOWNLOAD: u64 = 64 << 20;

/// A download that failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed (unreachable host, HTTP error status, broken connection).
    #[error("downloading {url} failed: {message}")]
    Http {
        /// What was requested.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// The downloaded content is not the published file.
    #[error("downloaded {url} but it is not usable: {problem}")]
    Bad {
        /// What was requested.
        url: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The cache directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// It was already there and valid.
    Present(PathBuf),
    /// It was downloaded and verified.
    Downloaded(PathBuf),
}

/// Makes sure all four files are in `dir`, downloading from `base_url` what is missing or invalid.
pub fn fetch_all(base_url: &str, dir: &Path) -> Result<Vec<Fetched>, FetchError> {
    std::fs::create_dir_all(dir).map_err(|source| FetchError::Write { path: dir.to_path_buf(), source })?;
    MnistFile::ALL.iter().map(|&file| fetch_one(base_url, dir, file)).collect()
}

fn fetch_one(base_url: &str, dir: &Path, file: MnistFile) -> Result<Fetched, FetchError> {
    let target = dir.join(format!("{}.gz", file.name()));
    if mnist::read_file(dir, file).is_ok() {
        return Ok(Fetched::Present(target));
    }
    let url = format!("{}/{}.gz", base_url.trim_end_matches('/'), file.name());
    let http = |message: String| FetchError::Http { url: url.clone(), message };
    let mut response = ureq::get(&url).call().map_err(|e| http(e.to_string()))?;
    let mut bytes = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_DOWNLOAD)
        .read_to_end(&mut bytes)
        .map_err(|e| http(e.to_string()))?;
    mnist::parse(file, &bytes).map_err(|problem| FetchError::Bad { url: url.clone(), problem })?;
    let partial = dir.join(format!("{}.gz.partial", file.name()));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Write { path, source }
    };
    std::fs::write(&partial, &bytes).map_err(write_err(&partial))?;
    std::fs::rename(&partial, &target).map_err(write_err(&target))?;
    Ok(Fetched::Downloaded(target))
}
