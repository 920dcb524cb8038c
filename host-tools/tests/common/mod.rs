//! Shared test helpers.

#![allow(dead_code)]

use std::path::PathBuf;

/// The MNIST directory: `MNIST_DIR` (CI sets it), else the `pitrain data fetch` cache. Tests that need
/// the real data fail loudly without it rather than pass without testing anything.
pub fn mnist_dir() -> PathBuf {
    pitrain::mnist::locate(None).unwrap_or_else(|e| panic!("these tests need MNIST: {e}"))
}

/// Uncompressed content of one of the real files.
pub fn real_content(file: pitrain::mnist::MnistFile) -> Vec<u8> {
    use std::io::Read;
    let path = mnist_dir().join(format!("{}.gz", file.name()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("MNIST file present"))
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Gzip-compresses bytes.
pub fn gzip(content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(content).unwrap();
    enc.finish().unwrap()
}
