//! The nodes' network stack: smoltcp over a USB Ethernet adapter, and the UDP [`Transport`] the
//! protocol's node state machine talks through. `no_std`, no heap, no `unsafe`; tested on the host by
//! wiring two stacks together with in-memory frame queues.
//!
//! - [`phy`]: [`phy::EthernetDevice`], a smoltcp `phy::Device` over any
//!   [`usb::ethernet::EthernetClass`] (CDC-ECM in QEMU, SMSC95xx on a 3B, LAN78xx on a 3B+).
//! - [`node`]: [`node::NodeNet`], the interface (ARP, ICMP echo so boards answer ping, UDP, DHCP or a
//!   static address from the node blob) with its sockets in caller-provided static storage.
//! - [`link_test`]: the UDP echo / sink / source responder a link-test firmware runs instead of
//!   training, and its control format, shared with `pitrain qemu link-test`.
//!
//! [`Transport`]: protocol::node::Transport

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod link_test;
pub mod node;
pub mod phy;
