//! The control channel of a running master: `pitrain cluster status`, `stop` and `reboot` talk to
//! the `pitrain train` that is running on this machine.
//!
//! **Mechanism.** The master listens on Unix domain sockets (stream, one JSON request line and one
//! JSON answer line per connection):
//!
//! - `OUT/control.sock` in the run's output folder, always: each run has its own, so several masters
//!   (tests, a sweep next to a manual run) never fight over it;
//! - the well-known path [`default_socket_path`] (`$XDG_RUNTIME_DIR/pitrain/master.sock`, or
//!   `/tmp/pitrain-UID/master.sock` without `XDG_RUNTIME_DIR`) as well, unless another live master
//!   holds it, so that `pitrain cluster status` finds "the" master without options.
//!
//! `--control PATH` on either side picks another socket (the client also accepts a run folder).
//! A Unix socket, not TCP, because control must stay on this machine and the file system's
//! permissions decide who may stop a run (a socket folder the master creates is mode 0700).
//!
//! **Serving without disturbing training.** A thread accepts connections and answers status
//! requests from a [`Snapshot`] the master publishes behind a mutex (at most every 100 ms from its
//! receive loops, and at every step); stop and reboot requests are flags and a queue that the master
//! reads in those same loops. The master never waits for the control thread, and the control thread
//! holds the lock only to copy the snapshot.

use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The socket's file name in a run's output folder.
pub const SOCKET_FILE: &str = "control.sock";

/// How long a client waits for the master's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The well-known socket of the master on this machine: `$XDG_RUNTIME_DIR/pitrain/master.sock`, else
/// `/tmp/pitrain-UID/master.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("pitrain").join("master.sock"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => {
            std::env::temp_dir().join(format!("pitrain-{}", unsafe { libc::getuid() })).join("master.sock")
        }
    }
}

/// Why the control channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No master listens there.
    #[error(
        "no pitrain master is running at {}: start one with `pitrain train`, or give the run's socket \
         with --control (it is OUT/control.sock in the run's output folder)",
        path.display()
    )]
    NoMaster {
        /// The socket tried.
        path: PathBuf,
    },
    /// Another live master already serves this socket.
    #[error("another pitrain master is already listening at {}", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// A socket path longer than a Unix socket address can hold.
    #[error("{} is too long for a Unix socket ({} bytes, at most 107): give a shorter --control path", path.display(), path.as_os_str().len())]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// Socket trouble.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The master answered something this build does not understand.
    #[error("the master at {} answered something unexpected ({detail}); is it the same pitrain version?", path.display())]
    BadAnswer {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The master refused the request.
    #[error("the master refused: {0}")]
    Refused(String),
}

/// A request to the master.
// Externally tagged (serde's default): internally tagged enums buffer their fields, which breaks
// floats when serde_json's `arbitrary_precision` is on somewhere in the dependency graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// Every node's state.
    Status,
    /// Stop training at the end of the current step and write the results.
    Stop,
    /// Reboot one node, or all of them.
    Reboot {
        /// The node; `None`: every node.
        node: Option<u16>,
    },
}

/// The master's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// See [`Snapshot`].
    Status(Snapshot),
    /// The run will stop at the end of this step.
    Stopping {
        /// The step being computed.
        step: u32,
    },
    /// These nodes are told to reboot.
    Rebooting {
        /// Their ids.
        nodes: Vec<u16>,
    },
    /// The request could not be carried out.
    Error {
        /// Why.
        message: String,
    },
}

/// One node as the master sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node id.
    pub id: u16,
    /// `waiting` (never joined), `training`, `dropped` (silent past the deadline), `rebooting`
    /// (told to reboot, not back yet), `stopped`.
    pub state: String,
    /// Firmware version from its Hello (major.minor.patch).
    pub firmware: Option<String>,
    /// Its address as the master sees it (for QEMU nodes: the bridge's socket for that node).
    pub address: Option<String>,
    /// Its MAC address, when it has one.
    pub mac: Option<String>,
    /// Cores it computes on.
    pub cores: Option<u8>,
    /// Samples in its shard.
    pub shard_samples: Option<u32>,
    /// Fingerprint of its shard.
    pub shard_hash: Option<String>,
    /// Seconds since it booted (from its Hello's uptime plus the time since).
    pub uptime_s: Option<f64>,
    /// Seconds since the master last heard from it.
    pub last_heard_s: Option<f64>,
    /// Times it joined.
    pub joins: u64,
    /// Steps it contributed to.
    pub steps: u64,
}

/// The state of a run, as published by the master.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The model.
    pub model: String,
    /// Steps (synchronisations) per epoch.
    pub steps_per_epoch: u32,
    /// Epochs of the run.
    pub epochs: u32,
    /// The step being computed (counting from 0 over the run); `None` before the first.
    pub step: Option<u32>,
    /// Every node.
    pub nodes: Vec<NodeView>,
    /// When it was published (ages are brought up to date when answering).
    #[serde(skip)]
    pub taken: Option<Instant>,
}

