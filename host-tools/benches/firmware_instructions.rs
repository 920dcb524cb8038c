//! Guest instructions per training sample of the firmware in QEMU raspi3b, under
//! `-icount shift=0,sleep=off` (where the PMU cycle counter counts instructions of all cores, exactly
//! and repeatably), for both models on 1 and 4 cores; with the multiply-accumulates per sample and
//! their ratio to instructions. The baseline for performance work.
//!
//! `cargo bench -p host-tools --bench firmware_instructions` (needs MNIST: $MNIST_DIR or the cache;
//! `SAMPLES=n` changes the shard size, default 128).

use kernels::{Lenet5, MxLenet, Network};
use pitrain::logs::LogTable;
use pitrain::mnist::{locate, Mnist};
use pitrain::qemu::{build_firmware, stage_blob, workspace_dir, Boot};
use pitrain::shard::{node_blob, NodePlacement};
use pitrain::trainer::{ModelKind, TrainConfig};

fn main() {
    let samples: usize = std::env::var("SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(128);
    let data =
        Mnist::load(&locate(None).expect("MNIST ($MNIST_DIR or `pitrain data fetch`)")).expect("MNIST loads");
    let image =
        build_firmware(&workspace_dir().join("target").join("firmware-bench"), &[]).expect("firmware builds");
    let table = LogTable::load(&image.elf).expect("defmt table");
    let dir = tempfile::tempdir().expect("temporary directory");
    println!("firmware instructions per training sample (QEMU raspi3b, -icount shift=0,sleep=off, {samples} samples, batch 64)");
    println!(
        "{:<8} {:>5} {:>22} {:>14} {:>20}",
        "model", "cores", "instructions/sample", "MACs/sample", "MACs/instruction"
    );
    for (model, macs) in [(ModelKind::Mxlenet, MxLenet::TRAIN_MACS), (ModelKind::Lenet5, Lenet5::TRAIN_MACS)]
    {
        let config = TrainConfig { model, epochs: 1, limit: Some(samples), ..TrainConfig::default() };
        let blob = node_blob(&data, &config, &NodePlacement::new(1, 0)).expect("blob");
        let path = dir.path().join("node.blob");
        std::fs::write(&path, blob).expect("write blob");
        for cores in [1u8, 4] {
            let staged = stage_blob(&path, Some(cores), dir.path()).expect("stage");
            let boot =
                Boot { load: vec![(staged, protocol::blob::LOAD_ADDRESS as u64)], ..Boot::new(&image.image) };
            let run = boot.run(|_| {}).expect("QEMU runs");
            let (lines, _) = table.decode_all(&run.serial);
            let trained = lines
                .iter()
                .find_map(|l| l.message.strip_prefix("trained "))
                .unwrap_or_else(|| panic!("no result in the log (status {})", run.status));
            // "N samples in M instructions (K per sample), weights H"
            let words: Vec<&str> = trained.split_whitespace().collect();
            let trained_samples: f64 = words[0].parse().expect("sample count");
            let instructions: f64 = words[3].parse().expect("instruction count");
            let per_sample = instructions / trained_samples;
            println!(
                "{:<8} {:>5} {:>22.0} {:>14} {:>20.4}",
                format!("{model:?}"),
                cores,
                per_sample,
                macs,
                macs as f64 / per_sample
            );
        }
    }
}
