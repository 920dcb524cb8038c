//! The `pitrain` command line: argument parsing, the commands, and their errors.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cluster::{self, ClusterConfig, ClusterError, KillPlan, Revive};
use crate::fetch::{self, FetchError, Fetched};
use crate::mnist::{self, Mnist, MnistError, NoData};
use crate::qemu;
use crate::results::{self, WriteError};
use crate::trainer::{
    self, ArithKind, ConfigError, EpochReport, ModelKind, Observer, SgdConfigRecord, TrainConfig,
};
use protocol::fault::FaultConfig;
use protocol::wire::{BatchMode, ShardLayout};

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
    /// Sweep node counts as the 2017 study did, and draw its Figure 1 (epoch time and accuracy
    /// against the number of devices) as SVG, with the figures as CSV.
    Experiment(ExperimentArgs),
    /// Manage the MNIST data set.
    #[command(subcommand)]
    Data(DataCommand),
    /// Build the Pi firmware (ELF and the raw kernel8.img).
    #[command(subcommand)]
    Firmware(FirmwareCommand),
    /// Boot the firmware in QEMU's raspi3b machine.
    #[command(subcommand)]
    Qemu(QemuCommand),
    /// Decode a node's defmt log, from a serial device or a capture, with the firmware's ELF.
    Logs(LogsArgs),
    /// Write node blobs: each node's shard of MNIST with its training settings, for the firmware.
    Shard(ShardArgs),
    /// Run one node of a cluster file in this process, in place of its board: it joins the master
    /// (`pitrain train --cluster FILE`) at the file's address with the file's key and trains on its
    /// own shard of MNIST, with the node state machine the firmware runs.
    Node(NodeArgs),
    /// The cluster file: `pitrain cluster init` writes a commented one with a fresh key.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Build bootable SD-card images for the nodes (`pitrain image inspect IMAGE` checks one).
    Image(ImageArgs),
    /// Write an image to an SD card and verify it; refuses anything that is not a free card.
    Flash(FlashArgs),
}

/// `pitrain node ...`
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The cluster file.
    #[arg(long, value_name = "FILE")]
    pub cluster: PathBuf,
    /// Which of its nodes this process is.
    #[arg(long)]
    pub node: u16,
    /// Directory with the MNIST files [default: $MNIST_DIR, then the download cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Threads sharing the node's work [default: the file's cores per node].
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `pitrain flash ...`
#[derive(Debug, clap::Args)]
pub struct FlashArgs {
    /// The image to write (not with --cluster).
    #[arg(required_unless_present = "cluster", conflicts_with = "cluster")]
    pub image: Option<PathBuf>,
    /// The card: the whole disk of the card reader, e.g. /dev/sdX or /dev/mmcblkN.
    #[arg(long)]
    pub device: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Write even though the target does not look like an SD card (not removable, not SD/MMC or
    /// USB): for loop devices and image files. The other refusals still apply.
    #[arg(long)]
    pub allow_non_card: bool,
    /// Flash every node of this cluster file, one card after another, from --images.
    #[arg(long, requires = "images")]
    pub cluster: Option<PathBuf>,
    /// The folder `pitrain image --all` wrote node-K.img into.
    #[arg(long)]
    pub images: Option<PathBuf>,
}

/// `pitrain cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Write a new cluster file with every setting commented and a random cluster key.
    Init {
        /// The file to write (never overwritten).
        #[arg(long, default_value = "cluster.toml")]
        out: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// The master's IPv4 address on the boards' network.
        #[arg(long, default_value = "192.168.1.10")]
        master: std::net::Ipv4Addr,
        /// A name for the cluster.
        #[arg(long, default_value = "pi-cluster")]
        name: String,
    },
    /// Show every node of the running master: id, state, firmware version, address, MAC, cores,
    /// shard, uptime and when it was last heard from.
    Status {
        /// The master's control socket, or the run's output folder [default:
        /// $XDG_RUNTIME_DIR/pitrain/master.sock, else /tmp/pitrain-UID/master.sock].
        #[arg(long)]
        control: Option<PathBuf>,
        /// Print the status as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop the running training at the end of the current step; the master tells the nodes to stop,
    /// writes the results of the epochs finished so far and exits.
    Stop {
        /// The master's control socket, or the run's output folder [default: as for status].
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// Reboot nodes (boards and QEMU nodes through the watchdog); training goes on without them and
    /// they rejoin with the current model.
    Reboot {
        /// The node to reboot [default: every node].
        #[arg(long)]
        node: Option<u16>,
        /// The master's control socket, or the run's output folder [default: as for status].
        #[arg(long)]
        control: Option<PathBuf>,
    },
}

/// `pitrain image ...`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ImageArgs {
    /// `inspect IMAGE`.
    #[command(subcommand)]
    pub inspect: Option<ImageCommand>,
    /// The cluster file.
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// The node whose image to build.
    #[arg(long, conflicts_with = "all")]
    pub node: Option<u16>,
    /// Build every node's image, as node-K.img in the --out directory.
    #[arg(long)]
    pub all: bool,
    /// The image file (with --all: a directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The folder with the Pi's boot files: bootcode.bin, start.elf, fixup.dat (Debian:
    /// /usr/lib/raspi-firmware from the raspi-firmware package).
    #[arg(long)]
    pub firmware_dir: Option<PathBuf>,
    /// The firmware's raw kernel8.img [default: build it].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Directory with the MNIST files [default: $MNIST_DIR, then the download cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// `pitrain image inspect`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List an image's partitions and files, and check its config.txt, kernel and node blob.
    Inspect {
        /// The image file.
        image: PathBuf,
    },
}

/// `pitrain shard ...`
#[derive(Debug, clap::Args)]
pub struct ShardArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 1)]
    pub nodes: u16,
    /// Which node's blob to write (0-based; may be left out when there is one node).
    #[arg(long, conflicts_with = "all")]
    pub node: Option<u16>,
    /// Write every node's blob, as node-K.blob in the --out directory.
    #[arg(long)]
    pub all: bool,
    /// How the training set is divided between nodes.
    #[arg(long, value_enum, default_value_t = Layout::Contiguous)]
    pub shard_layout: Layout,
    /// Cores the node trains on (1 to 4).
    #[arg(long, default_value_t = 4)]
    pub cores: u8,
    /// The blob file (with --all: a directory).
    #[arg(long)]
    pub out: PathBuf,
    /// Network to train.
    #[arg(long, value_enum, default_value_t = ModelKind::Mxlenet)]
    pub model: ModelKind,
    /// Passes over the shard.
    #[arg(long, default_value_t = 1)]
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
    /// Cut the shards from the first N training images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Directory with the MNIST files [default: $MNIST_DIR, then the download cache].
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// `pitrain logs ...`
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The firmware ELF that is running (its defmt table decodes the log).
    #[arg(long)]
    pub elf: PathBuf,
    /// Read from this serial device (a USB-UART adapter on GPIO14/15), until Ctrl-C.
    #[arg(long, conflicts_with = "capture")]
    pub serial: Option<String>,
    /// Serial speed.
    #[arg(long, default_value_t = 115_200, requires = "serial")]
    pub baud: u32,
    /// A capture of the UART output (e.g. QEMU's `-serial file:uart.bin`); `-` for standard input.
    pub capture: Option<PathBuf>,
}

