//! `pitrain data fetch` against a small HTTP server on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use pitrain::fetch::{fetch_all, FetchError, Fetched};
use pitrain::mnist::{Mnist, MnistFile};

/// Serves files from `root` on an ephemeral 127.0.0.1 port until `requests` have been answered.
/// `damage` may change a file's bytes before they are sent.
fn serve(
    root: PathBuf,
    requests: usize,
    damage: fn(&str, Vec<u8>) -> Vec<u8>,
) -> (String, JoinHandle<Vec<String>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mnist/", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let Ok(Some(request)) = server.recv_timeout(std::time::Duration::from_secs(30)) else { break };
            let name = request.url().trim_start_matches("/mnist/").to_string();
            seen.push(name.clone());
            let _ = match std::fs::read(root.join(&name)) {
                Ok(bytes) => request.respond(tiny_http::Response::from_data(damage(&name, bytes))),
                Err(_) => request.respond(tiny_http::Response::empty(404)),
            };
        }
        seen
    });
    (url, handle)
}

fn unchanged(_: &str, bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

fn cached_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn downloads_verifies_and_then_reuses() {
    let cache = tempfile::tempdir().unwrap();
    let (url, server) = serve(common::mnist_dir(), 4, unchanged);
    let fetched = fetch_all(&url, cache.path()).expect("download succeeds");
    assert!(fetched.iter().all(|f| matches!(f, Fetched::Downloaded(_))));
    let requested = server.join().unwrap();
    assert_eq!(requested.len(), 4);
    Mnist::load(cache.path()).expect("the cache holds a valid data set");

    // Everything is present now: no request is made (there is no server any more).
    let again = fetch_all("http://127.0.0.1:9/unused/", cache.path()).expect("nothing to download");
    assert!(again.iter().all(|f| matches!(f, Fetched::Present(_))));
}

#[test]
fn corrupt_download_is_rejected_and_not_kept() {
    fn flip_labels(name: &str, mut bytes: Vec<u8>) -> Vec<u8> {
        if name.starts_with("train-labels") {
            let n = bytes.len();
            bytes.truncate(n - 20);
        }
        bytes
    }
    let cache = tempfile::tempdir().unwrap();
    let (url, server) = serve(common::mnist_dir(), 2, flip_labels);
    let err = fetch_all(&url, cache.path()).expect_err("a damaged download must fail");
    assert!(matches!(err, FetchError::Bad { .. }), "{err}");
    assert!(err.to_string().contains("train-labels-idx1-ubyte.gz"), "{err}");
    server.join().unwrap();
    // The good first file stays; the bad one left nothing behind, not even a partial file.
    assert_eq!(cached_files(cache.path()), vec![format!("{}.gz", MnistFile::TrainImages.name())]);
}

#[test]
fn http_error_is_reported() {
    let cache = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let (url, server) = serve(empty.path().to_path_buf(), 1, unchanged);
    let err = fetch_all(&url, cache.path()).expect_err("404 must fail");
    assert!(matches!(err, FetchError::Http { .. }), "{err}");
    assert!(err.to_string().contains("404"), "{err}");
    server.join().unwrap();
    assert!(cached_files(cache.path()).is_empty());
}
