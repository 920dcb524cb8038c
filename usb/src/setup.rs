//! The 8-byte SETUP packet that opens every control transfer (USB 2.0 section 9.3), typed, with
//! constructors for every request this stack sends: standard (9.4), hub class (11.24.2), CDC
//! (ECM 1.2 section 6.2) and the SMSC/Microchip vendor register access.
//!
//! ```text
//! offset  size  field
//!      0     1  bmRequestType: bit 7 direction (1 = IN), bits 6:5 type, bits 4:0 recipient
//!      1     1  bRequest
//!      2     2  wValue   (LE)
//!      4     2  wIndex   (LE)
//!      6     2  wLength  (LE): bytes in the data stage
//! ```

use crate::descriptor::kind;

/// Length of a SETUP packet.
pub const SETUP_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const REQUEST_TYPE: usize = 0;
    pub const REQUEST: usize = 1;
    pub const VALUE: Range<usize> = 2..4;
    pub const INDEX: Range<usize> = 4..6;
    pub const LENGTH: Range<usize> = 6..8;
}

/// `bRequest` codes.
pub mod request {
    /// GET_STATUS (hub class: port status when sent to "other").
    pub const GET_STATUS: u8 = 0;
    /// CLEAR_FEATURE.
    pub const CLEAR_FEATURE: u8 = 1;
    /// SET_FEATURE.
    pub const SET_FEATURE: u8 = 3;
    /// SET_ADDRESS.
    pub const SET_ADDRESS: u8 = 5;
    /// GET_DESCRIPTOR.
    pub const GET_DESCRIPTOR: u8 = 6;
    /// GET_CONFIGURATION.
    pub const GET_CONFIGURATION: u8 = 8;
    /// SET_CONFIGURATION.
    pub const SET_CONFIGURATION: u8 = 9;
    /// SET_INTERFACE.
    pub const SET_INTERFACE: u8 = 11;
    /// CDC SET_ETHERNET_PACKET_FILTER.
    pub const SET_ETHERNET_PACKET_FILTER: u8 = 0x43;
    /// SMSC95xx/LAN78xx vendor request: write one 32-bit register.
    pub const VENDOR_WRITE_REGISTER: u8 = 0xA0;
    /// SMSC95xx/LAN78xx vendor request: read one 32-bit register.
    pub const VENDOR_READ_REGISTER: u8 = 0xA1;
}

/// Feature selector ENDPOINT_HALT for CLEAR_FEATURE to an endpoint.
pub const ENDPOINT_HALT: u16 = 0;

/// Direction of the data stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Host to device (or no data stage).
    Out,
    /// Device to host.
    In,
}

/// Request type (`bmRequestType` bits 6:5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Standard (chapter 9).
    Standard,
    /// Class (hub, CDC).
    Class,
    /// Vendor.
    Vendor,
}

/// Recipient (`bmRequestType` bits 4:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// The device.
    Device,
    /// An interface (wIndex = interface number).
    Interface,
    /// An endpoint (wIndex = endpoint address).
    Endpoint,
    /// Other: hub ports (wIndex = port number).
    Other,
}

/// Why 8 bytes are not a SETUP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// Fewer than 8 bytes.
    Truncated,
    /// Request type 3 (reserved).
    ReservedKind,
    /// A recipient code above 3.
    ReservedRecipient,
}

/// Hub port feature selectors (USB 2.0 table 11-17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum PortFeature {
    /// PORT_CONNECTION (status only).
    Connection = 0,
    /// PORT_ENABLE: clearing it disables the port.
    Enable = 1,
    /// PORT_SUSPEND.
    Suspend = 2,
    /// PORT_OVER_CURRENT (status only).
    OverCurrent = 3,
    /// PORT_RESET: setting it starts a port reset, which enables the port when done.
    Reset = 4,
    /// PORT_POWER.
    Power = 8,
    /// PORT_LOW_SPEED (status only).
    LowSpeed = 9,
    /// C_PORT_CONNECTION: acknowledges a connect/disconnect.
    ConnectionChange = 16,
    /// C_PORT_ENABLE.
    EnableChange = 17,
    /// C_PORT_SUSPEND.
    SuspendChange = 18,
    /// C_PORT_OVER_CURRENT.
    OverCurrentChange = 19,
    /// C_PORT_RESET: acknowledges the end of a port reset.
    ResetChange = 20,
}

/// CDC Ethernet packet filter bits (ECM 1.2 table 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketFilter(pub u16);

