//! The cluster's wire protocol and node state machine: `no_std`, no heap, shared by the Pi firmware and
//! `pitrain` (master and simulated nodes).
//!
//! - [`wire`]: zero-copy datagram parsing and emitting.
//! - [`blob`]: the node blob: a shard of MNIST and the node settings, loaded beside the firmware.
//! - [`auth`]: HMAC-SHA256 authentication under the cluster key, and replay windows.
//! - [`transfer`]: large tensors in chunks, with selective repeat.
//! - [`codec`]: the model and gradient encodings.
//! - [`schedule`]: which samples every step trains on.
//! - [`node`]: the node state machine.
//! - [`fault`]: a transport wrapper that injects faults.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod blob;
pub mod codec;
pub mod fault;
pub mod node;
pub mod schedule;
pub mod transfer;
pub mod wire;
