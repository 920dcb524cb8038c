//! The master with simulated nodes over UDP on 127.0.0.1.

mod common;

use std::time::Duration;

use pitrain::cluster::{train_simulated, ClusterConfig, KillPlan, Revive};
use pitrain::mnist::Mnist;
use pitrain::trainer::{train, ModelKind, Silent, TrainConfig};
use protocol::fault::FaultConfig;
use protocol::wire::ShardLayout;

/// The cluster tests share two cores between many node threads and use short deadlines, so they run
/// one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn data() -> Mnist {
    let full = Mnist::load(&common::mnist_dir()).expect("MNIST loads");
    // A small test split keeps validation short; training is what is compared.
    Mnist { train: full.train, test: full.test.truncated(500) }
}

/// Global-batch mode: 1 and 3 nodes give the single-process trainer's weights, bit for bit.
#[test]
fn global_batch_is_bit_identical_to_one_process() {
    let _serial = serial();
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

fn small(model: ModelKind) -> TrainConfig {
    TrainConfig { model, epochs: 1, limit: Some(640), threads: 1, ..TrainConfig::default() }
}

/// Loss, duplication and reordering cost retransmissions, never a bit of the result.
#[test]
fn lossy_network_changes_nothing() {
    let _serial = serial();
    let data = data();
    let local = train(&small(ModelKind::Lenet5), &data, &mut Silent).unwrap();
    let faults = FaultConfig { drop_ppm: 50_000, duplicate_ppm: 10_000, reorder_ppm: 30_000, seed: 1 };
    let cluster = ClusterConfig { faults, ..ClusterConfig::new(small(ModelKind::Lenet5), 3) };
    let run = train_simulated(&cluster, &data, &mut Silent).unwrap();
    assert_eq!(run.outcome.epochs[0].weight_hash, local.epochs[0].weight_hash);
    assert!(run.outcome.epochs[0].missing_nodes.is_empty());
}

/// A node that dies is dropped after the deadline (2 s: a healthy node on a loaded 2-core machine
/// must not be dropped too); training goes on without its shard.
#[test]
fn dead_node_is_dropped_and_reported() {
    let _serial = serial();
    let data = data();
    let kill = KillPlan { node: 1, step: 3, revive: None };
    let cluster = ClusterConfig {
        kill: Some(kill),
        step_deadline: Duration::from_secs(2),
        ..ClusterConfig::new(small(ModelKind::Lenet5), 3)
    };
    let run = train_simulated(&cluster, &data, &mut Silent).unwrap();
    let report = &run.outcome.epochs[0];
    assert_eq!(report.missing_nodes, "1");
    assert_eq!(run.traffic[1].steps, 4, "node 1 contributed steps 0..=3 only");
    assert_eq!(run.traffic[0].steps, 10);
    assert!(report.test_accuracy > 0.5);
}

/// A node that comes back rejoins with a new token and receives the current model.
#[test]
fn revived_node_rejoins() {
    let _serial = serial();
    let data = data();
    // Killed after step 2 of epoch 1 and back when the master begins step 12 (the third of epoch 2):
    // it misses the rest of epoch 1, rejoins during epoch 2 and trains all of epoch 3. The revival
    // is tied to the master's step, not to a clock, so the machine's speed cannot move it.
    let kill = KillPlan { node: 2, step: 2, revive: Some(Revive::AtStep(12)) };
    let config = TrainConfig { epochs: 3, ..small(ModelKind::Lenet5) };
    let cluster = ClusterConfig {
        kill: Some(kill),
        step_deadline: Duration::from_secs(2),
        ..ClusterConfig::new(config, 3)
    };
    let run = train_simulated(&cluster, &data, &mut Silent).unwrap();
    assert_eq!(run.traffic[2].joins, 2);
    assert_eq!(run.outcome.epochs[0].missing_nodes, "2");
    assert_eq!(run.outcome.epochs[1].missing_nodes, "2", "epoch 2 began without it");
    assert_eq!(run.outcome.epochs[2].missing_nodes, "", "back for the whole third epoch");
    // Steps 0..=2, then from step 12 (if its join beat that step's deadline) or 13 to 29.
    let steps = run.traffic[2].steps;
    assert!((20..=21).contains(&steps), "node 2 trained steps 0..=2 and 12 or 13..=29, not {steps}");
}

/// While the master waits for a dead node until the step deadline, it pings the nodes that are
/// done, so they keep their session instead of joining again after their own master timeout.
/// (Here the timeout is 1 s against a 3 s deadline; on a board it is 30 s against QEMU's 120 s.)
#[test]
fn nodes_keep_their_session_while_the_master_waits_for_a_dead_one() {
    let _serial = serial();
    let data = data();
    let kill = KillPlan { node: 1, step: 2, revive: None };
    let cluster = ClusterConfig {
        kill: Some(kill),
        step_deadline: Duration::from_secs(3),
        node_master_timeout: Duration::from_secs(1),
        keepalive: Duration::from_millis(200),
        ..ClusterConfig::new(small(ModelKind::Lenet5), 3)
    };
    let run = train_simulated(&cluster, &data, &mut Silent).unwrap();
    assert_eq!(run.outcome.epochs[0].missing_nodes, "1");
    for id in [0, 2] {
        let t = &run.traffic[id];
        assert_eq!(t.joins, 1, "node {id} kept its session: {t:?}");
        assert_eq!(t.steps, 10, "node {id} trained every step: {t:?}");
    }
}

/// When every node has been dropped the master waits for one to come back instead of running steps
/// that nobody computes; if none does, it stops with an error.
#[test]
fn master_waits_when_every_node_is_gone() {
    let _serial = serial();
    let data = data();
    let kill = KillPlan { node: 0, step: 3, revive: Some(Revive::After(Duration::from_millis(1000))) };
    let cluster = ClusterConfig {
        kill: Some(kill),
        step_deadline: Duration::from_millis(300),
        ..ClusterConfig::new(small(ModelKind::Lenet5), 1)
    };
    let run = train_simulated(&cluster, &data, &mut Silent).unwrap();
    assert_eq!(run.traffic[0].joins, 2);
    // Only step 4 (due when the node died) runs without it; steps 5..9 wait for its return.
    assert_eq!(run.traffic[0].steps, 9, "every step but the one that timed out");
    let gone = KillPlan { node: 0, step: 3, revive: None };
    let cluster = ClusterConfig {
        kill: Some(gone),
        step_deadline: Duration::from_millis(300),
        rejoin_timeout: Duration::from_secs(1),
        ..ClusterConfig::new(small(ModelKind::Lenet5), 1)
    };
    let err = train_simulated(&cluster, &data, &mut Silent).err().expect("no node, no training");
    assert!(err.to_string().contains("every node was dropped by step 5"), "{err}");
}

/// Local steps between synchronisations: the nodes train on their own copies and the master averages
/// the changes. With one node that is exactly one-process training (the average of one change is the
/// change); with several it trains, and its traffic per sample falls with the period.
#[test]
fn local_steps_between_synchronisations() {
    let _serial = serial();
    let data = data();
    let config = TrainConfig { epochs: 2, ..small(ModelKind::Lenet5) };
    let local = train(&config, &data, &mut Silent).unwrap();
    let one = ClusterConfig { sync_period: 4, ..ClusterConfig::new(config.clone(), 1) };
    let run = train_simulated(&one, &data, &mut Silent).unwrap();
    assert_eq!(run.outcome.epochs[1].weight_hash, local.epochs[1].weight_hash);
    assert_eq!(run.traffic[0].steps, 6, "10 steps an epoch in syncs of 4, 4 and 2");

    let every = train_simulated(&ClusterConfig::new(config.clone(), 3), &data, &mut Silent).unwrap();
    let periodic = train_simulated(
        &ClusterConfig { sync_period: 5, ..ClusterConfig::new(config, 3) },
        &data,
        &mut Silent,
    )
    .unwrap();
    let bytes =
        |r: &pitrain::cluster::ClusterOutcome| r.traffic.iter().map(|t| t.bytes_from_node).sum::<u64>();
    assert!(bytes(&periodic) * 2 < bytes(&every), "{} vs {}", bytes(&periodic), bytes(&every));
    assert!(periodic.outcome.epochs[1].test_accuracy > 0.6, "{:?}", periodic.outcome.epochs[1]);
}
