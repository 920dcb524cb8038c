//! Every kind of damaged MNIST file gives an error that names the file and the problem.

mod common;

use common::{gzip, real_content};
use pitrain::mnist::{read_file, Mnist, MnistFile, Problem};

/// Writes `bytes` as `file` (with `.gz` when compressed) into a fresh directory and reads it back.
fn read_damaged(file: MnistFile, bytes: &[u8], gz: bool) -> pitrain::mnist::MnistError {
    let dir = tempfile::tempdir().unwrap();
    let name = if gz { format!("{}.gz", file.name()) } else { file.name().to_string() };
    std::fs::write(dir.path().join(&name), bytes).unwrap();
    let err = read_file(dir.path(), file).expect_err("a damaged file must be rejected");
    let message = err.to_string();
    assert!(message.contains(&name), "the message names the file: {message}");
    err
}

const LABELS: MnistFile = MnistFile::TestLabels;

#[test]
fn real_files_load() {
    let data = Mnist::load(&common::mnist_dir()).expect("the real data set verifies");
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    let (image, label) = data.test.sample(0);
    assert_eq!(image.len(), 784);
    assert_eq!(label, 7); // the first test digit is a 7
}

#[test]
fn raw_files_load_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LABELS.name()), real_content(LABELS)).unwrap();
    assert_eq!(read_file(dir.path(), LABELS).unwrap().len(), 10_000);
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_file(dir.path(), LABELS).unwrap_err();
    assert!(matches!(err.problem, Problem::Missing(_)), "{err}");
    assert!(err.to_string().contains("not found"));
}

#[test]
fn truncated_gzip() {
    let gz = gzip(&real_content(LABELS));
    let err = read_damaged(LABELS, &gz[..gz.len() / 2], true);
    assert!(matches!(err.problem, Problem::Gzip(_)), "{err}");
}

#[test]
fn corrupt_gzip() {
    let mut gz = gzip(&real_content(LABELS));
    let middle = gz.len() / 2;
    gz[middle] ^= 0xff;
    gz[middle + 1] ^= 0x55;
    let err = read_damaged(LABELS, &gz, true);
    // Either the deflate stream breaks or its CRC does not match; both are gzip errors.
    assert!(matches!(err.problem, Problem::Gzip(_) | Problem::Checksum { .. }), "{err}");
}

#[test]
fn wrong_magic() {
    // An image file where labels are expected.
    let images = real_content(MnistFile::TestImages);
    let err = read_damaged(LABELS, &gzip(&images), true);
    assert!(matches!(err.problem, Problem::Magic { found: 0x803, expected: 0x801 }), "{err}");
}

#[test]
fn wrong_dimensions() {
    let mut content = real_content(LABELS);
    content[4..8].copy_from_slice(&9_999u32.to_be_bytes());
    let err = read_damaged(LABELS, &content, false);
    assert!(matches!(err.problem, Problem::Dimensions { .. }), "{err}");
    assert!(err.to_string().contains("9999 labels"));

    let mut images = real_content(MnistFile::TestImages);
    images[8..12].copy_from_slice(&32u32.to_be_bytes());
    let err = read_damaged(MnistFile::TestImages, &gzip(&images), true);
    assert!(err.to_string().contains("of 32x28"), "{err}");
}

#[test]
fn no_header() {
    let err = read_damaged(LABELS, &[0, 0, 8], false);
    assert!(matches!(err.problem, Problem::NoHeader(3)), "{err}");
}

#[test]
fn truncated_content() {
    let content = real_content(LABELS);
    let err = read_damaged(LABELS, &gzip(&content[..content.len() - 100]), true);
    assert!(matches!(err.problem, Problem::Truncated { found: 9908, expected: 10008 }), "{err}");
}

#[test]
fn trailing_bytes() {
    let mut content = real_content(LABELS);
    content.extend_from_slice(&[0; 5]);
    let err = read_damaged(LABELS, &content, false);
    assert!(matches!(err.problem, Problem::TrailingBytes { extra: 5 }), "{err}");
}

#[test]
fn checksum_mismatch() {
    // A well-formed file whose content differs from the published one in a single label.
    let mut content = real_content(LABELS);
    content[100] = (content[100] + 1) % 10;
    let err = read_damaged(LABELS, &gzip(&content), true);
    assert!(matches!(err.problem, Problem::Checksum { .. }), "{err}");
    assert!(err.to_string().contains(LABELS.sha256()));
}

#[test]
fn unreadable_path() {
    // A directory where the file should be.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(LABELS.name())).unwrap();
    let err = read_file(dir.path(), LABELS).unwrap_err();
    assert!(matches!(err.problem, Problem::Missing(_)), "{err}");
}
