//! What class drivers need from a host controller: the [`UsbHost`] trait (four transfer kinds and a
//! delay), the handles naming devices and endpoints, the [`TransferError`] enum, and the data toggle
//! bookkeeping the controller driver has to do itself because the DWC2 does not.

use crate::descriptor::EndpointDescriptor;
use crate::setup::Setup;

/// Bus speed of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speed {
    /// 1.5 Mbit/s.
    Low,
    /// 12 Mbit/s (everything QEMU emulates).
    Full,
    /// 480 Mbit/s (the Pi's LAN9514/LAN7515).
    High,
}

/// The high-speed hub port whose transaction translator serves a full/low-speed device; the DWC2
/// driver programs it into HCSPLT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubPort {
    /// Address of the high-speed hub.
    pub hub_address: u8,
    /// Its port (1-based) the device hangs below.
    pub port: u8,
}

/// Everything a controller needs to reach a device's endpoint 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceHandle {
    /// Bus address (0 until SET_ADDRESS).
    pub address: u8,
    /// Device speed.
    pub speed: Speed,
    /// Endpoint 0 packet size (8 until the device descriptor says otherwise).
    pub max_packet_size0: u16,
    /// Split-transaction target: `Some` only for a full/low-speed device behind a high-speed hub.
    pub split: Option<HubPort>,
}

impl DeviceHandle {
    /// The default address-0 handle of a freshly reset device.
    pub const fn new_default(speed: Speed, split: Option<HubPort>) -> Self {
        DeviceHandle { address: 0, speed, max_packet_size0: 8, split }
    }
}

/// A non-control endpoint of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointHandle {
    /// `bEndpointAddress`: number in bits 3:0, bit 7 set for IN.
    pub address: u8,
    /// Packet size in bytes.
    pub max_packet_size: u16,
}

impl EndpointHandle {
    /// From an endpoint descriptor.
    pub fn from_descriptor(e: &EndpointDescriptor) -> Self {
        EndpointHandle { address: e.address, max_packet_size: e.packet_size() }
    }

    /// Endpoint number 1..=15.
    pub fn number(&self) -> u8 {
        self.address & 0x0F
    }

    /// True for IN.
    pub fn is_in(&self) -> bool {
        self.address & 0x80 != 0
    }
}

/// Why a transfer failed. The controller driver maps its channel status onto these so class drivers
/// can react the same way on QEMU and on hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// The endpoint answered STALL: request not supported (control) or endpoint halted (bulk; clear
    /// with CLEAR_FEATURE(ENDPOINT_HALT)).
    Stall,
    /// Nothing arrived in time (the device may be gone, or QEMU never answered: wrong address, port
    /// not enabled).
    Timeout,
    /// The device NAKed: it has no data now (bulk IN) or cannot take data now (bulk OUT). Not an error
    /// for polling receivers.
    Nak,
    /// The device sent more than the buffer or packet size allowed.
    Babble,
    /// CRC, bit-stuff, PID or timeout errors at the transaction level (DWC2 XactErr), after retries.
    Transaction,
    /// A data toggle mismatch the controller could not resolve.
    DataToggle,
    /// FIFO/DMA overrun or underrun in the controller.
    Overrun,
    /// No device at that address, or the port is disabled.
    NoDevice,
    /// The controller refused the request (buffer too large or misaligned, no free channel).
    Unsupported,
}

impl core::fmt::Display for TransferError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TransferError::Stall => "stall",
            TransferError::Timeout => "timeout",
            TransferError::Nak => "nak (no data)",
            TransferError::Babble => "babble",
            TransferError::Transaction => "transaction error",
            TransferError::DataToggle => "data toggle error",
            TransferError::Overrun => "controller overrun",
            TransferError::NoDevice => "no device",
            TransferError::Unsupported => "unsupported by controller",
        })
    }
}

