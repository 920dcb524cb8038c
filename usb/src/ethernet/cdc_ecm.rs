//! CDC Ethernet Control Model (USB CDC ECM 1.2): QEMU's `usb-net` in its configuration 1.
//!
//! The simplest framing of the three: every bulk transfer is one raw Ethernet frame without FCS, and
//! a transfer ends at a short packet. A frame whose length is a multiple of the bulk packet size
//! therefore needs a zero-length packet after it, in both directions (QEMU sends a ZLP after a 64-byte
//! ARP reply; on OUT it keeps accumulating until it sees a short packet or a ZLP). Opening selects the
//! data interface's alternate setting 1 (alternate 0 has no endpoints), reads the MAC from the
//! iMACAddress string and sets the packet filter.

use super::{
    bulk_send, Counters, EthError, EthernetClass, FramingError, MacAddress, RxStage, Unpacked, MAX_FRAME,
};
use crate::descriptor::{first_language, mac_from_string_descriptor, EcmFunction, LANGUAGE_EN_US};
use crate::host::{DeviceHandle, EndpointHandle, TransferError, UsbHost};
use crate::setup::{PacketFilter, Setup};

/// Filter set on open: our own address and broadcast (ARP) are all a UDP node needs.
pub const DEFAULT_FILTER: PacketFilter = PacketFilter(PacketFilter::DIRECTED.0 | PacketFilter::BROADCAST.0);

/// A CDC notification from the interrupt endpoint (CDC 1.2 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// NETWORK_CONNECTION: link up (true) or down.
    NetworkConnection(bool),
    /// CONNECTION_SPEED_CHANGE: downstream and upstream bit rates.
    SpeedChange {
        /// Device-to-host bit rate.
        down: u32,
        /// Host-to-device bit rate.
        up: u32,
    },
    /// Any other notification code.
    Other(u8),
}

/// Parses a notification: an 8-byte header (bmRequestType 0xA1, bNotification, wValue, wIndex,
/// wLength) and `wLength` data bytes.
pub fn parse_notification(b: &[u8]) -> Result<Notification, FramingError> {
    if b.len() < 8 {
        return Err(FramingError::Truncated);
    }
    let value = u16::from_le_bytes([b[2], b[3]]);
    let length = u16::from_le_bytes([b[6], b[7]]) as usize;
    if b.len() < 8 + length {
        return Err(FramingError::Overrun { length });
    }
    Ok(match b[1] {
        0x00 => Notification::NetworkConnection(value != 0),
        0x2A if length >= 8 => Notification::SpeedChange {
            down: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            up: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        },
        0x2A => return Err(FramingError::Truncated),
        code => Notification::Other(code),
    })
}

fn unpack(transfer: &[u8], pos: usize) -> Result<Option<Unpacked>, FramingError> {
    // One frame per transfer; a zero-length transfer (the ZLP after a packet-multiple frame) is none.
    Ok((pos == 0 && !transfer.is_empty()).then_some(Unpacked {
        frame: 0..transfer.len(),
        next: transfer.len(),
        good: true,
    }))
}

/// The CDC-ECM driver. `RX` is the bulk IN buffer size: above 1536 QEMU moves the whole transfer in
/// one step instead of one 64-byte packet per 250 us.
pub struct CdcEcm<H: UsbHost, const RX: usize = 2048> {
    host: H,
    dev: DeviceHandle,
    bulk_in: EndpointHandle,
    bulk_out: EndpointHandle,
    mac: MacAddress,
    max_segment: usize,
    link: bool,
    counters: Counters,
    rx: RxStage<RX>,
}