/// `pitrain firmware ...`
#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Build firmware.elf and kernel8.img (release, aarch64-unknown-none).
    Build {
        /// Cargo target directory [default: target/ in the workspace].
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Print the firmware's static memory map: sections, training state, stacks, blob area, heap.
    Map {
        /// The firmware ELF [default: build the firmware first].
        #[arg(long)]
        elf: Option<PathBuf>,
    },
}

/// `pitrain qemu ...`
#[derive(Debug, Subcommand)]
pub enum QemuCommand {
    /// Boot one node and print what it writes to its UART; exits with the firmware's status.
    Run {
        /// The raw image to boot [default: build the firmware first].
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Deterministic instruction counting (-icount shift=0,sleep=off).
        #[arg(long)]
        icount: bool,
        /// The ELF whose defmt table decodes the log [default: `firmware` beside the image].
        #[arg(long)]
        elf: Option<PathBuf>,
        /// The node blob (`pitrain shard`) to place at its load address.
        #[arg(long)]
        blob: Option<PathBuf>,
        /// Cores to train on, overriding the blob's setting (1 to 4).
        #[arg(long, requires = "blob")]
        cores: Option<u8>,
    },
    /// Boot one node with the link-test firmware and check and measure its network path: ping,
    /// UDP echo of every size from 1 to 1472 bytes, throughput each way, and (with --icount) the
    /// node's instructions per byte.
    LinkTest {
        /// Deterministic guest (-icount shift=0,sleep=off): exact instruction counts, slower.
        #[arg(long)]
        icount: bool,
        /// Datagrams in each throughput run.
        #[arg(long, default_value_t = 2000)]
        count: u32,
        /// Bytes per datagram in the throughput runs (4 to 1472).
        #[arg(long, default_value_t = 1472)]
        size: u16,
        /// Shape the node's link to this many Mbit/s (a Pi 3's Ethernet: 100).
        #[arg(long)]
        link_mbps: Option<f64>,
        /// With --link-mbps: one-way latency in milliseconds.
        #[arg(long, requires = "link_mbps", default_value_t = 0.0)]
        link_latency_ms: f64,
        /// Where the node's blob and decoded log go.
        #[arg(long, default_value = "runs/link-test")]
        out: PathBuf,
        /// The node asks for its address by DHCP (the bridge serves it) instead of a static one.
        #[arg(long)]
        dhcp: bool,
    },
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
    /// Number of simulated nodes: each a thread with its own UDP socket on 127.0.0.1 and only its own
    /// shard, talking to this process's master.
    #[arg(long, default_value_t = 1)]
    pub nodes: u16,
    /// Train in this one process instead (no master, no nodes); needed for --arith f32.
    #[arg(long, conflicts_with_all = ["nodes", "batch_per_node", "kill", "drop", "duplicate", "reorder"])]
    pub local: bool,
    /// Run N QEMU raspi3b nodes booting the real firmware instead of simulated ones; their network
    /// traffic goes through a user-space bridge on 127.0.0.1 and stays on this machine.
    /// `--kill` works with QEMU nodes too: their QEMU process is killed and booted again.
    #[arg(long, conflicts_with_all = ["nodes", "local", "drop", "duplicate", "reorder"])]
    pub qemu: Option<u16>,
    /// With --qemu: deterministic guests (`-icount shift=0,sleep=off`); slower.
    #[arg(long, requires = "qemu")]
    pub icount: bool,
    /// With --qemu: shape each node's link to this many Mbit/s (a Pi 3's Ethernet: 100).
    #[arg(long, requires = "qemu")]
    pub link_mbps: Option<f64>,
    /// With --qemu and --link-mbps: one-way latency of each node's link, in milliseconds.
    #[arg(long, requires = "link_mbps", default_value_t = 0.0)]
    pub link_latency_ms: f64,
    /// Be the master of the boards described by this cluster file (or of `pitrain node` processes
    /// standing in for them): listen on the file's master address and port, with its key, and train
    /// with the nodes that join. The training settings are the file's, as the boards' blobs hold
    /// them; --sync-period, --step-deadline, --threads (for validation), --data, --out and --resume
    /// apply.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "nodes", "local", "qemu", "drop", "duplicate", "reorder", "kill", "model", "arith", "epochs",
        "batch", "batch_per_node", "lr", "momentum", "weight_decay", "seed", "limit", "shard_layout",
    ])]
    pub cluster: Option<PathBuf>,
    /// With --cluster: seconds to wait for every node to join (boards boot from their cards; start
    /// them after the master).
    #[arg(long, requires = "cluster", default_value_t = 600.0)]
    pub join_timeout: f64,
    /// The control socket this run's master listens on for `pitrain cluster status|stop|reboot`
    /// [default: OUT/control.sock, and the well-known $XDG_RUNTIME_DIR/pitrain/master.sock (or
    /// /tmp/pitrain-UID/master.sock) unless another master holds it].
    #[arg(long, conflicts_with = "local")]
    pub control: Option<PathBuf>,
    /// Everything else.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `pitrain experiment` options.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ExperimentArgs {
    /// Node counts to sweep: "1..10" (1 through 10) or a list "1,2,4,8".
    #[arg(long, default_value = "1..10", value_parser = parse_node_list)]
    pub nodes: NodeList,
    /// Everything else (the batch defaults to --batch-per-node 64, the paper's setting).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Node counts of an experiment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeList(pub Vec<u16>);