impl PacketFilter {
    /// Every frame.
    pub const PROMISCUOUS: PacketFilter = PacketFilter(0x01);
    /// All multicast frames.
    pub const ALL_MULTICAST: PacketFilter = PacketFilter(0x02);
    /// Frames to our own address.
    pub const DIRECTED: PacketFilter = PacketFilter(0x04);
    /// Broadcast frames (needed for ARP).
    pub const BROADCAST: PacketFilter = PacketFilter(0x08);
    /// Multicast frames matching the device's filter list.
    pub const MULTICAST: PacketFilter = PacketFilter(0x10);
}

impl core::ops::BitOr for PacketFilter {
    type Output = PacketFilter;
    fn bitor(self, rhs: PacketFilter) -> PacketFilter {
        PacketFilter(self.0 | rhs.0)
    }
}

/// A SETUP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Direction of the data stage.
    pub direction: Direction,
    /// Standard, class or vendor.
    pub kind: RequestKind,
    /// Who the request is for.
    pub recipient: Recipient,
    /// `bRequest`.
    pub request: u8,
    /// `wValue`.
    pub value: u16,
    /// `wIndex`.
    pub index: u16,
    /// `wLength`.
    pub length: u16,
}

impl Setup {
    /// A request with every field given.
    pub const fn new(
        direction: Direction,
        kind: RequestKind,
        recipient: Recipient,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
    ) -> Setup {
        Setup { direction, kind, recipient, request, value, index, length }
    }

    /// `bmRequestType`.
    pub fn request_type(&self) -> u8 {
        let d = match self.direction {
            Direction::Out => 0,
            Direction::In => 0x80,
        };
        let k = match self.kind {
            RequestKind::Standard => 0,
            RequestKind::Class => 0x20,
            RequestKind::Vendor => 0x40,
        };
        let r = match self.recipient {
            Recipient::Device => 0,
            Recipient::Interface => 1,
            Recipient::Endpoint => 2,
            Recipient::Other => 3,
        };
        d | k | r
    }

    /// Parses 8 bytes.
    pub fn parse(b: &[u8]) -> Result<Setup, SetupError> {
        if b.len() < SETUP_LEN {
            return Err(SetupError::Truncated);
        }
        let t = b[field::REQUEST_TYPE];
        let kind = match (t >> 5) & 3 {
            0 => RequestKind::Standard,
            1 => RequestKind::Class,
            2 => RequestKind::Vendor,
            _ => return Err(SetupError::ReservedKind),
        };
        let recipient = match t & 0x1F {
            0 => Recipient::Device,
            1 => Recipient::Interface,
            2 => Recipient::Endpoint,
            3 => Recipient::Other,
            _ => return Err(SetupError::ReservedRecipient),
        };
        let w = |r: core::ops::Range<usize>| u16::from_le_bytes([b[r.start], b[r.start + 1]]);
        Ok(Setup {
            direction: if t & 0x80 != 0 { Direction::In } else { Direction::Out },
            kind,
            recipient,
            request: b[field::REQUEST],
            value: w(field::VALUE),
            index: w(field::INDEX),
            length: w(field::LENGTH),
        })
    }