impl<H: UsbHost, const RX: usize> CdcEcm<H, RX> {
    /// Opens the function on a configured device: SET_INTERFACE to the data setting, MAC from the
    /// iMACAddress string, SET_ETHERNET_PACKET_FILTER. A device that stalls the filter request is
    /// accepted (the filter is an optimisation; the stack filters again).
    pub fn open(mut host: H, dev: DeviceHandle, function: &EcmFunction) -> Result<Self, EthError> {
        let data = &function.data;
        host.control_out(dev, Setup::set_interface(data.interface.number, data.interface.alternate), &[])?;
        let mut buf = [0u8; 64];
        let language = match host.control_in(dev, Setup::get_string(0, 0, 4), &mut buf[..4]) {
            Ok(n) => first_language(&buf[..n]).unwrap_or(LANGUAGE_EN_US),
            Err(TransferError::Stall) => LANGUAGE_EN_US,
            Err(e) => return Err(e.into()),
        };
        let n = host.control_in(
            dev,
            Setup::get_string(function.ethernet.mac_string, language, buf.len() as u16),
            &mut buf,
        )?;
        let mac = mac_from_string_descriptor(&buf[..n])?;
        match host.control_out(
            dev,
            Setup::set_ethernet_packet_filter(function.control_interface, DEFAULT_FILTER),
            &[],
        ) {
            Ok(()) | Err(TransferError::Stall) => {}
            Err(e) => return Err(e.into()),
        }
        let max_segment = match function.ethernet.max_segment_size as usize {
            0 => 1514,
            n => n.min(MAX_FRAME),
        };
        Ok(CdcEcm {
            host,
            dev,
            bulk_in: EndpointHandle::from_descriptor(&data.bulk_in),
            bulk_out: EndpointHandle::from_descriptor(&data.bulk_out),
            mac,
            max_segment,
            link: true,
            counters: Counters::default(),
            rx: RxStage::new(),
        })
    }

    /// Applies a notification read from the control interface's interrupt endpoint (the firmware
    /// polls it if it wants link tracking; QEMU always reports "connected").
    pub fn handle_notification(&mut self, bytes: &[u8]) -> Result<Notification, FramingError> {
        let n = parse_notification(bytes)?;
        if let Notification::NetworkConnection(up) = n {
            self.link = up;
        }
        Ok(n)
    }

    /// Largest frame the device accepts (`wMaxSegmentSize`).
    pub fn max_segment_size(&self) -> usize {
        self.max_segment
    }

    /// The host, e.g. to poll other devices.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }
}

