//! USB descriptors, parsed without copying from the bytes a device returns: the standard ones (USB 2.0
//! section 9.6), the hub descriptor (USB 2.0 section 11.23.2.1) and the CDC Ethernet functional
//! descriptors (CDC 1.2 section 5.2.3, ECM 1.2 section 5.4).
//!
//! Every descriptor starts with `bLength` and `bDescriptorType`. A configuration is one blob of
//! `wTotalLength` bytes holding the configuration descriptor followed by interface, endpoint and
//! class-specific descriptors; [`Configuration`] walks it. Devices are untrusted input here: a zero
//! `bLength` or a descriptor running past the end is an error, never a panic or an endless loop.

use crate::{le16, le32};

/// `bDescriptorType` values this crate knows.
pub mod kind {
    /// Device descriptor.
    pub const DEVICE: u8 = 1;
    /// Configuration descriptor (heads a configuration blob).
    pub const CONFIGURATION: u8 = 2;
    /// String descriptor (UTF-16LE text, or the language list at index 0).
    pub const STRING: u8 = 3;
    /// Interface descriptor.
    pub const INTERFACE: u8 = 4;
    /// Endpoint descriptor.
    pub const ENDPOINT: u8 = 5;
    /// Device qualifier (high-speed capable devices only; full-speed ones stall it).
    pub const DEVICE_QUALIFIER: u8 = 6;
    /// Interface association descriptor.
    pub const INTERFACE_ASSOCIATION: u8 = 0x0B;
    /// Class-specific interface descriptor (CDC functional descriptors use it).
    pub const CS_INTERFACE: u8 = 0x24;
    /// Hub class descriptor.
    pub const HUB: u8 = 0x29;
}

/// Interface and device class codes this crate acts on.
pub mod class {
    /// Communications (CDC control) class.
    pub const CDC: u8 = 0x02;
    /// CDC subclass: Ethernet Networking Control Model.
    pub const CDC_SUBCLASS_ECM: u8 = 0x06;
    /// CDC data interface class.
    pub const CDC_DATA: u8 = 0x0A;
    /// Hub class.
    pub const HUB: u8 = 0x09;
    /// Vendor specific.
    pub const VENDOR: u8 = 0xFF;
}

/// CDC functional descriptor subtypes (`bDescriptorSubtype`, CDC 1.2 table 13).
pub mod cdc_subtype {
    /// Header functional descriptor.
    pub const HEADER: u8 = 0x00;
    /// Union functional descriptor.
    pub const UNION: u8 = 0x06;
    /// Ethernet networking functional descriptor.
    pub const ETHERNET: u8 = 0x0F;
}

/// Why descriptor bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorError {
    /// Fewer bytes than the header or `bLength` promises.
    Truncated,
    /// `bLength` below 2: walking on would never advance.
    ZeroLength,
    /// A class-specific descriptor of another subtype than the one asked for.
    WrongSubtype {
        /// Expected `bDescriptorSubtype`.
        expected: u8,
        /// What the bytes say.
        found: u8,
    },
    /// `bLength` too small for the descriptor type.
    TooShort {
        /// `bDescriptorType`.
        kind: u8,
        /// `bLength`.
        length: u8,
    },
    /// Not the descriptor type that was asked for.
    WrongType {
        /// Expected `bDescriptorType`.
        expected: u8,
        /// What the bytes say.
        found: u8,
    },
    /// A configuration's `wTotalLength` is smaller than its own header.
    BadTotalLength,
    /// A string descriptor with an odd number of text bytes.
    BadString,
    /// The caller's text buffer cannot hold the string.
    BufferTooSmall,
    /// A MAC address string that is not exactly 12 hex digits.
    BadMacString,
}

impl core::fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DescriptorError::Truncated => f.write_str("descriptor truncated"),
            DescriptorError::ZeroLength => f.write_str("descriptor with bLength < 2"),
            DescriptorError::TooShort { kind, length } => {
                write!(f, "descriptor type {kind:#04x} too short ({length} bytes)")
            }
            DescriptorError::WrongType { expected, found } => {
                write!(f, "expected descriptor type {expected:#04x}, found {found:#04x}")
            }
            DescriptorError::WrongSubtype { expected, found } => {
                write!(f, "expected descriptor subtype {expected:#04x}, found {found:#04x}")
            }
            DescriptorError::BadTotalLength => f.write_str("configuration wTotalLength below 9"),
            DescriptorError::BadString => f.write_str("malformed string descriptor"),
            DescriptorError::BufferTooSmall => f.write_str("text buffer too small"),
            DescriptorError::BadMacString => f.write_str("MAC address string is not 12 hex digits"),
        }
    }
}

mod field {
    pub const LENGTH: usize = 0;
    pub const KIND: usize = 1;
    pub const HEADER: usize = 2;
}

