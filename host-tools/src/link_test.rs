//! `pitrain qemu link-test`: one QEMU raspi3b node, booting firmware built with the `link-test`
//! feature, behind the user-space [`bridge`](crate::bridge), answered by this process in the
//! master's place. It checks and measures the node's whole network path (DWC2, the hub QEMU
//! inserts, usb-net, smoltcp, the node's UDP socket): ping, UDP echo of every size, throughput each
//! way and, under `-icount`, the guest instructions it costs per byte.
//!
//! The node side is [`netstack::link_test`]; its control format is shared with this module.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netstack::link_test::{source_payload, Control, Counts, Reply, MAX_CONTROL, PREFIX};
use protocol::blob::{NetSettings, LOAD_ADDRESS};

use crate::bridge::{
    default_node_ip, Bridge, BridgeConfig, BridgeError, BridgeHandle, NodeLink, Shaping, DEFAULT_GATEWAY_IP,
    MAX_UDP_PAYLOAD,
};
use crate::cluster::qemu_nodes::{MASTER_PORT, NODE_PORT};
use crate::logs::LogTable;
use crate::mnist::{Mnist, Split};
use crate::qemu::{build_firmware, workspace_dir, Boot, FirmwareImage, QemuError, QemuRun};
use crate::shard::{node_blob, NodePlacement};
use crate::trainer::TrainConfig;

/// The cargo feature that makes a link-test firmware.
pub const FEATURE: &str = "link-test";

/// Errors of a link test.
#[derive(Debug, thiserror::Error)]
pub enum LinkTestError {
    /// The firmware could not be built or QEMU failed.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// The bridge could not start.
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    /// A local socket or file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The node did not answer in time.
    #[error("the node did not {what} within {after:?}; its log is in {log}")]
    Timeout {
        /// What it should have done.
        what: String,
        /// How long was waited.
        after: Duration,
        /// Where its log is.
        log: String,
    },
    /// The node answered something wrong.
    #[error("the node answered wrongly: {0}")]
    Wrong(String),
    /// Bad settings.
    #[error("{0}")]
    Settings(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> LinkTestError {
    move |source| LinkTestError::Io { what, source }
}

/// How the node is run.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// A link-test firmware (built with [`FEATURE`]); built when absent.
    pub firmware: Option<FirmwareImage>,
    /// Where the blob and the node's decoded log go.
    pub dir: PathBuf,
    /// `-icount shift=0,sleep=off`: the node's reports then count guest instructions exactly.
    pub icount: bool,
    /// Link shaping (both ways), or none.
    pub shaping: Option<Shaping>,
    /// How long the node may take to boot and say it is ready.
    pub boot_timeout: Duration,
    /// The node asks for its address by DHCP (the bridge answers) instead of taking it from its blob.
    pub dhcp: bool,
}

impl LinkOptions {
    /// Defaults: build the firmware, no icount, no shaping, two minutes to boot, static address.
    pub fn new(dir: PathBuf) -> LinkOptions {
        LinkOptions {
            firmware: None,
            dir,
            icount: false,
            shaping: None,
            boot_timeout: Duration::from_secs(120),
            dhcp: false,
        }
    }
}

/// Builds (or reuses) the link-test firmware in its own target folder.
pub fn link_test_firmware() -> Result<FirmwareImage, QemuError> {
    build_firmware(&workspace_dir().join("target").join("firmware-link-test"), &[FEATURE])
}

/// One datagram transfer's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transfer {
    /// Datagrams offered by the sender.
    pub offered: u64,
    /// Datagrams that arrived intact.
    pub delivered: u64,
    /// Payload bytes that arrived intact.
    pub bytes: u64,
    /// From the first datagram sent to the last one received.
    pub seconds: f64,
    /// What the node reported (its PMU count is guest instructions under `-icount`).
    pub node: Counts,
}