/// What the master and the control thread share.
#[derive(Debug, Default)]
pub struct ControlShared {
    snapshot: Mutex<Snapshot>,
    stop: AtomicBool,
    reboots: Mutex<Vec<Option<u16>>>,
    /// Nodes in the run, to refuse a reboot of a node that does not exist.
    nodes: std::sync::atomic::AtomicU16,
}

impl ControlShared {
    /// Publishes the run's state.
    pub fn publish(&self, mut snapshot: Snapshot) {
        snapshot.taken = Some(Instant::now());
        self.nodes.store(snapshot.nodes.len() as u16, Ordering::Relaxed);
        if let Ok(mut s) = self.snapshot.lock() {
            *s = snapshot;
        }
    }

    /// True once a stop was asked for.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Asks the run to stop (what `pitrain cluster stop` does; also for tests).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Takes the reboot requests made since the last call (`None`: every node).
    pub fn take_reboots(&self) -> Vec<Option<u16>> {
        self.reboots.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    /// The last snapshot, its ages brought up to now.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(taken) = s.taken {
            let since = taken.elapsed().as_secs_f64();
            for n in &mut s.nodes {
                n.uptime_s = n.uptime_s.map(|u| u + since);
                n.last_heard_s = n.last_heard_s.map(|a| a + since);
            }
        }
        s
    }

    fn answer(&self, request: &Request) -> Answer {
        match request {
            Request::Status => Answer::Status(self.snapshot()),
            Request::Stop => {
                self.request_stop();
                Answer::Stopping { step: self.snapshot().step.unwrap_or(0) }
            }
            Request::Reboot { node } => {
                let count = self.nodes.load(Ordering::Relaxed);
                if count == 0 {
                    return Answer::Error { message: "the run has no nodes yet".into() };
                }
                if let Some(k) = node.filter(|&k| k >= count) {
                    return Answer::Error {
                        message: format!("there is no node {k}: the run has nodes 0 to {}", count - 1),
                    };
                }
                if let Ok(mut r) = self.reboots.lock() {
                    r.push(*node);
                }
                Answer::Rebooting { nodes: node.map_or_else(|| (0..count).collect(), |k| vec![k]) }
            }
        }
    }
}