/// A zero-copy view of one descriptor: the header plus `bLength - 2` bytes of body.
#[derive(Debug, Clone)]
pub struct RawDescriptor<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RawDescriptor<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        RawDescriptor { buffer }
    }

    /// Wraps a buffer after [`check`](Self::check)ing it; the buffer may be longer than the descriptor.
    pub fn new_checked(buffer: T) -> Result<Self, DescriptorError> {
        let d = Self::new_unchecked(buffer);
        d.check()?;
        Ok(d)
    }

    /// Checks that the header is present, `bLength` is at least 2 and fits in the buffer.
    pub fn check(&self) -> Result<(), DescriptorError> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER {
            return Err(DescriptorError::Truncated);
        }
        let len = b[field::LENGTH] as usize;
        if len < field::HEADER {
            return Err(DescriptorError::ZeroLength);
        }
        if len > b.len() {
            return Err(DescriptorError::Truncated);
        }
        Ok(())
    }

    /// `bLength`.
    pub fn length(&self) -> usize {
        self.buffer.as_ref()[field::LENGTH] as usize
    }

    /// `bDescriptorType`.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    /// The descriptor's own `bLength` bytes, header included.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.length()]
    }

    /// Checks the type and a minimum length, and returns the descriptor's bytes.
    pub fn expect(&self, kind: u8, min_len: usize) -> Result<&[u8], DescriptorError> {
        if self.kind() != kind {
            return Err(DescriptorError::WrongType { expected: kind, found: self.kind() });
        }
        if self.length() < min_len {
            return Err(DescriptorError::TooShort { kind, length: self.length() as u8 });
        }
        Ok(self.bytes())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

fn checked(bytes: &[u8], kind: u8, min_len: usize) -> Result<&[u8], DescriptorError> {
    let raw = RawDescriptor::new_checked(bytes)?;
    let b = raw.expect(kind, min_len)?;
    Ok(&bytes[..b.len()])
}

/// The device descriptor (18 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeviceDescriptor {
    /// `bcdUSB`, e.g. 0x0200.
    pub usb_version: u16,
    /// `bDeviceClass` (0: per interface, 9: hub).
    pub class: u8,
    /// `bDeviceSubClass`.
    pub subclass: u8,
    /// `bDeviceProtocol`.
    pub protocol: u8,
    /// `bMaxPacketSize0`: 8, 16, 32 or 64.
    pub max_packet_size0: u8,
    /// `idVendor`.
    pub vendor_id: u16,
    /// `idProduct`.
    pub product_id: u16,
    /// `bcdDevice`.
    pub device_version: u16,
    /// `iManufacturer` string index (0: none).
    pub manufacturer: u8,
    /// `iProduct` string index.
    pub product: u8,
    /// `iSerialNumber` string index.
    pub serial_number: u8,
    /// `bNumConfigurations`.
    pub num_configurations: u8,
}

impl DeviceDescriptor {
    /// Length in bytes.
    pub const LENGTH: usize = 18;
    /// Bytes needed to learn `bMaxPacketSize0`: the first GET_DESCRIPTOR at address 0 asks for only
    /// these, because a full-length request could overrun an 8-byte EP0 before its size is known.
    pub const PREFIX_LENGTH: usize = 8;

    /// Reads `bMaxPacketSize0` from the first 8 bytes of a device descriptor.
    pub fn max_packet_size0_from_prefix(bytes: &[u8]) -> Result<u8, DescriptorError> {
        if bytes.len() < Self::PREFIX_LENGTH {
            return Err(DescriptorError::Truncated);
        }
        if bytes[1] != kind::DEVICE {
            return Err(DescriptorError::WrongType { expected: kind::DEVICE, found: bytes[1] });
        }
        Ok(bytes[7])
    }

    /// Parses a device descriptor.
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked(bytes, kind::DEVICE, Self::LENGTH)?;
        Ok(DeviceDescriptor {
            usb_version: le16(b, 2),
            class: b[4],
            subclass: b[5],
            protocol: b[6],
            max_packet_size0: b[7],
            vendor_id: le16(b, 8),
            product_id: le16(b, 10),
            device_version: le16(b, 12),
            manufacturer: b[14],
            product: b[15],
            serial_number: b[16],
            num_configurations: b[17],
        })
    }

    /// Writes the 18 bytes into `out` (at least [`LENGTH`](Self::LENGTH) long).
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = Self::LENGTH as u8;
        out[1] = kind::DEVICE;
        out[2..4].copy_from_slice(&self.usb_version.to_le_bytes());
        out[4] = self.class;
        out[5] = self.subclass;
        out[6] = self.protocol;
        out[7] = self.max_packet_size0;
        out[8..10].copy_from_slice(&self.vendor_id.to_le_bytes());
        out[10..12].copy_from_slice(&self.product_id.to_le_bytes());
        out[12..14].copy_from_slice(&self.device_version.to_le_bytes());
        out[14] = self.manufacturer;
        out[15] = self.product;
        out[16] = self.serial_number;
        out[17] = self.num_configurations;
    }
}

/// The configuration descriptor (9 bytes) heading a configuration blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConfigurationDescriptor {
    /// `wTotalLength`: the whole blob, this header included.
    pub total_length: u16,
    /// `bNumInterfaces`.
    pub num_interfaces: u8,
    /// `bConfigurationValue`: what SET_CONFIGURATION takes (not the GET_DESCRIPTOR index).
    pub value: u8,
    /// `iConfiguration` string index.
    pub name: u8,
    /// `bmAttributes` (bit 6 self-powered, bit 5 remote wakeup; bit 7 always set).
    pub attributes: u8,
    /// `bMaxPower` in 2 mA units.
    pub max_power: u8,
}

impl ConfigurationDescriptor {
    /// Length in bytes.
    pub const LENGTH: usize = 9;

    /// Parses a configuration descriptor (only the 9-byte header; see [`Configuration`] for the blob).
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked(bytes, kind::CONFIGURATION, Self::LENGTH)?;
        Ok(ConfigurationDescriptor {
            total_length: le16(b, 2),
            num_interfaces: b[4],
            value: b[5],
            name: b[6],
            attributes: b[7],
            max_power: b[8],
        })
    }

    /// Writes the 9 bytes into `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = Self::LENGTH as u8;
        out[1] = kind::CONFIGURATION;
        out[2..4].copy_from_slice(&self.total_length.to_le_bytes());
        out[4] = self.num_interfaces;
        out[5] = self.value;
        out[6] = self.name;
        out[7] = self.attributes;
        out[8] = self.max_power;
    }
}

