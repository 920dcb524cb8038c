//! SMSC LAN95xx USB Ethernet (the Pi 3B's LAN9514, 0424:ec00).
//!
//! Register numbers, bits and the init order follow the public Linux `smsc95xx` and U-Boot
//! `drivers/usb/eth/smsc95xx.c` drivers (facts only). Framing on the bulk endpoints:
//!
//! ```text
//! OUT: TX command A (LE32) | TX command B (LE32) | frame
//!      A: bits 10:0 buffer size, 12 last segment, 13 first segment, 20:16 data offset
//!      B: bits 10:0 frame length, 12 disable padding, 13 no FCS, 14 checksum offload
//! IN:  status (LE32) | RXDOFF pad bytes | frame + FCS | pad to 4 | status | ...
//!      status: bits 29:16 length including the 4-byte FCS, 15 error summary, 30 filter fail, ...
//! ```
//!
//! With HW_CFG.MEF ("multiple Ethernet frames") and burst cap enabled the chip packs several frames
//! into one bulk transfer, each header starting 4-byte aligned.

use super::{
    align4, bulk_send, BulkInterfaceExt, Counters, EthError, EthernetClass, FramingError, MacAddress, Mii,
    Registers, RxStage, Unpacked, MAX_FRAME, POLL_INTERVAL_MS, TX_BUFFER,
};
use crate::descriptor::BulkInterface;
use crate::host::{DeviceHandle, EndpointHandle, UsbHost};
use crate::le32;
use core::ops::Range;

/// Register addresses (wIndex of the vendor requests).
pub mod reg {
    /// Chip id (31:16) and revision.
    pub const ID_REV: u16 = 0x00;
    /// Interrupt status, write 1 to clear.
    pub const INT_STS: u16 = 0x08;
    /// Transmit configuration.
    pub const TX_CFG: u16 = 0x10;
    /// Hardware configuration.
    pub const HW_CFG: u16 = 0x14;
    /// Power management control.
    pub const PM_CTRL: u16 = 0x20;
    /// LED/GPIO configuration.
    pub const LED_GPIO_CFG: u16 = 0x24;
    /// Automatic flow control configuration.
    pub const AFC_CFG: u16 = 0x2C;
    /// Bulk IN burst size, in USB packets.
    pub const BURST_CAP: u16 = 0x38;
    /// Bulk IN delay before a short transfer is closed.
    pub const BULK_IN_DLY: u16 = 0x6C;
    /// MAC control.
    pub const MAC_CR: u16 = 0x100;
    /// MAC address bytes 4..6.
    pub const ADDRH: u16 = 0x104;
    /// MAC address bytes 0..4.
    pub const ADDRL: u16 = 0x108;
    /// MII access: PHY and register number, direction, busy.
    pub const MII_ADDR: u16 = 0x114;
    /// MII data.
    pub const MII_DATA: u16 = 0x118;
    /// Flow control.
    pub const FLOW: u16 = 0x11C;
    /// VLAN1 tag type.
    pub const VLAN1: u16 = 0x120;
    /// Checksum offload engine control.
    pub const COE_CR: u16 = 0x130;
}

/// Register bits.
pub mod bits {
    /// TX_CFG: transmitter on.
    pub const TX_CFG_ON: u32 = 0x0000_0004;
    /// HW_CFG: bulk-in empty response, set by Linux and U-Boot (whether an empty bulk IN is then
    /// NAKed or gets a ZLP is not confirmed here; the driver treats both as "no frame").
    pub const HW_CFG_BIR: u32 = 0x0000_1000;
    /// HW_CFG: RX data offset, bits 10:9.
    pub const HW_CFG_RXDOFF: u32 = 0x0000_0600;
    /// HW_CFG: multiple Ethernet frames per bulk transfer.
    pub const HW_CFG_MEF: u32 = 0x0000_0020;
    /// HW_CFG: lite reset (self-clearing).
    pub const HW_CFG_LRST: u32 = 0x0000_0008;
    /// HW_CFG: burst cap enable.
    pub const HW_CFG_BCE: u32 = 0x0000_0002;
    /// PM_CTRL: PHY reset (self-clearing).
    pub const PM_CTRL_PHY_RST: u32 = 0x0000_0010;
    /// LED_GPIO_CFG: speed, link and duplex LEDs.
    pub const LED_GPIO_CFG_LEDS: u32 = 0x0111_0000;
    /// AFC_CFG default (Linux/U-Boot): high 15.5 KiB, low 3 KiB, ~350 us backpressure.
    pub const AFC_CFG_DEFAULT: u32 = 0x00F8_30A1;
    /// MAC_CR: receiver enable.
    pub const MAC_CR_RXEN: u32 = 0x0000_0004;
    /// MAC_CR: transmitter enable.
    pub const MAC_CR_TXEN: u32 = 0x0000_0008;
    /// MAC_CR: hash/perfect filtering.
    pub const MAC_CR_HPFILT: u32 = 0x0000_2000;
    /// MAC_CR: promiscuous.
    pub const MAC_CR_PRMS: u32 = 0x0004_0000;
    /// MAC_CR: pass all multicast.
    pub const MAC_CR_MCPAS: u32 = 0x0008_0000;
    /// COE_CR: TX checksum offload.
    pub const COE_CR_TX: u32 = 0x0001_0000;
    /// COE_CR: RX checksum offload.
    pub const COE_CR_RX: u32 = 0x0000_0001;
    /// The delay Linux and U-Boot program into BULK_IN_DLY.
    pub const BULK_IN_DELAY_DEFAULT: u32 = 0x2000;
}

