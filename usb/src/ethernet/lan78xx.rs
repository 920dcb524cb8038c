//! Microchip LAN78xx USB Ethernet (the Pi 3B+'s LAN7515, Ethernet function 0424:7800).
//!
//! Register numbers, bits and the init order follow the public Circle `lib/usb/lan7800.cpp`, Linux
//! `lan78xx` and U-Boot `lan78xx.c`/`lan7x.h` drivers (facts only). Framing on the bulk endpoints:
//!
//! ```text
//! OUT: TX command A (LE32) | TX command B (LE32) | frame
//!      A: bits 19:0 frame length, 22 insert FCS;  B: bits 29:16 MSS, 15:0 VLAN tag
//! IN:  RX command A (LE32) | B (LE32) | C (LE16) | frame + FCS | pad to 4 | A | ...
//!      A: bits 13:0 length including FCS, 22 receive error detected; B: checksum, VLAN tag; C: wake
//! ```

use super::{
    align4, bulk_send, BulkInterfaceExt, Counters, EthError, EthernetClass, FramingError, MacAddress, Mii,
    Registers, RxStage, Unpacked, MAX_FRAME, POLL_INTERVAL_MS, TX_BUFFER,
};
use crate::descriptor::BulkInterface;
use crate::host::{DeviceHandle, EndpointHandle, UsbHost};
use crate::{le16, le32};
use core::ops::Range;

/// Register addresses (wIndex of the vendor requests).
pub mod reg {
    /// Chip id (31:16) and revision.
    pub const ID_REV: u16 = 0x000;
    /// Interrupt status, write 1 to clear.
    pub const INT_STS: u16 = 0x00C;
    /// Hardware configuration.
    pub const HW_CFG: u16 = 0x010;
    /// Power management control.
    pub const PMT_CTL: u16 = 0x014;
    /// USB configuration 0.
    pub const USB_CFG0: u16 = 0x080;
    /// Bulk IN burst size, in USB packets.
    pub const BURST_CAP: u16 = 0x090;
    /// Bulk IN delay.
    pub const BULK_IN_DLY: u16 = 0x094;
    /// Interrupt endpoint control.
    pub const INT_EP_CTL: u16 = 0x098;
    /// Receive filtering engine control.
    pub const RFE_CTL: u16 = 0x0B0;
    /// RX FIFO control.
    pub const FCT_RX_CTL: u16 = 0x0C0;
    /// TX FIFO control.
    pub const FCT_TX_CTL: u16 = 0x0C4;
    /// RX FIFO end, in 512-byte blocks.
    pub const FCT_RX_FIFO_END: u16 = 0x0C8;
    /// TX FIFO end, in 512-byte blocks.
    pub const FCT_TX_FIFO_END: u16 = 0x0CC;
    /// FIFO flow control thresholds.
    pub const FCT_FLOW: u16 = 0x0D0;
    /// MAC control.
    pub const MAC_CR: u16 = 0x100;
    /// MAC receive.
    pub const MAC_RX: u16 = 0x104;
    /// MAC transmit.
    pub const MAC_TX: u16 = 0x108;
    /// Flow control.
    pub const FLOW: u16 = 0x10C;
    /// MAC address bytes 4..6.
    pub const RX_ADDRH: u16 = 0x118;
    /// MAC address bytes 0..4.
    pub const RX_ADDRL: u16 = 0x11C;
    /// MII access.
    pub const MII_ACC: u16 = 0x120;
    /// MII data.
    pub const MII_DATA: u16 = 0x124;
    /// Perfect address filter 0, high half (with VALID).
    pub const MAF_HI0: u16 = 0x400;
    /// Perfect address filter 0, low half.
    pub const MAF_LO0: u16 = 0x404;
}