/// The listening side: a thread answering on one or more sockets until dropped.
pub struct ControlServer {
    shared: Arc<ControlShared>,
    paths: Vec<PathBuf>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Listens on `path` (required: its failure is the error) and on each of `optional` (skipped with
    /// a note on standard error when taken by another live master or unusable).
    pub fn start(path: &Path, optional: &[PathBuf]) -> Result<ControlServer, ControlError> {
        let mut listeners = vec![bind(path)?];
        let mut paths = vec![path.to_path_buf()];
        for p in optional {
            match bind(p) {
                Ok(l) => {
                    listeners.push(l);
                    paths.push(p.clone());
                }
                Err(e) => eprintln!("note: {e}; reach this run with --control {}", path.display()),
            }
        }
        let shared = Arc::new(ControlShared::default());
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (shared.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("pitrain-control".into())
            .spawn(move || serve(&listeners, &s, &d))
            .map_err(|source| ControlError::Io { path: path.to_path_buf(), source })?;
        Ok(ControlServer { shared, paths, done, thread: Some(thread) })
    }

    /// What the master publishes into and reads requests from.
    pub fn shared(&self) -> Arc<ControlShared> {
        self.shared.clone()
    }

    /// The sockets it listens on.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl Drop for ControlServer {
    /// Stops answering and removes the sockets, so a later client hears "no master" at once.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds `path`, replacing a stale socket file that nobody listens on.
fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    // sun_path holds 108 bytes including the terminating zero.
    if path.as_os_str().len() > 107 {
        return Err(ControlError::PathTooLong { path: path.to_path_buf() });
    }
    let io = |source| ControlError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            // Who can reach the socket can stop the run: only this user.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse { path: path.to_path_buf() });
        }
        // Left behind by a master that was killed.
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

fn serve(listeners: &[UnixListener], shared: &ControlShared, done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        let mut idle = true;
        for l in listeners {
            if let Ok((stream, _)) = l.accept() {
                idle = false;
                // One short exchange; a client that misbehaves only loses its own answer.
                let _ = answer_one(stream, shared);
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn answer_one(stream: UnixStream, shared: &ControlShared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).take(64 * 1024).read_line(&mut line)?;
    let answer = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => shared.answer(&request),
        Err(e) => Answer::Error { message: format!("not a request: {e}") },
    };
    let mut text = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

/// The socket a client should use: `PATH` itself, `PATH/control.sock` when `PATH` is a run folder,
/// else the well-known socket.
pub fn resolve(path: Option<&Path>) -> PathBuf {
    match path {
        Some(p) if p.is_dir() => p.join(SOCKET_FILE),
        Some(p) => p.to_path_buf(),
        None => default_socket_path(),
    }
}

/// Sends one request to the master at `path` and returns its answer (an [`Answer::Error`] becomes
/// [`ControlError::Refused`]).
pub fn request(path: &Path, request: &Request) -> Result<Answer, ControlError> {
    let io = |source| ControlError::Io { path: path.to_path_buf(), source };
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            return Err(ControlError::NoMaster { path: path.to_path_buf() })
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    let mut text = serde_json::to_string(request).expect("requests serialise");
    text.push('\n');
    (&stream).write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(&stream).take(16 << 20).read_line(&mut line).map_err(io)?;
    if line.is_empty() {
        return Err(ControlError::BadAnswer { path: path.to_path_buf(), detail: "no answer".into() });
    }
    match serde_json::from_str::<Answer>(line.trim()) {
        Ok(Answer::Error { message }) => Err(ControlError::Refused(message)),
        Ok(answer) => Ok(answer),
        Err(e) => Err(ControlError::BadAnswer { path: path.to_path_buf(), detail: e.to_string() }),
    }
}

/// The status as a table, one node per line.
pub fn status_table(s: &Snapshot) -> String {
    let mut out = String::new();
    let step = match s.step {
        Some(step) if s.steps_per_epoch > 0 => format!(
            "step {step} (epoch {} of {}, step {} of {})",
            step / s.steps_per_epoch + 1,
            s.epochs,
            step % s.steps_per_epoch + 1,
            s.steps_per_epoch
        ),
        _ => "waiting for the nodes to join".into(),
    };
    out.push_str(&format!("{}, {} nodes: {step}\n", s.model, s.nodes.len()));
    let rows: Vec<[String; 11]> = s
        .nodes
        .iter()
        .map(|n| {
            let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            [
                n.id.to_string(),
                n.state.clone(),
                or(&n.firmware),
                or(&n.address),
                or(&n.mac),
                n.cores.map_or("-".into(), |c| c.to_string()),
                n.shard_samples.map_or("-".into(), |c| c.to_string()),
                or(&n.shard_hash),
                n.uptime_s.map_or("-".into(), duration),
                n.last_heard_s.map_or("-".into(), |a| format!("{a:.1} s ago")),
                format!("{}/{}", n.joins, n.steps),
            ]
        })
        .collect();
    let header = [
        "id",
        "state",
        "firmware",
        "address",
        "MAC",
        "cores",
        "samples",
        "shard hash",
        "uptime",
        "last heard",
        "joins/steps",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{c:<w$}  "));
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(header.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(|c| c.as_str()).collect()));
    }
    out
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A MAC address as text; `None` for all zero (no MAC).
pub fn mac_text(mac: [u8; 6]) -> Option<String> {
    (mac != [0; 6]).then(|| mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// A firmware version word (major, minor, patch one byte each) as text.
pub fn version_text(v: u32) -> String {
    format!("{}.{}.{}", v >> 16 & 0xff, v >> 8 & 0xff, v & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip_as_json() {
        for r in [
            Request::Status,
            Request::Stop,
            Request::Reboot { node: Some(1) },
            Request::Reboot { node: None },
        ] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&Request::Reboot { node: Some(1) }).unwrap(),
            r#"{"reboot":{"node":1}}"#
        );
        let a = Answer::Rebooting { nodes: vec![0, 1] };
        assert_eq!(serde_json::from_str::<Answer>(&serde_json::to_string(&a).unwrap()).unwrap(), a);
        let node = NodeView { uptime_s: Some(1.5), last_heard_s: Some(0.25), ..NodeView::default() };
        let a = Answer::Status(Snapshot { nodes: vec![node], step: Some(3), ..Snapshot::default() });
        assert_eq!(serde_json::from_str::<Answer>(&serde_json::to_string(&a).unwrap()).unwrap(), a);
    }

    #[test]
    fn a_server_answers_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        assert!(matches!(request(&path, &Request::Status), Err(ControlError::NoMaster { .. })));
        let server = ControlServer::start(&path, &[]).unwrap();
        assert!(matches!(ControlServer::start(&path, &[]), Err(ControlError::InUse { .. })));
        let shared = server.shared();
        shared.publish(Snapshot {
            model: "Lenet5".into(),
            nodes: vec![NodeView { id: 0, state: "training".into(), ..NodeView::default() }; 2],
            ..Snapshot::default()
        });
        let Answer::Status(s) = request(&path, &Request::Status).unwrap() else { panic!("status") };
        assert_eq!(s.nodes.len(), 2);
        assert!(matches!(
            request(&path, &Request::Reboot { node: Some(2) }),
            Err(ControlError::Refused(m)) if m.contains("no node 2")
        ));
        assert_eq!(
            request(&path, &Request::Reboot { node: Some(1) }).unwrap(),
            Answer::Rebooting { nodes: vec![1] }
        );
        assert_eq!(shared.take_reboots(), vec![Some(1)]);
        assert!(!shared.stop_requested());
        request(&path, &Request::Stop).unwrap();
        assert!(shared.stop_requested());
        // Garbage is answered with an error, and the server goes on.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        BufReader::new(&raw).read_line(&mut line).unwrap();
        assert!(line.contains("not a request"), "{line}");
        drop(server);
        assert!(!path.exists());
        assert!(matches!(request(&path, &Request::Status), Err(ControlError::NoMaster { .. })));
        // A stale socket file (a killed master) is replaced.
        let stale = UnixListener::bind(&path).unwrap();
        drop(stale);
        let _again = ControlServer::start(&path, &[]).unwrap();
    }
}
