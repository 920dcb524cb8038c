//! The hardware-free half of the Pi 3 firmware's USB host stack: `no_std`, no heap, no `unsafe`,
//! tested on the host against mocks.
//!
//! On a Pi 3 the Ethernet chip hangs off the SoC's DWC2 USB host controller (3B: LAN9514 hub with an
//! SMSC95xx, 3B+: LAN7515 with a LAN78xx; QEMU's raspi3b: a CDC-ECM `usb-net` behind a hub), so
//! reaching smoltcp means a USB stack. Layers, bottom up:
//!
//! - [`setup`], [`descriptor`], [`hub`]: wire formats (SETUP packets, descriptors, port status),
//!   zero-copy views and `parse`/`emit` pairs in the style of smoltcp's `wire` module.
//! - [`host`]: the [`host::UsbHost`] trait every driver above is generic over, the
//!   [`host::TransferError`] enum, device/endpoint handles and data toggle bookkeeping.
//! - [`enumerate`]: addressing and configuring devices, powering and resetting hub ports, recursively.
//! - [`dwc2`]: the DWC2 controller driver's bookkeeping without MMIO (HCTSIZ sizing, HCINT decoding,
//!   channel allocation, per-device toggles, the split-transaction state machine).
//! - [`ethernet`]: the [`ethernet::EthernetClass`] trait and the CDC-ECM, SMSC95xx and LAN78xx class
//!   drivers with their framing as pure functions.
//!
//! What the firmware still has to provide:
//! - a DWC2 register driver implementing [`host::UsbHost`] (channels, DMA through the 0xC0000000 bus
//!   alias with cache maintenance, NAK handling that keeps a bulk IN armed, split transactions for
//!   full-speed devices behind a high-speed hub, data toggles via [`host::ToggleTable`], timeouts);
//! - the bring-up: power on, core reset, root port reset, then [`enumerate::Enumerator`];
//! - the MAC address for the SMSC/LAN78xx chips (mailbox tag 0x00010003), and a smoltcp
//!   `phy::Device` over [`ethernet::EthernetClass`].

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod descriptor;
pub mod dwc2;
pub mod enumerate;
pub mod ethernet;
pub mod host;
pub mod hub;
pub mod setup;

#[cfg(test)]
mod mock;

/// Reads a little-endian u16 at `at`; callers have checked the length.
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Reads a little-endian u32 at `at`; callers have checked the length.
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
