//! The `pitrain` command line: argument parsing, the commands, and their errors.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::fetch::{self, FetchError, Fetched};
use crate::mnist::{self, Mnist, MnistError, NoData};
use crate::results::{self, WriteError};
use crate::trainer::{
    self, ArithKind, ConfigError, EpochReport, ModelKind, Observer, SgdConfigRecord, TrainConfig,
};

/// Distributed fixed-point LeNet training for Raspberry Pi 3 clusters.
#[derive(Debug, Parser)]
#[command(name = "pitrain", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model on MNIST and write the results.
    Train(TrainArgs),
    /// Manage the MNIST data set.
    #[command(subcommand)]
    Data(DataCommand),
}

/// `pitrain data ...`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download MNIST into the cache (or --dir) and verify its checksums.
    Fetch {
        /// Base URL the four .gz files are under.
        #[arg(long, default_value = fetch::DEFAULT_URL)]
        url: String,
        /// Directory to store them in [default: ~/.cache/pitrain/mnist].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check the four files: headers, lengths and SHA-256.
    Verify {
        /// Directory with the files [default: $MNIST_DIR, then the cache].
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

/// `pitrain train` options.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Number of nodes. Only 1 (this process) until the cluster master lands.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Network to train.
    #[arg(long, value_enum, default_value_t = ModelKind::Mxlenet)]
    pub model: ModelKind,
    /// Arithmetic: the fixed-point product or the f32 reference.
    #[arg(long, value_enum, default_value_t = ArithKind::Fixed)]
    pub arith: ArithKind,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay (weights only, not biases).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Seed of the initial weights and the sample order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train on the first N training images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Threads sharing each batch [default: all cores]. Does not change the result.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Directory with the MNIST files [default: $MNIST_DIR, then the download cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory [default: runs/<model>-<arith>-seed<seed>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Why a command failed. Printed as one actionable message; never a panic.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Data set missing.
    #[error(transparent)]
    NoData(#[from] NoData),
    /// Data set damaged.
    #[error(transparent)]
    Mnist(#[from] MnistError),
    /// Download failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Bad training settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Results not written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A feature that is not there yet.
    #[error("{0}")]
    Unsupported(String),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Data(DataCommand::Fetch { url, dir }) => {
            let dir = dir.unwrap_or_else(mnist::default_cache_dir);
            for fetched in fetch::fetch_all(&url, &dir)? {
                match fetched {
                    Fetched::Present(p) => println!("present and valid: {}", p.display()),
                    Fetched::Downloaded(p) => println!("downloaded and verified: {}", p.display()),
                }
            }
            println!("MNIST is ready in {}", dir.display());
            Ok(())
        }
        Command::Data(DataCommand::Verify { data }) => {
            let dir = mnist::locate(data.as_deref())?;
            let set = Mnist::load(&dir)?;
            println!(
                "{}: all four files verified ({} training, {} test samples)",
                dir.display(),
                set.train.len(),
                set.test.len()
            );
            Ok(())
        }
    }
}

fn train(args: TrainArgs) -> Result<(), CliError> {
    if args.nodes != 1 {
        return Err(CliError::Unsupported(format!(
            "--nodes {} is not available yet: this build trains in one process (--nodes 1)",
            args.nodes
        )));
    }
    let defaults = TrainConfig::default();
    let config = TrainConfig {
        model: args.model,
        arith: args.arith,
        epochs: args.epochs,
        batch: args.batch,
        sgd: SgdConfigRecord {
            learning_rate: args.lr,
            momentum: args.momentum,
            weight_decay: args.weight_decay,
        },
        seed: args.seed,
        limit: args.limit,
        threads: args.threads.unwrap_or(defaults.threads),
    };
    config.validate()?;
    let dir = mnist::locate(args.data.as_deref())?;
    let data = Mnist::load(&dir)?;
    let out = args.out.unwrap_or_else(|| default_out(&config));
    println!(
        "training {:?} ({:?}) on {} images from {}: {} epochs, batch {}, lr {}, momentum {}, weight decay {}, seed {}, {} threads",
        config.model,
        config.arith,
        config.limit.unwrap_or(data.train.len()).min(data.train.len()),
        dir.display(),
        config.epochs,
        config.batch,
        config.sgd.learning_rate,
        config.sgd.momentum,
        config.sgd.weight_decay,
        config.seed,
        config.threads
    );
    let mut progress = Progress { bar: None, quiet: args.quiet };
    let outcome = trainer::train(&config, &data, &mut progress)?;
    for path in results::write_all(&out, &config, &outcome)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn default_out(config: &TrainConfig) -> PathBuf {
    let model = format!("{:?}", config.model).to_lowercase();
    let arith = format!("{:?}", config.arith).to_lowercase();
    Path::new("runs").join(format!("{model}-{arith}-seed{}", config.seed))
}

/// Progress bar per epoch, and one line per finished epoch.
struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Observer for Progress {
    fn epoch_started(&mut self, epoch: u32, steps: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {msg} [{bar:40}] {pos}/{len} steps, {per_sec}, eta {eta}")
                .expect("a valid progress template")
                .progress_chars("=> "),
        );
        bar.set_message(epoch.to_string());
        self.bar = Some(bar);
    }

    fn step_done(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn epoch_done(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "epoch {:>2}  {:>7.1} s  train loss {:.4}  train acc {:6.2}%  test loss {:.4}  test acc {:6.2}%  weights {}",
            r.epoch,
            r.seconds,
            r.train_loss,
            100.0 * r.train_accuracy,
            r.test_loss,
            100.0 * r.test_accuracy,
            r.weight_hash
        );
    }
}
