//! Guest instructions per training sample of the firmware in QEMU raspi3b, under
//! `-icount shift=0,sleep=off` (where the PMU cycle counter counts instructions of all cores, exactly
//! and repeatably), for both models on 1 and 4 cores; with the multiply-accumulates per sample and
//! their ratio to instructions, and where they go: instructions per sample by layer and phase, the
//! rest of the step, and each layer's bytes of `i64` gradient-accumulator traffic per sample.
//!
//! The firmware is built with its `profile` feature (a PMU read at each phase boundary, a few dozen
//! instructions per sample). QEMU's counter counts all cores together, so the per-phase table is
//! exact on one core; on four cores it also holds what the other cores ran meanwhile, and the
//! per-core split printed is the samples each core trained and the serial part of the step.
//!
//! `cargo bench -p host-tools --bench firmware_instructions` (MNIST from $MNIST_DIR, the
//! `pitrain data fetch` cache, or `../shared/data/mnist` beside the checkout as `scripts/test.sh`
//! finds it; `SAMPLES=n` changes the shard size, default 128; `ONLY=mxlenet:1` runs one model on one
//! core count; `QEMU_ARGS` adds arguments to QEMU's command line, such as `-plugin` for a profile
//! by translation block).

use std::path::PathBuf;

use kernels::{Lenet5, MxLenet, Network};
use pitrain::logs::LogTable;
use pitrain::mnist::{locate, Mnist};
use pitrain::qemu::{build_firmware, stage_blob, workspace_dir, Boot};
use pitrain::shard::{node_blob, NodePlacement};
use pitrain::trainer::{ModelKind, TrainConfig};

/// MNIST as the test script finds it: the usual places, then `../shared/data/mnist`.
fn mnist_dir() -> PathBuf {
    let shared = workspace_dir().join("..").join("shared").join("data").join("mnist");
    match locate(None) {
        Ok(dir) => dir,
        Err(_) if shared.is_dir() => shared,
        Err(e) => {
            eprintln!("{e}; set MNIST_DIR or run `pitrain data fetch`");
            std::process::exit(2);
        }
    }
}

/// The numbers after each `key` in a log line (`key N`).
fn field(line: &str, key: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == key).unwrap_or_else(|| panic!("no {key} in {line:?}"));
    words[at + 1].parse().unwrap_or_else(|_| panic!("{key} in {line:?}"))
}

fn main() {
    let samples: usize = std::env::var("SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(128);
    let data = Mnist::load(&mnist_dir()).unwrap_or_else(|e| {
        eprintln!("MNIST does not load: {e}");
        std::process::exit(2);
    });
    let image = build_firmware(&workspace_dir().join("target").join("firmware-bench"), &["profile"])
        .expect("firmware builds");
    let table = LogTable::load(&image.elf).expect("defmt table");
    let dir = tempfile::tempdir().expect("temporary directory");
    println!("firmware instructions per training sample (QEMU raspi3b, -icount shift=0,sleep=off, {samples} samples, batch 64)");
    let mut summary = Vec::new();
    for (model, macs, layers) in [
        (ModelKind::Mxlenet, MxLenet::TRAIN_MACS, MxLenet::LAYERS),
        (ModelKind::Lenet5, Lenet5::TRAIN_MACS, Lenet5::LAYERS),
    ] {
        let config = TrainConfig { model, epochs: 1, limit: Some(samples), ..TrainConfig::default() };
        let blob = node_blob(&data, &config, &NodePlacement::new(1, 0)).expect("blob");
        let path = dir.path().join("node.blob");
        std::fs::write(&path, blob).expect("write blob");
        for cores in [1u8, 4] {
            if let Ok(only) = std::env::var("ONLY") {
                if !only.eq_ignore_ascii_case(&format!("{model:?}:{cores}")) {
                    continue;
                }
            }
            let staged = stage_blob(&path, Some(cores), dir.path()).expect("stage");
            let extra_args = std::env::var("QEMU_ARGS")
                .map(|a| a.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            let boot = Boot {
                load: vec![(staged, protocol::blob::LOAD_ADDRESS as u64)],
                extra_args,
                ..Boot::new(&image.image)
            };
            let run = boot.run(|_| {}).expect("QEMU runs");
            let (lines, _) = table.decode_all(&run.serial);
            let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
            let trained = messages
                .iter()
                .find_map(|m| m.strip_prefix("trained "))
                .unwrap_or_else(|| panic!("no result in the log (status {})", run.status));
            // "N samples in M instructions (K per sample), weights H"
            let words: Vec<&str> = trained.split_whitespace().collect();
            let trained_samples: f64 = words[0].parse().expect("sample count");
            let instructions: f64 = words[3].parse().expect("instruction count");
            let per_sample = instructions / trained_samples;
            let per_core = messages.iter().find_map(|m| m.strip_prefix("samples per core: ")).unwrap_or("?");
            println!("\n{model:?} on {cores} core(s): {per_sample:.0} instructions/sample, {:.4} MACs/instruction; samples per core {per_core}", macs as f64 / per_sample);
            println!(
                "  {:<8} {:>12} {:>16} {:>15} {:>12} {:>20}",
                "layer",
                "forward",
                "weight gradient",
                "input gradient",
                "layer total",
                "accumulator B/sample"
            );
            let mut accounted = 0;
            let mut traffic_total = 0;
            for layer in layers {
                let line = messages
                    .iter()
                    .find(|m| m.starts_with(&format!("profile {}:", layer.name)))
                    .unwrap_or_else(|| panic!("no profile line for {}", layer.name));
                let (f, w, i, t) = (
                    field(line, "forward"),
                    field(line, "weight-gradient"),
                    field(line, "input-gradient"),
                    field(line, "traffic"),
                );
                accounted += f + w + i;
                traffic_total += t;
                println!("  {:<8} {f:>12} {w:>16} {i:>15} {:>12} {t:>20}", layer.name, f + w + i);
            }
            let step = messages.iter().find(|m| m.starts_with("profile step:")).expect("profile step line");
            let parts = ["prepare", "loss", "update", "reduce"].map(|k| (k, field(step, k)));
            accounted += parts.iter().map(|p| p.1).sum::<u64>();
            let rest = (per_sample as u64).saturating_sub(accounted);
            let listed: Vec<String> = parts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "  step: {}, rest {rest}; accumulator traffic {traffic_total} B/sample",
                listed.join(", ")
            );
            if cores > 1 {
                let serial = parts[2].1 + parts[3].1;
                println!(
                    "  per-core split: {per_core} samples; serial on core 0 (update + reduce) {serial}/sample, parallel part {:.0}/sample over {cores} cores",
                    per_sample - serial as f64
                );
            }
            summary.push((model, cores, per_sample, macs, traffic_total));
        }
    }
    println!(
        "\n{:<8} {:>5} {:>22} {:>14} {:>20} {:>22}",
        "model", "cores", "instructions/sample", "MACs/sample", "MACs/instruction", "accumulator B/sample"
    );
    for (model, cores, per_sample, macs, traffic) in summary {
        println!(
            "{:<8} {:>5} {:>22.0} {:>14} {:>20.4} {:>22}",
            format!("{model:?}"),
            cores,
            per_sample,
            macs,
            macs as f64 / per_sample,
            traffic
        );
    }
}
