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

/// `pitrain cluster reboot --node 1` in the middle of a QEMU run: the master sends Reboot through
/// the control channel, the firmware reboots through the BCM2835 watchdog (QEMU runs without
/// `-no-reboot`, so the guest starts again from its kernel and blob), node 1
/// joins again and gets the current model, training completes, and no QEMU is left.
#[test]
fn a_rebooted_qemu_node_rejoins_and_training_completes() {
    use pitrain::cluster::control::{request, Answer, ControlServer, Request};
    use std::time::{Duration, Instant};

    let full = Mnist::load(&common::mnist_dir()).unwrap();
    // A short test split keeps the validation pause short.
    let data = Mnist { train: full.train, test: full.test.truncated(200) };
    let train = TrainConfig {
        model: ModelKind::Lenet5,
        epochs: 1,
        limit: Some(512),
        threads: 1,
        ..TrainConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let server = ControlServer::start(&socket, &[]).unwrap();
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
        control: Some(server.shared()),
        join_timeout: Duration::from_secs(120),
        step_deadline: Duration::from_secs(120),
        ..ClusterConfig::new(train, 2)
    };
    let run = std::thread::spawn(move || train_simulated(&config, &data, &mut Silent));

    let status = || match request(&socket, &Request::Status) {
        Ok(Answer::Status(s)) => s,
        other => panic!("status: {other:?}"),
    };
    let started = Instant::now();
    while status().step.is_none_or(|s| s < 1) {
        assert!(started.elapsed() < Duration::from_secs(240), "training never reached step 1");
        assert!(!run.is_finished(), "the run ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = status();
    assert!(before.nodes.iter().all(|n| n.mac.is_some() && n.cores == Some(4)), "{before:?}");
    assert_eq!(
        request(&socket, &Request::Reboot { node: Some(1) }).unwrap(),
        Answer::Rebooting { nodes: vec![1] }
    );
    // Node 1 comes back: a second join. (Its uptime does not restart: QEMU's watchdog reset leaves
    // the generic counter running.)
    let back = Instant::now();
    loop {
        let s = status();
        if s.nodes[1].joins >= 2 && s.nodes[1].state == "training" {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(120), "node 1 did not rejoin: {s:?}");
        assert!(!run.is_finished(), "the run ended before node 1 rejoined");
        std::thread::sleep(Duration::from_millis(200));
    }
    let outcome = run.join().unwrap().expect("training completes");
    assert_eq!(outcome.outcome.epochs.len(), 1);
    // On a busy host a node can also time out and join again; the reboot is one join more.
    assert!(outcome.traffic[1].joins >= 2);
    assert!(outcome.traffic[1].steps > before.nodes[1].steps, "node 1 trained after its reboot");
    let log = std::fs::read_to_string(dir.path().join("node-1.log")).unwrap();
    assert!(log.contains("node 1: the master asked for a reboot"), "{log}");
    assert!(log.contains("rebooting through the watchdog"), "{log}");
    assert_eq!(log.matches("booted in EL1").count(), 2, "{log}");
    assert!(log.contains("stopped by the master"), "{log}");
    let log0 = std::fs::read_to_string(dir.path().join("node-0.log")).unwrap();
    assert_eq!(log0.matches("booted in EL1").count(), 1, "{log0}");
    drop(server);
    assert_eq!(qemus_mentioning(dir.path().to_str().unwrap()), 0, "no QEMU is left running");
}

/// `--kill 1@1..3` with QEMU nodes: node 1's QEMU process is killed when the master begins step 2,
/// the master drops it after the step deadline and trains on with node 0, a new QEMU boots node 1
/// when the master begins step 3, it joins again, training completes, and no QEMU is left.
#[test]
fn a_killed_qemu_node_is_dropped_and_its_new_boot_rejoins() {
    use pitrain::cluster::{KillPlan, Revive};
    use std::time::Duration;

    let full = Mnist::load(&common::mnist_dir()).unwrap();
    let data = Mnist { train: full.train, test: full.test.truncated(200) };
    let train = TrainConfig {
        model: ModelKind::Lenet5,
        epochs: 1,
        limit: Some(512),
        threads: 1,
        ..TrainConfig::default()
    };
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
        kill: Some(KillPlan { node: 1, step: 1, revive: Some(Revive::AtStep(3)) }),
        join_timeout: Duration::from_secs(120),
        step_deadline: Duration::from_secs(20),
        ..ClusterConfig::new(train, 2)
    };
    let outcome = train_simulated(&config, &data, &mut Silent).expect("training completes");
    let report = &outcome.outcome.epochs[0];
    assert!(report.missing_nodes.contains('1'), "node 1 missed steps: {:?}", report.missing_nodes);
    assert!(outcome.traffic[1].joins >= 2, "node 1 joined again");
    // Node 0 trains on throughout (it may miss a step to the deadline while node 1's new QEMU boots
    // on the same cores).
    assert!(outcome.traffic[0].steps >= 6, "{:?}", outcome.traffic[0]);
    // While the master waits out node 1's deadline its pings keep node 0 in its session.
    assert_eq!(outcome.traffic[0].joins, 1, "{:?}", outcome.traffic[0]);
    assert!(outcome.traffic[1].steps >= 3 && outcome.traffic[1].steps < 8, "{:?}", outcome.traffic[1]);
    let log = std::fs::read_to_string(dir.path().join("node-1.log")).unwrap();
    assert!(log.contains("killed this QEMU (kill plan) as the master began step 2"), "{log}");
    assert!(log.contains("booting a new QEMU (kill plan revival)"), "{log}");
    assert_eq!(log.matches("booted in EL1").count(), 2, "{log}");
    assert!(log.contains("stopped by the master"), "{log}");
    assert_eq!(qemus_mentioning(dir.path().to_str().unwrap()), 0, "no QEMU is left running");
}
