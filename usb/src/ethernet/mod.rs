//! USB Ethernet: the [`EthernetClass`] trait the firmware's smoltcp `phy::Device` will wrap, the three
//! class drivers behind it, and how a device is recognised.
//!
//! | driver | device | framing on the bulk endpoints |
//! |---|---|---|
//! | [`cdc_ecm`] | QEMU `usb-net` 0525:a4a2 (configuration 1), any CDC-ECM device | raw frames, ZLP after a multiple of the packet size |
//! | [`smsc95xx`] | Pi 3B LAN9514 (0424:ec00) | 8-byte TX command, 4-byte RX status, frames 4-byte aligned |
//! | [`lan78xx`] | Pi 3B+ LAN7515 (0424:7800) | 8-byte TX command, 10-byte RX command, frames 4-byte aligned |
//!
//! The vendor chips are programmed through 32-bit registers reached by vendor control requests
//! (see [`crate::setup::Setup::vendor_read_register`]); their PHY sits behind an MII bridge.

pub mod cdc_ecm;
pub mod lan78xx;
pub mod smsc95xx;

use crate::descriptor::{BulkInterface, Configuration, DescriptorError};
use crate::host::{DeviceHandle, EndpointHandle, TransferError, UsbHost};
use crate::setup::Setup;
use core::ops::Range;

pub use cdc_ecm::CdcEcm;
pub use lan78xx::Lan78xx;
pub use smsc95xx::Smsc95xx;

/// An Ethernet MAC address.
pub type MacAddress = [u8; 6];

/// Largest frame the drivers send or deliver: 1514 plus a VLAN tag, without FCS.
pub const MAX_FRAME: usize = 1518;

/// Size of the drivers' TX staging buffer: header plus the largest frame, rounded up.
pub const TX_BUFFER: usize = 1536;

/// A USB Ethernet adapter, as the network stack sees it.
pub trait EthernetClass {
    /// Sends one frame (destination MAC first, no FCS).
    fn send(&mut self, frame: &[u8]) -> Result<(), EthError>;
    /// Receives one frame into `buf`: `Ok(None)` when none is waiting. Frames the chip flagged as
    /// damaged are counted and skipped, not returned.
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, EthError>;
    /// The MAC address the adapter filters on and sends from.
    fn mac_address(&self) -> MacAddress;
    /// Whether the link is up (CDC-ECM: as last notified; the vendor chips ask their PHY).
    fn link_up(&mut self) -> Result<bool, EthError>;
    /// Traffic counters since the driver was opened.
    fn counters(&self) -> Counters;
}

/// Traffic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames sent.
    pub tx_frames: u32,
    /// Frame bytes sent (headers excluded).
    pub tx_bytes: u32,
    /// Sends that failed on the bus.
    pub tx_errors: u32,
    /// Frames delivered.
    pub rx_frames: u32,
    /// Frame bytes delivered.
    pub rx_bytes: u32,
    /// Frames the chip flagged as bad (CRC, runt, too long...).
    pub rx_errors: u32,
    /// Bulk transfers whose framing did not parse (the rest of the transfer is dropped).
    pub rx_framing_errors: u32,
    /// Frames dropped because the caller's buffer was too small.
    pub rx_dropped: u32,
}

/// Why the framing of a bulk transfer did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// A header cut off by the end of the transfer.
    Truncated,
    /// A frame length running past the end of the transfer.
    Overrun {
        /// The length the header claims.
        length: usize,
    },
    /// A TX header whose fields contradict each other or the frame.
    Inconsistent,
}

/// Why an Ethernet driver operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EthError {
    /// A USB transfer failed.
    Transfer(TransferError),
    /// The configuration descriptors do not describe the expected device.
    Descriptor(DescriptorError),
    /// A register read returned fewer than 4 bytes.
    ShortRegisterRead {
        /// Register address.
        register: u16,
    },
    /// A bit the driver waited on (reset done, PHY ready, MII not busy) never reached its state.
    Timeout {
        /// Register polled.
        register: u16,
        /// Bits waited on.
        mask: u32,
    },
    /// The chip's ID register names another chip.
    UnexpectedChip {
        /// ID_REV contents.
        id_rev: u32,
    },
    /// The device has no usable network function (no bulk pair, no CDC Ethernet descriptor).
    NotEthernet,
    /// A frame longer than the device takes.
    FrameTooLong {
        /// Frame length.
        len: usize,
        /// Largest accepted.
        max: usize,
    },
    /// A frame too short to be Ethernet (under 14 bytes).
    FrameTooShort,
    /// The caller's buffer cannot hold the received frame (the frame is dropped).
    BufferTooSmall {
        /// Frame length.
        needed: usize,
    },
}