/// The internal PHY's MII address.
pub const PHY_ID: u8 = 1;
/// Vendor PHY register: interrupt source (read to clear).
pub const PHY_INT_SRC: u8 = 29;
/// Vendor PHY register: interrupt mask.
pub const PHY_INT_MASK: u8 = 30;
/// PHY_INT_MASK default: auto-negotiation complete and link down.
pub const PHY_INT_MASK_DEFAULT: u16 = 0x0050;

/// Bytes of TX command before each frame.
pub const TX_OVERHEAD: usize = 8;
/// Bytes of RX status before each frame (plus the RXDOFF pad).
pub const RX_STATUS_LEN: usize = 4;

/// The two TX command words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxCommand {
    /// A bit 13: this buffer starts the frame.
    pub first_segment: bool,
    /// A bit 12: this buffer ends the frame.
    pub last_segment: bool,
    /// A bits 10:0: bytes of frame data in this buffer.
    pub buffer_size: u16,
    /// A bits 20:16: bytes to skip before the data.
    pub data_offset: u8,
    /// B bits 10:0: whole frame length.
    pub frame_length: u16,
    /// B bit 12: do not pad short frames to 64 bytes.
    pub disable_padding: bool,
    /// B bit 13: do not append the FCS.
    pub no_fcs: bool,
    /// B bit 14: insert a TCP/UDP checksum.
    pub checksum: bool,
}

impl TxCommand {
    /// The command for a whole frame in one buffer, as every driver sends it.
    pub fn single(len: u16) -> Self {
        TxCommand {
            first_segment: true,
            last_segment: true,
            buffer_size: len,
            data_offset: 0,
            frame_length: len,
            disable_padding: false,
            no_fcs: false,
            checksum: false,
        }
    }

    /// Parses the 8 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, FramingError> {
        if b.len() < TX_OVERHEAD {
            return Err(FramingError::Truncated);
        }
        let (a, bw) = (le32(b, 0), le32(b, 4));
        Ok(TxCommand {
            first_segment: a & 0x2000 != 0,
            last_segment: a & 0x1000 != 0,
            buffer_size: (a & 0x7FF) as u16,
            data_offset: ((a >> 16) & 0x1F) as u8,
            frame_length: (bw & 0x7FF) as u16,
            disable_padding: bw & 0x1000 != 0,
            no_fcs: bw & 0x2000 != 0,
            checksum: bw & 0x4000 != 0,
        })
    }

    /// Writes the 8 bytes.
    pub fn emit(&self, out: &mut [u8]) {
        let a = (self.buffer_size as u32 & 0x7FF)
            | (self.last_segment as u32) << 12
            | (self.first_segment as u32) << 13
            | (self.data_offset as u32 & 0x1F) << 16;
        let b = (self.frame_length as u32 & 0x7FF)
            | (self.disable_padding as u32) << 12
            | (self.no_fcs as u32) << 13
            | (self.checksum as u32) << 14;
        out[0..4].copy_from_slice(&a.to_le_bytes());
        out[4..8].copy_from_slice(&b.to_le_bytes());
    }
}

