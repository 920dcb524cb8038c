//! Enumeration (USB 2.0 section 9.1.2 and chapter 11): gives every device on the bus an address and a
//! configuration, powering and resetting hub ports on the way, and recognises the network device.
//!
//! Per device, starting from one whose port was just reset and enabled:
//! 1. GET_DESCRIPTOR(DEVICE) for 8 bytes at address 0, to learn the EP0 packet size;
//! 2. SET_ADDRESS, then 2 ms of recovery time;
//! 3. the full device descriptor, then each configuration until one is recognised (QEMU's usb-net
//!    offers RNDIS first and CDC-ECM second), or the first;
//! 4. SET_CONFIGURATION;
//! 5. for a hub: the hub descriptor, PORT_POWER on every port, wait, then for each connected port
//!    PORT_RESET, wait for it to end, acknowledge the change bits and recurse into the child.
//!
//! The root port is the controller's business: the DWC2 driver resets and enables it (HPRT0) and
//! passes its speed to [`Enumerator::enumerate`].

use crate::descriptor::{
    class, kind, Configuration, ConfigurationDescriptor, DescriptorError, DeviceDescriptor, HubDescriptor,
};
use crate::ethernet::{classify, Kind};
use crate::host::{DeviceHandle, HubPort, Speed, TransferError, UsbHost};
use crate::hub::PortStatusReport;
use crate::setup::{PortFeature, Setup};

/// Devices one enumeration records.
pub const MAX_DEVICES: usize = 8;
/// Hub tiers below the root (USB allows 5).
pub const MAX_HUB_DEPTH: u8 = 5;
/// Largest configuration blob read (vendor Ethernet chips use 39 bytes, QEMU's usb-net about 80).
pub const CONFIG_BUFFER: usize = 512;
/// Configurations tried per device.
pub const MAX_CONFIGURATIONS: u8 = 4;
/// Recovery time after SET_ADDRESS (USB 2.0 9.2.6.3).
pub const SET_ADDRESS_RECOVERY_MS: u32 = 2;
/// Minimum wait after switching hub ports on: Circle's 510 ms, which also covers connect debouncing.
pub const PORT_POWER_SETTLE_MS: u32 = 510;
/// Wait after SET_FEATURE(PORT_RESET) before the first status poll (the reset lasts 10-20 ms).
pub const PORT_RESET_MS: u32 = 20;
/// Status polls before a port reset is declared stuck, 10 ms apart.
pub const PORT_RESET_POLLS: u32 = 10;
/// Recovery time after a port reset before the device must answer (USB 2.0 7.1.7.5).
pub const RESET_RECOVERY_MS: u32 = 10;

/// The step of enumeration that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// First 8 bytes of the device descriptor at address 0.
    DevicePrefix,
    /// SET_ADDRESS.
    SetAddress,
    /// The full device descriptor.
    DeviceDescriptor,
    /// A configuration descriptor.
    Configuration,
    /// SET_CONFIGURATION.
    SetConfiguration,
    /// The hub descriptor.
    HubDescriptor,
    /// SET_FEATURE(PORT_POWER).
    PortPower,
    /// GET_STATUS(port).
    PortStatus,
    /// SET_FEATURE(PORT_RESET) and waiting for it.
    PortReset,
    /// CLEAR_FEATURE(C_PORT_*).
    ClearChange,
}

/// Why enumeration of a device failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnumError {
    /// A control transfer failed.
    Transfer {
        /// Address the request went to.
        address: u8,
        /// What was being done.
        step: Step,
        /// How it failed.
        error: TransferError,
    },
    /// A descriptor did not parse.
    Descriptor {
        /// Device address.
        address: u8,
        /// What was being read.
        step: Step,
        /// How it failed.
        error: DescriptorError,
    },
    /// A reply shorter than asked for.
    ShortReply {
        /// Device address.
        address: u8,
        /// What was being read.
        step: Step,
    },
    /// More devices than [`MAX_DEVICES`] or addresses than 127.
    TooManyDevices,
    /// Hubs nested deeper than [`MAX_HUB_DEPTH`].
    TooDeep,
    /// A port reset that did not end with the port enabled.
    PortNotEnabled {
        /// Hub address.
        hub: u8,
        /// Port number.
        port: u8,
    },
}

/// A device enumeration addressed and configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// How to reach it.
    pub handle: DeviceHandle,
    /// Where it hangs: `None` on the root port.
    pub parent: Option<HubPort>,
    /// Its device descriptor (ids for reporting unknown devices).
    pub descriptor: DeviceDescriptor,
    /// GET_DESCRIPTOR index of the configuration chosen.
    pub configuration_index: u8,
    /// `bConfigurationValue` set.
    pub configuration_value: u8,
    /// True for a hub (its ports were enumerated).
    pub is_hub: bool,
    /// The Ethernet driver it needs; `None` for hubs and for devices this firmware does not drive.
    pub network: Option<Kind>,
}