/// Register bits.
pub mod bits {
    /// HW_CFG: lite reset (self-clearing).
    pub const HW_CFG_LRST: u32 = 1 << 1;
    /// HW_CFG: multiple Ethernet frames per bulk transfer.
    pub const HW_CFG_MEF: u32 = 1 << 4;
    /// HW_CFG: LED0 output enable.
    pub const HW_CFG_LED0_EN: u32 = 1 << 20;
    /// HW_CFG: LED1 output enable.
    pub const HW_CFG_LED1_EN: u32 = 1 << 21;
    /// PMT_CTL: PHY reset (self-clearing).
    pub const PMT_CTL_PHY_RST: u32 = 1 << 4;
    /// PMT_CTL: device ready.
    pub const PMT_CTL_READY: u32 = 1 << 7;
    /// USB_CFG0: burst cap enable.
    pub const USB_CFG_BCE: u32 = 1 << 5;
    /// USB_CFG0: bulk-in empty response. Circle, U-Boot and Linux all clear it, but their comments
    /// disagree on whether an empty bulk IN is then NAKed or answered with a ZLP; the driver treats
    /// both as "no frame".
    pub const USB_CFG_BIR: u32 = 1 << 6;
    /// RFE_CTL: perfect destination address filtering.
    pub const RFE_CTL_DA_PERFECT: u32 = 1 << 1;
    /// RFE_CTL: accept broadcast.
    pub const RFE_CTL_BCAST_EN: u32 = 1 << 10;
    /// FCT_RX_CTL / FCT_TX_CTL: FIFO enable.
    pub const FCT_EN: u32 = 1 << 31;
    /// MAC_CR: automatic speed detection.
    pub const MAC_CR_AUTO_SPEED: u32 = 1 << 11;
    /// MAC_CR: automatic duplex detection.
    pub const MAC_CR_AUTO_DUPLEX: u32 = 1 << 12;
    /// MAC_RX: receiver enable.
    pub const MAC_RX_RXEN: u32 = 1 << 0;
    /// MAC_RX: maximum frame size field, bits 29:16.
    pub const MAC_RX_MAX_SIZE: u32 = 0x3FFF_0000;
    /// MAC_TX: transmitter enable.
    pub const MAC_TX_TXEN: u32 = 1 << 0;
    /// MAF_HI: entry valid.
    pub const MAF_HI_VALID: u32 = 1 << 31;
    /// The delay Linux, U-Boot and Circle program into BULK_IN_DLY.
    pub const BULK_IN_DELAY_DEFAULT: u32 = 0x800;
    /// RX and TX FIFO end: (12 KiB - 512) / 512.
    pub const FIFO_END_DEFAULT: u32 = (12 * 1024 - 512) / 512;
    /// Largest frame the MAC accepts, FCS included (Circle's value: 1500 + 14 + 4).
    pub const MAX_RX_FRAME: u32 = 1518;
}

/// Chip ids (ID_REV bits 31:16) this driver accepts.
pub const CHIP_IDS: [u16; 3] = [0x7800, 0x7801, 0x7850];
/// The internal PHY's MII address.
pub const PHY_ID: u8 = 1;
/// Bytes of TX command before each frame.
pub const TX_OVERHEAD: usize = 8;
/// Bytes of RX command before each frame.
pub const RX_HEADER_LEN: usize = 10;

/// The two TX command words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxCommand {
    /// A bits 19:0: frame length.
    pub length: u32,
    /// A bit 22: the chip appends the FCS.
    pub insert_fcs: bool,
    /// B bits 29:16: segment size for large-send offload (unused: 0).
    pub mss: u16,
    /// B bits 15:0: VLAN tag to insert (unused: 0).
    pub vlan_tag: u16,
}

impl TxCommand {
    /// The command every frame gets here: length, chip-generated FCS, no offloads.
    pub fn single(len: usize) -> Self {
        TxCommand { length: len as u32, insert_fcs: true, mss: 0, vlan_tag: 0 }
    }

    /// Parses the 8 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, FramingError> {
        if b.len() < TX_OVERHEAD {
            return Err(FramingError::Truncated);
        }
        let (a, bw) = (le32(b, 0), le32(b, 4));
        Ok(TxCommand {
            length: a & 0x000F_FFFF,
            insert_fcs: a & (1 << 22) != 0,
            mss: ((bw >> 16) & 0x3FFF) as u16,
            vlan_tag: bw as u16,
        })
    }

    /// Writes the 8 bytes.
    pub fn emit(&self, out: &mut [u8]) {
        let a = (self.length & 0x000F_FFFF) | (self.insert_fcs as u32) << 22;
        let b = (self.mss as u32 & 0x3FFF) << 16 | self.vlan_tag as u32;
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
    TxCommand::single(frame.len()).emit(out);
    out[TX_OVERHEAD..total].copy_from_slice(frame);
    Ok(total)
}