impl From<TransferError> for EthError {
    fn from(e: TransferError) -> Self {
        EthError::Transfer(e)
    }
}

impl From<DescriptorError> for EthError {
    fn from(e: DescriptorError) -> Self {
        EthError::Descriptor(e)
    }
}

/// Which class driver a device needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// CDC Ethernet Control Model.
    CdcEcm,
    /// SMSC LAN95xx (LAN9512/9514 Ethernet function).
    Smsc95xx,
    /// Microchip LAN78xx (LAN7800, LAN7515's Ethernet function).
    Lan78xx,
}

/// SMSC/Microchip vendor id.
pub const VENDOR_SMSC: u16 = 0x0424;

/// Recognises a network device by its ids, or for CDC-ECM by its class descriptors, in the given
/// configuration. `None` for everything else (hubs included): the caller reports its ids and skips it.
pub fn classify(vendor: u16, product: u16, config: &Configuration<'_>) -> Option<Kind> {
    let bulk = || matches!(config.find_bulk_pair(None), Ok(Some(_)));
    match (vendor, product) {
        // U-Boot's and Linux's smsc95xx id lists; 0xec00 is the Pi 3B's LAN9514.
        (VENDOR_SMSC, 0xEC00 | 0x9500 | 0x9505 | 0x9730 | 0x9900 | 0x9E00 | 0x9E01) if bulk() => {
            Some(Kind::Smsc95xx)
        }
        // 0x7800 is the Pi 3B+'s LAN7515 Ethernet function.
        (VENDOR_SMSC, 0x7800 | 0x7850) if bulk() => Some(Kind::Lan78xx),
        _ => matches!(config.ecm_function(), Ok(Some(_))).then_some(Kind::CdcEcm),
    }
}

/// A 64-byte aligned buffer, so the DWC2 driver can DMA straight into it and clean/invalidate whole
/// cache lines without touching neighbouring data.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct DmaBuffer<const N: usize>(pub [u8; N]);

impl<const N: usize> DmaBuffer<N> {
    /// A zeroed buffer.
    pub const fn new() -> Self {
        DmaBuffer([0; N])
    }
}

impl<const N: usize> Default for DmaBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// One frame located inside a received bulk transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unpacked {
    /// The frame bytes, FCS excluded.
    pub frame: Range<usize>,
    /// Where the next header starts.
    pub next: usize,
    /// False when the chip flagged the frame as bad.
    pub good: bool,
}

/// A bulk-IN staging buffer holding one transfer, which may carry several frames.
#[derive(Clone, Debug)]
pub(crate) struct RxStage<const N: usize> {
    pub buf: DmaBuffer<N>,
    pub len: usize,
    pub pos: usize,
}

impl<const N: usize> RxStage<N> {
    pub fn new() -> Self {
        RxStage { buf: DmaBuffer::new(), len: 0, pos: 0 }
    }

    /// Delivers the next good frame, fetching one bulk transfer if the staged one is used up.
    /// Bad frames are counted and skipped; an unparsable transfer is counted and dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn receive<H: UsbHost>(
        &mut self,
        host: &mut H,
        dev: DeviceHandle,
        ep: EndpointHandle,
        counters: &mut Counters,
        out: &mut [u8],
        unpack: impl Fn(&[u8], usize) -> Result<Option<Unpacked>, FramingError>,
    ) -> Result<Option<usize>, EthError> {
        let mut fetched = false;
        loop {
            if self.pos >= self.len {
                if fetched {
                    return Ok(None);
                }
                self.len = 0;
                self.pos = 0;
                match host.bulk_in(dev, ep, &mut self.buf.0) {
                    Ok(n) => self.len = n.min(N),
                    Err(TransferError::Nak) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
                fetched = true;
                continue;
            }
            match unpack(&self.buf.0[..self.len], self.pos) {
                Ok(None) => self.pos = self.len,
                Err(_) => {
                    counters.rx_framing_errors += 1;
                    self.pos = self.len;
                }
                Ok(Some(u)) => {
                    self.pos = u.next.max(self.pos + 1);
                    if !u.good {
                        counters.rx_errors += 1;
                        continue;
                    }
                    let frame = &self.buf.0[u.frame];
                    if frame.len() > out.len() {
                        counters.rx_dropped += 1;
                        return Err(EthError::BufferTooSmall { needed: frame.len() });
                    }
                    out[..frame.len()].copy_from_slice(frame);
                    counters.rx_frames += 1;
                    counters.rx_bytes += frame.len() as u32;
                    return Ok(Some(frame.len()));
                }
            }
        }
    }
}