fn parse_node_list(text: &str) -> Result<NodeList, String> {
    let bad = || format!("'{text}' is not a node range A..B or a list A,B,C of counts from 1");
    let list: Vec<u16> = match text.split_once("..") {
        Some((a, b)) => {
            let (a, b): (u16, u16) =
                (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
            (a..=b).collect()
        }
        None => text.split(',').map(|n| n.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?,
    };
    if list.is_empty() || list.contains(&0) {
        return Err(bad());
    }
    Ok(NodeList(list))
}

/// Options shared by `train` and `experiment`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Every node takes this many samples of its own shard per step and the master averages over all
    /// of them (MXNet dist_sync; the global batch becomes this times --nodes). Default: one global
    /// batch of --batch per step, split by where its samples live.
    #[arg(long, conflicts_with = "batch")]
    pub batch_per_node: Option<usize>,
    /// How the training set is divided between nodes.
    #[arg(long, value_enum, default_value_t = Layout::Contiguous)]
    pub shard_layout: Layout,
    /// Local steps each node takes between synchronisations (1: synchronous SGD every step; above 1:
    /// nodes update their own copies and the master averages their changes).
    #[arg(long, default_value_t = 1)]
    pub sync_period: u32,
    /// Seconds after a step began at which a node that has not delivered its gradient is dropped
    /// [default: 10; 120 with --qemu, whose emulated boards compute slowly].
    #[arg(long)]
    pub step_deadline: Option<f64>,
    /// Fault injection on the simulated nodes' transports: percent of datagrams lost (each way).
    #[arg(long, default_value_t = 0.0)]
    pub drop: f64,
    /// Fault injection: percent of datagrams delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate: f64,
    /// Fault injection: percent of datagrams delivered late, after the next one.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    /// Fault injection: kill node K right after it computes step S (K@S); revive it T seconds later
    /// (K@S+T) or as soon as the master begins step R (K@S..R). Steps count from 0 over the whole run.
    /// With --qemu the node's QEMU process is killed when the master begins step S+1 and a new one
    /// boots at the revival.
    #[arg(long, value_parser = parse_kill)]
    pub kill: Option<KillPlan>,
    /// Network to train.
    #[arg(long, value_enum, default_value_t = ModelKind::Mxlenet)]
    pub model: ModelKind,
    /// Arithmetic: the fixed-point product or the f32 reference.
    #[arg(long, value_enum, default_value_t = ArithKind::Fixed)]
    pub arith: ArithKind,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Samples per step: the global batch [default: 64].
    #[arg(long, alias = "global-batch")]
    pub batch: Option<usize>,
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
    /// Threads sharing each node's work (with --local: each batch) [default: all cores for one node or
    /// --local, else 1]. Does not change the result.
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
    /// Continue from a checkpoint written by an earlier run (`checkpoint-epoch-N.safetensors` in its
    /// output directory): same model and settings, from the epoch after N.
    #[arg(long)]
    pub resume: Option<PathBuf>,
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
    /// The cluster run failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A checkpoint that cannot be resumed from.
    #[error(transparent)]
    Checkpoint(#[from] results::CheckpointError),
    /// Building or booting the firmware failed.
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    /// A cluster file is unusable.
    #[error(transparent)]
    ClusterFile(#[from] crate::cluster_file::ClusterFileError),
    /// An image could not be built or read.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// An image failed inspection.
    #[error("{image} has problems:\n  {}", problems.join("\n  "))]
    BadImage {
        /// The image.
        image: PathBuf,
        /// What is wrong.
        problems: Vec<String>,
    },
    /// A link test failed.
    #[error(transparent)]
    LinkTest(#[from] crate::link_test::LinkTestError),
    /// Flashing failed or was refused.
    #[error(transparent)]
    Flash(#[from] crate::flash::FlashError),
    /// The memory map could not be read.
    #[error(transparent)]
    Map(#[from] crate::memmap::MapError),
    /// A node blob could not be made.
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    /// A log could not be decoded.
    #[error(transparent)]
    Logs(#[from] crate::logs::LogError),
    /// The firmware ended with a failure status.
    #[error("the firmware exited with status {0}")]
    GuestExit(i32),
    /// The running master could not be reached or refused.
    #[error(transparent)]
    Control(#[from] cluster::control::ControlError),
    /// A feature that is not there yet.
    #[error("{0}")]
    Unsupported(String),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Experiment(args) => crate::experiment::run(args),
        Command::Firmware(FirmwareCommand::Build { target_dir }) => {
            let image = qemu::build_firmware(
                &target_dir.unwrap_or_else(|| qemu::workspace_dir().join("target")),
                &[],
            )?;
            println!("ELF:   {}\nimage: {}", image.elf.display(), image.image.display());
            Ok(())
        }
        Command::Qemu(QemuCommand::Run { kernel, timeout, icount, elf, blob, cores }) => {
            seconds("--timeout", timeout)?;
            let image = match kernel {
                Some(k) if k.is_file() => k,
                Some(k) => {
                    return Err(CliError::Unsupported(format!("no firmware image at {}", k.display())))
                }
                None => qemu::build_firmware(&qemu::workspace_dir().join("target"), &[])?.image,
            };
            let elf = elf.unwrap_or_else(|| image.with_file_name("firmware"));
            let table = crate::logs::LogTable::load(&elf)?;
            let mut stream = table.stream();
            let staged = tempfile::tempdir()
                .map_err(|e| CliError::Unsupported(format!("no temporary directory: {e}")))?;
            let load = match blob {
                Some(path) => vec![(
                    qemu::stage_blob(&path, cores, staged.path())?,
                    protocol::blob::LOAD_ADDRESS as u64,
                )],
                None => Vec::new(),
            };
            let boot = qemu::Boot {
                timeout: std::time::Duration::from_secs_f64(timeout),
                icount,
                load,
                ..qemu::Boot::new(&image)
            };
            let run = boot.run(|bytes| {
                for line in stream.feed(bytes) {
                    println!("{line}");
                }
            })?;
            if stream.malformed > 0 {
                eprintln!(
                    "note: {} log frames did not decode (is {} the ELF of this image?)",
                    stream.malformed,
                    elf.display()
                );
            }
            if run.status == 0 {
                Ok(())
            } else {
                Err(CliError::GuestExit(run.status))
            }
        }
        Command::Qemu(QemuCommand::LinkTest {
            icount,
            count,
            size,
            link_mbps,
            link_latency_ms,
            out,
            dhcp,
        }) => {
            let options = crate::link_test::LinkOptions {
                icount,
                shaping: shaping(link_mbps, link_latency_ms)?,
                dhcp,
                ..crate::link_test::LinkOptions::new(out)
            };
            link_test(&options, count, size)
        }
        Command::Shard(args) => shard(args),
        Command::Node(args) => node(args),
        Command::Cluster(ClusterCommand::Init { out, nodes, master, name }) => {
            if nodes == 0 {
                return Err(CliError::Unsupported("--nodes must be at least 1".into()));
            }
            crate::cluster_file::init(&out, &name, nodes, master)?;
            println!("wrote {} ({nodes} nodes, a new random cluster key); edit it, then: pitrain image --all --cluster {}", out.display(), out.display());
            Ok(())
        }
        Command::Cluster(ClusterCommand::Status { control, json }) => {
            use cluster::control::{request, resolve, Answer, Request};
            let path = resolve(control.as_deref());
            let Answer::Status(snapshot) = request(&path, &Request::Status)? else {
                return Err(unexpected_answer(&path));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot).expect("a snapshot serialises"));
            } else {
                print!("{}", cluster::control::status_table(&snapshot));
            }
            Ok(())
        }
        Command::Cluster(ClusterCommand::Stop { control }) => {
            use cluster::control::{request, resolve, Answer, Request};
            let path = resolve(control.as_deref());
            let Answer::Stopping { step } = request(&path, &Request::Stop)? else {
                return Err(unexpected_answer(&path));
            };
            println!(
                "asked the master at {} to stop: it ends after step {step} and writes its results",
                path.display()
            );
            Ok(())
        }
        Command::Cluster(ClusterCommand::Reboot { node, control }) => {
            use cluster::control::{request, resolve, Answer, Request};
            let path = resolve(control.as_deref());
            let Answer::Rebooting { nodes } = request(&path, &Request::Reboot { node })? else {
                return Err(unexpected_answer(&path));
            };
            let list = nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
            println!(
                "asked the master to reboot node{} {list}; training goes on and they rejoin",
                if nodes.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Image(ImageArgs { inspect: Some(ImageCommand::Inspect { image }), .. }) => {
            let inspection = crate::image::inspect(&image)?;
            for line in &inspection.report {
                println!("{line}");
            }
            if inspection.problems.is_empty() {
                println!("{}: ok", image.display());
                Ok(())
            } else {
                Err(CliError::BadImage { image, problems: inspection.problems })
            }
        }
        Command::Image(args) => build_images(args),
        Command::Flash(args) => flash(args),
        Command::Firmware(FirmwareCommand::Map { elf }) => {
            let elf = match elf {
                Some(elf) => elf,
                None => qemu::build_firmware(&qemu::workspace_dir().join("target"), &[])?.elf,
            };
            print!("{}", crate::memmap::MemoryMap::read(&elf)?.report());
            Ok(())
        }
        Command::Logs(args) => {
            let table = crate::logs::LogTable::load(&args.elf)?;
            let source = match (args.serial, args.capture) {
                (Some(device), _) => crate::logs::LogSource::Serial { device, baud: args.baud },
                (None, Some(path)) => crate::logs::LogSource::File(path),
                (None, None) => crate::logs::LogSource::File("-".into()),
            };
            let malformed = crate::logs::follow(&table, &source, |line| println!("{line}"))?;
            if malformed > 0 {
                eprintln!(
                    "note: {malformed} log frames did not decode (is this the ELF of the running firmware?)"
                );
            }
            Ok(())
        }
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

fn unexpected_answer(path: &Path) -> CliError {
    CliError::Control(cluster::control::ControlError::BadAnswer {
        path: path.to_path_buf(),
        detail: "an answer to another request".into(),
    })
}

fn parse_kill(text: &str) -> Result<KillPlan, String> {
    let usage = || format!("'{text}' is not NODE@STEP, NODE@STEP+SECONDS or NODE@STEP..REVIVE_STEP");
    let (node, rest) = text.split_once('@').ok_or_else(usage)?;
    let (step, revive) = if let Some((step, secs)) = rest.split_once('+') {
        let s: f64 = secs.parse().map_err(|_| usage())?;
        if !(s.is_finite() && s >= 0.0) {
            return Err(usage());
        }
        (step, Some(Revive::After(std::time::Duration::from_secs_f64(s))))
    } else if let Some((step, back)) = rest.split_once("..") {
        (step, Some(Revive::AtStep(back.parse().map_err(|_| usage())?)))
    } else {
        (rest, None)
    };
    let plan = KillPlan {
        node: node.parse().map_err(|_| usage())?,
        step: step.parse().map_err(|_| usage())?,
        revive,
    };
    if let Some(Revive::AtStep(back)) = plan.revive {
        if back <= plan.step {
            return Err(format!("'{text}': the node must come back at a step after the one it dies at"));
        }
    }
    Ok(plan)
}

/// Link shaping from `--link-mbps` and `--link-latency-ms`.
fn shaping(link_mbps: Option<f64>, latency_ms: f64) -> Result<Option<crate::bridge::Shaping>, CliError> {
    match link_mbps {
        Some(mbps) if mbps.is_finite() && mbps > 0.0 && latency_ms.is_finite() && latency_ms >= 0.0 => {
            Ok(Some(crate::bridge::Shaping {
                rate_bps: (mbps * 1e6) as u64,
                latency: std::time::Duration::from_secs_f64(latency_ms / 1000.0),
            }))
        }
        Some(_) => Err(CliError::Unsupported(
            "--link-mbps must be positive and --link-latency-ms not negative".into(),
        )),
        None => Ok(None),
    }
}

/// `pitrain qemu link-test`.
fn link_test(options: &crate::link_test::LinkOptions, count: u32, size: u16) -> Result<(), CliError> {
    use crate::link_test::{measure, LinkNode};
    println!("booting a link-test node in QEMU raspi3b (usb-net behind a hub, bridge on 127.0.0.1)...");
    let node = LinkNode::start(options)?;
    println!(
        "node ready after {:.2} s; its log: {}",
        node.boot_time.as_secs_f64(),
        node.log_path().display()
    );
    let report = measure(&node, count, size)?;
    let run = node.finish(std::time::Duration::from_secs(10))?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!("ping: 56 bytes {:.2} ms, 1472 bytes {:.2} ms", ms(report.ping[0]), ms(report.ping[1]));
    println!(
        "UDP echo: every size 1..={} bytes came back intact, mean round trip {:.2} ms",
        report.echo_sizes,
        ms(report.echo_mean)
    );
    for (name, t) in [("master -> node", &report.to_node), ("node -> master", &report.from_node)] {
        let cost = if options.icount {
            format!(
                ", {:.1} node instructions per byte ({:.1} without waiting for the USB controller)",
                t.instructions_per_byte(),
                t.working_instructions_per_byte()
            )
        } else {
            String::new()
        };
        println!(
            "{name}: {} of {} datagrams of {size} bytes ({:.1}% lost), {:.2} MB/s{cost}",
            t.delivered,
            t.offered,
            t.loss_percent(),
            t.megabytes_per_second()
        );
    }
    if run.status != 0 {
        return Err(CliError::GuestExit(run.status));
    }
    Ok(())
}

fn percent_to_ppm(name: &str, pct: f64) -> Result<u32, CliError> {
    if !(0.0..=100.0).contains(&pct) {
        return Err(CliError::Unsupported(format!("--{name} must be a percentage in [0, 100], got {pct}")));
    }
    Ok((pct * 10_000.0).round() as u32)
}

/// How the training set is divided between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Node k holds the k-th contiguous part.
    Contiguous,
    /// Node k holds every n-th sample from k.
    Strided,
}

impl From<Layout> for ShardLayout {
    fn from(layout: Layout) -> ShardLayout {
        match layout {
            Layout::Contiguous => ShardLayout::Contiguous,
            Layout::Strided => ShardLayout::Strided,
        }
    }
}

/// Set by Ctrl-C while a card is written.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn flash(args: FlashArgs) -> Result<(), CliError> {
    use std::io::BufRead;
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed));
    let read_line = || {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|n| (n > 0).then_some(line)).unwrap_or(None)
    };
    let mut confirm = |question: &str| {
        eprintln!("{question}\nType yes to continue:");
        read_line().is_some_and(|l| l.trim() == "yes")
    };
    let flash_one = |image: &Path, confirm: &mut dyn FnMut(&str) -> bool| -> Result<String, CliError> {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("a valid template"),
        );
        let mut progress = |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
        };
        let outcome = crate::flash::flash(
            image,
            &args.device,
            args.yes,
            args.allow_non_card,
            &INTERRUPTED,
            confirm,
            &mut progress,
        );
        bar.finish_and_clear();
        Ok(outcome?)
    };
    match (&args.image, &args.cluster, &args.images) {
        (Some(image), _, _) => {
            let digest = flash_one(image, &mut confirm)?;
            println!("{}: written, synced and verified (SHA-256 {digest})", args.device.display());
        }
        (None, Some(cluster), Some(images)) => {
            let cluster = crate::cluster_file::ClusterFile::read(cluster)?;
            let ids = cluster.node_ids();
            for id in &ids {
                let image = images.join(format!("node-{id}.img"));
                if !image.is_file() {
                    return Err(CliError::Unsupported(format!(
                        "{} is missing: build the images with pitrain image --all --cluster ... --out {}",
                        image.display(),
                        images.display()
                    )));
                }
            }
            for id in ids {
                eprintln!(
                    "Insert the card for node {id} into {} and press Enter (Ctrl-C to stop).",
                    args.device.display()
                );
                if read_line().is_none() {
                    return Err(CliError::Unsupported(format!("stopped before node {id}: no more input")));
                }
                let digest = flash_one(&images.join(format!("node-{id}.img")), &mut confirm)?;
                println!("node {id}: written, synced and verified (SHA-256 {digest}); remove the card and label it node {id}");
            }
        }
        _ => return Err(CliError::Unsupported("give an IMAGE, or --cluster with --images".into())),
    }
    Ok(())
}

fn build_images(args: ImageArgs) -> Result<(), CliError> {
    let missing = |what: &str| CliError::Unsupported(format!("pitrain image needs {what}"));
    let cluster_path =
        args.cluster.ok_or_else(|| missing("--cluster cluster.toml (pitrain cluster init writes one)"))?;
    let out = args.out.ok_or_else(|| missing("--out (an image file, or a directory with --all)"))?;
    let firmware_dir = args.firmware_dir.ok_or_else(|| {
        CliError::Unsupported(format!(
            "pitrain image needs --firmware-dir with the Pi's boot files: {}",
            crate::image::BOOT_FILES_HINT
        ))
    })?;
    let cluster = crate::cluster_file::ClusterFile::read(&cluster_path)?;
    let ids: Vec<u16> = match (args.node, args.all) {
        (Some(id), _) if cluster.placement(id).is_some() => vec![id],
        (Some(id), _) => {
            return Err(CliError::Unsupported(format!(
                "{} has no node {id} (its nodes: {:?})",
                cluster_path.display(),
                cluster.node_ids()
            )))
        }
        (None, true) => cluster.node_ids(),
        (None, false) => return Err(missing("--node N or --all")),
    };
    let boot_files = crate::image::read_boot_files(&firmware_dir)?;
    let kernel_path = match args.kernel {
        Some(k) => k,
        None => qemu::build_firmware(&qemu::workspace_dir().join("target"), &[])?.image,
    };
    let kernel = std::fs::read(&kernel_path).map_err(|e| {
        CliError::Unsupported(format!("cannot read the firmware image {}: {e}", kernel_path.display()))
    })?;
    let dir = mnist::locate(args.data.as_deref())?;
    let data = Mnist::load(&dir)?;
    let config = cluster.train_config();
    for id in ids {
        let placement = cluster.placement(id).expect("ids come from the file");
        let blob = crate::shard::node_blob(&data, &config, &placement)?;
        let config_txt = crate::image::config_txt(&cluster.name, id);
        let mut files: Vec<(&str, &[u8])> = boot_files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        files.push((crate::image::CONFIG_TXT, config_txt.as_bytes()));
        files.push((crate::image::KERNEL, &kernel));
        files.push((crate::image::NODE_BLOB, &blob));
        let path = if args.all { out.join(format!("node-{id}.img")) } else { out.clone() };
        let volume_id = {
            use sha2::Digest;
            let digest =
                sha2::Sha256::new().chain_update(cluster.key.0).chain_update(id.to_le_bytes()).finalize();
            u32::from_le_bytes(digest[..4].try_into().expect("4 bytes"))
        };
        crate::image::build(&path, &files, volume_id)?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "node {id}: {} ({} MiB, {} training images)",
            path.display(),
            size >> 20,
            protocol::blob::Blob::new_checked(&blob[..]).map(|b| b.samples()).unwrap_or(0)
        );
    }
    Ok(())
}

fn shard(args: ShardArgs) -> Result<(), CliError> {
    let config = TrainConfig {
        model: args.model,
        arith: ArithKind::Fixed,
        epochs: args.epochs,
        batch: args.batch,
        sgd: SgdConfigRecord {
            learning_rate: args.lr,
            momentum: args.momentum,
            weight_decay: args.weight_decay,
        },
        seed: args.seed,
        limit: args.limit,
        ..TrainConfig::default()
    };
    config.validate()?;
    let dir = mnist::locate(args.data.as_deref())?;
    let data = Mnist::load(&dir)?;
    let layout = args.shard_layout.into();
    let nodes: Vec<(u16, PathBuf)> = match (args.node, args.all) {
        (Some(k), _) => vec![(k, args.out.clone())],
        (None, true) => (0..args.nodes).map(|k| (k, args.out.join(format!("node-{k}.blob")))).collect(),
        (None, false) if args.nodes == 1 => vec![(0, args.out.clone())],
        (None, false) => {
            return Err(CliError::Unsupported(format!(
                "there are {} nodes: give --node K for one blob, or --all for every node's",
                args.nodes
            )))
        }
    };
    for (k, path) in nodes {
        let placement = crate::shard::NodePlacement {
            layout,
            cores: args.cores,
            ..crate::shard::NodePlacement::new(args.nodes, k)
        };
        let bytes = crate::shard::node_blob(&data, &config, &placement)?;
        crate::shard::write_blob(&path, &bytes)?;
        let blob = protocol::blob::Blob::new_checked(&bytes[..]).expect("a blob just written checks");
        println!(
            "node {k} of {}: {} samples, {} bytes, shard hash {:016x} -> {}",
            args.nodes,
            blob.samples(),
            bytes.len(),
            blob.shard_hash(),
            path.display()
        );
    }
    Ok(())
}

fn train(args: TrainArgs) -> Result<(), CliError> {
    let run = &args.run;
    if args.nodes == 0 {
        return Err(CliError::Unsupported("--nodes must be at least 1".into()));
    }
    if run.arith == ArithKind::F32 && !args.local {
        return Err(CliError::Unsupported(
            "--arith f32 (the reference) trains in one process: add --local".into(),
        ));
    }
    if args.qemu == Some(0) {
        return Err(CliError::Unsupported("--qemu must be at least 1".into()));
    }
    let file = args.cluster.as_deref().map(crate::cluster_file::ClusterFile::read).transpose()?;
    let nodes = match &file {
        Some(f) => f.nodes.len() as u16,
        None => args.qemu.unwrap_or(args.nodes),
    };
    let default_mode = file.as_ref().map_or(BatchMode::Global, |f| f.batch_mode());
    let single = args.local || nodes == 1;
    let mut config = match &file {
        Some(f) => {
            TrainConfig { threads: run.threads.unwrap_or(TrainConfig::default().threads), ..f.train_config() }
        }
        None => run.train_config(single, default_mode),
    };
    config.validate()?;
    run.load_resume(&mut config)?;
    let (dir, data) = run.load_data()?;
    let out = run.out.clone().unwrap_or_else(|| default_out(&config));
    let placement = if args.local {
        format!("in one process, {} threads", config.threads)
    } else if let Some(f) = &file {
        format!("on the {nodes} nodes of {} (master at {}:{})", f.name, f.master.address, f.master.port)
    } else if args.qemu.is_some() {
        format!("on {nodes} QEMU raspi3b nodes (logs in {})", out.join("qemu").display())
    } else {
        format!("on {nodes} simulated nodes ({} threads each)", config.threads)
    };
    run.announce(
        &config,
        if args.local { BatchMode::Global } else { run.mode(default_mode) },
        &placement,
        &dir,
        &data,
    );
    let mut progress = Progress::new(run.quiet, Some((out.clone(), config.clone())));
    let mut stopped = None;
    // Kept until the results are written, so `pitrain cluster status` works to the end.
    let mut _control = None;
    let (outcome, traffic) = if args.local {
        (trainer::train(&config, &data, &mut progress)?, None)
    } else {
        let mut cluster = run.cluster_config(config.clone(), nodes, default_mode)?;
        if let Some(f) = &file {
            cluster.layout = f.layout();
            let listen = std::net::SocketAddr::from((f.master.address, f.master.port));
            cluster.external = Some(cluster::ExternalNodes::listen(listen, f.key.0)?);
            cluster.join_timeout = seconds("--join-timeout", args.join_timeout)?;
            // A board computes a step of MxLenet in about a second; the rest is the network.
            if run.step_deadline.is_none() {
                cluster.step_deadline = std::time::Duration::from_secs(30);
            }
            println!(
                "waiting up to {:.0} s for {nodes} nodes to join at {}:{}",
                args.join_timeout, f.master.address, f.master.port
            );
        }
        let server = start_control(args.control.as_deref(), &out)?;
        cluster.control = server.as_ref().map(|s| s.shared());
        _control = server;
        if args.qemu.is_some() {
            let shaping = shaping(args.link_mbps, args.link_latency_ms)?;
            let _ = ctrlc::set_handler(|| cluster::qemu_nodes::interrupt());
            cluster.qemu = Some(cluster::qemu_nodes::QemuOptions {
                firmware: None,
                dir: out.join("qemu"),
                icount: args.icount,
                shaping,
                cores: 4,
            });
            // Emulated boards boot and compute more slowly than threads; an explicit --step-deadline
            // (a kill test) is taken as given.
            cluster.join_timeout = cluster.join_timeout.max(std::time::Duration::from_secs(120));
            if run.step_deadline.is_none() {
                cluster.step_deadline = std::time::Duration::from_secs(120);
            }
        }
        let result = cluster::train_simulated(&cluster, &data, &mut progress)?;
        stopped = result.stopped;
        (result.outcome, Some(result.traffic))
    };
    progress.finish()?;
    for path in results::write_all(&out, &config, &outcome, traffic.as_deref())? {
        println!("wrote {}", path.display());
    }
    if let Some(s) = stopped {
        let epoch = s.steps_done / s.steps_per_epoch.max(1);
        let into = s.steps_done % s.steps_per_epoch.max(1);
        let place = if into == 0 {
            format!("at the end of epoch {epoch}")
        } else {
            format!("after step {into} of {} of epoch {}", s.steps_per_epoch, epoch + 1)
        };
        println!(
            "stopped on request {place} ({} steps in all): the results of the {} finished epochs are written; weights.safetensors holds the weights after the last step",
            s.steps_done, s.epochs_done
        );
    }
    Ok(())
}

/// `pitrain node`: one node of a cluster file, simulated in this process.
fn node(args: NodeArgs) -> Result<(), CliError> {
    let file = crate::cluster_file::ClusterFile::read(&args.cluster)?;
    let placement = file.placement(args.node).ok_or_else(|| {
        CliError::Unsupported(format!(
            "{} has no node {} (its nodes are {:?})",
            args.cluster.display(),
            args.node,
            file.node_ids()
        ))
    })?;
    let threads = args.threads.unwrap_or(file.training.cores as usize);
    if threads == 0 {
        return Err(CliError::Unsupported("--threads must be at least 1".into()));
    }
    let dir = mnist::locate(args.data.as_deref())?;
    let data = Mnist::load(&dir)?;
    let train = file.train_config().training_set(&data);
    drop(data);
    let shutdown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = shutdown.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed));
    println!(
        "node {} of {} ({}): joining the master at {}:{} with {threads} threads",
        args.node,
        file.nodes.len(),
        file.name,
        file.master.address,
        file.master.port
    );
    let counters = cluster::sim::run_file_node(&file, &placement, &train, threads, shutdown.clone())
        .map_err(ClusterError::Socket)?;
    let how = if shutdown.load(std::sync::atomic::Ordering::Relaxed) {
        "interrupted"
    } else {
        "stopped by the master"
    };
    println!(
        "node {}: {how} after {} steps; sent {} datagrams ({} bytes), received {} bytes, refused {} datagrams",
        args.node,
        counters.steps,
        counters.sent,
        counters.bytes_sent,
        counters.bytes_received,
        counters.rejected.total()
    );
    Ok(())
}