/// The enumeration state: addresses handed out and devices found.
#[derive(Clone, Debug)]
pub struct Enumerator {
    devices: [Option<Found>; MAX_DEVICES],
    count: usize,
    next_address: u8,
    skipped: u32,
    last_skip: Option<(Option<HubPort>, EnumError)>,
}

impl Default for Enumerator {
    fn default() -> Self {
        Self::new()
    }
}

impl Enumerator {
    /// Nothing enumerated yet; addresses start at 1.
    pub const fn new() -> Self {
        Enumerator { devices: [None; MAX_DEVICES], count: 0, next_address: 1, skipped: 0, last_skip: None }
    }

    /// Enumerates the device on the root port, which the controller has just reset and enabled, and
    /// everything below it. A failing device below a hub is skipped (counted in
    /// [`skipped`](Self::skipped)) so the others still come up; a failure of the root device is
    /// returned.
    pub fn enumerate<H: UsbHost>(&mut self, host: &mut H, speed: Speed) -> Result<(), EnumError> {
        self.attach(host, speed, None, None, 0)
    }

    /// Devices found, in enumeration order (hubs before their children).
    pub fn devices(&self) -> impl Iterator<Item = &Found> {
        self.devices[..self.count].iter().flatten()
    }

    /// The first network device found.
    pub fn network(&self) -> Option<&Found> {
        self.devices().find(|d| d.network.is_some())
    }

    /// Devices below hubs that failed to enumerate.
    pub fn skipped(&self) -> u32 {
        self.skipped
    }

    /// The last of those failures and where it happened.
    pub fn last_skip(&self) -> Option<(Option<HubPort>, EnumError)> {
        self.last_skip
    }

    fn attach<H: UsbHost>(
        &mut self,
        host: &mut H,
        speed: Speed,
        parent: Option<HubPort>,
        split: Option<HubPort>,
        depth: u8,
    ) -> Result<(), EnumError> {
        if self.count >= MAX_DEVICES || self.next_address > 127 {
            return Err(EnumError::TooManyDevices);
        }
        let mut dev = DeviceHandle::new_default(speed, split);
        if speed == Speed::High {
            dev.max_packet_size0 = 64;
        }
        let mut buf = [0u8; CONFIG_BUFFER];

        let n = control_in(
            host,
            dev,
            Setup::get_descriptor(kind::DEVICE, 0, 8),
            &mut buf[..8],
            Step::DevicePrefix,
        )?;
        let mps0 = DeviceDescriptor::max_packet_size0_from_prefix(&buf[..n])
            .map_err(|error| EnumError::Descriptor { address: 0, step: Step::DevicePrefix, error })?;
        dev.max_packet_size0 = mps0.max(8) as u16;

        let address = self.next_address;
        host.control_out(dev, Setup::set_address(address), &[]).map_err(|error| EnumError::Transfer {
            address: 0,
            step: Step::SetAddress,
            error,
        })?;
        self.next_address += 1;
        host.delay_ms(SET_ADDRESS_RECOVERY_MS);
        dev.address = address;

        let len = DeviceDescriptor::LENGTH;
        let n = control_in(
            host,
            dev,
            Setup::get_descriptor(kind::DEVICE, 0, len as u16),
            &mut buf[..len],
            Step::DeviceDescriptor,
        )?;
        let descriptor = DeviceDescriptor::parse(&buf[..n]).map_err(|error| EnumError::Descriptor {
            address,
            step: Step::DeviceDescriptor,
            error,
        })?;
        let is_hub = descriptor.class == class::HUB;

        let mut chosen: Option<(u8, u8, Option<Kind>)> = None;
        for index in 0..descriptor.num_configurations.clamp(1, MAX_CONFIGURATIONS) {
            let config = read_configuration(host, dev, index, &mut buf)?;
            let network =
                if is_hub { None } else { classify(descriptor.vendor_id, descriptor.product_id, &config) };
            let value = config.header().value;
            if chosen.is_none() || network.is_some() {
                chosen = Some((index, value, network));
            }
            if network.is_some() || is_hub {
                break;
            }
        }
        let (configuration_index, configuration_value, network) = chosen.unwrap_or((0, 1, None));
        host.control_out(dev, Setup::set_configuration(configuration_value), &[])
            .map_err(|error| EnumError::Transfer { address, step: Step::SetConfiguration, error })?;

        self.devices[self.count] = Some(Found {
            handle: dev,
            parent,
            descriptor,
            configuration_index,
            configuration_value,
            is_hub,
            network,
        });
        self.count += 1;

        if is_hub {
            if depth >= MAX_HUB_DEPTH {
                return Err(EnumError::TooDeep);
            }
            self.enumerate_hub(host, dev, depth + 1)?;
        }
        Ok(())
    }