/// Endpoint handles of a bulk pair.
pub(crate) trait BulkInterfaceExt {
    fn handles(&self) -> (EndpointHandle, EndpointHandle);
}

impl BulkInterfaceExt for BulkInterface {
    fn handles(&self) -> (EndpointHandle, EndpointHandle) {
        (EndpointHandle::from_descriptor(&self.bulk_in), EndpointHandle::from_descriptor(&self.bulk_out))
    }
}

/// BURST_CAP value for a vendor chip: how many bulk packets fit the RX buffer, so a multi-frame
/// transfer never overruns it (the register counts packets of the current bus speed).
pub(crate) fn burst_packets(rx_buffer: usize, max_packet: u16) -> u32 {
    (rx_buffer / max_packet.max(1) as usize).min(255) as u32
}

/// Rounds up to a multiple of 4: the vendor chips start every frame of a transfer 4-byte aligned.
pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Sends one bulk OUT transfer, followed by a zero-length packet when it ends on a packet boundary:
/// otherwise the device cannot tell where the transfer ends and waits for more (CDC-ECM; Linux sets
/// FLAG_SEND_ZLP for smsc95xx as well).
pub(crate) fn bulk_send<H: UsbHost>(
    host: &mut H,
    dev: DeviceHandle,
    ep: EndpointHandle,
    data: &[u8],
) -> Result<(), TransferError> {
    host.bulk_out(dev, ep, data)?;
    let mps = ep.max_packet_size.max(1) as usize;
    if !data.is_empty() && data.len().is_multiple_of(mps) {
        host.bulk_out(dev, ep, &[])?;
    }
    Ok(())
}

/// Register polls give up after this many reads.
pub const POLL_LIMIT: u32 = 100;
/// Milliseconds between register polls: with [`POLL_LIMIT`] a reset gets one second, like U-Boot.
pub const POLL_INTERVAL_MS: u32 = 10;

/// 32-bit register access over vendor control requests, shared by the SMSC and LAN78xx drivers.
pub(crate) struct Registers;

impl Registers {
    pub fn read<H: UsbHost>(host: &mut H, dev: DeviceHandle, register: u16) -> Result<u32, EthError> {
        let mut b = [0u8; 4];
        let n = host.control_in(dev, Setup::vendor_read_register(register), &mut b)?;
        if n < 4 {
            return Err(EthError::ShortRegisterRead { register });
        }
        Ok(u32::from_le_bytes(b))
    }

    pub fn write<H: UsbHost>(
        host: &mut H,
        dev: DeviceHandle,
        register: u16,
        value: u32,
    ) -> Result<(), EthError> {
        host.control_out(dev, Setup::vendor_write_register(register), &value.to_le_bytes())?;
        Ok(())
    }

    /// Read-modify-write: clears `clear`, then sets `set`; returns the value written.
    pub fn modify<H: UsbHost>(
        host: &mut H,
        dev: DeviceHandle,
        register: u16,
        set: u32,
        clear: u32,
    ) -> Result<u32, EthError> {
        let v = (Self::read(host, dev, register)? & !clear) | set;
        Self::write(host, dev, register, v)?;
        Ok(v)
    }

    /// Polls until `value & mask == want`, at most [`POLL_LIMIT`] reads `interval_ms` apart.
    pub fn wait<H: UsbHost>(
        host: &mut H,
        dev: DeviceHandle,
        register: u16,
        mask: u32,
        want: u32,
        interval_ms: u32,
    ) -> Result<(), EthError> {
        for i in 0..POLL_LIMIT {
            if Self::read(host, dev, register)? & mask == want {
                return Ok(());
            }
            if i + 1 < POLL_LIMIT && interval_ms > 0 {
                host.delay_ms(interval_ms);
            }
        }
        Err(EthError::Timeout { register, mask })
    }
}