impl Transfer {
    /// Delivered payload megabytes (10^6 bytes) per second.
    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e6
    }

    /// Node instructions per delivered payload byte.
    pub fn instructions_per_byte(&self) -> f64 {
        self.node.instructions as f64 / self.bytes.max(1) as f64
    }

    /// Node instructions per delivered payload byte, leaving out those spent waiting for the USB
    /// controller: what the stack itself (driver, smoltcp, the test's loop) costs.
    pub fn working_instructions_per_byte(&self) -> f64 {
        self.node.instructions.saturating_sub(self.node.waiting) as f64 / self.bytes.max(1) as f64
    }

    /// Datagrams lost, in percent of those offered.
    pub fn loss_percent(&self) -> f64 {
        100.0 * (self.offered - self.delivered.min(self.offered)) as f64 / self.offered.max(1) as f64
    }
}

/// A running link-test node.
pub struct LinkNode {
    /// This process, in the master's place.
    socket: UdpSocket,
    /// The bridge's socket that stands for the node.
    node: SocketAddr,
    /// Where QEMU's netdev receives frames for the guest.
    qemu_frames: SocketAddr,
    bridge: Option<BridgeHandle>,
    stop: Arc<AtomicBool>,
    qemu: Option<JoinHandle<Result<QemuRun, QemuError>>>,
    log: Arc<Mutex<Vec<String>>>,
    log_path: PathBuf,
    /// Time from starting QEMU to the node's first "ready".
    pub boot_time: Duration,
}

/// Datagrams the throughput measurement sends before each report round trip: 47 KB of 1472-byte
/// datagrams, well inside the socket buffers on the way, so pacing, not loss, limits the rate.
pub const SINK_BURST: u64 = 32;
/// Control replies and echoes are waited for this long before the request is repeated.
const ANSWER_WAIT: Duration = Duration::from_millis(2000);
/// Requests are repeated this many times.
const TRIES: u32 = 4;