impl<H: UsbHost, const RX: usize> EthernetClass for CdcEcm<H, RX> {
    fn send(&mut self, frame: &[u8]) -> Result<(), EthError> {
        if frame.len() < 14 {
            return Err(EthError::FrameTooShort);
        }
        if frame.len() > self.max_segment {
            return Err(EthError::FrameTooLong { len: frame.len(), max: self.max_segment });
        }
        if let Err(e) = bulk_send(&mut self.host, self.dev, self.bulk_out, frame) {
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
        Ok(self.link)
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{emit_string, tests::qemu_ecm_config, Configuration};
    use crate::host::Speed;
    use crate::mock::{ChipMock, Event};
    use std::vec;
    use std::vec::Vec;

    const DEV: DeviceHandle =
        DeviceHandle { address: 2, speed: Speed::Full, max_packet_size0: 64, split: None };

    fn qemu_mock() -> ChipMock {
        let mut m = ChipMock::new();
        m.answers.insert((0x80, 6, 0x0300, 0), vec![4, 3, 0x09, 0x04]);
        let mut s = [0u8; 32];
        let n = emit_string("400000000001", &mut s);
        m.answers.insert((0x80, 6, 0x0303, 0x0409), s[..n].to_vec());
        m
    }

    fn open(m: &mut ChipMock) -> CdcEcm<&mut ChipMock> {
        let (b, n) = qemu_ecm_config();
        let f = Configuration::new_checked(&b[..n]).unwrap().ecm_function().unwrap().unwrap();
        CdcEcm::open(m, DEV, &f).unwrap()
    }

    #[test]
    fn open_sends_the_expected_requests() {
        let mut m = qemu_mock();
        let d = open(&mut m);
        assert_eq!(d.mac_address(), [0x40, 0, 0, 0, 0, 1]);
        assert_eq!(d.max_segment_size(), 1514);
        let setups: Vec<[u8; 8]> = m
            .log
            .iter()
            .map(|e| match e {
                Event::Control(s, _) => s.to_bytes(),
                e => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(
            setups,
            [
                [0x01, 11, 1, 0, 1, 0, 0, 0],       // SET_INTERFACE(1, alt 1)
                [0x80, 6, 0, 3, 0, 0, 4, 0],        // language list
                [0x80, 6, 3, 3, 0x09, 0x04, 64, 0], // iMACAddress string 3
                [0x21, 0x43, 0x0C, 0, 0, 0, 0, 0],  // directed | broadcast on interface 0
            ]
        );
    }

    #[test]
    fn filter_stall_is_tolerated_and_bad_mac_is_not() {
        let mut m = qemu_mock();
        m.stall_out.push(0x43);
        open(&mut m);
        let mut m = qemu_mock();
        let mut s = [0u8; 32];
        let n = emit_string("40000000000X", &mut s);
        m.answers.insert((0x80, 6, 0x0303, 0x0409), s[..n].to_vec());
        let (b, n) = qemu_ecm_config();
        let f = Configuration::new_checked(&b[..n]).unwrap().ecm_function().unwrap().unwrap();
        assert_eq!(
            CdcEcm::<_, 2048>::open(&mut m, DEV, &f).err(),
            Some(EthError::Descriptor(crate::descriptor::DescriptorError::BadMacString))
        );
    }

    #[test]
    fn zlp_follows_packet_multiples_only() {
        let mut m = qemu_mock();
        let mut d = open(&mut m);
        for len in [60usize, 64, 128, 1514, 1472] {
            d.send(&vec![0xAB; len]).unwrap();
        }
        assert_eq!(d.send(&[0; 1515]), Err(EthError::FrameTooLong { len: 1515, max: 1514 }));
        assert_eq!(d.send(&[0; 13]), Err(EthError::FrameTooShort));
        let c = d.counters();
        assert_eq!((c.tx_frames, c.tx_bytes), (5, 60 + 64 + 128 + 1514 + 1472));
        let lens: Vec<usize> = m.bulk_outs().iter().map(|b| b.len()).collect();
        assert_eq!(lens, [60, 64, 0, 128, 0, 1514, 1472, 0]);
    }

    #[test]
    fn receive_frames_zlps_and_naks() {
        let mut m = qemu_mock();
        m.bulk_in.push_back(Ok((0..100u8).collect()));
        m.bulk_in.push_back(Ok(vec![7; 64]));
        m.bulk_in.push_back(Ok(vec![]));
        m.bulk_in.push_back(Err(TransferError::Nak));
        m.bulk_in.push_back(Ok(vec![1; 200]));
        m.bulk_in.push_back(Err(TransferError::Babble));
        let mut d = open(&mut m);
        let mut buf = [0u8; 1514];
        assert_eq!(d.receive(&mut buf), Ok(Some(100)));
        assert_eq!(&buf[..100], &(0..100u8).collect::<Vec<_>>()[..]);
        assert_eq!(d.receive(&mut buf), Ok(Some(64)));
        assert_eq!(d.receive(&mut buf), Ok(None)); // the ZLP after the 64-byte frame
        assert_eq!(d.receive(&mut buf), Ok(None)); // NAK: nothing waiting
        assert_eq!(d.receive(&mut buf[..150]), Err(EthError::BufferTooSmall { needed: 200 }));
        assert_eq!(d.receive(&mut buf), Err(EthError::Transfer(TransferError::Babble)));
        assert_eq!(d.receive(&mut buf), Ok(None)); // queue empty: NAK
        let c = d.counters();
        assert_eq!((c.rx_frames, c.rx_bytes, c.rx_dropped), (2, 164, 1));
    }

    #[test]
    fn notifications() {
        let up = [0xA1, 0x00, 1, 0, 0, 0, 0, 0];
        let down = [0xA1, 0x00, 0, 0, 0, 0, 0, 0];
        let mut speed = [0u8; 16];
        speed[..8].copy_from_slice(&[0xA1, 0x2A, 0, 0, 0, 0, 8, 0]);
        speed[8..12].copy_from_slice(&100_000_000u32.to_le_bytes());
        speed[12..].copy_from_slice(&10_000_000u32.to_le_bytes());
        assert_eq!(parse_notification(&up), Ok(Notification::NetworkConnection(true)));
        assert_eq!(
            parse_notification(&speed),
            Ok(Notification::SpeedChange { down: 100_000_000, up: 10_000_000 })
        );
        assert_eq!(parse_notification(&speed[..12]), Err(FramingError::Overrun { length: 8 }));
        assert_eq!(parse_notification(&up[..7]), Err(FramingError::Truncated));
        assert_eq!(parse_notification(&[0xA1, 0x2A, 0, 0, 0, 0, 0, 0]), Err(FramingError::Truncated));
        let mut m = qemu_mock();
        let mut d = open(&mut m);
        assert_eq!(d.link_up(), Ok(true));
        d.handle_notification(&down).unwrap();
        assert_eq!(d.link_up(), Ok(false));
    }
}
