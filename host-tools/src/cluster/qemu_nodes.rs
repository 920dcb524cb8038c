//! QEMU raspi3b nodes for a cluster run (`pitrain train --qemu N`): the real firmware, one QEMU per
//! node, each with its node blob and a USB NIC whose frames reach the master through the user-space
//! [`bridge`](crate::bridge) on 127.0.0.1. Each node's decoded defmt log goes to `node-K.log`.
//! Every QEMU started here is stopped when the run ends, fails, or is interrupted.
//!
//! Faults: a [`KillPlan`] kills a node's QEMU process (SIGKILL, like pulling a board's power) when
//! the master *begins* the step after the plan's step (that is what the host can observe: the
//! master's progress; the node has then computed the plan's step if it was alive), and boots a new
//! QEMU with the same kernel and blob when the revival is due (seconds after the kill, or when the
//! master begins the revival step). The master drops the silent node after its step deadline and
//! the new boot joins again. A watchdog reboot (`pitrain cluster reboot`) instead restarts the
//! guest inside the same QEMU process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::blob::{NetSettings, LOAD_ADDRESS};

use super::{ClusterConfig, ClusterError, KillPlan, MasterProgress, Revive};
use crate::bridge::{default_node_ip, Bridge, BridgeConfig, BridgeHandle, NodeCounters, NodeLink, Shaping};
use crate::logs::LogTable;
use crate::mnist::Mnist;
use crate::qemu::{build_firmware, workspace_dir, Boot, FirmwareImage, QemuError, QemuRun};
use crate::shard::{node_blob, NodePlacement};

/// The master's UDP port on the nodes' virtual LAN (the bridge forwards it to the real one).
pub const MASTER_PORT: u16 = 7700;
/// The nodes' UDP port.
pub const NODE_PORT: u16 = 7701;

/// Stop flags of every QEMU cluster running in this process, for Ctrl-C.
static RUNNING: std::sync::Mutex<Vec<Arc<AtomicBool>>> = std::sync::Mutex::new(Vec::new());

/// Ctrl-C during a QEMU cluster run: stops every QEMU (their threads kill them within 20 ms), waits
/// for that, says so and exits with status 130.
pub fn interrupt() -> ! {
    let flags = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
    for flag in &flags {
        flag.store(true, Ordering::Relaxed);
    }
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("interrupted: stopped the QEMU nodes; the run's results were not written");
    std::process::exit(130)
}

/// How the QEMU nodes run.
#[derive(Clone, Debug, Default)]
pub struct QemuOptions {
    /// A prebuilt firmware (ELF and kernel8.img); built when absent.
    pub firmware: Option<FirmwareImage>,
    /// Where the nodes' logs and blobs go.
    pub dir: PathBuf,
    /// Deterministic guests: `-icount shift=0,sleep=off` (instruction counts, slower).
    pub icount: bool,
    /// Link shaping per node, both directions.
    pub shaping: Option<Shaping>,
    /// Cores per node (1 to 4).
    pub cores: u8,
}

/// The running QEMU nodes and their bridge.
pub struct QemuNodes {
    /// The run is over: every QEMU stops.
    stop: Arc<AtomicBool>,
    /// Each node's own stop (the kill plan's, or the end of the run).
    node_stops: Vec<Arc<AtomicBool>>,
    /// The run is ending: a killed node is not revived any more.
    no_revival: Arc<AtomicBool>,
    killer: Option<JoinHandle<()>>,
    threads: Vec<JoinHandle<Result<QemuRun, QemuError>>>,
    bridge: Option<BridgeHandle>,
    /// The log files.
    pub logs: Vec<PathBuf>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unsupported(format!("QEMU nodes: {what}: {e}"))
}