/// The three RX command words in front of each received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RxCommand {
    /// A bits 13:0: frame length including the 4-byte FCS.
    pub length: u16,
    /// A bit 22 (RED): receive error detected; the frame is bad.
    pub receive_error: bool,
    /// A bits 21:16: the individual errors (watchdog, runt, long, RX error, dribble, FCS).
    pub error_detail: u8,
    /// A bit 23: the frame carried a VLAN tag.
    pub vlan_tagged: bool,
    /// A bit 24: multicast.
    pub multicast: bool,
    /// A bit 25: broadcast.
    pub broadcast: bool,
    /// B bits 31:16: raw checksum (when offload is on).
    pub checksum: u16,
    /// B bits 15:0: the VLAN tag.
    pub vlan_tag: u16,
    /// C bit 15: a wake frame.
    pub wake: bool,
}

impl RxCommand {
    /// Parses the 10 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, FramingError> {
        if b.len() < RX_HEADER_LEN {
            return Err(FramingError::Truncated);
        }
        let (a, bw, c) = (le32(b, 0), le32(b, 4), le16(b, 8));
        Ok(RxCommand {
            length: (a & 0x3FFF) as u16,
            receive_error: a & (1 << 22) != 0,
            error_detail: ((a >> 16) & 0x3F) as u8,
            vlan_tagged: a & (1 << 23) != 0,
            multicast: a & (1 << 24) != 0,
            broadcast: a & (1 << 25) != 0,
            checksum: (bw >> 16) as u16,
            vlan_tag: bw as u16,
            wake: c & 0x8000 != 0,
        })
    }

    /// Writes the 10 bytes.
    pub fn emit(&self, out: &mut [u8]) {
        let a = (self.length as u32 & 0x3FFF)
            | (self.error_detail as u32 & 0x3F) << 16
            | (self.receive_error as u32) << 22
            | (self.vlan_tagged as u32) << 23
            | (self.multicast as u32) << 24
            | (self.broadcast as u32) << 25;
        let b = (self.checksum as u32) << 16 | self.vlan_tag as u32;
        let c: u16 = if self.wake { 0x8000 } else { 0 };
        out[0..4].copy_from_slice(&a.to_le_bytes());
        out[4..8].copy_from_slice(&b.to_le_bytes());
        out[8..10].copy_from_slice(&c.to_le_bytes());
    }

    /// A good-frame command for `frame_len` bytes of frame (FCS added here).
    pub fn good(frame_len: usize) -> Self {
        RxCommand { length: (frame_len + 4) as u16, ..RxCommand::default() }
    }
}

/// One frame of a received bulk transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxFrame<'a> {
    /// Its command words.
    pub command: RxCommand,
    /// The frame without FCS.
    pub frame: &'a [u8],
}

impl RxFrame<'_> {
    /// Whether the frame is usable: no receive error and at least an Ethernet header.
    pub fn is_good(&self) -> bool {
        !self.command.receive_error && self.frame.len() >= 14
    }
}

fn locate(b: &[u8], pos: usize) -> Result<Option<(RxCommand, Range<usize>, usize)>, FramingError> {
    if pos >= b.len() {
        return Ok(None);
    }
    let command = RxCommand::parse(&b[pos..])?;
    let len = command.length as usize;
    let start = pos + RX_HEADER_LEN;
    let end = start + len;
    if end > b.len() {
        return Err(FramingError::Overrun { length: len });
    }
    Ok(Some((command, start..end - len.min(4), align4(end))))
}

fn unpack(b: &[u8], pos: usize) -> Result<Option<Unpacked>, FramingError> {
    Ok(locate(b, pos)?.map(|(command, frame, next)| {
        let good = RxFrame { command, frame: &b[frame.clone()] }.is_good();
        Unpacked { frame, next, good }
    }))
}

/// The frames of one bulk IN transfer, in order; stops after the first framing error.
#[derive(Clone, Debug)]
pub struct RxFrames<'a> {
    transfer: &'a [u8],
    pos: usize,
}

impl<'a> RxFrames<'a> {
    /// Walks `transfer`.
    pub fn new(transfer: &'a [u8]) -> Self {
        RxFrames { transfer, pos: 0 }
    }
}

impl<'a> Iterator for RxFrames<'a> {
    type Item = Result<RxFrame<'a>, FramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        match locate(self.transfer, self.pos) {
            Ok(None) => None,
            Ok(Some((command, frame, next))) => {
                self.pos = next;
                Some(Ok(RxFrame { command, frame: &self.transfer[frame] }))
            }
            Err(e) => {
                self.pos = self.transfer.len();
                Some(Err(e))
            }
        }
    }
}

