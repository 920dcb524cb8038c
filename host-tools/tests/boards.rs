//! The master for boards (`pitrain train --cluster FILE`), with `pitrain node` processes standing in
//! for the boards, through the binary as a user runs them: the path real boards take, on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn pitrain() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pitrain"))
}

/// A process that is killed if the test fails before it ends.
struct Running(Option<Child>);

impl Running {
    fn start(command: &mut Command) -> Self {
        Running(Some(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()))
    }

    /// Waits for the process to end, at most `limit`.
    fn finish(mut self, limit: Duration) -> Output {
        let started = Instant::now();
        let mut child = self.0.take().unwrap();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "still running after {limit:?}:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A free UDP port on 127.0.0.1 (free when asked; nothing else here takes ports).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a cluster file with `pitrain cluster init` and sets it to a small LeNet-5 run: one epoch
/// on the first 512 images, one core per node, master at `master:port`.
fn cluster_file(dir: &Path, nodes: u16, master: &str, port: u16) -> PathBuf {
    let path = dir.join("cluster.toml");
    let nodes = nodes.to_string();
    let out = pitrain()
        .args(["cluster", "init", "--out", path.to_str().unwrap(), "--nodes", &nodes, "--master", master])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(&path).unwrap();
    let edited = written
        .replace("model = \"mxlenet\"", "model = \"lenet5\"")
        .replace("epochs = 10", "epochs = 1")
        .replace("# limit = 6000", "limit = 512")
        .replace("cores = 4", "cores = 1")
        .replace("port = 7700", &format!("port = {port}"));
    for setting in ["model = \"lenet5\"", "epochs = 1\n", "limit = 512", "cores = 1", "port = "] {
        assert!(edited.contains(setting), "the template changed: {setting} is not set\n{edited}");
    }
    std::fs::write(&path, edited).unwrap();
    path
}

/// The master listens where the cluster file says, two `pitrain node` processes join it with the
/// file's key, and the weights are bit for bit those of `pitrain train --nodes 2` with the same
/// settings.
#[test]
fn a_master_from_a_cluster_file_trains_with_node_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::mnist_dir();
    let data = data.to_str().unwrap();
    let file = cluster_file(dir.path(), 2, "127.0.0.1", free_port());
    let file = file.to_str().unwrap();
    let boards_out = dir.path().join("boards");
    let master = Running::start(pitrain().args([
        "train",
        "--cluster",
        file,
        "--data",
        data,
        "--out",
        boards_out.to_str().unwrap(),
        "--quiet",
        "--threads",
        "1",
    ]));
    let nodes: Vec<Running> = (0..2)
        .map(|id| {
            Running::start(pitrain().args([
                "node",
                "--cluster",
                file,
                "--node",
                &id.to_string(),
                "--data",
                data,
            ]))
        })
        .collect();
    let master = master.finish(Duration::from_secs(300));
    let log = text(&master);
    assert!(master.status.success(), "{log}");
    assert!(log.contains("on the 2 nodes of pi-cluster (master at 127.0.0.1:"), "{log}");
    assert!(log.contains("waiting up to 600 s for 2 nodes to join"), "{log}");
    for (id, node) in nodes.into_iter().enumerate() {
        let out = node.finish(Duration::from_secs(30));
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        assert!(log.contains(&format!("node {id}: stopped by the master after 8 steps")), "{log}");
    }

    let simulated_out = dir.path().join("simulated");
    let simulated = pitrain()
        .args(["train", "--nodes", "2", "--model", "lenet5", "--epochs", "1", "--limit", "512"])
        .args(["--threads", "1", "--data", data, "--quiet", "--out", simulated_out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(simulated.status.success(), "{}", text(&simulated));
    let weights = |dir: &Path| std::fs::read(dir.join("weights.safetensors")).unwrap();
    assert!(weights(&boards_out) == weights(&simulated_out), "the same weights, bit for bit");
}

/// Bad requests get a message that says what to do, never a panic.
#[test]
fn a_master_or_node_that_cannot_run_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::mnist_dir();
    let data = data.to_str().unwrap();
    // An address this machine does not hold: binding fails, and nothing is sent anywhere.
    let file = cluster_file(dir.path(), 2, "192.0.2.1", 7700);
    let file = file.to_str().unwrap();
    let out = pitrain().args(["train", "--cluster", file, "--data", data, "--quiet"]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success());
    assert!(log.contains("cannot listen on 192.0.2.1:"), "{log}");
    assert!(log.contains("this machine must hold that address"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    let out = pitrain().args(["node", "--cluster", file, "--node", "2", "--data", data]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success());
    assert!(log.contains("has no node 2 (its nodes are [0, 1])"), "{log}");

    // The training settings are the file's: the command line cannot contradict the boards' blobs.
    let out = pitrain().args(["train", "--cluster", file, "--epochs", "3"]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success());
    assert!(log.contains("cannot be used with"), "{log}");
}