/// The interface descriptor (9 bytes): one alternate setting of one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InterfaceDescriptor {
    /// `bInterfaceNumber`.
    pub number: u8,
    /// `bAlternateSetting`.
    pub alternate: u8,
    /// `bNumEndpoints` (endpoint 0 not counted).
    pub num_endpoints: u8,
    /// `bInterfaceClass`.
    pub class: u8,
    /// `bInterfaceSubClass`.
    pub subclass: u8,
    /// `bInterfaceProtocol`.
    pub protocol: u8,
    /// `iInterface` string index.
    pub name: u8,
}

impl InterfaceDescriptor {
    /// Length in bytes.
    pub const LENGTH: usize = 9;

    /// Parses an interface descriptor.
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked(bytes, kind::INTERFACE, Self::LENGTH)?;
        Ok(InterfaceDescriptor {
            number: b[2],
            alternate: b[3],
            num_endpoints: b[4],
            class: b[5],
            subclass: b[6],
            protocol: b[7],
            name: b[8],
        })
    }

    /// Writes the 9 bytes into `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[..Self::LENGTH].copy_from_slice(&[
            Self::LENGTH as u8,
            kind::INTERFACE,
            self.number,
            self.alternate,
            self.num_endpoints,
            self.class,
            self.subclass,
            self.protocol,
            self.name,
        ]);
    }
}

/// An endpoint's transfer type (`bmAttributes` bits 1:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferType {
    /// Control.
    Control,
    /// Isochronous.
    Isochronous,
    /// Bulk.
    Bulk,
    /// Interrupt.
    Interrupt,
}

/// The endpoint descriptor (7 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointDescriptor {
    /// `bEndpointAddress`: number in bits 3:0, bit 7 set for IN.
    pub address: u8,
    /// `bmAttributes`.
    pub attributes: u8,
    /// `wMaxPacketSize` (bits 10:0 size, 12:11 extra high-bandwidth transactions).
    pub max_packet_size: u16,
    /// `bInterval`.
    pub interval: u8,
}

impl EndpointDescriptor {
    /// Length in bytes.
    pub const LENGTH: usize = 7;

    /// Parses an endpoint descriptor.
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked(bytes, kind::ENDPOINT, Self::LENGTH)?;
        Ok(EndpointDescriptor {
            address: b[2],
            attributes: b[3],
            max_packet_size: le16(b, 4),
            interval: b[6],
        })
    }

    /// Writes the 7 bytes into `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = Self::LENGTH as u8;
        out[1] = kind::ENDPOINT;
        out[2] = self.address;
        out[3] = self.attributes;
        out[4..6].copy_from_slice(&self.max_packet_size.to_le_bytes());
        out[6] = self.interval;
    }

    /// Endpoint number 0..=15.
    pub fn number(&self) -> u8 {
        self.address & 0x0F
    }

    /// True for an IN (device-to-host) endpoint.
    pub fn is_in(&self) -> bool {
        self.address & 0x80 != 0
    }

    /// The transfer type.
    pub fn transfer_type(&self) -> TransferType {
        match self.attributes & 0x03 {
            0 => TransferType::Control,
            1 => TransferType::Isochronous,
            2 => TransferType::Bulk,
            _ => TransferType::Interrupt,
        }
    }

    /// Packet size in bytes, without the high-bandwidth multiplier bits.
    pub fn packet_size(&self) -> u16 {
        self.max_packet_size & 0x07FF
    }
}

/// The hub class descriptor (7 bytes plus the per-port bitmaps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubDescriptor {
    /// `bNbrPorts`.
    pub num_ports: u8,
    /// `wHubCharacteristics`.
    pub characteristics: u16,
    /// `bPwrOn2PwrGood` in 2 ms units: how long after PORT_POWER the port is usable.
    pub power_on_to_good: u8,
    /// `bHubContrCurrent` in mA.
    pub controller_current: u8,
}

impl HubDescriptor {
    /// Minimum length: the fixed part.
    pub const MIN_LENGTH: usize = 7;

    /// Parses a hub descriptor (the port bitmaps are not needed and not kept).
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked(bytes, kind::HUB, Self::MIN_LENGTH)?;
        Ok(HubDescriptor {
            num_ports: b[2],
            characteristics: le16(b, 3),
            power_on_to_good: b[5],
            controller_current: b[6],
        })
    }

    /// Bytes [`emit`](Self::emit) writes: the fixed part plus DeviceRemovable and PortPwrCtrlMask.
    pub fn emitted_len(&self) -> usize {
        Self::MIN_LENGTH + 2 * (self.num_ports as usize / 8 + 1)
    }

    /// Writes the descriptor with no removable-device bits and all power-control mask bits set.
    pub fn emit(&self, out: &mut [u8]) {
        let n = self.num_ports as usize / 8 + 1;
        let len = self.emitted_len();
        out[0] = len as u8;
        out[1] = kind::HUB;
        out[2] = self.num_ports;
        out[3..5].copy_from_slice(&self.characteristics.to_le_bytes());
        out[5] = self.power_on_to_good;
        out[6] = self.controller_current;
        out[7..7 + n].fill(0);
        out[7 + n..len].fill(0xFF);
    }

    /// Milliseconds to wait after switching port power on.
    pub fn power_on_delay_ms(&self) -> u32 {
        2 * self.power_on_to_good as u32
    }
}

