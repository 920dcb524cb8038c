//! The hardware-free half of the DWC2 (Synopsys DesignWare USB 2.0 OTG, "dwc_otg") host-channel
//! driver: register bit meanings, HCTSIZ sizing, HCINT decoding into [`TransferError`], channel
//! allocation, per-device data toggles and the split-transaction state machine. No MMIO: the
//! firmware's `drivers::dwc2` does the register accesses and calls these.
//!
//! Register facts from the Linux dwc2 headers' bit layout (hw.h), QEMU's hcd-dwc2 model and Circle's
//! dwhci.h, as summarised in the project's notes; the code is ours.

use crate::host::{DataToggle, Pid, ToggleTable, TransferError};

/// Host channel interrupt (HCINTn) bits.
pub mod hcint {
    /// The transfer completed (all packets, or a short packet on IN).
    pub const XFER_COMPL: u32 = 1 << 0;
    /// The channel halted (after completion, an error, a STALL, or a disable).
    pub const CH_HLTD: u32 = 1 << 1;
    /// AHB (DMA) error.
    pub const AHB_ERR: u32 = 1 << 2;
    /// STALL handshake.
    pub const STALL: u32 = 1 << 3;
    /// NAK handshake.
    pub const NAK: u32 = 1 << 4;
    /// ACK handshake (splits: the start split was accepted).
    pub const ACK: u32 = 1 << 5;
    /// NYET handshake (splits: the complete split is not ready yet).
    pub const NYET: u32 = 1 << 6;
    /// Transaction error (CRC, timeout, bit stuff, false EOP) after three tries.
    pub const XACT_ERR: u32 = 1 << 7;
    /// Babble.
    pub const BBL_ERR: u32 = 1 << 8;
    /// Frame overrun (periodic transfer missed its frame).
    pub const FRM_OVRUN: u32 = 1 << 9;
    /// Data toggle error.
    pub const DATA_TGL_ERR: u32 = 1 << 10;
    /// Every bit above.
    pub const ALL: u32 = 0x7FF;
}

/// HCTSIZ.PID values.
pub mod pid {
    /// DATA0.
    pub const DATA0: u32 = 0;
    /// DATA2 (high-bandwidth isochronous only).
    pub const DATA2: u32 = 1;
    /// DATA1.
    pub const DATA1: u32 = 2;
    /// SETUP on control endpoints (MDATA otherwise).
    pub const SETUP: u32 = 3;
}

/// Largest HCTSIZ.XferSize the 19-bit field holds.
pub const MAX_XFER_SIZE: u32 = (1 << 19) - 1;
/// Largest HCTSIZ.PktCnt the 10-bit field holds.
pub const MAX_PACKET_COUNT: u32 = (1 << 10) - 1;
/// Largest transfer QEMU's model accepts (larger ones are silently ignored, never completing).
pub const QEMU_MAX_XFER_SIZE: u32 = 65536;

/// The HCTSIZ.PID bits for a data toggle.
pub fn pid_bits(p: Pid) -> u32 {
    match p {
        Pid::Data0 => pid::DATA0,
        Pid::Data1 => pid::DATA1,
    }
}

/// HCTSIZ's size fields for one transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferSize {
    /// XferSize in bytes.
    pub bytes: u32,
    /// PktCnt.
    pub packets: u32,
}

/// Sizes a transfer of `len` bytes on an endpoint of packet size `mps`. An IN transfer must ask for
/// whole packets (the core writes up to `packets * mps` bytes, so the DMA buffer must hold that
/// much: see [`TransferSize::bytes`]); an OUT transfer sends exactly `len` bytes. A zero-length
/// transfer is one (empty) packet. Sizes the fields cannot hold, or QEMU would ignore, are refused.
pub fn transfer_size(len: usize, mps: u16, is_in: bool) -> Result<TransferSize, TransferError> {
    if mps == 0 {
        return Err(TransferError::Unsupported);
    }
    let mps = mps as usize;
    let packets = len.div_ceil(mps).max(1);
    let bytes = if is_in { packets * mps } else { len };
    if bytes > QEMU_MAX_XFER_SIZE.min(MAX_XFER_SIZE) as usize || packets > MAX_PACKET_COUNT as usize {
        return Err(TransferError::Unsupported);
    }
    Ok(TransferSize { bytes: bytes as u32, packets: packets as u32 })
}