/// Starts the run's control channel (see [`cluster::control`]): on `--control PATH` if given (its
/// failure is an error), else on OUT/control.sock plus the well-known socket, where a failure only
/// costs the `pitrain cluster` commands and is reported as a note.
fn start_control(
    explicit: Option<&Path>,
    out: &Path,
) -> Result<Option<cluster::control::ControlServer>, CliError> {
    use cluster::control::{default_socket_path, ControlServer, SOCKET_FILE};
    if let Some(path) = explicit {
        return Ok(Some(ControlServer::start(path, &[])?));
    }
    let path = out.join(SOCKET_FILE);
    match ControlServer::start(&path, &[default_socket_path()]) {
        Ok(server) => Ok(Some(server)),
        Err(e) => {
            eprintln!("note: no control channel for this run ({e}); pitrain cluster status/stop/reboot will not reach it");
            Ok(None)
        }
    }
}

impl RunArgs {
    /// The batch mode these options select, given the command's default.
    pub fn mode(&self, default: BatchMode) -> BatchMode {
        match (self.batch, self.batch_per_node) {
            (_, Some(_)) => BatchMode::PerNode,
            (Some(_), None) => BatchMode::Global,
            (None, None) => default,
        }
    }

    /// Training settings; `single` says whether one node (or one process) gets all the cores.
    pub fn train_config(&self, single: bool, default_mode: BatchMode) -> TrainConfig {
        let defaults = TrainConfig::default();
        let batch = match self.mode(default_mode) {
            BatchMode::PerNode => self.batch_per_node.unwrap_or(defaults.batch),
            BatchMode::Global => self.batch.unwrap_or(defaults.batch),
        };
        TrainConfig {
            model: self.model,
            arith: self.arith,
            epochs: self.epochs,
            batch,
            sgd: SgdConfigRecord {
                learning_rate: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
            },
            seed: self.seed,
            limit: self.limit,
            threads: self.threads.unwrap_or(if single { defaults.threads } else { 1 }),
            resume: None,
        }
    }