/// IEEE 802.3 clause 22 PHY registers and bits the drivers use.
pub mod phy {
    /// Basic mode control register.
    pub const BMCR: u8 = 0;
    /// Basic mode status register.
    pub const BMSR: u8 = 1;
    /// Auto-negotiation advertisement register.
    pub const ADVERTISE: u8 = 4;
    /// BMCR: software reset (self-clearing).
    pub const BMCR_RESET: u16 = 0x8000;
    /// BMCR: auto-negotiation enable.
    pub const BMCR_ANENABLE: u16 = 0x1000;
    /// BMCR: restart auto-negotiation (self-clearing).
    pub const BMCR_ANRESTART: u16 = 0x0200;
    /// BMSR: link up (latched low: read twice for the current state).
    pub const BMSR_LINK: u16 = 0x0004;
    /// ADVERTISE: IEEE 802.3 selector.
    pub const ADVERTISE_CSMA: u16 = 0x0001;
    /// ADVERTISE: 10/100 half and full duplex.
    pub const ADVERTISE_ALL: u16 = 0x01E0;
    /// ADVERTISE: symmetric pause.
    pub const ADVERTISE_PAUSE: u16 = 0x0400;
    /// ADVERTISE: asymmetric pause.
    pub const ADVERTISE_PAUSE_ASYM: u16 = 0x0800;
}

/// The MII bridge both vendor chips use to reach their internal PHY: write MII_DATA (for a write),
/// then the address register with PHY number in bits 15:11, PHY register in 10:6, WRITE in bit 1 and
/// BUSY in bit 0; wait for BUSY to clear; read MII_DATA (for a read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mii {
    pub address_register: u16,
    pub data_register: u16,
    pub phy: u8,
}

impl Mii {
    const BUSY: u32 = 0x1;
    const WRITE: u32 = 0x2;

    fn command(&self, reg: u8, write: bool) -> u32 {
        (self.phy as u32 & 0x1F) << 11
            | (reg as u32 & 0x1F) << 6
            | if write { Self::WRITE } else { 0 }
            | Self::BUSY
    }

    fn wait<H: UsbHost>(&self, host: &mut H, dev: DeviceHandle) -> Result<(), EthError> {
        Registers::wait(host, dev, self.address_register, Self::BUSY, 0, 1)
    }

    pub fn read<H: UsbHost>(&self, host: &mut H, dev: DeviceHandle, reg: u8) -> Result<u16, EthError> {
        self.wait(host, dev)?;
        Registers::write(host, dev, self.address_register, self.command(reg, false))?;
        self.wait(host, dev)?;
        Ok(Registers::read(host, dev, self.data_register)? as u16)
    }

    pub fn write<H: UsbHost>(
        &self,
        host: &mut H,
        dev: DeviceHandle,
        reg: u8,
        value: u16,
    ) -> Result<(), EthError> {
        self.wait(host, dev)?;
        Registers::write(host, dev, self.data_register, value as u32)?;
        Registers::write(host, dev, self.address_register, self.command(reg, true))?;
        self.wait(host, dev)
    }

    /// Resets the PHY, advertises 10/100 with pause and restarts auto-negotiation.
    pub fn reset_and_autonegotiate<H: UsbHost>(
        &self,
        host: &mut H,
        dev: DeviceHandle,
    ) -> Result<(), EthError> {
        self.write(host, dev, phy::BMCR, phy::BMCR_RESET)?;
        let mut done = false;
        for _ in 0..POLL_LIMIT {
            if self.read(host, dev, phy::BMCR)? & phy::BMCR_RESET == 0 {
                done = true;
                break;
            }
            host.delay_ms(POLL_INTERVAL_MS);
        }
        if !done {
            return Err(EthError::Timeout { register: self.data_register, mask: phy::BMCR_RESET as u32 });
        }
        self.write(
            host,
            dev,
            phy::ADVERTISE,
            phy::ADVERTISE_ALL | phy::ADVERTISE_CSMA | phy::ADVERTISE_PAUSE | phy::ADVERTISE_PAUSE_ASYM,
        )
    }

    /// Turns auto-negotiation on and restarts it.
    pub fn restart_autonegotiation<H: UsbHost>(
        &self,
        host: &mut H,
        dev: DeviceHandle,
    ) -> Result<(), EthError> {
        let bmcr = self.read(host, dev, phy::BMCR)?;
        self.write(host, dev, phy::BMCR, bmcr | phy::BMCR_ANENABLE | phy::BMCR_ANRESTART)
    }

    /// Current link state; BMSR's link bit latches low, so the first read may report an old drop.
    pub fn link_up<H: UsbHost>(&self, host: &mut H, dev: DeviceHandle) -> Result<bool, EthError> {
        let _latched = self.read(host, dev, phy::BMSR)?;
        Ok(self.read(host, dev, phy::BMSR)? & phy::BMSR_LINK != 0)
    }
}

