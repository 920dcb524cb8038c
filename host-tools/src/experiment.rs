//! `pitrain experiment`: the 2017 study's sweep over the number of devices, and its Figure 1.
//!
//! For each node count the cluster trains from scratch with the same seed; the default batch mode is
//! the paper's (`--batch-per-node 64`, MXNet `dist_sync`). The figures are (a) mean epoch time and (b)
//! final training and test accuracy against the number of devices, as SVG, with a CSV of the numbers.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::cli::{default_out, CliError, ExperimentArgs, Progress};
use crate::cluster::{self, NodeTraffic};
use crate::results::{self, WriteError};
use protocol::wire::BatchMode;

/// One node count's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentRow {
    /// Devices.
    pub nodes: u16,
    /// Mean wall time of an epoch, seconds (training and validation).
    pub mean_epoch_seconds: f64,
    /// Training accuracy of the last epoch.
    pub train_accuracy: f64,
    /// Test accuracy after the last epoch.
    pub test_accuracy: f64,
    /// Synchronisations per epoch.
    pub steps_per_epoch: u64,
    /// Mean UDP payload bytes per synchronisation per node, master to node.
    pub bytes_to_node_per_sync: u64,
    /// Mean UDP payload bytes per synchronisation per node, node to master.
    pub bytes_from_node_per_sync: u64,
    /// Final weight hash.
    pub weight_hash: String,
}

