//! The control channel of a running master (`pitrain cluster status|reboot|stop`) with simulated
//! nodes, through the `pitrain` binary as a user runs it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pitrain::cluster::control::Snapshot;

fn pitrain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pitrain")).args(args).output().unwrap()
}

fn status(control: &Path) -> Option<Snapshot> {
    let out = pitrain(&["cluster", "status", "--json", "--control", control.to_str().unwrap()]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("status JSON"))
}

/// Polls the status until `done` holds.
fn wait_for(control: &Path, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let started = Instant::now();
    loop {
        if let Some(s) = status(control) {
            if done(&s) {
                return s;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A failed test must not leave its master running.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn without_a_master_the_commands_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    for args in [vec!["status"], vec!["stop"], vec!["reboot", "--node", "1"]] {
        let mut full = vec!["cluster"];
        full.extend(args);
        full.extend(["--control", socket.to_str().unwrap()]);
        let out = pitrain(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("no pitrain master is running at"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Status sees every node with its id, version, cores and shard; a rebooted node rejoins and
/// training goes on; stop ends the run early with exit status 0 and its results written.
#[test]
fn status_reboot_and_stop_on_a_simulated_run() {
    let out = tempfile::tempdir().unwrap();
    // The default socket in the output folder (the folder is what the commands get for the table).
    let control = out.path().join("control.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_pitrain"))
        .args(["train", "--nodes", "3", "--model", "lenet5", "--epochs", "50", "--limit", "1536", "--quiet"])
        .args(["--step-deadline", "5", "--out"])
        .arg(out.path())
        .env("MNIST_DIR", common::mnist_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(Some(child));

    let s = wait_for(&control, "three training nodes", |s| {
        s.step.is_some_and(|step| step >= 2) && s.nodes.iter().all(|n| n.state == "training")
    });
    assert_eq!((s.model.as_str(), s.steps_per_epoch, s.epochs), ("lenet5", 24, 50), "{s:?}");
    let version = env!("CARGO_PKG_VERSION");
    for (i, n) in s.nodes.iter().enumerate() {
        assert_eq!(n.id as usize, i);
        assert_eq!(n.firmware.as_deref(), Some(version));
        assert_eq!(n.cores, Some(1));
        assert_eq!(n.shard_samples, Some(512));
        assert!(n.shard_hash.as_ref().is_some_and(|h| h.len() == 16), "{n:?}");
        assert!(n.address.as_ref().is_some_and(|a| a.starts_with("127.0.0.1:")), "{n:?}");
        assert_eq!(n.mac, None, "simulated nodes have no MAC");
        assert!(n.uptime_s.is_some_and(|u| u > 0.0) && n.last_heard_s.is_some_and(|a| a < 10.0), "{n:?}");
        assert_eq!(n.joins, 1);
    }
    // The table a person reads.
    let table = pitrain(&["cluster", "status", "--control", out.path().to_str().unwrap()]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("lenet5, 3 nodes: step") && table.contains("shard hash"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains("training")).count(), 3, "{table}");

    // Reboot node 1: it comes back (a second join) while the others go on.
    let reboot = pitrain(&["cluster", "reboot", "--node", "1", "--control", control.to_str().unwrap()]);
    assert!(reboot.status.success(), "{}", String::from_utf8_lossy(&reboot.stderr));
    let bad = pitrain(&["cluster", "reboot", "--node", "7", "--control", control.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("there is no node 7"));
    let before = s.step.unwrap();
    let s = wait_for(&control, "node 1 to rejoin", |s| {
        s.nodes[1].joins == 2 && s.nodes[1].state == "training" && s.step.unwrap() > before + 2
    });
    assert!(s.nodes[1].uptime_s.unwrap() < s.nodes[0].uptime_s.unwrap(), "a new life: {s:?}");
    assert_eq!((s.nodes[0].joins, s.nodes[2].joins), (1, 1));

    // Stop: the run ends early, with status 0, its results and a line saying why.
    let stop = pitrain(&["cluster", "stop", "--control", control.to_str().unwrap()]);
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let output = child.0.take().unwrap().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("stopped on request"), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap()).unwrap();
    let epochs = results["epochs"].as_array().unwrap().len();
    assert!(epochs < 50, "stopped early: {epochs} epochs");
    assert!(out.path().join("weights.safetensors").exists());
    if epochs > 0 {
        assert!(out.path().join(format!("checkpoint-epoch-{epochs}.safetensors")).exists());
    }
    assert!(!control.exists(), "the socket is removed at the end");
}