/// The CDC header functional descriptor (5 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CdcHeader {
    /// `bcdCDC`, e.g. 0x0110.
    pub cdc_version: u16,
}

impl CdcHeader {
    /// Length in bytes.
    pub const LENGTH: usize = 5;

    /// Parses a CDC header functional descriptor.
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked_cdc(bytes, cdc_subtype::HEADER, Self::LENGTH)?;
        Ok(CdcHeader { cdc_version: le16(b, 3) })
    }

    /// Writes the 5 bytes into `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = Self::LENGTH as u8;
        out[1] = kind::CS_INTERFACE;
        out[2] = cdc_subtype::HEADER;
        out[3..5].copy_from_slice(&self.cdc_version.to_le_bytes());
    }
}

/// The CDC union functional descriptor: which interface controls which data interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CdcUnion {
    /// `bControlInterface`: where class requests (SET_ETHERNET_PACKET_FILTER) go.
    pub control_interface: u8,
    /// `bSubordinateInterface0`: the data interface with the bulk endpoints.
    pub data_interface: u8,
}

impl CdcUnion {
    /// Length with one subordinate interface (the only form Ethernet devices use).
    pub const LENGTH: usize = 5;

    /// Parses a CDC union functional descriptor (further subordinate interfaces are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked_cdc(bytes, cdc_subtype::UNION, Self::LENGTH)?;
        Ok(CdcUnion { control_interface: b[3], data_interface: b[4] })
    }

    /// Writes the 5 bytes into `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[..Self::LENGTH].copy_from_slice(&[
            Self::LENGTH as u8,
            kind::CS_INTERFACE,
            cdc_subtype::UNION,
            self.control_interface,
            self.data_interface,
        ]);
    }
}

/// The CDC Ethernet networking functional descriptor (13 bytes, ECM 1.2 table 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CdcEthernet {
    /// `iMACAddress`: index of the string holding the MAC as 12 hex digits.
    pub mac_string: u8,
    /// `bmEthernetStatistics`.
    pub statistics: u32,
    /// `wMaxSegmentSize`: largest frame the device handles, normally 1514.
    pub max_segment_size: u16,
    /// `wNumberMCFilters`.
    pub num_multicast_filters: u16,
    /// `bNumberPowerFilters`.
    pub num_power_filters: u8,
}

impl CdcEthernet {
    /// Length in bytes.
    pub const LENGTH: usize = 13;

    /// Parses a CDC Ethernet networking functional descriptor.
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let b = checked_cdc(bytes, cdc_subtype::ETHERNET, Self::LENGTH)?;
        Ok(CdcEthernet {
            mac_string: b[3],
            statistics: le32(b, 4),
            max_segment_size: le16(b, 8),
            num_multicast_filters: le16(b, 10),
            num_power_filters: b[12],
        })
    }

    /// Writes the 13 bytes into `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = Self::LENGTH as u8;
        out[1] = kind::CS_INTERFACE;
        out[2] = cdc_subtype::ETHERNET;
        out[3] = self.mac_string;
        out[4..8].copy_from_slice(&self.statistics.to_le_bytes());
        out[8..10].copy_from_slice(&self.max_segment_size.to_le_bytes());
        out[10..12].copy_from_slice(&self.num_multicast_filters.to_le_bytes());
        out[12] = self.num_power_filters;
    }
}

fn checked_cdc(bytes: &[u8], subtype: u8, min_len: usize) -> Result<&[u8], DescriptorError> {
    let b = checked(bytes, kind::CS_INTERFACE, min_len.min(3))?;
    if b[2] != subtype {
        return Err(DescriptorError::WrongSubtype { expected: subtype, found: b[2] });
    }
    if b.len() < min_len {
        return Err(DescriptorError::TooShort { kind: kind::CS_INTERFACE, length: b.len() as u8 });
    }
    Ok(b)
}

/// One descriptor of a configuration blob, parsed by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor<'a> {
    /// The configuration header.
    Configuration(ConfigurationDescriptor),
    /// An interface (alternate setting).
    Interface(InterfaceDescriptor),
    /// An endpoint of the preceding interface.
    Endpoint(EndpointDescriptor),
    /// CDC header functional descriptor.
    CdcHeader(CdcHeader),
    /// CDC union functional descriptor.
    CdcUnion(CdcUnion),
    /// CDC Ethernet networking functional descriptor.
    CdcEthernet(CdcEthernet),
    /// Anything else (interface associations, other class descriptors), kept raw.
    Other {
        /// `bDescriptorType`.
        kind: u8,
        /// All `bLength` bytes.
        bytes: &'a [u8],
    },
}

/// Walks the descriptors of a blob. Yields an error once and then stops, so a malformed blob never
/// loops or panics.
#[derive(Clone, Debug)]
pub struct Descriptors<'a> {
    rest: &'a [u8],
    /// Class of the interface being walked: CS_INTERFACE descriptors are read as CDC ones only under
    /// a CDC interface, because other classes (audio, video) reuse type 0x24 with other layouts.
    interface_class: u8,
    done: bool,
}

impl<'a> Descriptors<'a> {
    /// Walks `bytes` from its first descriptor.
    pub fn new(bytes: &'a [u8]) -> Self {
        Descriptors { rest: bytes, interface_class: 0, done: false }
    }