/// Any of the three drivers, chosen at run time from [`classify`].
pub enum Device<H: UsbHost, const RX: usize = 2048> {
    /// CDC-ECM.
    CdcEcm(CdcEcm<H, RX>),
    /// SMSC95xx.
    Smsc95xx(Smsc95xx<H, RX>),
    /// LAN78xx.
    Lan78xx(Lan78xx<H, RX>),
}

impl<H: UsbHost, const RX: usize> Device<H, RX> {
    /// Opens the driver for `kind` on a configured device. `mac` is used by the vendor chips (the
    /// board MAC from the firmware mailbox); CDC-ECM reports its own.
    pub fn open(
        host: H,
        dev: DeviceHandle,
        kind: Kind,
        config: &Configuration<'_>,
        mac: MacAddress,
    ) -> Result<Self, EthError> {
        Ok(match kind {
            Kind::CdcEcm => {
                let function = config.ecm_function()?.ok_or(EthError::NotEthernet)?;
                Device::CdcEcm(CdcEcm::open(host, dev, &function)?)
            }
            Kind::Smsc95xx => {
                let bulk = config.find_bulk_pair(None)?.ok_or(EthError::NotEthernet)?;
                Device::Smsc95xx(Smsc95xx::init(host, dev, &bulk, mac, smsc95xx::Config::default())?)
            }
            Kind::Lan78xx => {
                let bulk = config.find_bulk_pair(None)?.ok_or(EthError::NotEthernet)?;
                Device::Lan78xx(Lan78xx::init(host, dev, &bulk, mac, lan78xx::Config::default())?)
            }
        })
    }

    fn inner(&mut self) -> &mut dyn EthernetClass {
        match self {
            Device::CdcEcm(d) => d,
            Device::Smsc95xx(d) => d,
            Device::Lan78xx(d) => d,
        }
    }
}

impl<H: UsbHost, const RX: usize> EthernetClass for Device<H, RX> {
    fn send(&mut self, frame: &[u8]) -> Result<(), EthError> {
        self.inner().send(frame)
    }
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, EthError> {
        self.inner().receive(buf)
    }
    fn mac_address(&self) -> MacAddress {
        match self {
            Device::CdcEcm(d) => d.mac_address(),
            Device::Smsc95xx(d) => d.mac_address(),
            Device::Lan78xx(d) => d.mac_address(),
        }
    }
    fn link_up(&mut self) -> Result<bool, EthError> {
        self.inner().link_up()
    }
    fn counters(&self) -> Counters {
        match self {
            Device::CdcEcm(d) => d.counters(),
            Device::Smsc95xx(d) => d.counters(),
            Device::Lan78xx(d) => d.counters(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::tests::{qemu_ecm_config, vendor_net_config};

    #[test]
    fn classify_known_devices() {
        let (v, n) = vendor_net_config(512);
        let vendor = Configuration::new_checked(&v[..n]).unwrap();
        let (e, m) = qemu_ecm_config();
        let ecm = Configuration::new_checked(&e[..m]).unwrap();
        assert_eq!(classify(0x0424, 0xEC00, &vendor), Some(Kind::Smsc95xx));
        assert_eq!(classify(0x0424, 0x7800, &vendor), Some(Kind::Lan78xx));
        assert_eq!(classify(0x0525, 0xA4A2, &ecm), Some(Kind::CdcEcm));
        // Unknown ids with a vendor configuration, and a known id without a bulk pair, are skipped.
        assert_eq!(classify(0x1234, 0x5678, &vendor), None);
        let mut hub = [0u8; 9];
        crate::descriptor::ConfigurationDescriptor {
            total_length: 9,
            num_interfaces: 0,
            value: 1,
            name: 0,
            attributes: 0xE0,
            max_power: 0,
        }
        .emit(&mut hub);
        assert_eq!(classify(0x0424, 0xEC00, &Configuration::new_checked(&hub).unwrap()), None);
        assert_eq!(classify(0x0424, 0x9514, &Configuration::new_checked(&hub).unwrap()), None);
    }

    #[test]
    fn align_and_dma_buffer() {
        assert_eq!((align4(0), align4(1), align4(4), align4(1518)), (0, 4, 4, 1520));
        let b = DmaBuffer::<100>::new();
        assert_eq!(core::mem::align_of_val(&b), 64);
    }
}
