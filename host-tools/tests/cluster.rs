//! The master with simulated nodes over UDP on 127.0.0.1.

mod common;

use pitrain::cluster::{train_simulated, ClusterConfig};
use pitrain::mnist::Mnist;
use pitrain::trainer::{train, ModelKind, Silent, TrainConfig};
use protocol::wire::ShardLayout;

fn data() -> Mnist {
    let full = Mnist::load(&common::mnist_dir()).expect("MNIST loads");
    // A small test split keeps validation short; training is what is compared.
    Mnist { train: full.train, test: full.test.truncated(500) }
}

/// Global-batch mode: 1 and 3 nodes give the single-process trainer's weights, bit for bit.
#[test]
fn global_batch_is_bit_identical_to_one_process() {
    let data = data();
    for model in [ModelKind::Lenet5, ModelKind::Mxlenet] {
        let config = TrainConfig { model, epochs: 1, limit: Some(640), threads: 1, ..TrainConfig::default() };
        let local = train(&config, &data, &mut Silent).unwrap();
        for (nodes, layout) in
            [(1, ShardLayout::Contiguous), (3, ShardLayout::Strided), (3, ShardLayout::Contiguous)]
        {
            let cluster = ClusterConfig { layout, ..ClusterConfig::new(config.clone(), nodes) };
            let run = train_simulated(&cluster, &data, &mut Silent).unwrap();
            let report = &run.outcome.epochs[0];
            assert_eq!(
                report.weight_hash, local.epochs[0].weight_hash,
                "{model:?}, {nodes} nodes {layout:?}"
            );
            assert_eq!(report.train_loss, local.epochs[0].train_loss);
            assert_eq!(report.test_accuracy, local.epochs[0].test_accuracy);
            assert!(report.missing_nodes.is_empty());
            assert!(report.bytes_to_node > 0 && report.bytes_from_node > 0);
            println!(
                "{model:?} {nodes} nodes: {} B to and {} B from each node per epoch of 10 steps",
                report.bytes_to_node, report.bytes_from_node
            );
        }
    }
}