/// Bytes a finished transfer moved: what was asked for minus what HCTSIZ.XferSize still counts.
pub fn transferred(requested: u32, remaining: u32) -> usize {
    requested.saturating_sub(remaining) as usize
}

/// What a channel's HCINT says about its transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Still running (possibly NAKed and being retried by the core, as bulk/control NAKs are in
    /// DMA mode and in QEMU).
    Busy,
    /// Completed successfully.
    Done,
    /// Halted with an error.
    Failed(TransferError),
}

/// Decodes HCINT for a non-split transfer. Errors win over completion; a halt without completion or
/// error is a NAK (interrupt endpoints halt on NAK) or, with no handshake at all, a disable.
pub fn decode(hcint: u32) -> ChannelState {
    if let Some(e) = error_of(hcint) {
        return ChannelState::Failed(e);
    }
    if hcint & hcint::XFER_COMPL != 0 {
        return ChannelState::Done;
    }
    if hcint & hcint::CH_HLTD != 0 {
        return ChannelState::Failed(if hcint & hcint::NAK != 0 {
            TransferError::Nak
        } else {
            TransferError::Transaction
        });
    }
    ChannelState::Busy
}

fn error_of(hcint: u32) -> Option<TransferError> {
    Some(if hcint & hcint::STALL != 0 {
        TransferError::Stall
    } else if hcint & hcint::BBL_ERR != 0 {
        TransferError::Babble
    } else if hcint & hcint::XACT_ERR != 0 {
        TransferError::Transaction
    } else if hcint & hcint::DATA_TGL_ERR != 0 {
        TransferError::DataToggle
    } else if hcint & (hcint::AHB_ERR | hcint::FRM_OVRUN) != 0 {
        TransferError::Overrun
    } else {
        return None;
    })
}

/// Phase of a split transaction (USB 2.0 section 11.17-11.20): the host sends a start split to the
/// high-speed hub's transaction translator, which runs the full/low-speed transaction on its own,
/// then collects the result with complete splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitPhase {
    /// HCSPLT.CompSplt = 0.
    Start,
    /// HCSPLT.CompSplt = 1.
    Complete,
}

/// What to do after a split-transaction channel halted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitNext {
    /// The start split was acknowledged: issue the complete split.
    Complete,
    /// The translator has no result yet (NYET): issue the complete split again.
    RetryComplete,
    /// The device NAKed (seen in either phase): begin again with a start split, later.
    Restart,
    /// The packet went through.
    Done,
    /// It failed.
    Failed(TransferError),
}

/// Decodes HCINT after one split phase halted. Untested on hardware: QEMU ignores HCSPLT (it
/// emulates only full-speed devices on a full-speed root), so this follows the Linux/Circle
/// handling from the notes and is exercised by unit tests only.
pub fn split_next(phase: SplitPhase, hcint: u32) -> SplitNext {
    if let Some(e) = error_of(hcint) {
        return SplitNext::Failed(e);
    }
    match phase {
        SplitPhase::Start if hcint & hcint::ACK != 0 => SplitNext::Complete,
        SplitPhase::Start if hcint & hcint::NAK != 0 => SplitNext::Restart,
        // A start split of an OUT packet may complete at once on some cores.
        SplitPhase::Start if hcint & hcint::XFER_COMPL != 0 => SplitNext::Complete,
        SplitPhase::Complete if hcint & hcint::XFER_COMPL != 0 => SplitNext::Done,
        SplitPhase::Complete if hcint & hcint::NYET != 0 => SplitNext::RetryComplete,
        SplitPhase::Complete if hcint & hcint::NAK != 0 => SplitNext::Restart,
        // An ACK of the complete split of an OUT packet also ends it.
        SplitPhase::Complete if hcint & hcint::ACK != 0 => SplitNext::Done,
        _ => SplitNext::Failed(TransferError::Transaction),
    }
}

/// HCSPLT for a split transaction to `hub_address`'s transaction translator, `port` below it, in
/// `phase`; XactPos = "all" (the whole payload of a full-speed packet in one start split).
pub fn hcsplt(hub_address: u8, port: u8, phase: SplitPhase) -> u32 {
    const SPLT_ENA: u32 = 1 << 31;
    const COMP_SPLT: u32 = 1 << 16;
    const XACTPOS_ALL: u32 = 3 << 14;
    let comp = if phase == SplitPhase::Complete { COMP_SPLT } else { 0 };
    SPLT_ENA | comp | XACTPOS_ALL | (hub_address as u32 & 0x7F) << 7 | (port as u32 & 0x7F)
}