/// Appends one received frame, as the chip would, at the end of `out[..len]`: pad to 4, command words,
/// frame, FCS (zero here). Returns the new length. For tests and simulations.
pub fn emit_rx_frame(out: &mut [u8], len: usize, command: RxCommand, frame: &[u8]) -> usize {
    let at = align4(len);
    out[len..at].fill(0);
    command.emit(&mut out[at..]);
    let start = at + RX_HEADER_LEN;
    out[start..start + frame.len()].copy_from_slice(frame);
    let end = start + command.length as usize;
    out[start + frame.len()..end].fill(0);
    end
}

/// Driver options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Let the chip pack several frames into one bulk transfer (HW_CFG MEF), as Linux does; otherwise
    /// one frame per transfer, as Circle does.
    pub multiple_frames: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { multiple_frames: true }
    }
}

/// The LAN78xx driver.
pub struct Lan78xx<H: UsbHost, const RX: usize = 2048> {
    host: H,
    dev: DeviceHandle,
    bulk_in: EndpointHandle,
    bulk_out: EndpointHandle,
    mac: MacAddress,
    id_rev: u32,
    mii: Mii,
    counters: Counters,
    rx: RxStage<RX>,
    tx: super::DmaBuffer<TX_BUFFER>,
}

impl<H: UsbHost, const RX: usize> Lan78xx<H, RX> {
    /// Resets and configures the chip on a configured device, with `mac` as its address (the board
    /// MAC from the mailbox). Order, as in Circle:
    ///
    /// 1. ID_REV checked; HW_CFG |= LRST, wait until it clears.
    /// 2. RX_ADDRL/H = MAC (little-endian), perfect filter 0 = MAC with VALID.
    /// 3. BURST_CAP (RX buffer in bulk packets), BULK_IN_DLY = 0x800, HW_CFG LEDs on and MEF,
    ///    USB_CFG0 BCE on and BIR off, FIFO ends, interrupt endpoint off, INT_STS cleared, flow control
    ///    off, RFE_CTL broadcast + perfect filtering.
    /// 4. PMT_CTL |= PHY_RST, wait for PHY_RST clear and READY set.
    /// 5. MAC_CR auto speed/duplex; MAC_TX TXEN, FCT_TX_CTL EN; MAC_RX max size 1518 and RXEN,
    ///    FCT_RX_CTL EN.
    /// 6. PHY: advertise 10/100 with pause, restart auto-negotiation.
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
        let id_rev = Registers::read(h, dev, ID_REV)?;
        if !CHIP_IDS.contains(&((id_rev >> 16) as u16)) {
            return Err(EthError::UnexpectedChip { id_rev });
        }
        Registers::modify(h, dev, HW_CFG, HW_CFG_LRST, 0)?;
        Registers::wait(h, dev, HW_CFG, HW_CFG_LRST, 0, POLL_INTERVAL_MS)?;

        let low = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
        let high = u32::from_le_bytes([mac[4], mac[5], 0, 0]);
        Registers::write(h, dev, RX_ADDRL, low)?;
        Registers::write(h, dev, RX_ADDRH, high)?;
        Registers::write(h, dev, MAF_LO0, low)?;
        Registers::write(h, dev, MAF_HI0, high | MAF_HI_VALID)?;

        let (bulk_in, bulk_out) = bulk.handles();
        Registers::write(h, dev, BURST_CAP, super::burst_packets(RX, bulk_in.max_packet_size))?;
        Registers::write(h, dev, BULK_IN_DLY, BULK_IN_DELAY_DEFAULT)?;
        let mef = if config.multiple_frames { HW_CFG_MEF } else { 0 };
        Registers::modify(h, dev, HW_CFG, HW_CFG_LED0_EN | HW_CFG_LED1_EN | mef, HW_CFG_MEF)?;
        Registers::modify(h, dev, USB_CFG0, USB_CFG_BCE, USB_CFG_BIR)?;
        Registers::write(h, dev, FCT_RX_FIFO_END, FIFO_END_DEFAULT)?;
        Registers::write(h, dev, FCT_TX_FIFO_END, FIFO_END_DEFAULT)?;
        Registers::write(h, dev, INT_EP_CTL, 0)?;
        Registers::write(h, dev, INT_STS, 0xFFFF_FFFF)?;
        Registers::write(h, dev, FLOW, 0)?;
        Registers::write(h, dev, FCT_FLOW, 0)?;
        Registers::modify(h, dev, RFE_CTL, RFE_CTL_BCAST_EN | RFE_CTL_DA_PERFECT, 0)?;