/// Writes the TX command and the frame into `out`; returns the bytes to send.
pub fn frame_tx(frame: &[u8], out: &mut [u8]) -> Result<usize, EthError> {
    if frame.len() < 14 {
        return Err(EthError::FrameTooShort);
    }
    if frame.len() > MAX_FRAME {
        return Err(EthError::FrameTooLong { len: frame.len(), max: MAX_FRAME });
    }
    let total = TX_OVERHEAD + frame.len();
    if out.len() < total {
        return Err(EthError::BufferTooSmall { needed: total });
    }
    TxCommand::single(frame.len() as u16).emit(out);
    out[TX_OVERHEAD..total].copy_from_slice(frame);
    Ok(total)
}

/// The RX status word in front of each received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxStatus {
    /// Bits 29:16: frame length including the 4-byte FCS.
    pub length: u16,
    /// Bit 30: the frame failed the address filter.
    pub filter_fail: bool,
    /// Bit 15: error summary (any of CRC, runt, too long, collision, MII, watchdog, length).
    pub error: bool,
    /// Bit 13: broadcast frame.
    pub broadcast: bool,
    /// Bit 12: length error.
    pub length_error: bool,
    /// Bit 11: runt frame.
    pub runt: bool,
    /// Bit 10: multicast frame.
    pub multicast: bool,
    /// Bit 7: frame too long.
    pub too_long: bool,
    /// Bit 6: late collision seen.
    pub collision: bool,
    /// Bit 4: receive watchdog expired.
    pub watchdog: bool,
    /// Bit 3: MII error.
    pub mii_error: bool,
    /// Bit 2: dribbling bits.
    pub dribbling: bool,
    /// Bit 1: CRC error.
    pub crc_error: bool,
}

impl RxStatus {
    /// Decodes the status word.
    pub fn from_bits(w: u32) -> Self {
        let b = |n: u32| w & (1 << n) != 0;
        RxStatus {
            length: ((w >> 16) & 0x3FFF) as u16,
            filter_fail: b(30),
            error: b(15),
            broadcast: b(13),
            length_error: b(12),
            runt: b(11),
            multicast: b(10),
            too_long: b(7),
            collision: b(6),
            watchdog: b(4),
            mii_error: b(3),
            dribbling: b(2),
            crc_error: b(1),
        }
    }

    /// Encodes the status word.
    pub fn bits(&self) -> u32 {
        let f = |v: bool, n: u32| (v as u32) << n;
        (self.length as u32 & 0x3FFF) << 16
            | f(self.filter_fail, 30)
            | f(self.error, 15)
            | f(self.broadcast, 13)
            | f(self.length_error, 12)
            | f(self.runt, 11)
            | f(self.multicast, 10)
            | f(self.too_long, 7)
            | f(self.collision, 6)
            | f(self.watchdog, 4)
            | f(self.mii_error, 3)
            | f(self.dribbling, 2)
            | f(self.crc_error, 1)
    }

    /// A good-frame status for `frame_len` bytes of frame (FCS added here).
    pub fn good(frame_len: usize) -> Self {
        RxStatus::from_bits(((frame_len as u32 + 4) & 0x3FFF) << 16)
    }
}

/// One frame of a received bulk transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxFrame<'a> {
    /// Its status word.
    pub status: RxStatus,
    /// The frame without FCS (empty if the length was below 4).
    pub frame: &'a [u8],
}

impl RxFrame<'_> {
    /// Whether the frame is usable: no error summary and at least an Ethernet header.
    pub fn is_good(&self) -> bool {
        !self.status.error && self.frame.len() >= 14
    }
}

fn locate(
    b: &[u8],
    pos: usize,
    rx_offset: usize,
) -> Result<Option<(RxStatus, Range<usize>, usize)>, FramingError> {
    if pos >= b.len() {
        return Ok(None);
    }
    if b.len() - pos < RX_STATUS_LEN {
        return Err(FramingError::Truncated);
    }
    let status = RxStatus::from_bits(le32(b, pos));
    let len = status.length as usize;
    let start = pos + RX_STATUS_LEN + rx_offset;
    let end = start + len;
    if end > b.len() {
        return Err(FramingError::Overrun { length: len });
    }
    Ok(Some((status, start..end - len.min(4), align4(end))))
}

fn unpack(rx_offset: usize) -> impl Fn(&[u8], usize) -> Result<Option<Unpacked>, FramingError> {
    move |b, pos| {
        Ok(locate(b, pos, rx_offset)?.map(|(status, frame, next)| {
            let good = RxFrame { status, frame: &b[frame.clone()] }.is_good();
            Unpacked { frame, next, good }
        }))
    }
}

