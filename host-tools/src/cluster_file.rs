//! The cluster file (`cluster.toml`): the nodes, the master's address, the model and training
//! settings, and the cluster key. `pitrain cluster init` writes a commented one; `pitrain image`
//! turns it into one SD-card image per node.
//!
//! Every value is checked when the file is read, and an error names the file, the line and the
//! field (TOML's own errors carry the position; cross-field checks use the field's span).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use protocol::blob::NetSettings;
use protocol::wire::{BatchMode, ShardLayout};
use serde::Deserialize;
use toml::Spanned;

use crate::shard::NodePlacement;
use crate::trainer::{ArithKind, ModelKind, SgdConfigRecord, TrainConfig};

/// The default UDP port of the master.
pub const DEFAULT_MASTER_PORT: u16 = 7700;
/// The default UDP port of the nodes.
pub const DEFAULT_NODE_PORT: u16 = 7701;

/// Why a cluster file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    /// It could not be read.
    #[error("cannot read the cluster file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid: the message names the line and the field.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// `cluster init` would overwrite a file.
    #[error("{0} exists; remove it or choose another --out")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A 32-byte key written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl<'de> Deserialize<'de> for ClusterKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("the key must be 64 hex digits (32 random bytes)");
        if text.len() != 64 {
            return Err(bad());
        }
        let mut key = [0; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ClusterKey(key))
    }
}

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad =
            || serde::de::Error::custom(format!("'{text}' is not a MAC address like 02:00:00:00:00:01"));
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if mac[0] & 1 != 0 {
            return Err(serde::de::Error::custom(format!(
                "{text} is a multicast address; a node needs a unicast MAC"
            )));
        }
        Ok(Mac(mac))
    }
}

/// An IPv4 address with its prefix length, `192.168.1.20/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub address: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!("'{text}' is not an address with a prefix like 192.168.1.20/24"))
        };
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix == 0 || prefix > 30 {
            return Err(bad());
        }
        Ok(Ipv4Cidr { address, prefix })
    }
}

/// How each step's batch is formed, as written in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeName {
    /// One global batch of `batch` per step, split by where its samples live: exactly one-process
    /// training whatever the node count.
    #[default]
    Global,
    /// Every node takes `batch` of its own samples per step (MXNet dist_sync).
    PerNode,
}

/// The shard layout, as written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutName {
    /// Node k holds the k-th contiguous part.
    Contiguous,
    /// Node k holds every n-th sample from k.
    Strided,
}

/// `[master]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSection {
    /// Its IPv4 address on the boards' network.
    pub address: Ipv4Addr,
    /// Its UDP port.
    #[serde(default = "default_master_port")]
    pub port: u16,
}

fn default_master_port() -> u16 {
    DEFAULT_MASTER_PORT
}
fn default_node_port() -> u16 {
    DEFAULT_NODE_PORT
}
fn default_cores() -> u8 {
    4
}

/// `[training]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Network.
    pub model: ModelKind,
    /// Epochs.
    pub epochs: u32,
    /// Samples per step (in all, or per node with `mode = "per-node"`).
    pub batch: usize,
    /// How each step's batch is formed.
    #[serde(default)]
    pub mode: ModeName,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Seed.
    pub seed: u64,
    /// How the training set is divided between nodes.
    pub layout: LayoutName,
    /// Train on the first N training images only.
    pub limit: Option<usize>,
    /// Cores per node.
    #[serde(default = "default_cores")]
    pub cores: u8,
}

/// One `[[node]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Node id, 0 to n-1.
    pub id: Spanned<u16>,
    /// MAC address (default: the board's own).
    pub mac: Option<Mac>,
    /// Static address (default: DHCP).
    pub address: Option<Ipv4Cidr>,
    /// Gateway, with a static address.
    pub gateway: Option<Ipv4Addr>,
    /// UDP port the node listens on.
    #[serde(default = "default_node_port")]
    pub port: u16,
}