        Registers::modify(h, dev, PMT_CTL, PMT_CTL_PHY_RST, 0)?;
        Registers::wait(h, dev, PMT_CTL, PMT_CTL_PHY_RST | PMT_CTL_READY, PMT_CTL_READY, POLL_INTERVAL_MS)?;

        Registers::modify(h, dev, MAC_CR, MAC_CR_AUTO_DUPLEX | MAC_CR_AUTO_SPEED, 0)?;
        Registers::modify(h, dev, MAC_TX, MAC_TX_TXEN, 0)?;
        Registers::modify(h, dev, FCT_TX_CTL, FCT_EN, 0)?;
        Registers::modify(h, dev, MAC_RX, MAX_RX_FRAME << 16 | MAC_RX_RXEN, MAC_RX_MAX_SIZE)?;
        Registers::modify(h, dev, FCT_RX_CTL, FCT_EN, 0)?;

        let mii = Mii { address_register: MII_ACC, data_register: MII_DATA, phy: PHY_ID };
        mii.write(
            h,
            dev,
            super::phy::ADVERTISE,
            super::phy::ADVERTISE_ALL
                | super::phy::ADVERTISE_CSMA
                | super::phy::ADVERTISE_PAUSE
                | super::phy::ADVERTISE_PAUSE_ASYM,
        )?;
        mii.restart_autonegotiation(h, dev)?;

        Ok(Lan78xx {
            host,
            dev,
            bulk_in,
            bulk_out,
            mac,
            id_rev,
            mii,
            counters: Counters::default(),
            rx: RxStage::new(),
            tx: super::DmaBuffer::new(),
        })
    }

    /// ID_REV as read during init.
    pub fn id_rev(&self) -> u32 {
        self.id_rev
    }

    /// The host, e.g. to poll other devices.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }
}

impl<H: UsbHost, const RX: usize> EthernetClass for Lan78xx<H, RX> {
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
    use crate::host::Speed;
    use crate::mock::{ChipMock, SelfClearing};
    use std::vec;
    use std::vec::Vec;

    const DEV: DeviceHandle =
        DeviceHandle { address: 4, speed: Speed::High, max_packet_size0: 64, split: None };
    const MAC: MacAddress = [0xB8, 0x27, 0xEB, 0xAA, 0xBB, 0xCC];

    #[test]
    fn tx_command_round_trip() {
        let mut b = [0u8; 8];
        TxCommand::single(1514).emit(&mut b);
        assert_eq!(b, [0xEA, 0x05, 0x40, 0, 0, 0, 0, 0]);
        let c = TxCommand { length: 0xF_FFFF, insert_fcs: false, mss: 1460, vlan_tag: 0xABCD };
        c.emit(&mut b);
        assert_eq!(TxCommand::parse(&b), Ok(c));
        assert_eq!(TxCommand::parse(&b[..4]), Err(FramingError::Truncated));
        let mut out = [0u8; TX_BUFFER];
        assert_eq!(frame_tx(&[9; 100], &mut out), Ok(108));
        assert_eq!(TxCommand::parse(&out).unwrap(), TxCommand::single(100));
        assert_eq!(frame_tx(&[9; 1519], &mut out), Err(EthError::FrameTooLong { len: 1519, max: 1518 }));
    }

    #[test]
    fn rx_command_round_trip() {
        let c = RxCommand {
            length: 0x3FFF,
            receive_error: true,
            error_detail: 0x3F,
            vlan_tagged: true,
            multicast: true,
            broadcast: false,
            checksum: 0x1234,
            vlan_tag: 0x0064,
            wake: true,
        };
        let mut b = [0u8; 10];
        c.emit(&mut b);
        assert_eq!(RxCommand::parse(&b), Ok(c));
        // RED is bit 22, length bits 13:0.
        assert_eq!(RxCommand::parse(&[0x40, 0x00, 0x40, 0, 0, 0, 0, 0, 0, 0]).unwrap().length, 0x40);
        assert!(RxCommand::parse(&[0x40, 0x00, 0x40, 0, 0, 0, 0, 0, 0, 0]).unwrap().receive_error);
        assert_eq!(RxCommand::parse(&b[..9]), Err(FramingError::Truncated));
    }

