//! `pitrain shard`: node blobs (see [`protocol::blob`]) cut from MNIST, one per node.

use std::path::{Path, PathBuf};

use protocol::blob::{self, NetSettings, Settings, IMAGE_BYTES};
use protocol::wire::{ModelId, ShardLayout, ShardSpec};

use crate::mnist::Mnist;
use crate::trainer::{ModelKind, TrainConfig};

/// Why a blob could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Settings the blob cannot carry.
    #[error("cannot make a node blob: {0}")]
    Settings(String),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The wire id of a model.
pub fn model_id(model: ModelKind) -> ModelId {
    match model {
        ModelKind::Mxlenet => ModelId::MxLenet,
        ModelKind::Lenet5 => ModelId::Lenet5,
    }
}

/// Which node a blob is for, and its node-specific settings.
#[derive(Clone, Debug)]
pub struct NodePlacement {
    /// Nodes in the cluster.
    pub nodes: u16,
    /// This node (0-based).
    pub node: u16,
    /// How the training set is divided.
    pub layout: ShardLayout,
    /// Cores to train on, 1 to 4.
    pub cores: u8,
    /// Networking.
    pub net: NetSettings,
    /// The cluster key.
    pub cluster_key: [u8; 32],
}

impl NodePlacement {
    /// Node `node` of `nodes`, contiguous shards, four cores, DHCP, an all-zero key.
    pub fn new(nodes: u16, node: u16) -> NodePlacement {
        NodePlacement {
            nodes,
            node,
            layout: ShardLayout::Contiguous,
            cores: blob::MAX_CORES,
            net: NetSettings::default(),
            cluster_key: [0; 32],
        }
    }
}

/// Builds a node's blob: its shard of `config`'s training set (the first `--limit` images, cut by
/// the placement's layout) and the training settings.
pub fn node_blob(
    data: &Mnist,
    config: &TrainConfig,
    placement: &NodePlacement,
) -> Result<Vec<u8>, ShardError> {
    let NodePlacement { nodes, node, layout, cores, net, cluster_key } = placement.clone();
    if nodes == 0 || node >= nodes {
        return Err(ShardError::Settings(format!("node {node} does not exist in a cluster of {nodes}")));
    }
    if !(1..=blob::MAX_CORES).contains(&cores) {
        return Err(ShardError::Settings(format!("--cores must be 1 to 4, got {cores}")));
    }
    let set = config.training_set(data);
    let spec = ShardSpec { total: set.len() as u32, nodes, index: node, layout };
    let samples = spec.len() as usize;
    let mut images = Vec::with_capacity(samples * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(samples);
    for local in 0..samples as u32 {
        let (image, label) = set.sample(spec.global_index(local) as usize);
        images.extend_from_slice(image);
        labels.push(label);
    }
    let settings = Settings {
        node_id: node,
        nodes,
        cores,
        model: model_id(config.model),
        seed: config.seed,
        epochs: config.epochs,
        batch: u32::try_from(config.batch)
            .map_err(|_| ShardError::Settings("--batch is too large".into()))?,
        learning_rate: config.sgd.learning_rate,
        momentum: config.sgd.momentum,
        weight_decay: config.sgd.weight_decay,
        shard_total: spec.total,
        shard_layout: layout,
        net,
        cluster_key,
    };
    let mut out = vec![0; blob::blob_len(samples)];
    blob::emit(&settings, &images, &labels, &mut out)
        .map_err(|e| ShardError::Settings(format!("{e} ({samples} samples)")))?;
    Ok(out)
}

/// Writes a blob atomically (a temporary file renamed into place).
pub fn write_blob(path: &Path, bytes: &[u8]) -> Result<(), ShardError> {
    let failed = |source| ShardError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}