/// The frames of one bulk IN transfer, in order; stops after the first framing error.
#[derive(Clone, Debug)]
pub struct RxFrames<'a> {
    transfer: &'a [u8],
    pos: usize,
    rx_offset: usize,
}

impl<'a> RxFrames<'a> {
    /// Walks `transfer`, with the chip's RXDOFF pad of `rx_offset` bytes (0..=3) after each status.
    pub fn new(transfer: &'a [u8], rx_offset: usize) -> Self {
        RxFrames { transfer, pos: 0, rx_offset }
    }
}

impl<'a> Iterator for RxFrames<'a> {
    type Item = Result<RxFrame<'a>, FramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        match locate(self.transfer, self.pos, self.rx_offset) {
            Ok(None) => None,
            Ok(Some((status, frame, next))) => {
                self.pos = next;
                Some(Ok(RxFrame { status, frame: &self.transfer[frame] }))
            }
            Err(e) => {
                self.pos = self.transfer.len();
                Some(Err(e))
            }
        }
    }
}

/// Appends one received frame, as the chip would, at the end of `out[..len]`: pad to 4, status, RXDOFF
/// pad, frame, FCS (zero here). Returns the new length. For tests and simulations.
pub fn emit_rx_frame(out: &mut [u8], len: usize, status: RxStatus, rx_offset: usize, frame: &[u8]) -> usize {
    let at = align4(len);
    out[len..at].fill(0);
    out[at..at + 4].copy_from_slice(&status.bits().to_le_bytes());
    let start = at + 4 + rx_offset;
    out[at + 4..start].fill(0);
    out[start..start + frame.len()].copy_from_slice(frame);
    let end = start + status.length as usize;
    out[start + frame.len()..end].fill(0);
    end
}

/// Driver options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Let the chip pack several frames into one bulk transfer (HW_CFG MEF and BCE, burst cap sized
    /// to the RX buffer), as Linux does; otherwise one frame per transfer, as Circle does.
    pub multiple_frames: bool,
    /// RXDOFF: pad bytes between status and frame (0..=3). 0 keeps the frame 4-byte aligned in the
    /// buffer; Linux uses 2 to align the IP header.
    pub rx_offset: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config { multiple_frames: true, rx_offset: 0 }
    }
}

/// The SMSC95xx driver.
pub struct Smsc95xx<H: UsbHost, const RX: usize = 2048> {
    host: H,
    dev: DeviceHandle,
    bulk_in: EndpointHandle,
    bulk_out: EndpointHandle,
    mac: MacAddress,
    config: Config,
    id_rev: u32,
    mac_cr: u32,
    mii: Mii,
    counters: Counters,
    rx: RxStage<RX>,
    tx: super::DmaBuffer<TX_BUFFER>,
}