/// Owner of a channel: device address and endpoint address (bit 7 = IN).
pub type ChannelOwner = (u8, u8);

/// Which host channel serves which endpoint. Channel 0 serves every control transfer (they are
/// synchronous); every bulk/interrupt endpoint and direction gets a channel of its own for good, so a
/// bulk IN can stay armed across calls (QEMU keeps retrying a NAKed transfer even after the channel
/// is disabled, and would later write into whatever buffer the channel points at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelMap<const N: usize> {
    owners: [Option<ChannelOwner>; N],
    count: usize,
}

impl<const N: usize> ChannelMap<N> {
    /// The control channel.
    pub const CONTROL: usize = 0;

    /// `count` channels (GHWCFG2.NumHstChnl + 1, at most `N`), none assigned.
    pub fn new(count: usize) -> Self {
        ChannelMap { owners: [None; N], count: count.min(N) }
    }

    /// The channel of `owner`, assigning a free one on first use; `Err(Unsupported)` when all are
    /// taken.
    pub fn channel(&mut self, owner: ChannelOwner) -> Result<usize, TransferError> {
        if let Some(i) = self.find(owner) {
            return Ok(i);
        }
        let free = (1..self.count).find(|&i| self.owners[i].is_none()).ok_or(TransferError::Unsupported)?;
        self.owners[free] = Some(owner);
        Ok(free)
    }

    /// The channel already assigned to `owner`.
    pub fn find(&self, owner: ChannelOwner) -> Option<usize> {
        (1..self.count).find(|&i| self.owners[i] == Some(owner))
    }

    /// The owner of channel `i`.
    pub fn owner(&self, i: usize) -> Option<ChannelOwner> {
        self.owners.get(i).copied().flatten()
    }
}

/// Data toggles of up to `N` devices, by address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceToggles<const N: usize> {
    slots: [Option<(u8, ToggleTable)>; N],
}

impl<const N: usize> Default for DeviceToggles<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> DeviceToggles<N> {
    /// No device known.
    pub const fn new() -> Self {
        DeviceToggles { slots: [None; N] }
    }

    /// The toggle of `endpoint` on the device at `address` (created at DATA0); `None` when `N`
    /// devices are already tracked.
    pub fn get_mut(&mut self, address: u8, endpoint: u8) -> Option<&mut DataToggle> {
        let i = match self.slots.iter().position(|s| matches!(s, Some((a, _)) if *a == address)) {
            Some(i) => i,
            None => {
                let i = self.slots.iter().position(Option::is_none)?;
                self.slots[i] = Some((address, ToggleTable::new()));
                i
            }
        };
        self.slots[i].as_mut().map(|(_, t)| t.get_mut(endpoint))
    }

    /// Forgets a device (after SET_ADDRESS gives its address to a new one): its toggles restart.
    pub fn forget(&mut self, address: u8) {
        for s in &mut self.slots {
            if matches!(s, Some((a, _)) if *a == address) {
                *s = None;
            }
        }
    }

