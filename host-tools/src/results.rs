//! Writing a run's results: per-epoch CSV, a JSON summary, and the weights as safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::Serialize;

use crate::cluster::NodeTraffic;
use crate::trainer::{ArithKind, EpochReport, ModelKind, Resume, Tensor, TrainConfig, TrainOutcome};

/// File names inside the output directory.
pub const CSV_FILE: &str = "epochs.csv";
/// JSON summary.
pub const JSON_FILE: &str = "results.json";
/// Trained weights.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// Results could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {message}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

fn write_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> WriteError + '_ {
    move |e| WriteError { path: path.to_path_buf(), message: e.to_string() }
}

#[derive(Serialize)]
struct Summary<'a> {
    config: &'a TrainConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    traffic_per_node: Option<&'a [NodeTraffic]>,
    epochs: &'a [EpochReport],
    final_test_accuracy: Option<f64>,
    total_seconds: f64,
}

/// Writes `epochs.csv`, `results.json` and `weights.safetensors` into `dir`; returns their paths.
/// `traffic` is the whole run's traffic per node, for cluster runs.
pub fn write_all(
    dir: &Path,
    config: &TrainConfig,
    outcome: &TrainOutcome,
    traffic: Option<&[NodeTraffic]>,
) -> Result<Vec<PathBuf>, WriteError> {
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir)(&e))?;

    let csv_path = dir.join(CSV_FILE);
    let mut csv = csv::Writer::from_path(&csv_path).map_err(|e| write_err(&csv_path)(&e))?;
    for row in &outcome.epochs {
        csv.serialize(row).map_err(|e| write_err(&csv_path)(&e))?;
    }
    csv.flush().map_err(|e| write_err(&csv_path)(&e))?;

    let json_path = dir.join(JSON_FILE);
    let summary = Summary {
        config,
        traffic_per_node: traffic,
        epochs: &outcome.epochs,
        final_test_accuracy: outcome.epochs.last().map(|e| e.test_accuracy),
        total_seconds: outcome.epochs.iter().map(|e| e.seconds).sum(),
    };
    let text = serde_json::to_string_pretty(&summary).map_err(|e| write_err(&json_path)(&e))?;
    std::fs::write(&json_path, text + "\n").map_err(|e| write_err(&json_path)(&e))?;

    let weights_path = dir.join(WEIGHTS_FILE);
    write_weights(&weights_path, config, outcome)?;
    Ok(vec![csv_path, json_path, weights_path])
}

/// What a safetensors file of ours holds, stored under the one metadata key [`META_KEY`] as JSON with
/// a fixed field order, so that equal weights give byte-identical files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileMeta {
    /// `weights` (final master parameters) or `checkpoint` (master parameters and momentum).
    pub kind: String,
    /// `mxlenet` or `lenet5`.
    pub model: String,
    /// `Q7.24` (`I32` tensors) or `f32`.
    pub format: String,
    /// Seed of the run.
    pub seed: u64,
    /// Epochs trained.
    pub epoch: u32,
    /// Weight hash after that epoch, when known.
    pub weight_hash: Option<String>,
}

/// The metadata key.
pub const META_KEY: &str = "pitrain";

fn write_safetensors(
    path: &Path,
    arith: ArithKind,
    tensors: &[Tensor],
    meta: &FileMeta,
) -> Result<(), WriteError> {
    let dtype = match arith {
        ArithKind::Fixed => Dtype::I32,
        ArithKind::F32 => Dtype::F32,
    };
    let views = tensors
        .iter()
        .map(|t| TensorView::new(dtype, t.shape.clone(), &t.data).map(|v| (t.name.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| write_err(path)(&e))?;
    let json = serde_json::to_string(meta).map_err(|e| write_err(path)(&e))?;
    let metadata = HashMap::from([(META_KEY.to_string(), json)]);
    let partial = path.with_extension("partial");
    safetensors::serialize_to_file(views, Some(metadata), &partial).map_err(|e| write_err(path)(&e))?;
    std::fs::rename(&partial, path).map_err(|e| write_err(path)(&e))
}

fn format_of(arith: ArithKind) -> String {
    match arith {
        ArithKind::Fixed => "Q7.24",
        ArithKind::F32 => "f32",
    }
    .to_string()
}

/// The trained master parameters as safetensors: `I32` tensors holding Q7.24 values for fixed point
/// (divide by 2^24 for reals), `F32` for the reference. The metadata says which.
pub fn write_weights(path: &Path, config: &TrainConfig, outcome: &TrainOutcome) -> Result<(), WriteError> {
    let last = outcome.epochs.last();
    let meta = FileMeta {
        kind: "weights".into(),
        model: format!("{:?}", config.model).to_lowercase(),
        format: format_of(config.arith),
        seed: config.seed,
        epoch: last.map_or(0, |e| e.epoch),
        weight_hash: last.map(|e| e.weight_hash.clone()),
    };
    write_safetensors(path, config.arith, &outcome.tensors, &meta)
}

/// A checkpoint that cannot be resumed from.
#[derive(Debug, thiserror::Error)]
#[error("cannot resume from {}: {problem}", path.display())]
pub struct CheckpointError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// Writes the state after `epoch` (master parameters and momentum) as safetensors.
pub fn write_checkpoint(
    path: &Path,
    config: &TrainConfig,
    epoch: u32,
    tensors: &[Tensor],
) -> Result<(), WriteError> {
    let meta = FileMeta {
        kind: "checkpoint".into(),
        model: format!("{:?}", config.model).to_lowercase(),
        format: format_of(config.arith),
        seed: config.seed,
        epoch,
        weight_hash: None,
    };
    write_safetensors(path, config.arith, tensors, &meta)
}

/// Reads a fixed-point checkpoint of network `N` for `--resume`.
pub fn read_checkpoint<N: kernels::Network>(
    path: &Path,
    model: ModelKind,
) -> Result<Resume, CheckpointError> {
    let fail = |problem: String| CheckpointError { path: path.to_path_buf(), problem };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| fail(format!("not a safetensors file ({e})")))?;
    let meta: FileMeta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| fail("it was not written by pitrain".into()))?;
    let expected_model = format!("{model:?}").to_lowercase();
    if meta.model != expected_model {
        return Err(fail(format!("it holds model {}, this run trains {expected_model}", meta.model)));
    }
    if meta.kind != "checkpoint" {
        return Err(fail(format!("it is a final {} file, not a checkpoint (it has no momentum)", meta.kind)));
    }
    if meta.format != "Q7.24" {
        return Err(fail("it is not a fixed-point (Q7.24) checkpoint".into()));
    }
    let epoch = meta.epoch;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| fail(e.to_string()))?;
    let mut master = vec![0i32; N::PARAMS];
    let mut momentum = vec![0i32; N::PARAMS];
    for layer in N::LAYERS {
        for (suffix, range) in [("weight", layer.weight_range()), ("bias", layer.bias_range())] {
            for (prefix, target) in [("", &mut master), ("momentum.", &mut momentum)] {
                let name = format!("{prefix}{}.{suffix}", layer.name);
                let t = st.tensor(&name).map_err(|_| fail(format!("tensor {name} is missing")))?;
                if t.dtype() != Dtype::I32 || t.data().len() != range.len() * 4 {
                    return Err(fail(format!("tensor {name} has the wrong type or size")));
                }
                for (v, b) in target[range.clone()].iter_mut().zip(t.data().chunks_exact(4)) {
                    *v = i32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
            }
        }
    }
    Ok(Resume { epoch, master, momentum })
}