impl LinkNode {
    /// Builds what is missing, starts the bridge and QEMU, and waits for the node to be ready.
    pub fn start(options: &LinkOptions) -> Result<LinkNode, LinkTestError> {
        std::fs::create_dir_all(&options.dir).map_err(io("creating the output folder"))?;
        let firmware = match &options.firmware {
            Some(f) => f.clone(),
            None => link_test_firmware()?,
        };
        let table = LogTable::load(&firmware.elf).map_err(|e| LinkTestError::Settings(e.to_string()))?;
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(io("binding the master's socket"))?;
        let master = socket.local_addr().map_err(io("reading the master's address"))?;
        let qemu_port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(io("finding a free port"))?
            .port();
        let mut link = NodeLink::new(0, qemu_port).expect("node 0 has an address");
        link.shaping = options.shaping;
        let bridge = Bridge::new(BridgeConfig { nodes: vec![link], ..BridgeConfig::new(master) })?;
        let addrs = bridge.node(0).expect("configured");
        let bridge = bridge.spawn()?;

        // The blob only carries the network settings here: the link-test firmware never trains, so
        // its one-sample shard is a blank image.
        let blank = Split::new(vec![0; kernels::IMAGE_PIXELS], vec![0]);
        let data = Mnist { train: blank.clone(), test: blank };
        let net = NetSettings {
            static_address: !options.dhcp,
            mac: [0; 6],
            address: default_node_ip(0).expect("node 0 has an address").octets(),
            prefix: 24,
            gateway: [0; 4],
            master_address: DEFAULT_GATEWAY_IP.octets(),
            master_port: MASTER_PORT,
            node_port: NODE_PORT,
        };
        let placement = NodePlacement { net, ..NodePlacement::new(1, 0) };
        let blob = node_blob(&data, &TrainConfig { limit: Some(1), ..TrainConfig::default() }, &placement)
            .map_err(|e| LinkTestError::Settings(e.to_string()))?;
        let blob_path = options.dir.join("link-test.blob");
        std::fs::write(&blob_path, blob).map_err(io("writing the node blob"))?;

        let log_path = options.dir.join("link-test-node.log");
        let mut log_file = std::fs::File::create(&log_path).map_err(io("creating the node log"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let boot = Boot {
            load: vec![(blob_path, LOAD_ADDRESS as u64)],
            timeout: Duration::from_secs(24 * 3600),
            icount: options.icount,
            extra_args: vec![
                "-device".into(),
                "usb-net,netdev=n0,mac=52:54:00:50:00:00".into(),
                "-netdev".into(),
                addrs.netdev_arg("n0"),
            ],
            stop: Some(stop.clone()),
            ..Boot::new(&firmware.image)
        };
        let lines = log.clone();
        let started = Instant::now();
        let qemu = std::thread::spawn(move || {
            let mut stream = table.stream();
            boot.run(|bytes| {
                for line in stream.feed(bytes) {
                    let _ = writeln!(log_file, "{line}");
                    if let Ok(mut l) = lines.lock() {
                        l.push(line.to_string());
                    }
                }
            })
        });
        let mut node = LinkNode {
            socket,
            node: addrs.master_side_addr,
            qemu_frames: SocketAddr::from(([127, 0, 0, 1], qemu_port)),
            bridge: Some(bridge),
            stop,
            qemu: Some(qemu),
            log,
            log_path,
            boot_time: Duration::ZERO,
        };
        node.wait_ready(options.boot_timeout)?;
        node.boot_time = started.elapsed();
        Ok(node)
    }

    fn timeout(&self, what: impl Into<String>, after: Duration) -> LinkTestError {
        LinkTestError::Timeout { what: what.into(), after, log: self.log_path.display().to_string() }
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), LinkTestError> {
        let started = Instant::now();
        let mut buf = [0u8; 2048];
        while started.elapsed() < limit {
            if self.qemu.as_ref().is_some_and(|q| q.is_finished()) {
                return Err(LinkTestError::Wrong(format!(
                    "QEMU ended before the node was ready; its log is in {}",
                    self.log_path.display()
                )));
            }
            if let Some(n) = self.receive(&mut buf, Duration::from_millis(200))? {
                if Reply::parse(&buf[..n]) == Some(Reply::Ready) {
                    return Ok(());
                }
            }
        }
        Err(self.timeout("boot and say it is ready", limit))
    }

    /// One datagram from the node within `wait`.
    fn receive(&self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>, LinkTestError> {
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(io("socket timeout"))?;
        match self.socket.recv_from(buf) {
            Ok((n, from)) if from == self.node => Ok(Some(n)),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Ok(None)
            }
            Err(e) => Err(LinkTestError::Io { what: "receiving from the node", source: e }),
        }
    }

    fn send(&self, datagram: &[u8]) -> Result<(), LinkTestError> {
        self.socket.send_to(datagram, self.node).map_err(io("sending to the node"))?;
        Ok(())
    }

    /// Sends a control datagram and waits for its reply (repeating it if none comes).
    pub fn control(&self, control: Control) -> Result<Reply, LinkTestError> {
        let mut out = [0u8; MAX_CONTROL];
        let n = control.write(&mut out);
        let mut buf = [0u8; 2048];
        for _ in 0..TRIES {
            self.send(&out[..n])?;
            let sent = Instant::now();
            while sent.elapsed() < ANSWER_WAIT {
                let Some(got) = self.receive(&mut buf, ANSWER_WAIT - sent.elapsed())? else { continue };
                match Reply::parse(&buf[..got]) {
                    Some(Reply::Ready) | None => {}
                    Some(Reply::Refused) => return Err(LinkTestError::Wrong(format!("{control:?} refused"))),
                    Some(reply) if answers(control, reply) => return Ok(reply),
                    Some(_) => {}
                }
            }
        }
        Err(self.timeout(format!("answer {control:?}"), ANSWER_WAIT * TRIES))
    }

    /// Sends `payload` in echo mode and waits for it to come back; returns the round trip time.
    pub fn echo(&self, payload: &[u8]) -> Result<Duration, LinkTestError> {
        if payload.is_empty() || payload.len() > MAX_UDP_PAYLOAD || payload.starts_with(PREFIX) {
            return Err(LinkTestError::Settings(format!(
                "an echo payload must be 1 to {MAX_UDP_PAYLOAD} bytes of data, got {}",
                payload.len()
            )));
        }
        let mut buf = [0u8; 2048];
        for _ in 0..TRIES {
            self.send(payload)?;
            let sent = Instant::now();
            while sent.elapsed() < ANSWER_WAIT {
                let Some(n) = self.receive(&mut buf, ANSWER_WAIT - sent.elapsed())? else { continue };
                if &buf[..n] == payload {
                    return Ok(sent.elapsed());
                }
                if !buf[..n].starts_with(PREFIX) && n == payload.len() {
                    return Err(LinkTestError::Wrong(format!(
                        "a {n}-byte echo came back changed at byte {}",
                        buf[..n].iter().zip(payload).position(|(a, b)| a != b).unwrap_or(0)
                    )));
                }
            }
        }
        Err(self.timeout(format!("echo {} bytes", payload.len()), ANSWER_WAIT * TRIES))
    }

    /// Master to node: `count` datagrams of `size` bytes, counted by the node (sink mode). With a
    /// `burst`, each burst of that many datagrams is followed by a report round trip, which paces
    /// the sender to what the node takes in (throughput); without, they are sent as fast as this
    /// process can (a flood: what does not fit the queues on the way is lost).
    pub fn sink(&self, count: u64, size: usize, burst: Option<u64>) -> Result<Transfer, LinkTestError> {
        let size = size.clamp(1, MAX_UDP_PAYLOAD);
        self.control(Control::Sink)?;
        let mut payload = vec![0u8; size];
        let started = Instant::now();
        for seq in 0..count {
            source_payload(seq as u32, &mut payload);
            self.send(&payload)?;
            if burst.is_some_and(|b| (seq + 1) % b.max(1) == 0) {
                self.control(Control::Report)?;
            }
        }
        // Until the node's count stops growing.
        let mut last = None;
        let mut settled_at = started.elapsed();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let Reply::Report(counts) = self.control(Control::Report)? else { unreachable!("answers()") };
            if counts.datagrams >= count || last == Some(counts.datagrams) {
                if counts.datagrams >= count {
                    settled_at = started.elapsed();
                }
                self.control(Control::Echo)?;
                return Ok(Transfer {
                    offered: count,
                    delivered: counts.datagrams,
                    bytes: counts.bytes,
                    seconds: settled_at.as_secs_f64(),
                    node: counts,
                });
            }
            last = Some(counts.datagrams);
            settled_at = started.elapsed();
        }
    }

    /// Node to master: the node sends `count` datagrams of `size` bytes as fast as it can; this
    /// process checks each one's content.
    pub fn source(&self, count: u32, size: u16) -> Result<Transfer, LinkTestError> {
        let mut out = [0u8; MAX_CONTROL];
        let n = Control::Source { count, size }.write(&mut out);
        if n == 0 || Control::parse(&out[..n]).is_none() {
            return Err(LinkTestError::Settings(format!(
                "a source datagram must be 4 to 1472 bytes, got {size}"
            )));
        }
        let mut buf = [0u8; 2048];
        let mut expected = vec![0u8; size as usize];
        let mut seen = vec![false; count as usize];
        let (mut delivered, mut bytes) = (0u64, 0u64);
        self.send(&out[..n])?;
        let started = Instant::now();
        let mut last_data = started;
        let mut sent_reply = None;
        // The node's "sent" reply may overtake nothing: it leaves after the data, so once it is in,
        // a short wait collects stragglers (none are reordered on this path, but loss is possible).
        loop {
            let waited_for = if sent_reply.is_some() { Duration::from_millis(300) } else { ANSWER_WAIT * 5 };
            let Some(got) = self.receive(&mut buf, Duration::from_millis(100))? else {
                if last_data.elapsed() > waited_for {
                    break;
                }
                continue;
            };
            let d = &buf[..got];
            if d.starts_with(PREFIX) {
                if let Some(Reply::Sent(k)) = Reply::parse(d) {
                    sent_reply = Some(k);
                    last_data = Instant::now();
                }
                continue;
            }
            if got != size as usize || got < 4 {
                return Err(LinkTestError::Wrong(format!(
                    "a {got}-byte datagram while sourcing {size}-byte ones"
                )));
            }
            let seq = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            source_payload(seq, &mut expected);
            if seq >= count || d != &expected[..] {
                return Err(LinkTestError::Wrong(format!("sourced datagram {seq} arrived changed")));
            }
            if !std::mem::replace(&mut seen[seq as usize], true) {
                delivered += 1;
                bytes += got as u64;
            }
            last_data = Instant::now();
        }
        let seconds = last_data.saturating_duration_since(started).as_secs_f64();
        if sent_reply.is_none() && delivered == 0 {
            return Err(self.timeout("source datagrams", ANSWER_WAIT * 5));
        }
        let Reply::Report(node) = self.control(Control::Report)? else { unreachable!("answers()") };
        self.control(Control::Echo)?;
        Ok(Transfer { offered: u64::from(sent_reply.unwrap_or(count)), delivered, bytes, seconds, node })
    }

    /// Pings the node from the gateway address through the bridge; returns the round trip time.
    pub fn ping(&self, payload: &[u8], timeout: Duration) -> Result<Duration, LinkTestError> {
        Ok(self.bridge.as_ref().expect("running").ping(0, payload, timeout)?)
    }

    /// Sends raw Ethernet frames straight to the node's NIC (QEMU's netdev socket), around the
    /// bridge: for robustness tests with malformed or foreign frames.
    pub fn inject_frames<'f>(
        &self,
        frames: impl IntoIterator<Item = &'f [u8]>,
    ) -> Result<u64, LinkTestError> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(io("binding the injection socket"))?;
        let mut sent = 0;
        for frame in frames {
            socket.send_to(frame, self.qemu_frames).map_err(io("injecting a frame"))?;
            sent += 1;
        }
        Ok(sent)
    }

    /// The node's decoded log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Where the node's decoded log is written.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Tells the node to stop and waits for QEMU to end (at most `grace`, then it is killed).
    pub fn finish(mut self, grace: Duration) -> Result<QemuRun, LinkTestError> {
        let said_bye = self.control(Control::Stop);
        let deadline = Instant::now() + grace;
        let qemu = self.qemu.take().expect("running");
        while !qemu.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        let run = qemu.join().unwrap_or(Err(QemuError::Stopped(0)))?;
        said_bye?;
        Ok(run)
    }
}