    /// Loads `--resume` into `config`.
    pub fn load_resume(&self, config: &mut TrainConfig) -> Result<(), CliError> {
        let Some(path) = &self.resume else { return Ok(()) };
        if config.arith != ArithKind::Fixed {
            return Err(CliError::Unsupported("--resume works with fixed-point runs only".into()));
        }
        let resume = match config.model {
            ModelKind::Mxlenet => results::read_checkpoint::<kernels::MxLenet>(path, config.model)?,
            ModelKind::Lenet5 => results::read_checkpoint::<kernels::Lenet5>(path, config.model)?,
        };
        if resume.epoch >= config.epochs {
            return Err(CliError::Unsupported(format!(
                "the checkpoint is after epoch {} already; ask for more --epochs than that",
                resume.epoch
            )));
        }
        println!("resuming after epoch {} from {}", resume.epoch, path.display());
        config.resume = Some(resume);
        Ok(())
    }

    /// Cluster settings for `nodes` simulated nodes.
    pub fn cluster_config(
        &self,
        train: TrainConfig,
        nodes: u16,
        default_mode: BatchMode,
    ) -> Result<ClusterConfig, CliError> {
        let step_deadline = seconds("--step-deadline", self.step_deadline.unwrap_or(10.0))?;
        if let Some(k) = self.kill.filter(|k| k.node >= nodes) {
            return Err(CliError::Unsupported(format!(
                "--kill names node {} but there are {nodes} nodes",
                k.node
            )));
        }
        let faults = FaultConfig {
            drop_ppm: percent_to_ppm("drop", self.drop)?,
            duplicate_ppm: percent_to_ppm("duplicate", self.duplicate)?,
            reorder_ppm: percent_to_ppm("reorder", self.reorder)?,
            seed: self.seed,
        };
        Ok(ClusterConfig {
            faults,
            kill: self.kill,
            step_deadline,
            mode: self.mode(default_mode),
            sync_period: self.sync_period,
            layout: self.shard_layout.into(),
            ..ClusterConfig::new(train, nodes)
        })
    }