/// Runs the sweep and writes `experiment.csv`, `fig1a_epoch_time.svg` and `fig1b_accuracy.svg`.
pub fn run(args: ExperimentArgs) -> Result<(), CliError> {
    let run = &args.run;
    let (dir, data) = run.load_data()?;
    let base = run.train_config(false, BatchMode::PerNode);
    base.validate()?;
    if run.resume.is_some() {
        return Err(CliError::Unsupported(
            "an experiment starts every node count from scratch: drop --resume".into(),
        ));
    }
    let out = run.out.clone().unwrap_or_else(|| default_out(&base).with_file_name("experiment"));
    let mut rows = Vec::new();
    for &nodes in &args.nodes.0 {
        let config = run.train_config(nodes == 1, BatchMode::PerNode);
        let node_dir = out.join(format!("nodes-{nodes}"));
        if let Some((epochs, traffic)) = finished_earlier(&node_dir, &config) {
            println!(
                "{nodes} nodes: finished earlier with the same settings in {}; reusing it (delete that folder to run it again)",
                node_dir.display()
            );
            rows.push(row(nodes, &epochs, &traffic));
            write_figures(&out, &rows)?;
            continue;
        }
        let cluster = run.cluster_config(config.clone(), nodes, BatchMode::PerNode)?;
        run.announce(&config, cluster.mode, &format!("on {nodes} simulated nodes"), &dir, &data);
        let mut progress = Progress::new(run.quiet, None);
        let result = cluster::train_simulated(&cluster, &data, &mut progress)?;
        results::write_all(&node_dir, &config, &result.outcome, Some(&result.traffic))?;
        rows.push(row(nodes, &result.outcome.epochs, &result.traffic));
        // Rewritten after every node count so that an interrupted sweep keeps what it measured.
        let written = write_figures(&out, &rows)?;
        if rows.len() == args.nodes.0.len() {
            for path in written {
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// The results of a node count's run that completed earlier in `dir` with the same settings (thread
/// counts aside, which change nothing), so that a rerun of an interrupted sweep continues it.
fn finished_earlier(
    dir: &Path,
    config: &crate::trainer::TrainConfig,
) -> Option<(Vec<crate::trainer::EpochReport>, Vec<NodeTraffic>)> {
    #[derive(serde::Deserialize)]
    struct Finished {
        config: serde_json::Value,
        traffic_per_node: Option<Vec<NodeTraffic>>,
        epochs: Vec<crate::trainer::EpochReport>,
    }
    let text = std::fs::read_to_string(dir.join(results::JSON_FILE)).ok()?;
    let mut finished: Finished = serde_json::from_str(&text).ok()?;
    let mut wanted = serde_json::to_value(config).ok()?;
    for value in [&mut finished.config, &mut wanted] {
        value.as_object_mut()?.remove("threads");
    }
    (finished.config == wanted && finished.epochs.len() == config.epochs as usize)
        .then_some((finished.epochs, finished.traffic_per_node?))
}

/// Writes `experiment.csv` and both plots for the rows so far; returns the paths written.
fn write_figures(out: &Path, rows: &[ExperimentRow]) -> Result<Vec<std::path::PathBuf>, WriteError> {
    let csv_path = out.join("experiment.csv");
    let err = |e: &dyn std::fmt::Display| WriteError { path: csv_path.clone(), message: e.to_string() };
    let mut csv = csv::Writer::from_path(&csv_path).map_err(|e| err(&e))?;
    for r in rows {
        csv.serialize(r).map_err(|e| err(&e))?;
    }
    csv.flush().map_err(|e| err(&e))?;
    let mut written = vec![csv_path.clone()];
    written.extend(plot(out, rows)?);
    Ok(written)
}

fn row(nodes: u16, epochs: &[crate::trainer::EpochReport], traffic: &[NodeTraffic]) -> ExperimentRow {
    let last = epochs.last().expect("at least one epoch");
    let syncs: u64 = traffic.iter().map(|t| t.steps).sum::<u64>().max(1);
    ExperimentRow {
        nodes,
        mean_epoch_seconds: epochs.iter().map(|e| e.seconds).sum::<f64>() / epochs.len() as f64,
        train_accuracy: last.train_accuracy,
        test_accuracy: last.test_accuracy,
        steps_per_epoch: traffic.iter().map(|t| t.steps).max().unwrap_or(0) / epochs.len() as u64,
        bytes_to_node_per_sync: traffic.iter().map(|t| t.bytes_to_node).sum::<u64>() / syncs,
        bytes_from_node_per_sync: traffic.iter().map(|t| t.bytes_from_node).sum::<u64>() / syncs,
        weight_hash: last.weight_hash.clone(),
    }
}

/// Draws Figure 1 (a) and (b).
pub fn plot(out: &Path, rows: &[ExperimentRow]) -> Result<Vec<std::path::PathBuf>, WriteError> {
    let max_nodes = rows.iter().map(|r| r.nodes).max().unwrap_or(1) as f64 + 0.5;
    let time_path = out.join("fig1a_epoch_time.svg");
    let acc_path = out.join("fig1b_accuracy.svg");
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |e: &dyn std::fmt::Display| WriteError { path: path.clone(), message: e.to_string() }
    };
    {
        let max_time = rows.iter().map(|r| r.mean_epoch_seconds).fold(0.0, f64::max) * 1.15 + 1e-9;
        let area = SVGBackend::new(&time_path, (720, 480)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            area.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&area)
                .caption("(a) Mean epoch time", ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.5..max_nodes, 0.0..max_time)?;
            chart
                .configure_mesh()
                .x_labels(max_nodes as usize + 1)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .x_desc("number of devices")
                .y_desc("seconds per epoch")
                .draw()?;
            let points: Vec<(f64, f64)> =
                rows.iter().map(|r| (r.nodes as f64, r.mean_epoch_seconds)).collect();
            chart.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
            area.present()?;
            Ok(())
        };
        draw().map_err(|e| failed(&time_path)(&e))?;
    }
    {
        let low = rows.iter().map(|r| r.test_accuracy.min(r.train_accuracy)).fold(1.0, f64::min);
        let floor = ((low * 100.0 - 0.5).floor() / 100.0).max(0.0);
        let area = SVGBackend::new(&acc_path, (720, 480)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            area.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&area)
                .caption("(b) Accuracy after the last epoch", ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.5..max_nodes, floor * 100.0..100.0)?;
            chart
                .configure_mesh()
                .x_labels(max_nodes as usize + 1)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .x_desc("number of devices")
                .y_desc("accuracy (%)")
                .draw()?;
            for (label, color, get) in [
                ("training", RED, (|r: &ExperimentRow| r.train_accuracy) as fn(&ExperimentRow) -> f64),
                ("validation (test set)", BLUE, |r: &ExperimentRow| r.test_accuracy),
            ] {
                let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.nodes as f64, 100.0 * get(r))).collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()?;
            area.present()?;
            Ok(())
        };
        draw().map_err(|e| failed(&acc_path)(&e))?;
    }
    Ok(vec![time_path, acc_path])
}

#[cfg(test)]
mod tests {
    /// A continued sweep rebuilds its finished rows from `results.json`: every epoch time must read
    /// back as the very f64 that was written (serde_json's `float_roundtrip`; without it this value,
    /// seen in a CI run, came back one unit in the last place off).
    #[test]
    fn epoch_times_read_back_exactly() {
        for seconds in [3.7700572599999997_f64, 41.2472995597, 0.1 + 0.2, 1e-9, 12345.678901234567] {
            let text = serde_json::to_string(&seconds).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), seconds.to_bits(), "{text}");
        }
    }
}
