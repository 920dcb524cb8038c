//! The whole cluster in QEMU: two raspi3b guests boot the real firmware, join the std-UDP master
//! through the user-space bridge on 127.0.0.1 and train; the weights are the simulated nodes' bit for
//! bit, and no QEMU outlives the run.

mod common;

use pitrain::cluster::qemu_nodes::QemuOptions;
use pitrain::cluster::{train_simulated, ClusterConfig};
use pitrain::mnist::Mnist;
use pitrain::qemu::{build_firmware, workspace_dir};
use pitrain::trainer::{ModelKind, Silent, TrainConfig};

/// QEMU processes whose command line mentions `needle`.
fn qemus_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let text = String::from_utf8_lossy(c);
            text.contains("qemu-system-aarch64") && text.contains(needle)
        })
        .count()
}

#[test]
fn two_qemu_nodes_train_exactly_like_two_simulated_nodes() {
    let data = Mnist::load(&common::mnist_dir()).unwrap();
    let train = TrainConfig {
        model: ModelKind::Lenet5,
        epochs: 1,
        limit: Some(512),
        threads: 1,
        ..TrainConfig::default()
    };
    let simulated = train_simulated(&ClusterConfig::new(train.clone(), 2), &data, &mut Silent).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let firmware =
        build_firmware(&workspace_dir().join("target").join("firmware-test"), &[]).expect("firmware");
    let options = QemuOptions {
        firmware: Some(firmware),
        dir: dir.path().to_path_buf(),
        icount: false,
        shaping: None,
        cores: 4,
    };
    let config = ClusterConfig {
        qemu: Some(options),
        join_timeout: std::time::Duration::from_secs(120),
        step_deadline: std::time::Duration::from_secs(120),
        ..ClusterConfig::new(train, 2)
    };
    let emulated = train_simulated(&config, &data, &mut Silent).expect("the QEMU cluster trains");
    assert_eq!(emulated.outcome.epochs[0].weight_hash, simulated.outcome.epochs[0].weight_hash);
    for (a, b) in emulated.outcome.tensors.iter().zip(&simulated.outcome.tensors) {
        assert!(a.name == b.name && a.data == b.data, "{} differs", a.name);
    }
    assert!(emulated.outcome.epochs[0].missing_nodes.is_empty());
    for id in 0..2 {
        let log = std::fs::read_to_string(dir.path().join(format!("node-{id}.log"))).unwrap();
        assert!(log.contains(&format!("node {id}: joining the master")), "{log}");
        assert!(log.contains("stopped by the master after 8 steps"), "{log}");
        assert!(log.contains("network: link up"), "{log}");
    }
    assert_eq!(qemus_mentioning(dir.path().to_str().unwrap()), 0, "no QEMU is left running");
}

/// Interrupted (SIGINT, as Ctrl-C sends) while the guests run: pitrain says so, exits with 130 and
/// leaves no QEMU behind.
#[test]
fn an_interrupted_run_leaves_no_qemu_behind() {
    let out = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitrain"))
        .args([
            "train", "--qemu", "2", "--model", "lenet5", "--epochs", "3", "--limit", "2048", "--quiet",
            "--out",
        ])
        .arg(out.path())
        .env("MNIST_DIR", common::mnist_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = out.path().to_str().unwrap().to_string();
    let started = std::time::Instant::now();
    // Wait until both guests are up and training.
    while qemus_mentioning(&dir) < 2 || !out.path().join("qemu/node-1.log").exists() {
        assert!(started.elapsed().as_secs() < 300, "the QEMU nodes never started");
        assert!(child.try_wait().unwrap().is_none(), "pitrain ended early");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: stopped the QEMU nodes"), "{stderr}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(qemus_mentioning(&dir), 0, "no QEMU is left running");
}