    fn enumerate_hub<H: UsbHost>(
        &mut self,
        host: &mut H,
        hub: DeviceHandle,
        depth: u8,
    ) -> Result<(), EnumError> {
        let address = hub.address;
        let mut buf = [0u8; 16];
        let n = control_in(
            host,
            hub,
            Setup::get_hub_descriptor(buf.len() as u16),
            &mut buf,
            Step::HubDescriptor,
        )?;
        let desc = HubDescriptor::parse(&buf[..n]).map_err(|error| EnumError::Descriptor {
            address,
            step: Step::HubDescriptor,
            error,
        })?;
        for port in 1..=desc.num_ports {
            host.control_out(hub, Setup::set_port_feature(port, PortFeature::Power), &[])
                .map_err(|error| EnumError::Transfer { address, step: Step::PortPower, error })?;
        }
        host.delay_ms(desc.power_on_delay_ms().max(PORT_POWER_SETTLE_MS));

        for port in 1..=desc.num_ports {
            let status = port_status(host, hub, port)?;
            if !status.status.connected {
                continue;
            }
            if status.change.connection {
                clear(host, hub, port, PortFeature::ConnectionChange)?;
            }
            let here = HubPort { hub_address: address, port };
            match self.reset_port(host, hub, port) {
                Ok(speed) => {
                    // A full/low-speed device below a high-speed hub talks through that hub's
                    // transaction translator; deeper full-speed hubs pass their own TT on.
                    let split = match (speed, hub.speed) {
                        (Speed::High, _) => None,
                        (_, Speed::High) => Some(here),
                        _ => hub.split,
                    };
                    if let Err(e) = self.attach(host, speed, Some(here), split, depth) {
                        if matches!(e, EnumError::TooManyDevices | EnumError::TooDeep) {
                            return Err(e);
                        }
                        self.skip(here, e);
                        // Take the failed device off the bus so it cannot answer at address 0 later.
                        let _ =
                            host.control_out(hub, Setup::clear_port_feature(port, PortFeature::Enable), &[]);
                    }
                }
                Err(e) => self.skip(here, e),
            }
        }
        Ok(())
    }

    fn skip(&mut self, at: HubPort, e: EnumError) {
        self.skipped += 1;
        self.last_skip = Some((Some(at), e));
    }

    fn reset_port<H: UsbHost>(
        &mut self,
        host: &mut H,
        hub: DeviceHandle,
        port: u8,
    ) -> Result<Speed, EnumError> {
        let address = hub.address;
        host.control_out(hub, Setup::set_port_feature(port, PortFeature::Reset), &[])
            .map_err(|error| EnumError::Transfer { address, step: Step::PortReset, error })?;
        host.delay_ms(PORT_RESET_MS);
        for _ in 0..PORT_RESET_POLLS {
            let s = port_status(host, hub, port)?;
            if s.change.reset || (!s.status.resetting && s.status.enabled) {
                if s.change.reset {
                    clear(host, hub, port, PortFeature::ResetChange)?;
                }
                if !s.status.enabled {
                    return Err(EnumError::PortNotEnabled { hub: address, port });
                }
                host.delay_ms(RESET_RECOVERY_MS);
                return Ok(s.status.speed());
            }
            host.delay_ms(10);
        }
        Err(EnumError::PortNotEnabled { hub: address, port })
    }
}

fn control_in<H: UsbHost>(
    host: &mut H,
    dev: DeviceHandle,
    setup: Setup,
    buf: &mut [u8],
    step: Step,
) -> Result<usize, EnumError> {
    host.control_in(dev, setup, buf).map_err(|error| EnumError::Transfer {
        address: dev.address,
        step,
        error,
    })
}

fn port_status<H: UsbHost>(host: &mut H, hub: DeviceHandle, port: u8) -> Result<PortStatusReport, EnumError> {
    let mut b = [0u8; 4];
    let n = control_in(host, hub, Setup::get_port_status(port), &mut b, Step::PortStatus)?;
    PortStatusReport::parse(&b[..n])
        .map_err(|_| EnumError::ShortReply { address: hub.address, step: Step::PortStatus })
}

fn clear<H: UsbHost>(host: &mut H, hub: DeviceHandle, port: u8, f: PortFeature) -> Result<(), EnumError> {
    host.control_out(hub, Setup::clear_port_feature(port, f), &[]).map_err(|error| EnumError::Transfer {
        address: hub.address,
        step: Step::ClearChange,
        error,
    })
}