impl QemuNodes {
    /// Writes the blobs, starts the bridge and boots one QEMU per node.
    pub fn launch(
        config: &ClusterConfig,
        options: &QemuOptions,
        data: &Mnist,
        key: [u8; 32],
        master: SocketAddr,
        progress: &MasterProgress,
    ) -> Result<QemuNodes, ClusterError> {
        std::fs::create_dir_all(&options.dir).map_err(|e| failed("creating the log folder", e))?;
        let firmware = match &options.firmware {
            Some(f) => f.clone(),
            None => build_firmware(&workspace_dir().join("target"), &[])
                .map_err(|e| failed("building the firmware", e))?,
        };
        let table = Arc::new(
            LogTable::load(&firmware.elf).map_err(|e| failed("reading the firmware's defmt table", e))?,
        );
        let mut links = Vec::new();
        let mut blobs = Vec::new();
        for id in 0..config.nodes {
            let ip = default_node_ip(id)
                .ok_or_else(|| failed("addresses", format!("no address for node {id}")))?;
            let net = NetSettings {
                static_address: true,
                mac: [0; 6],
                address: ip.octets(),
                prefix: 24,
                gateway: [0; 4],
                master_address: crate::bridge::DEFAULT_GATEWAY_IP.octets(),
                master_port: MASTER_PORT,
                node_port: NODE_PORT,
            };
            let placement = NodePlacement {
                layout: config.layout,
                cores: options.cores,
                net,
                cluster_key: key,
                ..NodePlacement::new(config.nodes, id)
            };
            let blob =
                node_blob(data, &config.train, &placement).map_err(|e| failed("making a node blob", e))?;
            let path = options.dir.join(format!("node-{id}.blob"));
            std::fs::write(&path, blob).map_err(|e| failed("writing a node blob", e))?;
            blobs.push(path);
            let qemu_port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map_err(|e| failed("finding a free port", e))?
                .port();
            let mut link = NodeLink::new(id, qemu_port).expect("every node id below 245 has an address");
            link.shaping = options.shaping;
            links.push(link);
        }
        let bridge_config = BridgeConfig { nodes: links, ..BridgeConfig::new(master) };
        let bridge = Bridge::new(bridge_config).map_err(|e| failed("starting the bridge", e))?;
        let addrs: Vec<_> = (0..config.nodes).map(|id| bridge.node(id).expect("configured")).collect();
        let bridge = bridge.spawn().map_err(|e| failed("starting the bridge", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let no_revival = Arc::new(AtomicBool::new(false));
        let node_stops: Vec<_> = (0..config.nodes).map(|_| Arc::new(AtomicBool::new(false))).collect();
        // Killed by the kill plan and not yet due for revival.
        let killed: Vec<_> = (0..config.nodes).map(|_| Arc::new(AtomicBool::new(false))).collect();
        if let Ok(mut running) = RUNNING.lock() {
            running.push(stop.clone());
            running.extend(node_stops.iter().cloned());
        }
        let mut threads = Vec::new();
        let mut logs = Vec::new();
        for (id, (blob, addr)) in blobs.into_iter().zip(addrs).enumerate() {
            let log_path = options.dir.join(format!("node-{id}.log"));
            std::fs::File::create(&log_path).map_err(|e| failed("creating a node log", e))?;
            // Appending: the kill plan's notes go into the same file from another thread.
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&log_path)
                .map_err(|e| failed("opening a node log", e))?;
            logs.push(log_path);
            let node_stop = node_stops[id].clone();
            let boot = Boot {
                load: vec![(blob, LOAD_ADDRESS as u64)],
                timeout: Duration::from_secs(7 * 24 * 3600),
                icount: options.icount,
                extra_args: vec![
                    "-device".into(),
                    format!("usb-net,netdev=n0,mac=52:54:00:50:{:02x}:{:02x}", id >> 8, id & 0xff),
                    "-netdev".into(),
                    addr.netdev_arg("n0"),
                ],
                stop: Some(node_stop.clone()),
                // `pitrain cluster reboot`: the firmware resets through the watchdog and the
                // guest boots again, like a board.
                reboot: true,
                ..Boot::new(&firmware.image)
            };
            let table = table.clone();
            let (stop, no_revival, killed) = (stop.clone(), no_revival.clone(), killed[id].clone());
            threads.push(std::thread::spawn(move || loop {
                // A fresh decoder per boot: a kill can cut a log frame in half.
                let mut stream = table.stream();
                let run = boot.run(|bytes| {
                    for line in stream.feed(bytes) {
                        let _ = writeln!(log, "node {id} | {line}");
                    }
                });
                if !killed.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                    return run;
                }
                // Killed by the kill plan: wait for the revival (the killer clears `killed`).
                while killed.load(Ordering::SeqCst) {
                    if stop.load(Ordering::SeqCst) || no_revival.load(Ordering::SeqCst) {
                        return run;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                node_stop.store(false, Ordering::SeqCst);
                let _ = writeln!(log, "node {id} | pitrain: booting a new QEMU (kill plan revival)");
            }));
        }
        let killer = config.kill.filter(|k| k.node < config.nodes).map(|plan| {
            let (progress, no_revival) = (progress.clone(), no_revival.clone());
            let (node_stop, killed) =
                (node_stops[plan.node as usize].clone(), killed[plan.node as usize].clone());
            let log = logs[plan.node as usize].clone();
            std::thread::spawn(move || {
                kill_and_revive(plan, &progress, &node_stop, &killed, &no_revival, &log)
            })
        });
        Ok(QemuNodes { stop, node_stops, no_revival, killer, threads, bridge: Some(bridge), logs })
    }

    /// Each node's traffic as the bridge counted it.
    pub fn counters(&self) -> Vec<(u16, NodeCounters)> {
        self.bridge.as_ref().map(|b| b.all_counters()).unwrap_or_default()
    }

    /// Waits up to `grace` for the nodes to end by themselves (after the master's stop), then stops
    /// every QEMU still running and the bridge. Returns each node's run.
    pub fn shutdown(mut self, grace: Duration) -> Vec<Result<QemuRun, QemuError>> {
        // A node still dead by the kill plan has nothing to end by itself.
        self.no_revival.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.threads.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop_all();
        let runs = self.threads.drain(..).map(|t| t.join().unwrap_or(Err(QemuError::Stopped(0)))).collect();
        if let Some(bridge) = self.bridge.take() {
            let _ = bridge.stop();
        }
        runs
    }
}

impl QemuNodes {
    fn stop_all(&mut self) {
        self.no_revival.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.node_stops {
            s.store(true, Ordering::SeqCst);
        }
        if let Some(k) = self.killer.take() {
            let _ = k.join();
        }
    }
}

impl Drop for QemuNodes {
    /// Failure paths and panics: no QEMU outlives the run.
    fn drop(&mut self) {
        self.stop_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Carries out `plan`: kills the node's QEMU once the master has begun the step after
/// `plan.step`, and lets its thread boot a new one when the revival is due.
fn kill_and_revive(
    plan: KillPlan,
    progress: &MasterProgress,
    node_stop: &AtomicBool,
    killed: &AtomicBool,
    no_revival: &AtomicBool,
    log: &std::path::Path,
) {
    let note = |text: String| {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
            let _ = writeln!(f, "node {} | pitrain: {text}", plan.node);
        }
    };
    while progress.step() <= plan.step {
        if no_revival.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.store(true, Ordering::SeqCst);
    node_stop.store(true, Ordering::SeqCst);
    let died = Instant::now();
    note(format!("killed this QEMU (kill plan) as the master began step {}", progress.step()));
    let Some(revive) = plan.revive else { return };
    loop {
        if no_revival.load(Ordering::SeqCst) {
            return;
        }
        let due = match revive {
            Revive::After(pause) => died.elapsed() >= pause,
            Revive::AtStep(step) => progress.step() >= step,
        };
        if due {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.store(false, Ordering::SeqCst);
}