/// Whether `reply` is the answer to `control`.
fn answers(control: Control, reply: Reply) -> bool {
    matches!(
        (control, reply),
        (Control::Echo | Control::Sink, Reply::Ok)
            | (Control::Source { .. }, Reply::Sent(_))
            | (Control::Report, Reply::Report(_))
            | (Control::Stop, Reply::Bye)
    )
}

impl Drop for LinkNode {
    /// No QEMU or bridge outlives the test, whatever happened.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(q) = self.qemu.take() {
            let _ = q.join();
        }
        if let Some(b) = self.bridge.take() {
            let _ = b.stop();
        }
    }
}

/// What `pitrain qemu link-test` measures.
#[derive(Clone, Debug)]
pub struct LinkReport {
    /// From starting QEMU to the node's first "ready" (USB, enumeration, address).
    pub boot: Duration,
    /// Ping round trips for 56- and 1472-byte payloads.
    pub ping: [Duration; 2],
    /// Echo sizes checked byte for byte (every size from 1 to 1472).
    pub echo_sizes: usize,
    /// Mean echo round trip over those sizes.
    pub echo_mean: Duration,
    /// Master to node.
    pub to_node: Transfer,
    /// Node to master.
    pub from_node: Transfer,
}

/// Runs the whole check on a started node: ping, echo of every size, then `count` datagrams of
/// `size` bytes each way.
pub fn measure(node: &LinkNode, count: u32, size: u16) -> Result<LinkReport, LinkTestError> {
    if !(netstack::link_test::SOURCE_SIZES).contains(&size) || count == 0 {
        return Err(LinkTestError::Settings(format!(
            "--size must be 4 to 1472 bytes and --count at least 1, got {size} and {count}"
        )));
    }
    let ping = [
        node.ping(&[0x5a; 56], Duration::from_secs(5))?,
        node.ping(&[0xa5; crate::bridge::MAX_PING_PAYLOAD], Duration::from_secs(5))?,
    ];
    let mut total = Duration::ZERO;
    for n in 1..=MAX_UDP_PAYLOAD {
        let payload: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8 | 1).collect();
        total += node.echo(&payload)?;
    }
    let to_node = node.sink(u64::from(count), usize::from(size), Some(SINK_BURST))?;
    let from_node = node.source(count, size)?;
    Ok(LinkReport {
        boot: node.boot_time,
        ping,
        echo_sizes: MAX_UDP_PAYLOAD,
        echo_mean: total / MAX_UDP_PAYLOAD as u32,
        to_node,
        from_node,
    })
}