    /// Applies the resets a successful control request to `address` implies.
    pub fn observe(&mut self, address: u8, setup: &crate::setup::Setup) {
        if let Some((_, t)) = self.slots.iter_mut().flatten().find(|(a, _)| *a == address) {
            t.observe(setup);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::Setup;

    #[test]
    fn sizes() {
        // IN asks for whole packets; OUT sends exactly the data; empty = one ZLP.
        assert_eq!(transfer_size(18, 64, true), Ok(TransferSize { bytes: 64, packets: 1 }));
        assert_eq!(transfer_size(8, 8, true), Ok(TransferSize { bytes: 8, packets: 1 }));
        assert_eq!(transfer_size(2048, 64, true), Ok(TransferSize { bytes: 2048, packets: 32 }));
        assert_eq!(transfer_size(1514, 64, false), Ok(TransferSize { bytes: 1514, packets: 24 }));
        assert_eq!(transfer_size(0, 64, false), Ok(TransferSize { bytes: 0, packets: 1 }));
        assert_eq!(transfer_size(0, 64, true), Ok(TransferSize { bytes: 64, packets: 1 }));
        assert_eq!(transfer_size(512, 512, true), Ok(TransferSize { bytes: 512, packets: 1 }));
        assert_eq!(transfer_size(10, 0, true), Err(TransferError::Unsupported));
        assert_eq!(transfer_size(65537, 512, false), Err(TransferError::Unsupported));
        assert_eq!(transfer_size(1024 * 8, 8, false), Err(TransferError::Unsupported));
        assert_eq!(transferred(64, 46), 18);
        assert_eq!(transferred(0, 5), 0);
        assert_eq!((pid_bits(Pid::Data0), pid_bits(Pid::Data1)), (0, 2));
    }

    #[test]
    fn hcint_decoding() {
        use hcint::*;
        assert_eq!(decode(0), ChannelState::Busy);
        // QEMU's NAK on a bulk/control channel: the flag only, the channel stays enabled.
        assert_eq!(decode(NAK), ChannelState::Busy);
        assert_eq!(decode(XFER_COMPL | CH_HLTD), ChannelState::Done);
        assert_eq!(decode(XFER_COMPL | CH_HLTD | NAK | ACK), ChannelState::Done);
        assert_eq!(decode(STALL | CH_HLTD), ChannelState::Failed(TransferError::Stall));
        assert_eq!(decode(XACT_ERR | CH_HLTD), ChannelState::Failed(TransferError::Transaction));
        assert_eq!(decode(BBL_ERR | CH_HLTD), ChannelState::Failed(TransferError::Babble));
        assert_eq!(decode(DATA_TGL_ERR | CH_HLTD), ChannelState::Failed(TransferError::DataToggle));
        assert_eq!(decode(AHB_ERR | CH_HLTD), ChannelState::Failed(TransferError::Overrun));
        // Interrupt endpoints halt on NAK.
        assert_eq!(decode(NAK | CH_HLTD), ChannelState::Failed(TransferError::Nak));
        assert_eq!(decode(CH_HLTD), ChannelState::Failed(TransferError::Transaction));
    }

    #[test]
    fn split_state_machine() {
        use hcint::*;
        use SplitPhase::*;
        assert_eq!(split_next(Start, ACK | CH_HLTD), SplitNext::Complete);
        assert_eq!(split_next(Start, NAK | CH_HLTD), SplitNext::Restart);
        assert_eq!(split_next(Complete, NYET | CH_HLTD), SplitNext::RetryComplete);
        assert_eq!(split_next(Complete, XFER_COMPL | ACK | CH_HLTD), SplitNext::Done);
        assert_eq!(split_next(Complete, NAK | CH_HLTD), SplitNext::Restart);
        assert_eq!(split_next(Complete, STALL | CH_HLTD), SplitNext::Failed(TransferError::Stall));
        assert_eq!(split_next(Start, CH_HLTD), SplitNext::Failed(TransferError::Transaction));
        // Hub 1, port 3, the LAN9514 case of a low-speed keyboard.
        assert_eq!(hcsplt(1, 3, Start), 0x8000_C083);
        assert_eq!(hcsplt(1, 3, Complete), 0x8001_C083);
    }

    #[test]
    fn channels_are_dedicated_per_endpoint_and_direction() {
        let mut m = ChannelMap::<8>::new(4);
        assert_eq!(m.channel((2, 0x82)), Ok(1));
        assert_eq!(m.channel((2, 0x02)), Ok(2));
        assert_eq!(m.channel((2, 0x82)), Ok(1));
        assert_eq!(m.channel((3, 0x81)), Ok(3));
        assert_eq!(m.channel((3, 0x01)), Err(TransferError::Unsupported));
        assert_eq!(m.find((2, 0x02)), Some(2));
        assert_eq!(m.owner(1), Some((2, 0x82)));
        assert_eq!(m.owner(0), None);
        assert_eq!(ChannelMap::<4>::new(16).channel((1, 1)), Ok(1));
    }

    #[test]
    fn toggles_per_device() {
        let mut t = DeviceToggles::<2>::new();
        t.get_mut(2, 0x82).unwrap().advance(3);
        assert_eq!(t.get_mut(2, 0x82).unwrap().pid(), Pid::Data1);
        assert_eq!(t.get_mut(2, 0x02).unwrap().pid(), Pid::Data0);
        t.get_mut(3, 0x81).unwrap().flip();
        assert!(t.get_mut(4, 0x81).is_none());
        t.observe(2, &Setup::set_configuration(1));
        assert_eq!(t.get_mut(2, 0x82).unwrap().pid(), Pid::Data0);
        assert_eq!(t.get_mut(3, 0x81).unwrap().pid(), Pid::Data1);
        t.forget(3);
        assert_eq!(t.get_mut(3, 0x81).unwrap().pid(), Pid::Data0);
    }
}