/// A whole cluster file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// A name for the cluster.
    pub name: String,
    /// The cluster key.
    pub key: ClusterKey,
    /// The master.
    pub master: MasterSection,
    /// What to train.
    pub training: TrainingSection,
    /// The nodes.
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeSection>,
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl ClusterFile {
    /// Reads and checks a cluster file.
    pub fn read(path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ClusterFileError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|message| ClusterFileError::Invalid { path: path.to_path_buf(), message })
    }

    /// Parses and checks the text of a cluster file; the error names the line and the field.
    pub fn parse(text: &str) -> Result<ClusterFile, String> {
        let file: ClusterFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| format!("line {}: ", line_of(text, s.start))).unwrap_or_default();
            format!("{line}{}", e.message())
        })?;
        let at = |span: std::ops::Range<usize>| format!("line {}", line_of(text, span.start));
        let n = file.nodes.len();
        if n == 0 {
            return Err("there is no [[node]]: a cluster needs at least one".into());
        }
        for node in &file.nodes {
            let id = *node.id.get_ref();
            if id as usize >= n {
                return Err(format!(
                    "{}: node id {id} is out of range: with {n} nodes the ids are 0 to {}",
                    at(node.id.span()),
                    n - 1
                ));
            }
            if let Some(first) = file.nodes.iter().find(|other| *other.id.get_ref() == id) {
                if first.id.span() != node.id.span() {
                    return Err(format!(
                        "{}: node id {id} is given twice (first at {})",
                        at(node.id.span()),
                        at(first.id.span())
                    ));
                }
            }
            if node.gateway.is_some() && node.address.is_none() {
                return Err(format!("{}: node {id} has a gateway but no static address", at(node.id.span())));
            }
        }
        let t = &file.training;
        if !(1..=4).contains(&t.cores) {
            return Err(format!("[training] cores must be 1 to 4, got {}", t.cores));
        }
        file.train_config().validate().map_err(|e| format!("[training]: {e}"))?;
        Ok(file)
    }

    /// The training settings as a [`TrainConfig`].
    pub fn train_config(&self) -> TrainConfig {
        let t = &self.training;
        TrainConfig {
            model: t.model,
            arith: ArithKind::Fixed,
            epochs: t.epochs,
            batch: t.batch,
            sgd: SgdConfigRecord { learning_rate: t.lr, momentum: t.momentum, weight_decay: t.weight_decay },
            seed: t.seed,
            limit: t.limit,
            ..TrainConfig::default()
        }
    }

    /// Node `id`'s placement: its shard, cores, network settings and the key.
    pub fn placement(&self, id: u16) -> Option<NodePlacement> {
        let node = self.nodes.iter().find(|n| *n.id.get_ref() == id)?;
        let net = NetSettings {
            static_address: node.address.is_some(),
            mac: node.mac.map_or([0; 6], |m| m.0),
            address: node.address.map_or([0; 4], |a| a.address.octets()),
            prefix: node.address.map_or(0, |a| a.prefix),
            gateway: node.gateway.map_or([0; 4], |g| g.octets()),
            master_address: self.master.address.octets(),
            master_port: self.master.port,
            node_port: node.port,
        };
        Some(NodePlacement {
            nodes: self.nodes.len() as u16,
            node: id,
            layout: self.layout(),
            cores: self.training.cores,
            net,
            cluster_key: self.key.0,
        })
    }

    /// The batch mode.
    pub fn batch_mode(&self) -> BatchMode {
        match self.training.mode {
            ModeName::Global => BatchMode::Global,
            ModeName::PerNode => BatchMode::PerNode,
        }
    }

    /// The shard layout.
    pub fn layout(&self) -> ShardLayout {
        match self.training.layout {
            LayoutName::Contiguous => ShardLayout::Contiguous,
            LayoutName::Strided => ShardLayout::Strided,
        }
    }

    /// Node ids in order.
    pub fn node_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.nodes.iter().map(|n| *n.id.get_ref()).collect();
        ids.sort_unstable();
        ids
    }
}

/// The text `pitrain cluster init` writes: every setting, commented, with a fresh random key.
pub fn template(name: &str, nodes: u16, master: Ipv4Addr, key: [u8; 32]) -> String {
    let defaults = TrainConfig::default();
    let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = format!(
        r#"# pitrain cluster file. `pitrain image --all --cluster THIS_FILE --firmware-dir DIR --out images/`
# makes one SD-card image per node, and `pitrain flash --cluster THIS_FILE --images images/ --device
# /dev/sdX` writes them card by card.

# A name for the cluster (for your records).
name = "{name}"

# The cluster key: every datagram carries an HMAC-SHA256 under it, and nodes drop anything else.
# Generated at random by `pitrain cluster init`. Keep it secret: the SD-card images hold it too.
key = "{key}"

[master]
# The master's IPv4 address on the boards' network, and its UDP port.
address = "{master}"
port = {DEFAULT_MASTER_PORT}

[training]
# "mxlenet" (the 2017 study's MXNet LeNet) or "lenet5".
model = "mxlenet"
epochs = {epochs}
# Samples per step: "global" takes one batch of `batch` per step, split by where its samples live
# (exactly one-process training, whatever the node count); "per-node" has every node take `batch`
# of its own samples per step (MXNet dist_sync, the 2017 study's setting).
mode = "global"
batch = {batch}
lr = {lr}
momentum = {momentum}
weight_decay = {wd}
# Seed of the initial weights and of every epoch's sample order.
seed = {seed}
# How the 60,000 training images are divided: "contiguous" (node k holds the k-th part) or
# "strided" (node k holds every n-th image from k).
layout = "contiguous"
# Train on the first N training images only.
# limit = 6000
# Cores per node (1 to 4).
cores = 4
"#,
        epochs = defaults.epochs,
        batch = defaults.batch,
        lr = defaults.sgd.learning_rate,
        momentum = defaults.sgd.momentum,
        wd = defaults.sgd.weight_decay,
        seed = defaults.seed,
    );
    for id in 0..nodes {
        text.push_str(&format!(
            r#"
[[node]]
id = {id}
# mac = "02:00:00:00:00:{mac:02x}"      # default: the board's own MAC
# address = "192.168.1.{host}/24"      # default: DHCP
# gateway = "192.168.1.1"              # with a static address
# port = {DEFAULT_NODE_PORT}
"#,
            mac = id + 1,
            host = 100 + id as u32,
        ));
    }
    text
}