    /// Finds and loads MNIST.
    pub fn load_data(&self) -> Result<(PathBuf, Mnist), CliError> {
        let dir = mnist::locate(self.data.as_deref())?;
        let data = Mnist::load(&dir)?;
        Ok((dir, data))
    }

    /// Prints what is about to run.
    pub fn announce(&self, config: &TrainConfig, mode: BatchMode, placement: &str, dir: &Path, data: &Mnist) {
        let batch = match mode {
            BatchMode::PerNode => format!("{} per node", config.batch),
            BatchMode::Global => format!("{} global", config.batch),
        };
        println!(
            "training {:?} ({:?}) {placement} on {} images from {}: {} epochs, batch {batch}, lr {}, momentum {}, weight decay {}, seed {}",
            config.model,
            config.arith,
            config.limit.unwrap_or(data.train.len()).min(data.train.len()),
            dir.display(),
            config.epochs,
            config.sgd.learning_rate,
            config.sgd.momentum,
            config.sgd.weight_decay,
            config.seed,
        );
    }
}

/// Option `name`'s value as a duration: a positive, finite number of seconds.
fn seconds(name: &str, value: f64) -> Result<std::time::Duration, CliError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(CliError::Unsupported(format!(
            "{name} must be a positive number of seconds, got {value}"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

pub(crate) fn default_out(config: &TrainConfig) -> PathBuf {
    let model = format!("{:?}", config.model).to_lowercase();
    let arith = format!("{:?}", config.arith).to_lowercase();
    Path::new("runs").join(format!("{model}-{arith}-seed{}", config.seed))
}

/// Progress bar per epoch, one line per finished epoch, and a checkpoint file per epoch.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    /// Where checkpoints go, and the settings they record.
    checkpoints: Option<(PathBuf, TrainConfig)>,
    /// The first checkpoint that could not be written.
    error: Option<WriteError>,
}

impl Progress {
    pub(crate) fn new(quiet: bool, checkpoints: Option<(PathBuf, TrainConfig)>) -> Self {
        Progress { bar: None, quiet, checkpoints, error: None }
    }

    /// Reports a checkpoint that could not be written.
    pub(crate) fn finish(self) -> Result<(), WriteError> {
        self.error.map_or(Ok(()), Err)
    }
}

impl Observer for Progress {
    fn checkpoint(&mut self, epoch: u32, tensors: Vec<crate::trainer::Tensor>) {
        let Some((dir, config)) = &self.checkpoints else { return };
        let path = dir.join(format!("checkpoint-epoch-{epoch}.safetensors"));
        let written = std::fs::create_dir_all(dir)
            .map_err(|e| WriteError { path: path.clone(), message: e.to_string() });
        if let Err(e) = written.and_then(|()| results::write_checkpoint(&path, config, epoch, &tensors)) {
            self.error.get_or_insert(e);
        }
    }

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
        let traffic = if r.bytes_to_node + r.bytes_from_node > 0 {
            format!(
                "  per node: {:.1} MB in, {:.1} MB out",
                r.bytes_to_node as f64 / 1e6,
                r.bytes_from_node as f64 / 1e6
            )
        } else {
            String::new()
        };
        let missing = if r.missing_nodes.is_empty() {
            String::new()
        } else {
            format!("  missed shards of nodes {}", r.missing_nodes)
        };
        println!(
            "epoch {:>2}  {:>7.1} s  train loss {:.4}  train acc {:6.2}%  test loss {:.4}  test acc {:6.2}%  weights {}{traffic}{missing}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn kill_plans_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_kill("1@400"), Ok(KillPlan { node: 1, step: 400, revive: None }));
        assert_eq!(
            parse_kill("2@5+1.5"),
            Ok(KillPlan { node: 2, step: 5, revive: Some(Revive::After(Duration::from_millis(1500))) })
        );
        assert_eq!(parse_kill("0@3..9"), Ok(KillPlan { node: 0, step: 3, revive: Some(Revive::AtStep(9)) }));
        for bad in ["1", "x@3", "1@", "1@3+", "1@3+-1", "1@3+inf", "1@3..", "1@3..x"] {
            assert!(parse_kill(bad).unwrap_err().contains("is not NODE@STEP"), "{bad}");
        }
        assert!(parse_kill("1@9..9").unwrap_err().contains("after the one it dies at"));
    }
}