    fn parse_one(&mut self, b: &'a [u8]) -> Result<Descriptor<'a>, DescriptorError> {
        let cdc = matches!(self.interface_class, class::CDC | class::CDC_DATA);
        Ok(match b[1] {
            kind::CONFIGURATION => Descriptor::Configuration(ConfigurationDescriptor::parse(b)?),
            kind::INTERFACE => {
                let i = InterfaceDescriptor::parse(b)?;
                self.interface_class = i.class;
                Descriptor::Interface(i)
            }
            kind::ENDPOINT => Descriptor::Endpoint(EndpointDescriptor::parse(b)?),
            kind::CS_INTERFACE if cdc && b.len() >= 3 => match b[2] {
                cdc_subtype::HEADER => Descriptor::CdcHeader(CdcHeader::parse(b)?),
                cdc_subtype::UNION => Descriptor::CdcUnion(CdcUnion::parse(b)?),
                cdc_subtype::ETHERNET => Descriptor::CdcEthernet(CdcEthernet::parse(b)?),
                _ => Descriptor::Other { kind: b[1], bytes: b },
            },
            k => Descriptor::Other { kind: k, bytes: b },
        })
    }
}

impl<'a> Iterator for Descriptors<'a> {
    type Item = Result<Descriptor<'a>, DescriptorError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        let result = RawDescriptor::new_checked(rest).and_then(|raw| {
            let len = raw.length();
            self.rest = &rest[len..];
            self.parse_one(&rest[..len])
        });
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

/// The interface alternate setting a network driver talks through: a bulk IN and a bulk OUT endpoint,
/// and the interrupt IN endpoint if that same setting has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkInterface {
    /// The interface and alternate setting.
    pub interface: InterfaceDescriptor,
    /// Bulk IN endpoint.
    pub bulk_in: EndpointDescriptor,
    /// Bulk OUT endpoint.
    pub bulk_out: EndpointDescriptor,
    /// Interrupt IN endpoint of the same setting, if any (SMSC/LAN78xx status; CDC keeps it elsewhere).
    pub interrupt_in: Option<EndpointDescriptor>,
}

/// The CDC-ECM function of a configuration: where to send class requests, which data setting carries
/// the frames, and the Ethernet functional descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcmFunction {
    /// Interface number of the communications (control) interface.
    pub control_interface: u8,
    /// The data interface's setting with the bulk pair (alternate 1 on conforming devices).
    pub data: BulkInterface,
    /// The Ethernet networking functional descriptor.
    pub ethernet: CdcEthernet,
}

/// A checked configuration blob (`wTotalLength` bytes).
#[derive(Clone, Copy, Debug)]
pub struct Configuration<'a> {
    bytes: &'a [u8],
    header: ConfigurationDescriptor,
}

