//! A recording [`UsbHost`] for tests: logs every transfer, answers vendor register reads from a
//! simulated register file (with self-clearing bits and an MII-attached PHY), answers other control
//! IN requests from a table, and plays back queued bulk IN transfers.

use crate::host::{DeviceHandle, EndpointHandle, TransferError, UsbHost};
use crate::setup::{request, Direction, RequestKind, Setup};
use std::collections::{HashMap, VecDeque};
use std::vec::Vec;

/// One logged bus operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A control transfer and its data stage (sent, or answered).
    Control(Setup, Vec<u8>),
    /// A bulk OUT transfer.
    BulkOut(u8, Vec<u8>),
    /// A bulk IN transfer and what it returned.
    BulkIn(u8, Result<Vec<u8>, TransferError>),
    /// A delay.
    Delay(u32),
}

/// A register bit that clears by itself some reads after it was written (or never, to test
/// timeouts), optionally setting other bits when it does (LAN78xx PMT_CTL READY).
#[derive(Clone, Debug)]
pub struct SelfClearing {
    pub register: u16,
    pub mask: u32,
    /// Reads that still see the bit set; `None` = stuck forever.
    pub reads: Option<usize>,
    pub then_set: u32,
}

#[derive(Default)]
pub struct ChipMock {
    pub log: Vec<Event>,
    pub regs: HashMap<u16, u32>,
    pub self_clearing: Vec<SelfClearing>,
    /// Countdown of active self-clearing bits: (register, mask) -> reads left.
    pending: HashMap<(u16, u32), Option<usize>>,
    /// MII bridge registers (address, data), if the chip has one.
    pub mii: Option<(u16, u16)>,
    pub phy: HashMap<u8, u16>,
    /// PHY register writes in order: (register, value).
    pub phy_writes: Vec<(u8, u16)>,
    /// Answers to control IN requests other than register reads, by (bmRequestType, bRequest, wValue, wIndex).
    pub answers: HashMap<(u8, u8, u16, u16), Vec<u8>>,
    /// Control OUT requests that stall, by bRequest.
    pub stall_out: Vec<u8>,
    pub bulk_in: VecDeque<Result<Vec<u8>, TransferError>>,
    pub fail_bulk_out: Option<TransferError>,
}

impl ChipMock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register writes in order.
    pub fn writes(&self) -> Vec<(u16, u32)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Event::Control(s, d)
                    if s.kind == RequestKind::Vendor && s.request == request::VENDOR_WRITE_REGISTER =>
                {
                    Some((s.index, u32::from_le_bytes(d[..4].try_into().unwrap())))
                }
                _ => None,
            })
            .collect()
    }

    /// Register accesses in order: (register, Some(value) for writes, None for reads).
    pub fn accesses(&self) -> Vec<(u16, Option<u32>)> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Event::Control(s, d) if s.kind == RequestKind::Vendor => Some((
                    s.index,
                    (s.request == request::VENDOR_WRITE_REGISTER)
                        .then(|| u32::from_le_bytes(d[..4].try_into().unwrap())),
                )),
                _ => None,
            })
            .collect()
    }

    pub fn bulk_outs(&self) -> Vec<Vec<u8>> {
        self.log
            .iter()
            .filter_map(|e| match e {
                Event::BulkOut(_, d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    fn reg_write(&mut self, reg: u16, value: u32) {
        self.regs.insert(reg, value);
        for sc in &self.self_clearing {
            if sc.register == reg && value & sc.mask != 0 {
                self.pending.insert((reg, sc.mask), sc.reads);
            }
        }
        if let Some((addr, data)) = self.mii {
            if reg == addr && value & 1 != 0 {
                let phy_reg = ((value >> 6) & 0x1F) as u8;
                if value & 2 != 0 {
                    let v = self.regs.get(&data).copied().unwrap_or(0) as u16;
                    self.phy_writes.push((phy_reg, v));
                    // The PHY's reset and restart bits complete at once.
                    let stored = if phy_reg == 0 { v & !0x8200 } else { v };
                    self.phy.insert(phy_reg, stored);
                } else {
                    let v = self.phy.get(&phy_reg).copied().unwrap_or(0);
                    self.regs.insert(data, v as u32);
                }
                self.regs.insert(addr, value & !1);
            }
        }
    }

    fn reg_read(&mut self, reg: u16) -> u32 {
        let mut v = self.regs.get(&reg).copied().unwrap_or(0);
        let keys: Vec<(u16, u32)> = self.pending.keys().copied().filter(|k| k.0 == reg).collect();
        for key in keys {
            let left = self.pending[&key];
            match left {
                None => v |= key.1,
                Some(0) => {
                    self.pending.remove(&key);
                    let then =
                        self.self_clearing.iter().find(|s| (s.register, s.mask) == key).unwrap().then_set;
                    v = (v & !key.1) | then;
                    self.regs.insert(reg, v);
                }
                Some(n) => {
                    v |= key.1;
                    self.pending.insert(key, Some(n - 1));
                }
            }
        }
        v
    }
}

impl UsbHost for ChipMock {
    fn control_in(
        &mut self,
        _dev: DeviceHandle,
        setup: Setup,
        buf: &mut [u8],
    ) -> Result<usize, TransferError> {
        assert_eq!(setup.direction, Direction::In);
        assert!(buf.len() >= setup.length as usize, "buffer shorter than wLength");
        let answer: Vec<u8> =
            if setup.kind == RequestKind::Vendor && setup.request == request::VENDOR_READ_REGISTER {
                self.reg_read(setup.index).to_le_bytes().to_vec()
            } else {
                match self.answers.get(&(setup.request_type(), setup.request, setup.value, setup.index)) {
                    Some(a) => a.clone(),
                    None => {
                        self.log.push(Event::Control(setup, Vec::new()));
                        return Err(TransferError::Stall);
                    }
                }
            };
        let n = answer.len().min(setup.length as usize);
        buf[..n].copy_from_slice(&answer[..n]);
        self.log.push(Event::Control(setup, answer[..n].to_vec()));
        Ok(n)
    }

    fn control_out(&mut self, _dev: DeviceHandle, setup: Setup, data: &[u8]) -> Result<(), TransferError> {
        assert_eq!(setup.direction, Direction::Out);
        assert_eq!(data.len(), setup.length as usize);
        self.log.push(Event::Control(setup, data.to_vec()));
        if self.stall_out.contains(&setup.request) {
            return Err(TransferError::Stall);
        }
        if setup.kind == RequestKind::Vendor && setup.request == request::VENDOR_WRITE_REGISTER {
            self.reg_write(setup.index, u32::from_le_bytes(data.try_into().unwrap()));
        }
        Ok(())
    }

    fn bulk_in(
        &mut self,
        _dev: DeviceHandle,
        ep: EndpointHandle,
        buf: &mut [u8],
    ) -> Result<usize, TransferError> {
        assert!(ep.is_in());
        let r = self.bulk_in.pop_front().unwrap_or(Err(TransferError::Nak));
        let r = r.and_then(|d| if d.len() > buf.len() { Err(TransferError::Babble) } else { Ok(d) });
        self.log.push(Event::BulkIn(ep.address, r.clone()));
        let d = r?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }

    fn bulk_out(&mut self, _dev: DeviceHandle, ep: EndpointHandle, data: &[u8]) -> Result<(), TransferError> {
        assert!(!ep.is_in());
        self.log.push(Event::BulkOut(ep.address, data.to_vec()));
        match self.fail_bulk_out {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn delay_ms(&mut self, ms: u32) {
        self.log.push(Event::Delay(ms));
    }
}
