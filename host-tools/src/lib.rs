//! `pitrain`: the host side of the Raspberry Pi 3 training cluster.
//!
//! - [`mnist`]: the IDX reader with full verification, and where the data set is found.
//! - [`fetch`]: `pitrain data fetch`, the verified download into a cache.
//! - [`trainer`]: the training loop over the host's cores.
//! - [`results`]: CSV, JSON and safetensors output.
//! - [`cluster`]: the UDP master and simulated nodes.
//! - [`cluster_file`]: the cluster file (cluster.toml).
//! - [`bridge`]: the user-space IPv4 gateway between QEMU nodes' `-netdev dgram` and the UDP master.
//! - [`qemu`]: building the firmware image and booting it in QEMU raspi3b.
//! - [`image`]: SD-card images.
//! - [`flash`]: writing images to cards, safely.
//! - [`shard`]: node blobs for the firmware.
//! - [`memmap`]: the firmware's static memory map.
//! - [`logs`]: decoding the firmware's defmt log.
//! - [`cli`]: the command line.

pub mod bridge;
pub mod cli;
pub mod cluster;
pub mod cluster_file;
pub mod experiment;
pub mod fetch;
pub mod flash;
pub mod image;
pub mod link_test;
pub mod logs;
pub mod memmap;
pub mod mnist;
pub mod qemu;
pub mod results;
pub mod shard;
pub mod trainer;