impl<'a> Configuration<'a> {
    /// Checks the header and that all `wTotalLength` bytes are present; bytes after them are ignored.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, DescriptorError> {
        let header = ConfigurationDescriptor::parse(bytes)?;
        let total = header.total_length as usize;
        if total < ConfigurationDescriptor::LENGTH {
            return Err(DescriptorError::BadTotalLength);
        }
        if bytes.len() < total {
            return Err(DescriptorError::Truncated);
        }
        Ok(Configuration { bytes: &bytes[..total], header })
    }

    /// The configuration descriptor.
    pub fn header(&self) -> ConfigurationDescriptor {
        self.header
    }

    /// The whole blob.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Every descriptor in order, the configuration header first.
    pub fn descriptors(&self) -> Descriptors<'a> {
        Descriptors::new(self.bytes)
    }

    /// Checks that the whole blob walks without error.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        self.descriptors().try_for_each(|d| d.map(|_| ()))
    }

    /// The first interface setting matching `class` and `subclass`.
    pub fn find_interface(
        &self,
        class: u8,
        subclass: u8,
    ) -> Result<Option<InterfaceDescriptor>, DescriptorError> {
        for d in self.descriptors() {
            if let Descriptor::Interface(i) = d? {
                if i.class == class && i.subclass == subclass {
                    return Ok(Some(i));
                }
            }
        }
        Ok(None)
    }

    /// The first interface setting with both a bulk IN and a bulk OUT endpoint, optionally only among
    /// settings of interface `only`. For CDC-ECM this skips the endpoint-less data alternate 0 and
    /// finds alternate 1.
    pub fn find_bulk_pair(&self, only: Option<u8>) -> Result<Option<BulkInterface>, DescriptorError> {
        struct Candidate {
            interface: InterfaceDescriptor,
            bulk_in: Option<EndpointDescriptor>,
            bulk_out: Option<EndpointDescriptor>,
            interrupt_in: Option<EndpointDescriptor>,
        }
        fn finish(c: &Option<Candidate>) -> Option<BulkInterface> {
            let c = c.as_ref()?;
            Some(BulkInterface {
                interface: c.interface,
                bulk_in: c.bulk_in?,
                bulk_out: c.bulk_out?,
                interrupt_in: c.interrupt_in,
            })
        }
        let mut current: Option<Candidate> = None;
        for d in self.descriptors() {
            match d? {
                Descriptor::Interface(i) => {
                    if let Some(found) = finish(&current) {
                        return Ok(Some(found));
                    }
                    current = match only {
                        Some(n) if n != i.number => None,
                        _ => Some(Candidate {
                            interface: i,
                            bulk_in: None,
                            bulk_out: None,
                            interrupt_in: None,
                        }),
                    };
                }
                Descriptor::Endpoint(e) => {
                    if let Some(c) = current.as_mut() {
                        let slot = match (e.transfer_type(), e.is_in()) {
                            (TransferType::Bulk, true) => &mut c.bulk_in,
                            (TransferType::Bulk, false) => &mut c.bulk_out,
                            (TransferType::Interrupt, true) => &mut c.interrupt_in,
                            _ => continue,
                        };
                        if slot.is_none() {
                            *slot = Some(e);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(finish(&current))
    }

    /// The CDC-ECM function, if the configuration has one: a CDC/ECM control interface with an
    /// Ethernet functional descriptor, and a data interface (named by the union descriptor, else the
    /// next interface number) with a bulk pair.
    pub fn ecm_function(&self) -> Result<Option<EcmFunction>, DescriptorError> {
        let mut control: Option<u8> = None;
        let mut in_control = false;
        let mut union: Option<CdcUnion> = None;
        let mut ethernet: Option<CdcEthernet> = None;
        for d in self.descriptors() {
            match d? {
                Descriptor::Interface(i) => {
                    in_control = i.class == class::CDC && i.subclass == class::CDC_SUBCLASS_ECM;
                    if in_control && control.is_none() {
                        control = Some(i.number);
                    }
                }
                Descriptor::CdcUnion(u) if in_control => union = union.or(Some(u)),
                Descriptor::CdcEthernet(e) if in_control => ethernet = ethernet.or(Some(e)),
                _ => {}
            }
        }
        let (Some(control), Some(ethernet)) = (control, ethernet) else {
            return Ok(None);
        };
        let data_number = union.map(|u| u.data_interface).unwrap_or(control.wrapping_add(1));
        Ok(self.find_bulk_pair(Some(data_number))?.map(|data| EcmFunction {
            control_interface: union.map_or(control, |u| u.control_interface),
            data,
            ethernet,
        }))
    }
}

/// Language id of US English, which every device with strings supports in practice.
pub const LANGUAGE_EN_US: u16 = 0x0409;

/// The first language of string descriptor 0 (the language list).
pub fn first_language(desc: &[u8]) -> Result<u16, DescriptorError> {
    let b = checked(desc, kind::STRING, 4)?;
    Ok(le16(b, 2))
}

/// Converts a string descriptor's UTF-16LE text to ASCII in `out`, replacing anything outside ASCII by
/// `?`, and returns the number of bytes written.
pub fn string_to_ascii(desc: &[u8], out: &mut [u8]) -> Result<usize, DescriptorError> {
    let b = checked(desc, kind::STRING, 2)?;
    let text = &b[2..];
    if text.len() % 2 != 0 {
        return Err(DescriptorError::BadString);
    }
    let n = text.len() / 2;
    if n > out.len() {
        return Err(DescriptorError::BufferTooSmall);
    }
    for (o, unit) in out.iter_mut().zip(text.chunks_exact(2)) {
        let c = u16::from_le_bytes([unit[0], unit[1]]);
        *o = if c < 0x80 { c as u8 } else { b'?' };
    }
    Ok(n)
}

/// Writes `text` as a string descriptor into `out` and returns its length (for tests and mocks).
pub fn emit_string(text: &str, out: &mut [u8]) -> usize {
    let len = 2 + 2 * text.len();
    out[0] = len as u8;
    out[1] = kind::STRING;
    for (i, c) in text.bytes().enumerate() {
        out[2 + 2 * i] = c;
        out[3 + 2 * i] = 0;
    }
    len
}

/// Parses a MAC address written as exactly 12 hex digits (the CDC iMACAddress format, most
/// significant nibble of the first byte first, e.g. `"400000000001"`).
pub fn parse_mac_ascii(text: &[u8]) -> Result<[u8; 6], DescriptorError> {
    if text.len() != 12 {
        return Err(DescriptorError::BadMacString);
    }
    let mut mac = [0u8; 6];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0]).ok_or(DescriptorError::BadMacString)?;
        let lo = hex_digit(pair[1]).ok_or(DescriptorError::BadMacString)?;
        mac[i] = hi << 4 | lo;
    }
    Ok(mac)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Reads the MAC address out of a CDC iMACAddress string descriptor.
pub fn mac_from_string_descriptor(desc: &[u8]) -> Result<[u8; 6], DescriptorError> {
    let mut text = [0u8; 12];
    let n = string_to_ascii(desc, &mut text).map_err(|e| match e {
        DescriptorError::BufferTooSmall => DescriptorError::BadMacString,
        e => e,
    })?;
    parse_mac_ascii(&text[..n])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// QEMU usb-net's CDC-ECM configuration (value 1), as hw/usb/dev-network.c describes it.
    pub(crate) fn qemu_ecm_config() -> ([u8; 80], usize) {
        let mut b = [0u8; 80];
        let mut at = ConfigurationDescriptor::LENGTH;
        let mut put = |b: &mut [u8; 80], f: &dyn Fn(&mut [u8]) -> usize| {
            at += f(&mut b[at..]);
        };
        put(&mut b, &|o| {
            InterfaceDescriptor {
                number: 0,
                alternate: 0,
                num_endpoints: 1,
                class: 2,
                subclass: 6,
                protocol: 0,
                name: 0,
            }
            .emit(o);
            9
        });
        put(&mut b, &|o| {
            CdcHeader { cdc_version: 0x0110 }.emit(o);
            5
        });
        put(&mut b, &|o| {
            CdcUnion { control_interface: 0, data_interface: 1 }.emit(o);
            5
        });
        put(&mut b, &|o| {
            CdcEthernet {
                mac_string: 3,
                statistics: 0,
                max_segment_size: 1514,
                num_multicast_filters: 0,
                num_power_filters: 0,
            }
            .emit(o);
            13
        });
        put(&mut b, &|o| {
            EndpointDescriptor { address: 0x81, attributes: 3, max_packet_size: 16, interval: 32 }.emit(o);
            7
        });
        put(&mut b, &|o| {
            InterfaceDescriptor {
                number: 1,
                alternate: 0,
                num_endpoints: 0,
                class: 10,
                subclass: 0,
                protocol: 0,
                name: 0,
            }
            .emit(o);
            9
        });
        put(&mut b, &|o| {
            InterfaceDescriptor {
                number: 1,
                alternate: 1,
                num_endpoints: 2,
                class: 10,
                subclass: 0,
                protocol: 0,
                name: 0,
            }
            .emit(o);
            9
        });
        put(&mut b, &|o| {
            EndpointDescriptor { address: 0x82, attributes: 2, max_packet_size: 64, interval: 0 }.emit(o);
            7
        });
        put(&mut b, &|o| {
            EndpointDescriptor { address: 0x02, attributes: 2, max_packet_size: 64, interval: 0 }.emit(o);
            7
        });
        let total = at;
        ConfigurationDescriptor {
            total_length: total as u16,
            num_interfaces: 2,
            value: 1,
            name: 0,
            attributes: 0xC0,
            max_power: 50,
        }
        .emit(&mut b);
        (b, total)
    }

    /// A vendor-class configuration like the SMSC95xx/LAN78xx one: one interface, bulk IN 1, bulk OUT 2,
    /// interrupt IN 3.
    pub(crate) fn vendor_net_config(mps: u16) -> ([u8; 39], usize) {
        let mut b = [0u8; 39];
        ConfigurationDescriptor {
            total_length: 39,
            num_interfaces: 1,
            value: 1,
            name: 0,
            attributes: 0xE0,
            max_power: 1,
        }
        .emit(&mut b);
        InterfaceDescriptor {
            number: 0,
            alternate: 0,
            num_endpoints: 3,
            class: 0xFF,
            subclass: 0,
            protocol: 0xFF,
            name: 0,
        }
        .emit(&mut b[9..]);
        EndpointDescriptor { address: 0x81, attributes: 2, max_packet_size: mps, interval: 0 }
            .emit(&mut b[18..]);
        EndpointDescriptor { address: 0x02, attributes: 2, max_packet_size: mps, interval: 0 }
            .emit(&mut b[25..]);
        EndpointDescriptor { address: 0x83, attributes: 3, max_packet_size: 16, interval: 4 }
            .emit(&mut b[32..]);
        (b, 39)
    }

    #[test]
    fn device_round_trip() {
        let d = DeviceDescriptor {
            usb_version: 0x0200,
            class: 0xFF,
            subclass: 0,
            protocol: 0xFF,
            max_packet_size0: 64,
            vendor_id: 0x0424,
            product_id: 0xEC00,
            device_version: 0x0200,
            manufacturer: 1,
            product: 2,
            serial_number: 3,
            num_configurations: 1,
        };
        let mut b = [0u8; 18];
        d.emit(&mut b);
        assert_eq!(DeviceDescriptor::parse(&b), Ok(d));
        assert_eq!(DeviceDescriptor::max_packet_size0_from_prefix(&b[..8]), Ok(64));
        assert_eq!(DeviceDescriptor::max_packet_size0_from_prefix(&b[..7]), Err(DescriptorError::Truncated));
        assert_eq!(DeviceDescriptor::parse(&b[..17]), Err(DescriptorError::Truncated));
        let mut short = b;
        short[0] = 12;
        assert_eq!(DeviceDescriptor::parse(&short), Err(DescriptorError::TooShort { kind: 1, length: 12 }));
        let mut wrong = b;
        wrong[1] = 2;
        assert_eq!(
            DeviceDescriptor::parse(&wrong),
            Err(DescriptorError::WrongType { expected: 1, found: 2 })
        );
    }

    #[test]
    fn small_descriptors_round_trip() {
        let mut b = [0u8; 16];
        let e = EndpointDescriptor { address: 0x82, attributes: 2, max_packet_size: 512, interval: 0 };
        e.emit(&mut b);
        assert_eq!(EndpointDescriptor::parse(&b), Ok(e));
        assert_eq!(
            (e.number(), e.is_in(), e.transfer_type(), e.packet_size()),
            (2, true, TransferType::Bulk, 512)
        );
        let h = HubDescriptor {
            num_ports: 5,
            characteristics: 0x0009,
            power_on_to_good: 50,
            controller_current: 1,
        };
        h.emit(&mut b);
        assert_eq!(b[0], 9);
        assert_eq!(HubDescriptor::parse(&b), Ok(h));
        assert_eq!(h.power_on_delay_ms(), 100);
        let c = CdcEthernet {
            mac_string: 3,
            statistics: 0x1234_5678,
            max_segment_size: 1514,
            num_multicast_filters: 0x8000,
            num_power_filters: 0,
        };
        c.emit(&mut b);
        assert_eq!(CdcEthernet::parse(&b), Ok(c));
        assert!(CdcUnion::parse(&b).is_err());
        let u = CdcUnion { control_interface: 0, data_interface: 1 };
        u.emit(&mut b);
        assert_eq!(CdcUnion::parse(&b), Ok(u));
        let hd = CdcHeader { cdc_version: 0x0110 };
        hd.emit(&mut b);
        assert_eq!(CdcHeader::parse(&b), Ok(hd));
    }

    #[test]
    fn walks_qemu_ecm_configuration() {
        let (b, n) = qemu_ecm_config();
        let c = Configuration::new_checked(&b[..n]).unwrap();
        assert_eq!(c.header().value, 1);
        c.validate().unwrap();
        let kinds: std::vec::Vec<u8> = c
            .descriptors()
            .map(|d| match d.unwrap() {
                Descriptor::Configuration(_) => 2,
                Descriptor::Interface(_) => 4,
                Descriptor::Endpoint(_) => 5,
                Descriptor::CdcHeader(_) => 0x20,
                Descriptor::CdcUnion(_) => 0x26,
                Descriptor::CdcEthernet(_) => 0x2F,
                Descriptor::Other { kind, .. } => kind,
            })
            .collect();
        assert_eq!(kinds, [2, 4, 0x20, 0x26, 0x2F, 5, 4, 4, 5, 5]);
        let pair = c.find_bulk_pair(None).unwrap().unwrap();
        assert_eq!((pair.interface.number, pair.interface.alternate), (1, 1));
        assert_eq!(
            (pair.bulk_in.address, pair.bulk_out.address, pair.bulk_in.packet_size()),
            (0x82, 0x02, 64)
        );
        assert_eq!(pair.interrupt_in, None);
        let ecm = c.ecm_function().unwrap().unwrap();
        assert_eq!(ecm.control_interface, 0);
        assert_eq!(ecm.data, pair);
        assert_eq!((ecm.ethernet.mac_string, ecm.ethernet.max_segment_size), (3, 1514));
        assert_eq!(c.find_interface(2, 6).unwrap().unwrap().number, 0);
        assert_eq!(c.find_bulk_pair(Some(0)).unwrap(), None);
    }

    #[test]
    fn finds_vendor_bulk_pair_with_interrupt() {
        let (b, n) = vendor_net_config(512);
        let c = Configuration::new_checked(&b[..n]).unwrap();
        let p = c.find_bulk_pair(None).unwrap().unwrap();
        assert_eq!((p.bulk_in.address, p.bulk_out.address), (0x81, 0x02));
        assert_eq!(p.interrupt_in.unwrap().address, 0x83);
        assert_eq!(c.ecm_function().unwrap(), None);
    }

    #[test]
    fn malformed_configurations_are_errors() {
        let (b, n) = qemu_ecm_config();
        // Every truncation of the blob fails cleanly.
        for cut in 0..n {
            assert!(Configuration::new_checked(&b[..cut]).is_err(), "cut {cut}");
        }
        // A zero bLength in the middle ends the walk with an error instead of looping.
        let mut z = b;
        z[9] = 0;
        let c = Configuration::new_checked(&z[..n]).unwrap();
        let results: std::vec::Vec<_> = c.descriptors().collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[1], Err(DescriptorError::ZeroLength));
        assert_eq!(c.find_bulk_pair(None), Err(DescriptorError::ZeroLength));
        // A descriptor running past wTotalLength.
        let mut over = b;
        over[n - 7] = 40;
        let c = Configuration::new_checked(&over[..n]).unwrap();
        assert_eq!(c.validate(), Err(DescriptorError::Truncated));
        // wTotalLength below the header.
        let mut tiny = b;
        tiny[2] = 4;
        tiny[3] = 0;
        assert_eq!(Configuration::new_checked(&tiny[..n]).unwrap_err(), DescriptorError::BadTotalLength);
        // An endpoint descriptor that claims to be 4 bytes.
        let mut short = b;
        short[n - 7] = 4;
        let c = Configuration::new_checked(&short[..n]).unwrap();
        assert_eq!(c.validate(), Err(DescriptorError::TooShort { kind: 5, length: 4 }));
        // Garbage of every single byte value never panics.
        for v in 0..=255u8 {
            let g = [
                9, 2, 30, 0, 1, 1, 0, 0x80, 0, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v,
            ];
            if let Ok(c) = Configuration::new_checked(&g) {
                let _ = c.validate();
                let _ = c.find_bulk_pair(None);
                let _ = c.ecm_function();
            }
        }
    }

    #[test]
    fn strings_and_mac() {
        let mut d = [0u8; 64];
        let n = emit_string("400000000001", &mut d);
        assert_eq!(n, 26);
        let mut text = [0u8; 32];
        assert_eq!(string_to_ascii(&d[..n], &mut text), Ok(12));
        assert_eq!(&text[..12], b"400000000001");
        assert_eq!(mac_from_string_descriptor(&d[..n]), Ok([0x40, 0, 0, 0, 0, 1]));
        assert_eq!(parse_mac_ascii(b"B827ebA1b2C3"), Ok([0xB8, 0x27, 0xEB, 0xA1, 0xB2, 0xC3]));
        assert_eq!(parse_mac_ascii(b"B827EBA1B2C"), Err(DescriptorError::BadMacString));
        assert_eq!(parse_mac_ascii(b"B827EBA1B2CG"), Err(DescriptorError::BadMacString));
        let n13 = emit_string("4000000000011", &mut d);
        assert_eq!(mac_from_string_descriptor(&d[..n13]), Err(DescriptorError::BadMacString));
        assert_eq!(string_to_ascii(&d[..n13], &mut text[..4]), Err(DescriptorError::BufferTooSmall));
        // Non-ASCII becomes '?', odd text length is refused, bLength 0 is refused.
        let uni = [6u8, 3, b'A', 0, 0xE9, 0x00];
        assert_eq!(string_to_ascii(&uni, &mut text), Ok(2));
        assert_eq!(&text[..2], b"A?");
        assert_eq!(string_to_ascii(&[5, 3, b'A', 0, 0], &mut text), Err(DescriptorError::BadString));
        assert_eq!(string_to_ascii(&[0, 3], &mut text), Err(DescriptorError::ZeroLength));
        assert_eq!(first_language(&[4, 3, 0x09, 0x04]), Ok(LANGUAGE_EN_US));
        assert_eq!(first_language(&[2, 3]), Err(DescriptorError::TooShort { kind: 3, length: 2 }));
    }
}