/// Reads configuration `index` of a device into `buf` (header first, then `wTotalLength` bytes), e.g.
/// to open the network driver after enumeration.
pub fn read_configuration<'b, H: UsbHost>(
    host: &mut H,
    dev: DeviceHandle,
    index: u8,
    buf: &'b mut [u8],
) -> Result<Configuration<'b>, EnumError> {
    let address = dev.address;
    let head = ConfigurationDescriptor::LENGTH;
    if buf.len() < head {
        return Err(EnumError::Descriptor {
            address,
            step: Step::Configuration,
            error: DescriptorError::Truncated,
        });
    }
    let setup = Setup::get_descriptor(kind::CONFIGURATION, index, head as u16);
    let n = control_in(host, dev, setup, &mut buf[..head], Step::Configuration)?;
    let header = ConfigurationDescriptor::parse(&buf[..n]).map_err(|error| EnumError::Descriptor {
        address,
        step: Step::Configuration,
        error,
    })?;
    let total = (header.total_length as usize).min(buf.len());
    let setup = Setup::get_descriptor(kind::CONFIGURATION, index, total as u16);
    let n = control_in(host, dev, setup, &mut buf[..total], Step::Configuration)?;
    Configuration::new_checked(&buf[..n]).map_err(|error| EnumError::Descriptor {
        address,
        step: Step::Configuration,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::tests::{qemu_ecm_config, vendor_net_config};
    use crate::descriptor::{EndpointDescriptor, InterfaceDescriptor};
    use crate::host::EndpointHandle;
    use crate::hub::{PortChange, PortStatus};
    use crate::setup::{request, Recipient, RequestKind};
    use std::vec;
    use std::vec::Vec;

    /// One simulated device.
    struct SimDevice {
        descriptor: DeviceDescriptor,
        speed: Speed,
        configs: Vec<Vec<u8>>,
        hub: Option<(HubDescriptor, Vec<SimPort>)>,
        address: u8,
        configured: Option<u8>,
        /// Requests this device refuses.
        broken: bool,
    }

    #[derive(Clone, Default)]
    struct SimPort {
        device: Option<usize>,
        powered: bool,
        enabled: bool,
        reset_change: bool,
        connect_change: bool,
        /// Status polls that still see the reset in progress.
        reset_polls: u32,
    }

    /// A bus of simulated devices: device 0 sits on the (already reset) root port.
    struct BusMock {
        devices: Vec<SimDevice>,
        /// Every control transfer: (address, setup).
        log: Vec<(u8, Setup)>,
        delays: Vec<u32>,
        /// Hubs power their ports themselves (QEMU's usb-hub).
        always_powered: bool,
    }

    impl BusMock {
        fn new(root: SimDevice) -> Self {
            BusMock { devices: vec![root], log: Vec::new(), delays: Vec::new(), always_powered: false }
        }

        fn add(&mut self, hub: usize, port: u8, d: SimDevice) -> usize {
            self.devices.push(d);
            let id = self.devices.len() - 1;
            let p = &mut self.devices[hub].hub.as_mut().unwrap().1[port as usize - 1];
            p.device = Some(id);
            p.connect_change = true;
            id
        }

        /// Devices whose path from the root is enabled, and which answer at `address`.
        fn target(&self, address: u8) -> Option<usize> {
            let reachable = |id: usize| -> bool {
                let mut cur = id;
                loop {
                    let parent = self.devices.iter().enumerate().find_map(|(h, d)| {
                        d.hub
                            .as_ref()?
                            .1
                            .iter()
                            .find(|p| p.device == Some(cur))
                            .map(|p| (h, p.enabled && p.powered))
                    });
                    match parent {
                        None => return cur == 0,
                        Some((_, false)) => return false,
                        Some((h, true)) => cur = h,
                    }
                }
            };
            let hits: Vec<usize> = (0..self.devices.len())
                .filter(|&i| self.devices[i].address == address && reachable(i))
                .collect();
            assert!(hits.len() <= 1, "two devices answer at address {address}");
            hits.first().copied()
        }

        fn power_all(&mut self) {
            for d in &mut self.devices {
                if let Some((_, ports)) = d.hub.as_mut() {
                    ports.iter_mut().for_each(|p| p.powered = true);
                }
            }
        }
    }

    fn answer(d: &mut SimDevice, s: Setup, buf: &mut [u8]) -> Result<usize, TransferError> {
        let mut out = [0u8; 256];
        let n = match (s.kind, s.request, (s.value >> 8) as u8) {
            (RequestKind::Standard, request::GET_DESCRIPTOR, kind::DEVICE) => {
                d.descriptor.emit(&mut out);
                18
            }
            (RequestKind::Standard, request::GET_DESCRIPTOR, kind::CONFIGURATION) => {
                let c = d.configs.get((s.value & 0xFF) as usize).ok_or(TransferError::Stall)?;
                out[..c.len()].copy_from_slice(c);
                c.len()
            }
            (RequestKind::Class, request::GET_DESCRIPTOR, kind::HUB) => {
                let (h, _) = d.hub.as_ref().ok_or(TransferError::Stall)?;
                h.emit(&mut out);
                h.emitted_len()
            }
            (RequestKind::Class, request::GET_STATUS, _) if s.recipient == Recipient::Other => {
                let (_, ports) = d.hub.as_mut().ok_or(TransferError::Stall)?;
                let p = ports.get_mut(s.index as usize - 1).ok_or(TransferError::Stall)?;
                let resetting = p.reset_polls > 0;
                p.reset_polls = p.reset_polls.saturating_sub(1);
                let r = PortStatusReport {
                    status: PortStatus {
                        connected: p.device.is_some() && p.powered,
                        enabled: p.enabled && !resetting,
                        powered: p.powered,
                        resetting,
                        ..PortStatus::default()
                    },
                    change: PortChange {
                        connection: p.connect_change && p.powered,
                        reset: p.reset_change && !resetting,
                        ..PortChange::default()
                    },
                };
                r.emit(&mut out);
                4
            }
            _ => return Err(TransferError::Stall),
        };
        let n = n.min(s.length as usize).min(buf.len());
        buf[..n].copy_from_slice(&out[..n]);
        Ok(n)
    }

    impl UsbHost for BusMock {
        fn control_in(
            &mut self,
            dev: DeviceHandle,
            s: Setup,
            buf: &mut [u8],
        ) -> Result<usize, TransferError> {
            self.log.push((dev.address, s));
            let t = self.target(dev.address).ok_or(TransferError::Timeout)?;
            if self.devices[t].broken {
                return Err(TransferError::Transaction);
            }
            // Speeds of the child ports come from the attached device.
            let n = answer(&mut self.devices[t], s, buf)?;
            if s.kind == RequestKind::Class && s.request == request::GET_STATUS && n == 4 {
                let child = self.devices[t].hub.as_ref().unwrap().1[s.index as usize - 1].device;
                if let Some(c) = child {
                    let mut w = u16::from_le_bytes([buf[0], buf[1]]);
                    match self.devices[c].speed {
                        Speed::Low => w |= 1 << 9,
                        Speed::High => w |= 1 << 10,
                        Speed::Full => {}
                    }
                    buf[..2].copy_from_slice(&w.to_le_bytes());
                }
            }
            Ok(n)
        }

        fn control_out(&mut self, dev: DeviceHandle, s: Setup, _data: &[u8]) -> Result<(), TransferError> {
            self.log.push((dev.address, s));
            let t = self.target(dev.address).ok_or(TransferError::Timeout)?;
            if self.devices[t].broken {
                return Err(TransferError::Transaction);
            }
            let always = self.always_powered;
            match (s.kind, s.request) {
                (RequestKind::Standard, request::SET_ADDRESS) => self.devices[t].address = s.value as u8,
                (RequestKind::Standard, request::SET_CONFIGURATION) => {
                    let d = &mut self.devices[t];
                    let ok = d.configs.iter().any(|c| c[5] as u16 == s.value);
                    if !ok {
                        return Err(TransferError::Stall);
                    }
                    d.configured = Some(s.value as u8);
                }
                (RequestKind::Class, request::SET_FEATURE | request::CLEAR_FEATURE) => {
                    let set = s.request == request::SET_FEATURE;
                    let ports = &mut self.devices[t].hub.as_mut().ok_or(TransferError::Stall)?.1;
                    let p = ports.get_mut(s.index as usize - 1).ok_or(TransferError::Stall)?;
                    match (set, s.value) {
                        (true, 8) => p.powered = true,
                        (true, 4) => {
                            p.enabled = true;
                            p.reset_change = true;
                            p.reset_polls = 1;
                        }
                        (false, 1) => p.enabled = false,
                        (false, 16) => p.connect_change = false,
                        (false, 20) => p.reset_change = false,
                        _ => return Err(TransferError::Stall),
                    }
                    let child = p.device;
                    if set && s.value == 4 {
                        if let Some(c) = child {
                            self.devices[c].address = 0;
                            self.devices[c].configured = None;
                        }
                    }
                    if always {
                        self.power_all();
                    }
                }
                _ => return Err(TransferError::Stall),
            }
            Ok(())
        }

        fn bulk_in(
            &mut self,
            _: DeviceHandle,
            _: EndpointHandle,
            _: &mut [u8],
        ) -> Result<usize, TransferError> {
            unreachable!("enumeration does no bulk transfers")
        }

        fn bulk_out(&mut self, _: DeviceHandle, _: EndpointHandle, _: &[u8]) -> Result<(), TransferError> {
            unreachable!("enumeration does no bulk transfers")
        }

        fn delay_ms(&mut self, ms: u32) {
            self.delays.push(ms);
        }
    }

    fn device(vendor: u16, product: u16, class: u8, mps0: u8, configs: usize) -> DeviceDescriptor {
        DeviceDescriptor {
            usb_version: 0x0200,
            class,
            subclass: 0,
            protocol: 0,
            max_packet_size0: mps0,
            vendor_id: vendor,
            product_id: product,
            device_version: 0x0100,
            manufacturer: 1,
            product: 2,
            serial_number: 0,
            num_configurations: configs as u8,
        }
    }

    fn hub_config() -> Vec<u8> {
        let mut b = vec![0u8; 25];
        ConfigurationDescriptor {
            total_length: 25,
            num_interfaces: 1,
            value: 1,
            name: 0,
            attributes: 0xE0,
            max_power: 0,
        }
        .emit(&mut b);
        InterfaceDescriptor {
            number: 0,
            alternate: 0,
            num_endpoints: 1,
            class: 9,
            subclass: 0,
            protocol: 0,
            name: 0,
        }
        .emit(&mut b[9..]);
        EndpointDescriptor { address: 0x81, attributes: 3, max_packet_size: 1, interval: 12 }
            .emit(&mut b[18..]);
        b
    }

    fn hub(vendor: u16, product: u16, speed: Speed, ports: u8) -> SimDevice {
        SimDevice {
            descriptor: device(vendor, product, class::HUB, 64, 1),
            speed,
            configs: vec![hub_config()],
            hub: Some((
                HubDescriptor {
                    num_ports: ports,
                    characteristics: 0x0009,
                    power_on_to_good: 50,
                    controller_current: 1,
                },
                vec![SimPort::default(); ports as usize],
            )),
            address: 0,
            configured: None,
            broken: false,
        }
    }

    fn leaf(descriptor: DeviceDescriptor, speed: Speed, configs: Vec<Vec<u8>>) -> SimDevice {
        SimDevice { descriptor, speed, configs, hub: None, address: 0, configured: None, broken: false }
    }

    /// QEMU usb-net's RNDIS configuration (index 0, value 2): a CDC ACM-style control interface with
    /// the RNDIS protocol and a data interface.
    fn rndis_config() -> Vec<u8> {
        let mut b = vec![0u8; 41];
        ConfigurationDescriptor {
            total_length: 41,
            num_interfaces: 2,
            value: 2,
            name: 0,
            attributes: 0xC0,
            max_power: 50,
        }
        .emit(&mut b);
        InterfaceDescriptor {
            number: 0,
            alternate: 0,
            num_endpoints: 0,
            class: 2,
            subclass: 2,
            protocol: 0xFF,
            name: 0,
        }
        .emit(&mut b[9..]);
        InterfaceDescriptor {
            number: 1,
            alternate: 0,
            num_endpoints: 2,
            class: 10,
            subclass: 0,
            protocol: 0,
            name: 0,
        }
        .emit(&mut b[18..]);
        EndpointDescriptor { address: 0x82, attributes: 2, max_packet_size: 64, interval: 0 }
            .emit(&mut b[27..]);
        EndpointDescriptor { address: 0x02, attributes: 2, max_packet_size: 64, interval: 0 }
            .emit(&mut b[34..]);
        b
    }

    fn qemu_usb_net() -> SimDevice {
        let (ecm, n) = qemu_ecm_config();
        leaf(device(0x0525, 0xA4A2, 2, 64, 2), Speed::Full, vec![rndis_config(), ecm[..n].to_vec()])
    }

    #[test]
    fn qemu_topology_root_hub_usb_net() {
        let mut bus = BusMock::new(hub(0x0409, 0x55AA, Speed::Full, 8));
        bus.always_powered = true;
        let net = bus.add(0, 1, qemu_usb_net());
        let mut e = Enumerator::new();
        e.enumerate(&mut bus, Speed::Full).unwrap();

        let found: Vec<&Found> = e.devices().collect();
        assert_eq!(found.len(), 2);
        assert!(found[0].is_hub);
        assert_eq!((found[0].handle.address, found[0].parent), (1, None));
        let n = e.network().unwrap();
        assert_eq!(n.network, Some(Kind::CdcEcm));
        assert_eq!((n.descriptor.vendor_id, n.descriptor.product_id), (0x0525, 0xA4A2));
        assert_eq!((n.configuration_index, n.configuration_value), (1, 1));
        assert_eq!(
            n.handle,
            DeviceHandle { address: 2, speed: Speed::Full, max_packet_size0: 64, split: None }
        );
        assert_eq!(n.parent, Some(HubPort { hub_address: 1, port: 1 }));
        assert_eq!(bus.devices[net].configured, Some(1));
        assert_eq!(bus.devices[0].configured, Some(1));
        assert_eq!(e.skipped(), 0);

        // The device's own requests, in order.
        let to_net: Vec<[u8; 8]> = bus
            .log
            .iter()
            .skip(2) // the hub's own requests at address 0
            .filter(|(a, _)| *a == 0 || *a == 2)
            .map(|(_, s)| s.to_bytes())
            .collect();
        assert_eq!(
            to_net,
            [
                [0x80, 6, 0, 1, 0, 0, 8, 0],  // device descriptor prefix at address 0
                [0x00, 5, 2, 0, 0, 0, 0, 0],  // SET_ADDRESS(2)
                [0x80, 6, 0, 1, 0, 0, 18, 0], // full device descriptor
                [0x80, 6, 0, 2, 0, 0, 9, 0],  // configuration 0 header (RNDIS)
                [0x80, 6, 0, 2, 0, 0, 41, 0],
                [0x80, 6, 1, 2, 0, 0, 9, 0], // configuration 1 header (CDC-ECM)
                [0x80, 6, 1, 2, 0, 0, 80, 0],
                [0x00, 9, 1, 0, 0, 0, 0, 0], // SET_CONFIGURATION(1)
            ]
        );
        // The hub's port handling: power on all 8 ports, then reset port 1 only.
        let hub_ops: Vec<[u8; 8]> = bus
            .log
            .iter()
            .filter(|(a, s)| *a == 1 && s.kind == RequestKind::Class && s.request != request::GET_STATUS)
            .map(|(_, s)| s.to_bytes())
            .collect();
        assert_eq!(hub_ops[0], [0xA0, 6, 0, 0x29, 0, 0, 16, 0]);
        assert!(
            (1..=8).all(|p| hub_ops[p] == Setup::set_port_feature(p as u8, PortFeature::Power).to_bytes())
        );
        assert_eq!(
            hub_ops[9..],
            [
                Setup::clear_port_feature(1, PortFeature::ConnectionChange).to_bytes(),
                Setup::set_port_feature(1, PortFeature::Reset).to_bytes(),
                Setup::clear_port_feature(1, PortFeature::ResetChange).to_bytes(),
            ]
        );
        assert!(bus.delays.contains(&PORT_POWER_SETTLE_MS) && bus.delays.contains(&SET_ADDRESS_RECOVERY_MS));

        // The driver can then read the chosen configuration again.
        let mut buf = [0u8; CONFIG_BUFFER];
        let c = read_configuration(&mut bus, n.handle, n.configuration_index, &mut buf).unwrap();
        assert!(c.ecm_function().unwrap().is_some());
    }

    #[test]
    fn pi3b_topology_lan9514_hub_smsc95xx_and_an_unknown_device() {
        let mut bus = BusMock::new(hub(0x0424, 0x9514, Speed::High, 5));
        let (v, n) = vendor_net_config(512);
        bus.add(0, 1, leaf(device(0x0424, 0xEC00, 0xFF, 64, 1), Speed::High, vec![v[..n].to_vec()]));
        let (k, m) = vendor_net_config(8);
        bus.add(0, 3, leaf(device(0x046D, 0xC31C, 0, 8, 1), Speed::Low, vec![k[..m].to_vec()]));
        let mut e = Enumerator::new();
        e.enumerate(&mut bus, Speed::High).unwrap();

        let found: Vec<&Found> = e.devices().collect();
        assert_eq!(found.len(), 3);
        let smsc = e.network().unwrap();
        assert_eq!(smsc.network, Some(Kind::Smsc95xx));
        assert_eq!(
            smsc.handle,
            DeviceHandle { address: 2, speed: Speed::High, max_packet_size0: 64, split: None }
        );
        assert_eq!(smsc.parent, Some(HubPort { hub_address: 1, port: 1 }));
        // The unknown low-speed device is reported with its ids, not driven, and needs splits through
        // the high-speed hub's transaction translator.
        let other = found[2];
        assert_eq!(
            (other.descriptor.vendor_id, other.descriptor.product_id, other.network),
            (0x046D, 0xC31C, None)
        );
        assert_eq!(other.handle.speed, Speed::Low);
        assert_eq!(other.handle.max_packet_size0, 8);
        assert_eq!(other.handle.split, Some(HubPort { hub_address: 1, port: 3 }));
        // Ports without a device are powered but never reset.
        let resets: Vec<u16> = bus
            .log
            .iter()
            .filter(|(_, s)| *s == Setup::set_port_feature(s.index as u8, PortFeature::Reset))
            .map(|(_, s)| s.index)
            .collect();
        assert_eq!(resets, [1, 3]);
        assert!(bus.devices[0].hub.as_ref().unwrap().1.iter().all(|p| p.powered));
    }

    #[test]
    fn pi3b_plus_topology_two_hubs_then_lan78xx() {
        let mut bus = BusMock::new(hub(0x0424, 0x2514, Speed::High, 4));
        let inner = bus.add(0, 1, hub(0x0424, 0x2514, Speed::High, 3));
        let (v, n) = vendor_net_config(512);
        bus.add(inner, 1, leaf(device(0x0424, 0x7800, 0xFF, 64, 1), Speed::High, vec![v[..n].to_vec()]));
        let mut e = Enumerator::new();
        e.enumerate(&mut bus, Speed::High).unwrap();
        let lan = e.network().unwrap();
        assert_eq!(lan.network, Some(Kind::Lan78xx));
        assert_eq!(lan.handle.address, 3);
        assert_eq!(lan.parent, Some(HubPort { hub_address: 2, port: 1 }));
        assert_eq!(e.devices().filter(|d| d.is_hub).count(), 2);
    }

    #[test]
    fn a_broken_child_is_skipped_and_the_rest_comes_up() {
        let mut bus = BusMock::new(hub(0x0409, 0x55AA, Speed::Full, 4));
        bus.always_powered = true;
        let mut bad = qemu_usb_net();
        bad.broken = true;
        bus.add(0, 1, bad);
        bus.add(0, 2, qemu_usb_net());
        let mut e = Enumerator::new();
        e.enumerate(&mut bus, Speed::Full).unwrap();
        assert_eq!(e.skipped(), 1);
        let (at, err) = e.last_skip().unwrap();
        assert_eq!(at, Some(HubPort { hub_address: 1, port: 1 }));
        assert_eq!(
            err,
            EnumError::Transfer { address: 0, step: Step::DevicePrefix, error: TransferError::Transaction }
        );
        // The broken device's port was disabled; the good one got address 2.
        assert!(!bus.devices[0].hub.as_ref().unwrap().1[0].enabled);
        assert_eq!(e.network().unwrap().handle.address, 2);
        assert_eq!(e.network().unwrap().parent, Some(HubPort { hub_address: 1, port: 2 }));
    }

    #[test]
    fn root_failures_and_stuck_resets_are_errors() {
        // Nothing answers: the controller times out.
        let mut bus = BusMock::new(hub(0x0409, 0x55AA, Speed::Full, 1));
        bus.devices[0].address = 99;
        let mut e = Enumerator::new();
        assert_eq!(
            e.enumerate(&mut bus, Speed::Full),
            Err(EnumError::Transfer { address: 0, step: Step::DevicePrefix, error: TransferError::Timeout })
        );
        // A port whose reset never finishes is skipped after PORT_RESET_POLLS polls.
        let mut bus = BusMock::new(hub(0x0409, 0x55AA, Speed::Full, 1));
        bus.always_powered = true;
        bus.add(0, 1, qemu_usb_net());
        let mut e = Enumerator::new();
        // The mock ends a reset after one status poll; keep it resetting instead.
        struct Stuck(BusMock);
        impl UsbHost for Stuck {
            fn control_in(
                &mut self,
                d: DeviceHandle,
                s: Setup,
                b: &mut [u8],
            ) -> Result<usize, TransferError> {
                if let Some(p) = self.0.devices[0].hub.as_mut().map(|h| &mut h.1[0]) {
                    p.reset_polls = p.reset_polls.max(5);
                }
                self.0.control_in(d, s, b)
            }
            fn control_out(&mut self, d: DeviceHandle, s: Setup, b: &[u8]) -> Result<(), TransferError> {
                self.0.control_out(d, s, b)
            }
            fn bulk_in(
                &mut self,
                d: DeviceHandle,
                e: EndpointHandle,
                b: &mut [u8],
            ) -> Result<usize, TransferError> {
                self.0.bulk_in(d, e, b)
            }
            fn bulk_out(
                &mut self,
                d: DeviceHandle,
                e: EndpointHandle,
                b: &[u8],
            ) -> Result<(), TransferError> {
                self.0.bulk_out(d, e, b)
            }
            fn delay_ms(&mut self, ms: u32) {
                self.0.delay_ms(ms)
            }
        }
        let mut stuck = Stuck(bus);
        e.enumerate(&mut stuck, Speed::Full).unwrap();
        assert_eq!(e.skipped(), 1);
        assert_eq!(e.last_skip().unwrap().1, EnumError::PortNotEnabled { hub: 1, port: 1 });
        assert_eq!(e.network(), None);
        let polls = stuck.0.log.iter().filter(|(_, s)| *s == Setup::get_port_status(1)).count();
        assert_eq!(polls, 1 + PORT_RESET_POLLS as usize);
    }

    #[test]
    fn hubs_nested_too_deep_are_refused() {
        let mut bus = BusMock::new(hub(0x0424, 0x2514, Speed::High, 1));
        let mut parent = 0;
        for _ in 0..MAX_HUB_DEPTH + 1 {
            parent = bus.add(parent, 1, hub(0x0424, 0x2514, Speed::High, 1));
        }
        let mut e = Enumerator::new();
        assert_eq!(e.enumerate(&mut bus, Speed::High), Err(EnumError::TooDeep));
    }
}