    fn packed(frames: &[(usize, RxCommand)]) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        let mut len = 0;
        for (i, (n, c)) in frames.iter().enumerate() {
            let f: Vec<u8> = (0..*n).map(|j| (i * 17 + j) as u8).collect();
            len = emit_rx_frame(&mut b, len, *c, &f);
        }
        b.truncate(len);
        b
    }

    #[test]
    fn several_frames_per_transfer() {
        let bad = RxCommand { receive_error: true, ..RxCommand::good(64) };
        let t = packed(&[
            (60, RxCommand::good(60)),
            (64, bad),
            (1514, RxCommand::good(1514)),
            (63, RxCommand::good(63)),
        ]);
        // 10 + 64 = 74 -> next header at 76; then 76 + 10 + 68 = 154 -> 156.
        assert_eq!(RxCommand::parse(&t[76..]).unwrap(), bad);
        assert_eq!(RxCommand::parse(&t[156..]).unwrap(), RxCommand::good(1514));
        let frames: Vec<RxFrame> = RxFrames::new(&t).map(|f| f.unwrap()).collect();
        assert_eq!(frames.iter().map(|f| f.frame.len()).collect::<Vec<_>>(), [60, 64, 1514, 63]);
        assert_eq!(frames.iter().map(|f| f.is_good()).collect::<Vec<_>>(), [true, false, true, true]);
        assert_eq!(frames[3].frame[0], 51);
    }

    #[test]
    fn malformed_transfers_are_errors() {
        let t = packed(&[(60, RxCommand::good(60)), (100, RxCommand::good(100))]);
        assert_eq!(RxFrames::new(&t[..80]).nth(1), Some(Err(FramingError::Truncated)));
        assert_eq!(RxFrames::new(&t[..120]).nth(1), Some(Err(FramingError::Overrun { length: 104 })));
        assert_eq!(RxFrames::new(&t[..120]).count(), 2);
        let mut huge = [0u8; 12];
        huge[0..2].copy_from_slice(&0x3FFFu16.to_le_bytes());
        assert_eq!(RxFrames::new(&huge).next(), Some(Err(FramingError::Overrun { length: 0x3FFF })));
        for n in 0..t.len() {
            RxFrames::new(&t[..n]).for_each(drop);
        }
    }

    fn chip() -> ChipMock {
        let mut m = ChipMock::new();
        m.mii = Some((reg::MII_ACC, reg::MII_DATA));
        m.regs.insert(reg::ID_REV, 0x7800_0002);
        m.regs.insert(reg::HW_CFG, bits::HW_CFG_MEF);
        m.regs.insert(reg::USB_CFG0, bits::USB_CFG_BIR | 0x1);
        m.regs.insert(reg::MAC_RX, 0x0600_0000 | 0x10);
        m.phy.insert(phy::BMCR, phy::BMCR_ANENABLE);
        m.self_clearing.push(SelfClearing {
            register: reg::HW_CFG,
            mask: bits::HW_CFG_LRST,
            reads: Some(1),
            then_set: 0,
        });
        m.self_clearing.push(SelfClearing {
            register: reg::PMT_CTL,
            mask: bits::PMT_CTL_PHY_RST,
            reads: Some(2),
            then_set: bits::PMT_CTL_READY,
        });
        m
    }

    fn bulk() -> BulkInterface {
        let (b, n) = vendor_net_config(512);
        Configuration::new_checked(&b[..n]).unwrap().find_bulk_pair(None).unwrap().unwrap()
    }

    #[test]
    fn init_writes_registers_in_order() {
        let mut m = chip();
        let d = Lan78xx::<_, 2048>::init(&mut m, DEV, &bulk(), MAC, Config::default()).unwrap();
        assert_eq!(d.id_rev(), 0x7800_0002);
        let mii_cmd = |r: u32, w: bool| (1 << 11) | (r << 6) | if w { 3 } else { 1 };
        let want: Vec<(u16, u32)> = vec![
            (reg::HW_CFG, bits::HW_CFG_MEF | bits::HW_CFG_LRST),
            (reg::RX_ADDRL, 0xAAEB_27B8),
            (reg::RX_ADDRH, 0x0000_CCBB),
            (reg::MAF_LO0, 0xAAEB_27B8),
            (reg::MAF_HI0, 0x8000_CCBB),
            (reg::BURST_CAP, 4),
            (reg::BULK_IN_DLY, 0x800),
            (reg::HW_CFG, bits::HW_CFG_MEF | bits::HW_CFG_LED0_EN | bits::HW_CFG_LED1_EN),
            (reg::USB_CFG0, bits::USB_CFG_BCE | 0x1),
            (reg::FCT_RX_FIFO_END, 23),
            (reg::FCT_TX_FIFO_END, 23),
            (reg::INT_EP_CTL, 0),
            (reg::INT_STS, 0xFFFF_FFFF),
            (reg::FLOW, 0),
            (reg::FCT_FLOW, 0),
            (reg::RFE_CTL, 0x402),
            (reg::PMT_CTL, bits::PMT_CTL_PHY_RST),
            (reg::MAC_CR, 0x1800),
            (reg::MAC_TX, 1),
            (reg::FCT_TX_CTL, 0x8000_0000),
            (reg::MAC_RX, 1518 << 16 | 0x10 | 1),
            (reg::FCT_RX_CTL, 0x8000_0000),
            (reg::MII_DATA, 0x0DE1),
            (reg::MII_ACC, mii_cmd(4, true)),
            (reg::MII_ACC, mii_cmd(0, false)),
            (reg::MII_DATA, 0x1000 | 0x1200),
            (reg::MII_ACC, mii_cmd(0, true)),
        ];
        assert_eq!(m.writes(), want);
        // PMT_CTL is polled until PHY_RST clears and READY is set: seen busy twice, then ready.
        let pmt_reads = m.accesses().iter().filter(|a| **a == (reg::PMT_CTL, None)).count();
        assert_eq!(pmt_reads, 1 + 3);
    }

    #[test]
    fn single_frame_mode_clears_mef() {
        let mut m = chip();
        Lan78xx::<_, 2048>::init(&mut m, DEV, &bulk(), MAC, Config { multiple_frames: false }).unwrap();
        assert!(m.writes().contains(&(reg::HW_CFG, bits::HW_CFG_LED0_EN | bits::HW_CFG_LED1_EN)));
    }

    #[test]
    fn wrong_chip_and_stuck_resets() {
        let mut m = chip();
        m.regs.insert(reg::ID_REV, 0x9500_0001);
        let r = Lan78xx::<_, 2048>::init(&mut m, DEV, &bulk(), MAC, Config::default());
        assert_eq!(r.err(), Some(EthError::UnexpectedChip { id_rev: 0x9500_0001 }));
        assert!(m.writes().is_empty());

        let mut m = chip();
        m.self_clearing[0].reads = None;
        let r = Lan78xx::<_, 2048>::init(&mut m, DEV, &bulk(), MAC, Config::default());
        assert_eq!(r.err(), Some(EthError::Timeout { register: reg::HW_CFG, mask: bits::HW_CFG_LRST }));

        // PHY_RST clears but READY never comes.
        let mut m = chip();
        m.self_clearing[1].then_set = 0;
        let r = Lan78xx::<_, 2048>::init(&mut m, DEV, &bulk(), MAC, Config::default());
        let mask = bits::PMT_CTL_PHY_RST | bits::PMT_CTL_READY;
        assert_eq!(r.err(), Some(EthError::Timeout { register: reg::PMT_CTL, mask }));
    }

    #[test]
    fn send_and_receive_through_the_mock() {
        let mut m = chip();
        let t = packed(&[
            (60, RxCommand::good(60)),
            (70, RxCommand { receive_error: true, ..RxCommand::good(70) }),
        ]);
        m.bulk_in.push_back(Ok(t));
        m.bulk_in.push_back(Ok(packed(&[(1514, RxCommand::good(1514))])));
        let mut d = Lan78xx::<_, 2048>::init(&mut m, DEV, &bulk(), MAC, Config::default()).unwrap();
        let mut buf = [0u8; 1514];
        assert_eq!(d.receive(&mut buf), Ok(Some(60)));
        assert_eq!(d.receive(&mut buf), Ok(Some(1514)));
        assert_eq!(d.receive(&mut buf), Ok(None));
        assert_eq!(d.counters().rx_errors, 1);
        d.send(&[1; 504]).unwrap();
        d.send(&[1; 505]).unwrap();
        let outs = m.bulk_outs();
        assert_eq!(outs.iter().map(|o| o.len()).collect::<Vec<_>>(), [512, 0, 513]);
        assert_eq!(TxCommand::parse(&outs[2]).unwrap(), TxCommand::single(505));
    }
}