impl<H: UsbHost, const RX: usize> Smsc95xx<H, RX> {
    /// Resets and configures the chip on a configured device, with `mac` as its address (the Pi's
    /// board MAC from the mailbox: the LAN9514 on a Pi has no EEPROM). Order, as in U-Boot:
    ///
    /// 1. HW_CFG = LRST, wait until it clears; PM_CTRL = PHY_RST, wait until it clears.
    /// 2. ADDRL = MAC bytes 0..4, ADDRH = bytes 4..6 (little-endian).
    /// 3. HW_CFG |= BIR; BURST_CAP; BULK_IN_DLY = 0x2000; HW_CFG MEF|BCE (multi-frame) and RXDOFF.
    /// 4. INT_STS cleared, ID_REV read, LEDs, FLOW = 0, AFC_CFG default, MAC_CR read, VLAN1 = 0x8100,
    ///    checksum offload off.
    /// 5. PHY: reset, advertise 10/100 + pause, clear and set its interrupt mask, restart autoneg.
    /// 6. MAC_CR |= TXEN, TX_CFG = ON, MAC_CR |= RXEN.
    ///
    /// It does not wait for the link: see [`EthernetClass::link_up`].
    pub fn init(
        mut host: H,
        dev: DeviceHandle,
        bulk: &BulkInterface,
        mac: MacAddress,
        config: Config,
    ) -> Result<Self, EthError> {
        use bits::*;
        use reg::*;
        let h = &mut host;
        Registers::write(h, dev, HW_CFG, HW_CFG_LRST)?;
        Registers::wait(h, dev, HW_CFG, HW_CFG_LRST, 0, POLL_INTERVAL_MS)?;
        Registers::write(h, dev, PM_CTRL, PM_CTRL_PHY_RST)?;
        Registers::wait(h, dev, PM_CTRL, PM_CTRL_PHY_RST, 0, POLL_INTERVAL_MS)?;

        Registers::write(h, dev, ADDRL, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]))?;
        Registers::write(h, dev, ADDRH, u32::from_le_bytes([mac[4], mac[5], 0, 0]))?;

        Registers::modify(h, dev, HW_CFG, HW_CFG_BIR, 0)?;
        let (bulk_in, bulk_out) = bulk.handles();
        let burst_cap =
            if config.multiple_frames { super::burst_packets(RX, bulk_in.max_packet_size) } else { 0 };
        Registers::write(h, dev, BURST_CAP, burst_cap)?;
        Registers::write(h, dev, BULK_IN_DLY, BULK_IN_DELAY_DEFAULT)?;
        let merge = if config.multiple_frames { HW_CFG_MEF | HW_CFG_BCE } else { 0 };
        let offset = (config.rx_offset as u32 & 3) << 9;
        Registers::modify(h, dev, HW_CFG, merge | offset, HW_CFG_MEF | HW_CFG_BCE | HW_CFG_RXDOFF)?;

        Registers::write(h, dev, INT_STS, 0xFFFF_FFFF)?;
        let id_rev = Registers::read(h, dev, ID_REV)?;
        Registers::write(h, dev, LED_GPIO_CFG, LED_GPIO_CFG_LEDS)?;
        Registers::write(h, dev, FLOW, 0)?;
        Registers::write(h, dev, AFC_CFG, AFC_CFG_DEFAULT)?;
        let mut mac_cr = Registers::read(h, dev, MAC_CR)? & !(MAC_CR_PRMS | MAC_CR_MCPAS | MAC_CR_HPFILT);
        Registers::write(h, dev, VLAN1, 0x8100)?;
        Registers::modify(h, dev, COE_CR, 0, COE_CR_TX | COE_CR_RX)?;

        let mii = Mii { address_register: MII_ADDR, data_register: MII_DATA, phy: PHY_ID };
        mii.reset_and_autonegotiate(h, dev)?;
        mii.read(h, dev, PHY_INT_SRC)?;
        mii.write(h, dev, PHY_INT_MASK, PHY_INT_MASK_DEFAULT)?;
        mii.restart_autonegotiation(h, dev)?;

        mac_cr |= MAC_CR_TXEN;
        Registers::write(h, dev, MAC_CR, mac_cr)?;
        Registers::write(h, dev, TX_CFG, TX_CFG_ON)?;
        mac_cr |= MAC_CR_RXEN;
        Registers::write(h, dev, MAC_CR, mac_cr)?;

        Ok(Smsc95xx {
            host,
            dev,
            bulk_in,
            bulk_out,
            mac,
            config,
            id_rev,
            mac_cr,
            mii,
            counters: Counters::default(),
            rx: RxStage::new(),
            tx: super::DmaBuffer::new(),
        })
    }

    /// ID_REV as read during init (chip id in bits 31:16, e.g. 0xEC00).
    pub fn id_rev(&self) -> u32 {
        self.id_rev
    }

    /// MAC_CR as last written.
    pub fn mac_cr(&self) -> u32 {
        self.mac_cr
    }

    /// The host, e.g. to poll other devices.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }
}

