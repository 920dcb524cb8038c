//! A smoltcp `phy::Device` over a USB Ethernet class driver.

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use usb::ethernet::EthernetClass;

/// The largest frame: 1500 bytes of payload and the 14-byte Ethernet header (no FCS, no VLAN).
pub const MAX_FRAME: usize = 1514;

/// An Ethernet adapter seen by smoltcp: one frame buffer each way, no heap.
pub struct EthernetDevice<E: EthernetClass> {
    adapter: E,
    /// Room for the largest frame a driver delivers (a VLAN tag included), so none is cut.
    rx: [u8; usb::ethernet::MAX_FRAME],
    tx: [u8; MAX_FRAME],
}

impl<E: EthernetClass> EthernetDevice<E> {
    /// Wraps an opened adapter.
    pub fn new(adapter: E) -> Self {
        EthernetDevice { adapter, rx: [0; usb::ethernet::MAX_FRAME], tx: [0; MAX_FRAME] }
    }

    /// The adapter (for its MAC address, link state and counters).
    pub fn adapter(&mut self) -> &mut E {
        &mut self.adapter
    }
}

/// A received frame.
pub struct FrameRx<'a> {
    frame: &'a [u8],
}

/// Room for one frame to send.
pub struct FrameTx<'a, E: EthernetClass> {
    adapter: &'a mut E,
    buffer: &'a mut [u8; MAX_FRAME],
}

impl RxToken for FrameRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl<E: EthernetClass> TxToken for FrameTx<'_, E> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MAX_FRAME);
        let result = f(&mut self.buffer[..len]);
        // A failed send is counted by the driver; the protocols above repeat what matters.
        let _ = self.adapter.send(&self.buffer[..len]);
        result
    }
}

impl<E: EthernetClass> Device for EthernetDevice<E> {
    type RxToken<'a>
        = FrameRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = FrameTx<'a, E>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let EthernetDevice { adapter, rx, tx } = self;
        match adapter.receive(rx) {
            Ok(Some(n)) => Some((FrameRx { frame: &rx[..n] }, FrameTx { adapter, buffer: tx })),
            _ => None,
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        Some(FrameTx { adapter: &mut self.adapter, buffer: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(1);
        caps
    }
}