    /// Writes the 8 bytes into `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[field::REQUEST_TYPE] = self.request_type();
        out[field::REQUEST] = self.request;
        out[field::VALUE].copy_from_slice(&self.value.to_le_bytes());
        out[field::INDEX].copy_from_slice(&self.index.to_le_bytes());
        out[field::LENGTH].copy_from_slice(&self.length.to_le_bytes());
    }

    /// The 8 bytes.
    pub fn to_bytes(&self) -> [u8; SETUP_LEN] {
        let mut b = [0u8; SETUP_LEN];
        self.emit(&mut b);
        b
    }

    /// GET_DESCRIPTOR(type, index) from the device, `length` bytes at most.
    pub const fn get_descriptor(descriptor_type: u8, index: u8, length: u16) -> Setup {
        Setup::new(
            Direction::In,
            RequestKind::Standard,
            Recipient::Device,
            request::GET_DESCRIPTOR,
            (descriptor_type as u16) << 8 | index as u16,
            0,
            length,
        )
    }

    /// GET_DESCRIPTOR(STRING, index) in language `language` (0 for the language list at index 0).
    pub const fn get_string(index: u8, language: u16, length: u16) -> Setup {
        let mut s = Setup::get_descriptor(kind::STRING, index, length);
        s.index = language;
        s
    }

    /// SET_ADDRESS: the device answers at `address` after the status stage (give it 2 ms).
    pub const fn set_address(address: u8) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Standard,
            Recipient::Device,
            request::SET_ADDRESS,
            address as u16,
            0,
            0,
        )
    }

    /// SET_CONFIGURATION(bConfigurationValue). Resets every endpoint's data toggle to DATA0.
    pub const fn set_configuration(value: u8) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Standard,
            Recipient::Device,
            request::SET_CONFIGURATION,
            value as u16,
            0,
            0,
        )
    }

    /// SET_INTERFACE(interface, alternate). Resets the interface's endpoint toggles to DATA0.
    pub const fn set_interface(interface: u8, alternate: u8) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Standard,
            Recipient::Interface,
            request::SET_INTERFACE,
            alternate as u16,
            interface as u16,
            0,
        )
    }

    /// CLEAR_FEATURE(ENDPOINT_HALT) on the endpoint with address `endpoint` (bit 7 set for IN):
    /// un-stalls it and resets its data toggle to DATA0.
    pub const fn clear_endpoint_halt(endpoint: u8) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Standard,
            Recipient::Endpoint,
            request::CLEAR_FEATURE,
            ENDPOINT_HALT,
            endpoint as u16,
            0,
        )
    }

    /// Hub class GET_DESCRIPTOR(HUB).
    pub const fn get_hub_descriptor(length: u16) -> Setup {
        Setup::new(
            Direction::In,
            RequestKind::Class,
            Recipient::Device,
            request::GET_DESCRIPTOR,
            (kind::HUB as u16) << 8,
            0,
            length,
        )
    }

    /// Hub class GET_STATUS(port): 4 bytes, see [`crate::hub::PortStatusReport`].
    pub const fn get_port_status(port: u8) -> Setup {
        Setup::new(
            Direction::In,
            RequestKind::Class,
            Recipient::Other,
            request::GET_STATUS,
            0,
            port as u16,
            4,
        )
    }

    /// Hub class SET_FEATURE(feature) on `port` (1-based).
    pub const fn set_port_feature(port: u8, feature: PortFeature) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Class,
            Recipient::Other,
            request::SET_FEATURE,
            feature as u16,
            port as u16,
            0,
        )
    }

    /// Hub class CLEAR_FEATURE(feature) on `port` (1-based).
    pub const fn clear_port_feature(port: u8, feature: PortFeature) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Class,
            Recipient::Other,
            request::CLEAR_FEATURE,
            feature as u16,
            port as u16,
            0,
        )
    }

    /// SMSC95xx/LAN78xx register read: vendor IN request 0xA1, wValue 0, wIndex = register, 4 bytes LE
    /// (the convention of the Linux, U-Boot and Circle drivers).
    pub const fn vendor_read_register(register: u16) -> Setup {
        Setup::new(
            Direction::In,
            RequestKind::Vendor,
            Recipient::Device,
            request::VENDOR_READ_REGISTER,
            0,
            register,
            4,
        )
    }

    /// SMSC95xx/LAN78xx register write: vendor OUT request 0xA0, wIndex = register, 4 data bytes LE.
    pub const fn vendor_write_register(register: u16) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Vendor,
            Recipient::Device,
            request::VENDOR_WRITE_REGISTER,
            0,
            register,
            4,
        )
    }

    /// CDC SET_ETHERNET_PACKET_FILTER to the control `interface`; no data stage.
    pub const fn set_ethernet_packet_filter(interface: u8, filter: PacketFilter) -> Setup {
        Setup::new(
            Direction::Out,
            RequestKind::Class,
            Recipient::Interface,
            request::SET_ETHERNET_PACKET_FILTER,
            filter.0,
            interface as u16,
            0,
        )
    }

    /// True for a standard SET_CONFIGURATION.
    pub fn is_set_configuration(&self) -> bool {
        self.kind == RequestKind::Standard && self.request == request::SET_CONFIGURATION
    }

    /// True for a standard SET_INTERFACE.
    pub fn is_set_interface(&self) -> bool {
        self.kind == RequestKind::Standard
            && self.recipient == Recipient::Interface
            && self.request == request::SET_INTERFACE
    }

    /// The endpoint address, if this is CLEAR_FEATURE(ENDPOINT_HALT).
    pub fn cleared_halt(&self) -> Option<u8> {
        (self.kind == RequestKind::Standard
            && self.recipient == Recipient::Endpoint
            && self.request == request::CLEAR_FEATURE
            && self.value == ENDPOINT_HALT)
            .then_some(self.index as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_requests_have_spec_bytes() {
        assert_eq!(Setup::get_descriptor(kind::DEVICE, 0, 8).to_bytes(), [0x80, 6, 0, 1, 0, 0, 8, 0]);
        assert_eq!(Setup::get_descriptor(kind::CONFIGURATION, 1, 9).to_bytes(), [0x80, 6, 1, 2, 0, 0, 9, 0]);
        assert_eq!(Setup::get_string(3, 0x0409, 255).to_bytes(), [0x80, 6, 3, 3, 0x09, 0x04, 255, 0]);
        assert_eq!(Setup::set_address(5).to_bytes(), [0x00, 5, 5, 0, 0, 0, 0, 0]);
        assert_eq!(Setup::set_configuration(1).to_bytes(), [0x00, 9, 1, 0, 0, 0, 0, 0]);
        assert_eq!(Setup::set_interface(1, 1).to_bytes(), [0x01, 11, 1, 0, 1, 0, 0, 0]);
        assert_eq!(Setup::clear_endpoint_halt(0x82).to_bytes(), [0x02, 1, 0, 0, 0x82, 0, 0, 0]);
    }

    #[test]
    fn class_and_vendor_requests_have_spec_bytes() {
        assert_eq!(Setup::get_hub_descriptor(71).to_bytes(), [0xA0, 6, 0, 0x29, 0, 0, 71, 0]);
        assert_eq!(Setup::get_port_status(3).to_bytes(), [0xA3, 0, 0, 0, 3, 0, 4, 0]);
        assert_eq!(Setup::set_port_feature(2, PortFeature::Power).to_bytes(), [0x23, 3, 8, 0, 2, 0, 0, 0]);
        assert_eq!(Setup::set_port_feature(2, PortFeature::Reset).to_bytes(), [0x23, 3, 4, 0, 2, 0, 0, 0]);
        assert_eq!(
            Setup::clear_port_feature(1, PortFeature::ResetChange).to_bytes(),
            [0x23, 1, 20, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            Setup::clear_port_feature(1, PortFeature::ConnectionChange).to_bytes(),
            [0x23, 1, 16, 0, 1, 0, 0, 0]
        );
        assert_eq!(Setup::clear_port_feature(1, PortFeature::Enable).to_bytes(), [0x23, 1, 1, 0, 1, 0, 0, 0]);
        assert_eq!(Setup::vendor_read_register(0x114).to_bytes(), [0xC0, 0xA1, 0, 0, 0x14, 0x01, 4, 0]);
        assert_eq!(Setup::vendor_write_register(0x108).to_bytes(), [0x40, 0xA0, 0, 0, 0x08, 0x01, 4, 0]);
        let f = PacketFilter::DIRECTED | PacketFilter::BROADCAST;
        assert_eq!(Setup::set_ethernet_packet_filter(0, f).to_bytes(), [0x21, 0x43, 0x0C, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn round_trip_and_classification() {
        for s in [
            Setup::get_descriptor(kind::DEVICE, 0, 18),
            Setup::set_interface(1, 1),
            Setup::clear_endpoint_halt(0x81),
            Setup::get_port_status(7),
            Setup::vendor_write_register(0x14),
            Setup::set_ethernet_packet_filter(2, PacketFilter::PROMISCUOUS),
        ] {
            assert_eq!(Setup::parse(&s.to_bytes()), Ok(s));
        }
        assert!(Setup::set_configuration(1).is_set_configuration());
        assert!(Setup::set_interface(1, 1).is_set_interface());
        assert_eq!(Setup::clear_endpoint_halt(0x81).cleared_halt(), Some(0x81));
        assert_eq!(Setup::clear_port_feature(1, PortFeature::Enable).cleared_halt(), None);
        assert!(!Setup::vendor_write_register(9).is_set_configuration());
    }

    #[test]
    fn malformed_setup_is_refused() {
        assert_eq!(Setup::parse(&[0x80, 6, 0, 1, 0, 0, 8]), Err(SetupError::Truncated));
        assert_eq!(Setup::parse(&[0xE0, 6, 0, 1, 0, 0, 8, 0]), Err(SetupError::ReservedKind));
        assert_eq!(Setup::parse(&[0x84, 6, 0, 1, 0, 0, 8, 0]), Err(SetupError::ReservedRecipient));
    }
}