/// Writes a new cluster file with a random key; refuses to overwrite one.
pub fn init(path: &Path, name: &str, nodes: u16, master: Ipv4Addr) -> Result<(), ClusterFileError> {
    use rand::RngCore;
    if path.exists() {
        return Err(ClusterFileError::Exists(path.to_path_buf()));
    }
    let mut key = [0; 32];
    rand::rng().fill_bytes(&mut key);
    let text = template(name, nodes, master, key);
    debug_assert!(ClusterFile::parse(&text).is_ok());
    std::fs::write(path, text).map_err(|source| ClusterFileError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        template("test", 3, Ipv4Addr::new(192, 168, 1, 10), [7; 32])
    }

    #[test]
    fn the_template_reads_back() {
        let file = ClusterFile::parse(&sample()).unwrap();
        assert_eq!(file.node_ids(), [0, 1, 2]);
        assert_eq!(file.key.0, [7; 32]);
        let p = file.placement(2).unwrap();
        assert_eq!((p.nodes, p.node, p.cores), (3, 2, 4));
        assert_eq!(p.net.master_address, [192, 168, 1, 10]);
        assert!(!p.net.static_address);
        assert_eq!(file.train_config().batch, 64);
    }

    #[test]
    fn node_settings_are_read() {
        let text = sample().replacen(
            "# mac = \"02:00:00:00:00:02\"",
            "mac = \"02:00:00:00:00:02\"\naddress = \"10.0.0.5/24\"\ngateway = \"10.0.0.1\"",
            1,
        );
        let p = ClusterFile::parse(&text).unwrap().placement(1).unwrap();
        assert_eq!(p.net.mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!((p.net.address, p.net.prefix, p.net.gateway), ([10, 0, 0, 5], 24, [10, 0, 0, 1]));
        assert!(p.net.static_address);
    }

    /// Each error names the line of the offending field and the field.
    #[test]
    fn bad_files_name_the_line_and_the_field() {
        let good = sample();
        let line_with = |needle: &str| good.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
        let cases = [
            (good.replacen("epochs = 10", "epochs = \"ten\"", 1), line_with("epochs"), "invalid type"),
            (good.replacen("model = \"mxlenet\"", "model = \"resnet\"", 1), line_with("model ="), "resnet"),
            (good.replacen("key = \"", "key = \"zz", 1), line_with("key ="), "64 hex digits"),
            (
                good.replacen("address = \"192.168.1.10\"", "address = \"192.168.1\"", 1),
                line_with("address = \"192"),
                "address",
            ),
            (
                good.replacen("# mac = \"02:00:00:00:00:01\"", "mac = \"01:00:00:00:00:01\"", 1),
                line_with("# mac = \"02:00:00:00:00:01\""),
                "multicast",
            ),
            (
                good.replacen("# address = \"192.168.1.101/24\"", "address = \"192.168.1.101\"", 1),
                line_with("# address = \"192.168.1.101/24\""),
                "prefix",
            ),
            (good.replacen("id = 2", "id = 1", 1), line_with("id = 2"), "given twice"),
            (good.replacen("id = 2", "id = 7", 1), line_with("id = 2"), "out of range"),
            (
                good.replacen("seed = 1", "seed = 1\ncolour = 3", 1),
                line_with("seed") + 1,
                "unknown field `colour`",
            ),
        ];
        for (text, line, needle) in cases {
            let err = ClusterFile::parse(&text).unwrap_err();
            assert!(err.starts_with(&format!("line {line}: ")), "expected line {line}: {err}");
            assert!(err.contains(needle), "expected {needle:?}: {err}");
        }
        let no_nodes = good[..good.find("[[node]]").unwrap()].to_string();
        assert!(ClusterFile::parse(&no_nodes).unwrap_err().contains("no [[node]]"));
        let zero_batch = good.replacen("batch = 64", "batch = 0", 1);
        assert!(ClusterFile::parse(&zero_batch).unwrap_err().contains("--batch must be at least 1"));
    }
}