impl<H: UsbHost, const RX: usize> EthernetClass for Smsc95xx<H, RX> {
    fn send(&mut self, frame: &[u8]) -> Result<(), EthError> {
        let n = frame_tx(frame, &mut self.tx.0)?;
        if let Err(e) = bulk_send(&mut self.host, self.dev, self.bulk_out, &self.tx.0[..n]) {
            self.counters.tx_errors += 1;
            return Err(e.into());
        }
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += frame.len() as u32;
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, EthError> {
        let unpack = unpack(self.config.rx_offset as usize);
        self.rx.receive(&mut self.host, self.dev, self.bulk_in, &mut self.counters, buf, unpack)
    }

    fn mac_address(&self) -> MacAddress {
        self.mac
    }

    fn link_up(&mut self) -> Result<bool, EthError> {
        self.mii.link_up(&mut self.host, self.dev)
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{tests::vendor_net_config, Configuration};
    use crate::ethernet::phy;
    use crate::host::{Speed, TransferError};
    use crate::mock::{ChipMock, SelfClearing};
    use std::vec;
    use std::vec::Vec;

    const DEV: DeviceHandle =
        DeviceHandle { address: 3, speed: Speed::High, max_packet_size0: 64, split: None };
    const MAC: MacAddress = [0xB8, 0x27, 0xEB, 0x12, 0x34, 0x56];

    #[test]
    fn tx_command_round_trip_and_bits() {
        let c = TxCommand::single(1514);
        let mut b = [0u8; 8];
        c.emit(&mut b);
        // A = 1514 | FIRST_SEG 0x2000 | LAST_SEG 0x1000; B = 1514.
        assert_eq!(b, [0xEA, 0x35, 0, 0, 0xEA, 0x05, 0, 0]);
        assert_eq!(TxCommand::parse(&b), Ok(c));
        let odd = TxCommand {
            first_segment: false,
            last_segment: true,
            buffer_size: 100,
            data_offset: 3,
            frame_length: 1000,
            disable_padding: true,
            no_fcs: true,
            checksum: true,
        };
        odd.emit(&mut b);
        assert_eq!(TxCommand::parse(&b), Ok(odd));
        assert_eq!(TxCommand::parse(&b[..7]), Err(FramingError::Truncated));
    }

    #[test]
    fn frame_tx_checks_lengths() {
        let mut out = [0u8; TX_BUFFER];
        assert_eq!(frame_tx(&[1; 60], &mut out), Ok(68));
        assert_eq!(&out[8..68], &[1; 60]);
        assert_eq!(frame_tx(&[1; 13], &mut out), Err(EthError::FrameTooShort));
        assert_eq!(frame_tx(&[1; 1519], &mut out), Err(EthError::FrameTooLong { len: 1519, max: 1518 }));
        assert_eq!(frame_tx(&[1; 60], &mut out[..67]), Err(EthError::BufferTooSmall { needed: 68 }));
    }

    #[test]
    fn rx_status_round_trip() {
        for w in [0x05EE_0000u32, 0x4000_8000, 0x3FFF_BCDE, 0x0040_2000, 0x0000_0002] {
            let s = RxStatus::from_bits(w);
            assert_eq!(s.bits(), w & 0x7FFF_BCDE, "{w:#x}");
        }
        let s = RxStatus::from_bits(0x0046_8802);
        assert_eq!(s.length, 0x46);
        assert!(s.error && s.crc_error && s.runt && !s.filter_fail);
    }

    fn packed(frames: &[(usize, RxStatus)], rx_offset: usize) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        let mut len = 0;
        for (i, (n, status)) in frames.iter().enumerate() {
            let f: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
            len = emit_rx_frame(&mut b, len, *status, rx_offset, &f);
        }
        b.truncate(len);
        b
    }

    #[test]
    fn several_frames_per_transfer_with_alignment_and_offset() {
        for offset in 0..4 {
            let bad = RxStatus { error: true, crc_error: true, ..RxStatus::good(70) };
            let t = packed(
                &[
                    (60, RxStatus::good(60)),
                    (70, bad),
                    (1514, RxStatus::good(1514)),
                    (61, RxStatus::good(61)),
                ],
                offset,
            );
            let frames: Vec<RxFrame> = RxFrames::new(&t, offset).map(|f| f.unwrap()).collect();
            assert_eq!(frames.len(), 4);
            assert_eq!(frames.iter().map(|f| f.frame.len()).collect::<Vec<_>>(), [60, 70, 1514, 61]);
            assert_eq!(frames.iter().map(|f| f.is_good()).collect::<Vec<_>>(), [true, false, true, true]);
            assert_eq!(frames[2].frame[..3], [62, 63, 64]);
            assert_eq!(frames[3].frame[0], 93);
        }
    }

    #[test]
    fn malformed_transfers_are_errors() {
        let t = packed(&[(60, RxStatus::good(60)), (100, RxStatus::good(100))], 0);
        // Cut inside the second status word, and inside the second frame.
        let cut = RxFrames::new(&t[..70], 0).collect::<Vec<_>>();
        assert_eq!(cut[1], Err(FramingError::Truncated));
        let cut = RxFrames::new(&t[..100], 0).collect::<Vec<_>>();
        assert_eq!(cut[1], Err(FramingError::Overrun { length: 104 }));
        assert_eq!(cut.len(), 2);
        // A status claiming 16383 bytes.
        assert_eq!(
            RxFrames::new(&[0, 0, 0xFF, 0x3F, 1, 2], 0).next(),
            Some(Err(FramingError::Overrun { length: 0x3FFF }))
        );
        // A zero-length status (no FCS even) is a bad frame, not a panic.
        let z: Vec<_> = RxFrames::new(&[0, 0, 0, 0], 0).collect();
        assert_eq!(z.len(), 1);
        assert!(!z[0].unwrap().is_good());
        // Every prefix of a good transfer parses or fails cleanly.
        for n in 0..t.len() {
            for r in RxFrames::new(&t[..n], 0) {
                let _ = r;
            }
        }
    }

    fn chip() -> ChipMock {
        let mut m = ChipMock::new();
        m.mii = Some((reg::MII_ADDR, reg::MII_DATA));
        m.regs.insert(reg::ID_REV, 0xEC00_0002);
        m.regs.insert(reg::HW_CFG, 0x0000_0600);
        m.regs.insert(reg::MAC_CR, bits::MAC_CR_PRMS | 0x0010_0000);
        m.regs.insert(reg::COE_CR, 0x0001_0001);
        m.phy.insert(phy::BMCR, phy::BMCR_ANENABLE);
        m.self_clearing.push(SelfClearing {
            register: reg::HW_CFG,
            mask: bits::HW_CFG_LRST,
            reads: Some(2),
            then_set: 0,
        });
        m.self_clearing.push(SelfClearing {
            register: reg::PM_CTRL,
            mask: bits::PM_CTRL_PHY_RST,
            reads: Some(1),
            then_set: 0,
        });
        m
    }

    fn bulk(mps: u16) -> BulkInterface {
        let (b, n) = vendor_net_config(mps);
        Configuration::new_checked(&b[..n]).unwrap().find_bulk_pair(None).unwrap().unwrap()
    }

    #[test]
    fn init_writes_registers_in_order() {
        let mut m = chip();
        let d = Smsc95xx::<_, 2048>::init(&mut m, DEV, &bulk(512), MAC, Config::default()).unwrap();
        assert_eq!(d.id_rev(), 0xEC00_0002);
        let mii_cmd = |r: u32, w: bool| (1 << 11) | (r << 6) | if w { 3 } else { 1 };
        let mut want: Vec<(u16, u32)> = vec![
            (reg::HW_CFG, bits::HW_CFG_LRST),
            (reg::PM_CTRL, bits::PM_CTRL_PHY_RST),
            (reg::ADDRL, 0x12EB_27B8),
            (reg::ADDRH, 0x0000_5634),
            (reg::HW_CFG, bits::HW_CFG_BIR),
            (reg::BURST_CAP, 4), // 2048-byte RX buffer / 512-byte packets
            (reg::BULK_IN_DLY, 0x2000),
            (reg::HW_CFG, bits::HW_CFG_BIR | bits::HW_CFG_MEF | bits::HW_CFG_BCE),
            (reg::INT_STS, 0xFFFF_FFFF),
            (reg::LED_GPIO_CFG, 0x0111_0000),
            (reg::FLOW, 0),
            (reg::AFC_CFG, 0x00F8_30A1),
            (reg::VLAN1, 0x8100),
            (reg::COE_CR, 0),
            // PHY: BMCR reset, ADVERTISE, PHY_INT_MASK, BMCR autoneg restart.
            (reg::MII_DATA, 0x8000),
            (reg::MII_ADDR, mii_cmd(0, true)),
            (reg::MII_ADDR, mii_cmd(0, false)),
            (reg::MII_DATA, 0x0DE1),
            (reg::MII_ADDR, mii_cmd(4, true)),
            (reg::MII_ADDR, mii_cmd(29, false)),
            (reg::MII_DATA, 0x0050),
            (reg::MII_ADDR, mii_cmd(30, true)),
            (reg::MII_ADDR, mii_cmd(0, false)),
            (reg::MII_DATA, 0x1200),
            (reg::MII_ADDR, mii_cmd(0, true)),
            (reg::MAC_CR, 0x0010_0000 | bits::MAC_CR_TXEN),
            (reg::TX_CFG, bits::TX_CFG_ON),
            (reg::MAC_CR, 0x0010_0000 | bits::MAC_CR_TXEN | bits::MAC_CR_RXEN),
        ];
        assert_eq!(m.writes(), want);
        assert_eq!(m.phy_writes, [(0, 0x8000), (4, 0x0DE1), (30, 0x0050), (0, 0x1200)]);
        // The reset polls read HW_CFG three times (bit seen set twice) and PM_CTRL twice.
        let acc = m.accesses();
        let polls = |r| acc.iter().take_while(|a| a.0 != reg::ADDRL).filter(|a| **a == (r, None)).count();
        assert_eq!((polls(reg::HW_CFG), polls(reg::PM_CTRL)), (3, 2));

        // Single-frame mode: no burst cap, no MEF/BCE, RXDOFF set.
        let mut m = chip();
        let cfg = Config { multiple_frames: false, rx_offset: 2 };
        Smsc95xx::<_, 2048>::init(&mut m, DEV, &bulk(512), MAC, cfg).unwrap();
        want[5] = (reg::BURST_CAP, 0);
        want[7] = (reg::HW_CFG, bits::HW_CFG_BIR | 2 << 9);
        assert_eq!(m.writes()[..8], want[..8]);
    }

    #[test]
    fn reset_that_never_clears_times_out() {
        let mut m = chip();
        m.self_clearing[0].reads = None;
        let r = Smsc95xx::<_, 2048>::init(&mut m, DEV, &bulk(512), MAC, Config::default());
        assert_eq!(r.err(), Some(EthError::Timeout { register: reg::HW_CFG, mask: bits::HW_CFG_LRST }));
        let reads = m.accesses().iter().filter(|a| **a == (reg::HW_CFG, None)).count();
        assert_eq!(reads, crate::ethernet::POLL_LIMIT as usize);
        assert_eq!(m.writes(), [(reg::HW_CFG, bits::HW_CFG_LRST)]);

        let mut m = chip();
        m.self_clearing[1].reads = None;
        let r = Smsc95xx::<_, 2048>::init(&mut m, DEV, &bulk(512), MAC, Config::default());
        assert_eq!(r.err(), Some(EthError::Timeout { register: reg::PM_CTRL, mask: bits::PM_CTRL_PHY_RST }));
    }

    #[test]
    fn send_and_receive_through_the_mock() {
        let mut m = chip();
        let t = packed(
            &[
                (60, RxStatus::good(60)),
                (70, RxStatus { error: true, ..RxStatus::good(70) }),
                (100, RxStatus::good(100)),
            ],
            0,
        );
        m.bulk_in.push_back(Ok(t));
        m.bulk_in.push_back(Ok(vec![1, 2, 3])); // truncated status: a framing error
        m.bulk_in.push_back(Err(TransferError::Stall));
        let mut d = Smsc95xx::<_, 2048>::init(&mut m, DEV, &bulk(512), MAC, Config::default()).unwrap();
        let mut buf = [0u8; 1514];
        assert_eq!(d.receive(&mut buf), Ok(Some(60)));
        assert_eq!(d.receive(&mut buf), Ok(Some(100))); // the bad one in between is skipped
        assert_eq!(buf[0], 62);
        assert_eq!(d.receive(&mut buf), Ok(None));
        assert_eq!(d.receive(&mut buf), Err(EthError::Transfer(TransferError::Stall)));
        assert_eq!(d.receive(&mut buf), Ok(None));
        let c = d.counters();
        assert_eq!((c.rx_frames, c.rx_bytes, c.rx_errors, c.rx_framing_errors), (2, 160, 1, 1));
        // 504 + 8 = 512 bytes: a packet multiple, so a ZLP follows.
        d.send(&[0x55; 504]).unwrap();
        d.send(&[0x55; 60]).unwrap();
        let outs = m.bulk_outs();
        assert_eq!(outs.iter().map(|o| o.len()).collect::<Vec<_>>(), [512, 0, 68]);
        assert_eq!(TxCommand::parse(&outs[2]).unwrap(), TxCommand::single(60));
    }

    #[test]
    fn link_state_from_bmsr() {
        let mut m = chip();
        let mut d = Smsc95xx::<_, 2048>::init(&mut m, DEV, &bulk(512), MAC, Config::default()).unwrap();
        assert_eq!(d.link_up(), Ok(false));
        d.host_mut().phy.insert(phy::BMSR, phy::BMSR_LINK);
        assert_eq!(d.link_up(), Ok(true));
    }
}
