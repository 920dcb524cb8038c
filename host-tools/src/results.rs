//! Writing a run's results: per-epoch CSV, a JSON summary, and the weights as safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

use crate::cluster::NodeTraffic;
use crate::trainer::{ArithKind, EpochReport, TrainConfig, TrainOutcome};

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

/// The trained master parameters as safetensors: `I32` tensors holding Q7.24 values for fixed point
/// (divide by 2^24 for reals), `F32` for the reference. The metadata says which.
pub fn write_weights(path: &Path, config: &TrainConfig, outcome: &TrainOutcome) -> Result<(), WriteError> {
    let (dtype, format) = match config.arith {
        ArithKind::Fixed => (Dtype::I32, "Q7.24"),
        ArithKind::F32 => (Dtype::F32, "f32"),
    };
    let views = outcome
        .tensors
        .iter()
        .map(|t| TensorView::new(dtype, t.shape.clone(), &t.data).map(|v| (t.name.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| write_err(path)(&e))?;
    let mut metadata = HashMap::new();
    metadata.insert("model".to_string(), format!("{:?}", config.model).to_lowercase());
    metadata.insert("format".to_string(), format.to_string());
    metadata.insert("seed".to_string(), config.seed.to_string());
    metadata.insert("epochs".to_string(), outcome.epochs.len().to_string());
    if let Some(last) = outcome.epochs.last() {
        metadata.insert("weight_hash".to_string(), last.weight_hash.clone());
    }
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| write_err(path)(&e))
}