/// The host controller as class drivers and enumeration see it.
///
/// One error type for every controller, rather than an associated one, so that drivers can tell a
/// NAK (poll again) from a STALL (clear the halt) from a dead device without knowing the controller.
///
/// Contract for implementors (the DWC2 driver):
/// - Transfers are synchronous and bounded by the implementor's own timeout.
/// - `bulk_in` is one transfer: it ends at a short packet (a zero-length packet gives `Ok(0)`) or when
///   `buf` is full. `Err(Nak)` means "nothing yet"; it must not lose data. On QEMU a NAKing bulk IN must
///   stay armed (disabling the channel does not cancel QEMU's retry, which would later DMA into a
///   stale buffer), so return `Nak` and complete the same transfer on a later call.
/// - `bulk_out` sends exactly `data` split into max-size packets and never adds a zero-length packet
///   of its own: class drivers decide (an empty `data` sends one ZLP).
/// - Data toggles: the implementor keeps one [`DataToggle`] per endpoint (see [`ToggleTable`]) and
///   resets them when SET_CONFIGURATION, SET_INTERFACE or CLEAR_FEATURE(ENDPOINT_HALT) succeed.
pub trait UsbHost {
    /// Control transfer with an IN data stage (or none when `buf` is empty); returns bytes received.
    fn control_in(&mut self, dev: DeviceHandle, setup: Setup, buf: &mut [u8])
        -> Result<usize, TransferError>;
    /// Control transfer with an OUT data stage of `data` (or none when it is empty).
    fn control_out(&mut self, dev: DeviceHandle, setup: Setup, data: &[u8]) -> Result<(), TransferError>;
    /// One bulk IN transfer into `buf`; returns bytes received.
    fn bulk_in(
        &mut self,
        dev: DeviceHandle,
        endpoint: EndpointHandle,
        buf: &mut [u8],
    ) -> Result<usize, TransferError>;
    /// One bulk OUT transfer of `data`.
    fn bulk_out(
        &mut self,
        dev: DeviceHandle,
        endpoint: EndpointHandle,
        data: &[u8],
    ) -> Result<(), TransferError>;
    /// Waits `ms` milliseconds (port reset timing, register poll intervals). On QEMU use the ARM
    /// generic timer: HFNUM does not advance in real time there.
    fn delay_ms(&mut self, ms: u32);
}

impl<H: UsbHost + ?Sized> UsbHost for &mut H {
    fn control_in(
        &mut self,
        dev: DeviceHandle,
        setup: Setup,
        buf: &mut [u8],
    ) -> Result<usize, TransferError> {
        (**self).control_in(dev, setup, buf)
    }
    fn control_out(&mut self, dev: DeviceHandle, setup: Setup, data: &[u8]) -> Result<(), TransferError> {
        (**self).control_out(dev, setup, data)
    }
    fn bulk_in(
        &mut self,
        dev: DeviceHandle,
        endpoint: EndpointHandle,
        buf: &mut [u8],
    ) -> Result<usize, TransferError> {
        (**self).bulk_in(dev, endpoint, buf)
    }
    fn bulk_out(
        &mut self,
        dev: DeviceHandle,
        endpoint: EndpointHandle,
        data: &[u8],
    ) -> Result<(), TransferError> {
        (**self).bulk_out(dev, endpoint, data)
    }
    fn delay_ms(&mut self, ms: u32) {
        (**self).delay_ms(ms)
    }
}

/// A data PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// DATA0 (DWC2 HCTSIZ.PID = 0).
    Data0,
    /// DATA1 (DWC2 HCTSIZ.PID = 2).
    Data1,
}

/// The data toggle of one bulk/interrupt endpoint: the PID its next data packet must carry. It flips
/// after every packet the receiver acknowledged, and goes back to DATA0 on SET_CONFIGURATION,
/// SET_INTERFACE and CLEAR_FEATURE(ENDPOINT_HALT). A wrong toggle makes the device silently drop an
/// OUT packet as a duplicate, or the host drop a good IN packet, so this must be exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataToggle {
    next: Pid,
}

impl Default for DataToggle {
    fn default() -> Self {
        Self::new()
    }
}

impl DataToggle {
    /// A toggle at DATA0, as after configuration.
    pub const fn new() -> Self {
        DataToggle { next: Pid::Data0 }
    }

    /// The PID to send or expect next.
    pub fn pid(&self) -> Pid {
        self.next
    }

