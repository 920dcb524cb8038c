//! The `pitrain` binary: a short real run, and clear errors (never a panic) on bad input.

mod common;

use std::process::{Command, Output};

fn pitrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pitrain"))
        .args(args)
        .env("MNIST_DIR", common::mnist_dir())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A one-epoch LeNet-5 run on 256 images with `extra` options, writing into `out`.
fn short_run(extra: &[&str], out: &std::path::Path) -> String {
    let mut args = vec!["train", "--model", "lenet5", "--epochs", "1", "--limit", "256", "--quiet", "--out"];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    let o = pitrain(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn train_writes_results() {
    let out = tempfile::tempdir().unwrap();
    let stdout = short_run(&["--local"], out.path());
    assert!(stdout.contains("epoch  1"), "{stdout}");
    let csv = std::fs::read_to_string(out.path().join("epochs.csv")).unwrap();
    assert!(csv.starts_with("epoch,seconds,train_loss,train_accuracy,test_loss,test_accuracy,weight_hash"));
    assert_eq!(csv.lines().count(), 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(json["config"]["model"], "lenet5");
    let weights = std::fs::read(out.path().join("weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let conv1 = st.tensor("conv1.weight").unwrap();
    assert_eq!(conv1.shape(), &[6, 1, 5, 5]);
    assert_eq!(conv1.dtype(), safetensors::Dtype::I32);
    assert_eq!(st.len(), 10);
}

/// Runs `args`, expects failure with a message containing `expected`, and no panic.
fn fails_cleanly(args: &[&str], expected: &str) {
    let o = pitrain(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(err.contains(expected), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    fails_cleanly(&["train", "--data", empty], "not found");
    fails_cleanly(&["train", "--data", "/nonexistent/mnist"], "/nonexistent/mnist");
    fails_cleanly(&["train", "--batch", "0"], "--batch must be at least 1");
    fails_cleanly(&["train", "--lr", "-1"], "--lr must be");
    fails_cleanly(&["train", "--nodes", "0"], "--nodes must be at least 1");
    fails_cleanly(&["train", "--arith", "f32"], "add --local");
    fails_cleanly(&["train", "--local", "--nodes", "2"], "cannot be used with");
    fails_cleanly(&["train", "--batch", "32", "--batch-per-node", "64"], "cannot be used with");
    fails_cleanly(&["train", "--model", "resnet"], "invalid value 'resnet'");
    fails_cleanly(&["train", "--epochs", "many"], "invalid value 'many'");
    fails_cleanly(&["data", "verify", "--data", empty], "not found");
    let not_elf = std::path::Path::new(empty).join("kernel8.img");
    std::fs::write(&not_elf, [0u8; 64]).unwrap();
    fails_cleanly(&["logs", "--elf", not_elf.to_str().unwrap()], "not an ELF with a defmt table");
    fails_cleanly(&["logs", "--elf", "/nonexistent/firmware"], "cannot read the firmware ELF");
}

#[test]
fn train_on_simulated_nodes_reports_traffic() {
    let out = tempfile::tempdir().unwrap();
    let stdout = short_run(&["--nodes", "2"], out.path());
    assert!(stdout.contains("on 2 simulated nodes") && stdout.contains("per node:"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(json["traffic_per_node"].as_array().unwrap().len(), 2);
    assert!(json["epochs"][0]["bytes_from_node"].as_u64().unwrap() > 0);
}

#[test]
fn verify_accepts_the_real_data() {
    let o = pitrain(&["data", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("all four files verified"));
}

/// Two epochs in one go, or one epoch and then a resumed second: the same weights, bit for bit.
#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let common = ["train", "--nodes", "2", "--model", "lenet5", "--limit", "256", "--quiet"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = common.iter().copied().chain(extra.iter().copied()).collect();
        let o = pitrain(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    let (straight, first, second) = (path("straight"), path("first"), path("second"));
    run(&["--epochs", "2", "--out", &straight]);
    run(&["--epochs", "1", "--out", &first]);
    let checkpoint = format!("{first}/checkpoint-epoch-1.safetensors");
    run(&["--epochs", "2", "--out", &second, "--resume", &checkpoint]);
    let last_hash = |dir: &str| {
        let csv = std::fs::read_to_string(format!("{dir}/epochs.csv")).unwrap();
        csv.lines().last().unwrap().split(',').nth(6).unwrap().to_string()
    };
    assert_eq!(last_hash(&second), last_hash(&straight));
    let resumed = std::fs::read_to_string(format!("{second}/epochs.csv")).unwrap();
    assert_eq!(resumed.lines().count(), 2, "only epoch 2 was trained: {resumed}");
    assert!(std::path::Path::new(&format!("{straight}/checkpoint-epoch-2.safetensors")).exists());

    // A checkpoint of the other model, and a final weights file, are refused with a reason.
    fails_cleanly(
        &["train", "--model", "mxlenet", "--epochs", "2", "--resume", &checkpoint],
        "this run trains mxlenet",
    );
    let weights = format!("{first}/weights.safetensors");
    fails_cleanly(&["train", "--model", "lenet5", "--epochs", "2", "--resume", &weights], "not a checkpoint");
    fails_cleanly(&["train", "--model", "lenet5", "--epochs", "1", "--resume", &checkpoint], "more --epochs");
}

/// `pitrain experiment` writes the CSV and both figures, and a rerun continues an interrupted sweep
/// instead of repeating finished node counts.
#[test]
fn experiment_writes_figures_and_continues() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let args = [
        "experiment",
        "--nodes",
        "1,2",
        "--model",
        "lenet5",
        "--epochs",
        "1",
        "--limit",
        "256",
        "--quiet",
        "--out",
        dir,
    ];
    let o = pitrain(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(out.path().join("experiment.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    for figure in ["fig1a_epoch_time.svg", "fig1b_accuracy.svg"] {
        let svg = std::fs::read_to_string(out.path().join(figure)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("number of devices"), "{figure}");
    }
    // As if the sweep had stopped after one node count: the rerun redoes only the missing one.
    std::fs::remove_dir_all(out.path().join("nodes-2")).unwrap();
    let o = pitrain(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout.contains("1 nodes: finished earlier"), "{stdout}");
    assert!(!stdout.contains("2 nodes: finished earlier"), "{stdout}");
    let again = std::fs::read_to_string(out.path().join("experiment.csv")).unwrap();
    let (before, after): (Vec<&str>, Vec<&str>) = (csv.lines().collect(), again.lines().collect());
    assert_eq!(before[1], after[1], "the reused row is the same");
    let hash = |line: &str| line.rsplit(',').next().unwrap().to_string();
    assert_eq!(hash(before[2]), hash(after[2]), "the rerun node count trains the same weights");
}