    /// Flips after one acknowledged packet.
    pub fn flip(&mut self) {
        self.next = match self.next {
            Pid::Data0 => Pid::Data1,
            Pid::Data1 => Pid::Data0,
        };
    }

    /// Accounts for `packets` acknowledged packets.
    pub fn advance(&mut self, packets: u32) {
        if !packets.is_multiple_of(2) {
            self.flip();
        }
    }

    /// Back to DATA0.
    pub fn reset(&mut self) {
        self.next = Pid::Data0;
    }

    /// Packets a completed transfer of `len` bytes took on an endpoint of size `max_packet`: one per
    /// full packet, plus the short (possibly zero-length) one that ended it when `ended_short`. An OUT
    /// transfer always ends short unless it was exactly full-sized packets with no ZLP.
    pub fn packets(len: usize, max_packet: u16, ended_short: bool) -> u32 {
        let mps = max_packet.max(1) as usize;
        let full = len / mps;
        let short = if ended_short { 1 } else { !len.is_multiple_of(mps) as usize };
        (full + short) as u32
    }
}

/// The toggles of all 30 non-control endpoints of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToggleTable {
    toggles: [[DataToggle; 16]; 2],
}

impl ToggleTable {
    /// All at DATA0.
    pub const fn new() -> Self {
        ToggleTable { toggles: [[DataToggle::new(); 16]; 2] }
    }

    /// The toggle of the endpoint with address `endpoint` (bit 7 = IN).
    pub fn get_mut(&mut self, endpoint: u8) -> &mut DataToggle {
        &mut self.toggles[(endpoint >> 7) as usize][(endpoint & 0x0F) as usize]
    }

    /// All back to DATA0.
    pub fn reset_all(&mut self) {
        *self = Self::new();
    }

    /// Applies the toggle resets a *successful* control request implies. SET_INTERFACE resets every
    /// endpoint rather than only the interface's own: the devices here have a single data interface,
    /// and a wrong reset of an idle endpoint is harmless while a missed one loses a packet.
    pub fn observe(&mut self, setup: &Setup) {
        if setup.is_set_configuration() || setup.is_set_interface() {
            self.reset_all();
        } else if let Some(ep) = setup.cleared_halt() {
            self.get_mut(ep).reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggle_flips_per_packet() {
        let mut t = DataToggle::new();
        assert_eq!(t.pid(), Pid::Data0);
        t.flip();
        assert_eq!(t.pid(), Pid::Data1);
        t.advance(DataToggle::packets(1514, 64, true)); // 23 full + 1 short = 24 packets
        assert_eq!(t.pid(), Pid::Data1);
        t.advance(DataToggle::packets(64, 64, true)); // one full packet then a ZLP
        assert_eq!(t.pid(), Pid::Data1);
        t.advance(DataToggle::packets(128, 64, false)); // buffer filled exactly
        assert_eq!(t.pid(), Pid::Data1);
        t.advance(DataToggle::packets(0, 64, true)); // a lone ZLP
        assert_eq!(t.pid(), Pid::Data0);
        t.flip();
        t.reset();
        assert_eq!(t.pid(), Pid::Data0);
        assert_eq!(DataToggle::packets(100, 64, false), 2);
    }

    #[test]
    fn table_resets_on_configuration_and_halt() {
        let mut t = ToggleTable::new();
        t.get_mut(0x82).flip();
        t.get_mut(0x02).flip();
        t.observe(&Setup::clear_endpoint_halt(0x82));
        assert_eq!(t.get_mut(0x82).pid(), Pid::Data0);
        assert_eq!(t.get_mut(0x02).pid(), Pid::Data1);
        t.observe(&Setup::vendor_write_register(0x100));
        assert_eq!(t.get_mut(0x02).pid(), Pid::Data1);
        t.observe(&Setup::set_configuration(1));
        assert_eq!(t.get_mut(0x02).pid(), Pid::Data0);
        t.get_mut(0x81).flip();
        t.observe(&Setup::set_interface(1, 1));
        assert_eq!(t, ToggleTable::new());
    }
}
