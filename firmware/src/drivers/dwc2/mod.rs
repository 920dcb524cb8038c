//! The BCM2837's DWC2 USB host controller (Synopsys DesignWare USB 2.0 OTG core, host mode, buffer
//! DMA) as a [`usb::host::UsbHost`]: the Ethernet chip of a Pi 3 (and QEMU's `usb-net`) sits behind
//! it.
//!
//! Bring-up follows the sequence in the project's notes (section 4, from Circle's dwhcidevice.cpp):
//! power on through the mailbox, core reset, DMA mode, FIFO sizes, port power, wait for a connection,
//! port reset. Those waits spin with few timer reads (`GenericTimer::spin_us`). Transfers are polled (no interrupts), each bounded by the ARM generic timer (QEMU's
//! HFNUM does not advance in real time). Channel 0 carries every control transfer; each bulk
//! endpoint and direction has a channel of its own for good (`usb::dwc2::ChannelMap`), so a bulk IN
//! stays armed across calls until data arrives: a NAKed bulk IN is retried by the core (and by
//! QEMU) with the channel left enabled, and disabling it does not stop QEMU's retries. The core
//! does not track data toggles across transfers, so the driver does (`usb::dwc2::DeviceToggles`).
//! Buffers are in the non-cacheable `.dma` section, handed to the core by their GPU bus address
//! (the 0xC000_0000 alias), so no cache maintenance is needed.
//!
//! Split transactions (full/low-speed devices behind a real board's high-speed hub) are implemented
//! from the notes but **untested**: QEMU stores HCSPLT and ignores it, and has no high-speed hub.

mod regs;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::LocalRegisterCopy;
use usb::dwc2::{
    decode, hcint, hcsplt, pid, pid_bits, split_next, transfer_size, transferred, ChannelMap, ChannelState,
    DeviceToggles, SplitNext, SplitPhase, TransferSize,
};

use usb::host::{DataToggle, DeviceHandle, EndpointHandle, HubPort, Speed, TransferError, UsbHost};
use usb::setup::Setup;

use crate::arch::aarch64::timer::{self, GenericTimer};
use crate::bsp::rpi3::bus_address;
use crate::drivers::mailbox::{Mailbox, MailboxError, PowerDevice};
use regs::{ChannelRegisters, Registers, CHANNELS, GAHBCFG, GHWCFG2, GRSTCTL, GUSBCFG, HCCHAR, HCFG, HPRT0};

/// Bytes of DMA buffer per channel: above 1536 so QEMU moves a whole Ethernet frame in one step
/// (it moves transfers of 1536 bytes or less one 64-byte packet per 250 us).
pub const CHANNEL_BUFFER: usize = 4096;
/// Devices whose toggles are tracked.
const MAX_DEVICES: usize = usb::enumerate::MAX_DEVICES;

/// Waits of the bring-up, in milliseconds (real-hardware values from Circle; QEMU needs none).
const RESET_SETTLE_MS: u32 = 100;
/// How long the root port may take to see a device after port power. USB 2.0 7.1.7.3 gives a
/// device 100 ms after VBUS is valid to signal attach; this adds 100 ms for VBUS to rise. Circle
/// waits up to 510 ms: if a real board's hub shows up late, raise this. It is also all the time a
/// boot without any USB device (the QEMU tests without `usb-net`) spends here, ten times longer in
/// host time under `-icount`.
const CONNECT_WAIT_MS: u32 = 200;
const CONNECT_DEBOUNCE_MS: u32 = 100;
const PORT_RESET_MS: u32 = 50;
const PORT_RESET_RECOVERY_MS: u32 = 20;
/// Limit for self-clearing GRSTCTL bits.
const REGISTER_POLL_MS: u64 = 100;
/// Per stage of a control transfer (USB 2.0 9.2.6.4 allows a device 500 ms for a data stage).
const CONTROL_TIMEOUT_MS: u64 = 500;
/// Per bulk OUT transfer.
const BULK_OUT_TIMEOUT_MS: u64 = 200;
/// How long a bulk IN call waits for its armed transfer before answering `Nak`.
const BULK_IN_POLL_US: u64 = 50;
/// Limit on one split-transaction packet, NYET retries included.
const SPLIT_TIMEOUT_MS: u64 = 50;

/// The DMA buffers: a SETUP packet and one buffer per channel, 64-byte aligned.
#[repr(C, align(64))]
struct DmaBuffers {
    setup: [u8; 64],
    channel: [[u8; CHANNEL_BUFFER]; CHANNELS],
}

/// In `.dma`: mapped normal non-cacheable, so the core and the ARM see the same bytes without cache
/// maintenance. Not zeroed at boot (NOLOAD); the driver writes before the core reads.
#[link_section = ".dma"]
static mut DMA: DmaBuffers = DmaBuffers { setup: [0; 64], channel: [[0; CHANNEL_BUFFER]; CHANNELS] };
/// Set once the buffers have been handed out.
static DMA_TAKEN: AtomicBool = AtomicBool::new(false);

/// Why the controller did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The mailbox refused to power the controller.
    Power(MailboxError),
    /// The power request was accepted but the domain stayed off.
    PoweredOff,
    /// GSNPSID is not a Synopsys OTG core's.
    NotDwc2 {
        /// What it read.
        id: u32,
    },
    /// The core has no internal DMA (GHWCFG2.OtgArch).
    NoDma,
    /// A self-clearing reset or flush bit stayed set.
    ResetTimeout,
    /// No device connected to the root port in time.
    NoDevice,
    /// The port did not come out of reset enabled.
    PortNotEnabled,
    /// A driver already owns the controller (its DMA buffers).
    Busy,
}

impl defmt::Format for InitError {
    fn format(&self, f: defmt::Formatter) {
        match self {
            InitError::Power(e) => defmt::write!(f, "power-on refused: {}", defmt::Display2Format(e)),
            InitError::PoweredOff => defmt::write!(f, "the USB power domain stayed off"),
            InitError::NotDwc2 { id } => defmt::write!(f, "GSNPSID {=u32:#010x} is not a DWC2", id),
            InitError::NoDma => defmt::write!(f, "core without internal DMA"),
            InitError::ResetTimeout => defmt::write!(f, "core reset or FIFO flush timed out"),
            InitError::NoDevice => defmt::write!(f, "no device on the root port"),
            InitError::PortNotEnabled => defmt::write!(f, "root port not enabled after reset"),
            InitError::Busy => defmt::write!(f, "controller already in use"),
        }
    }
}

/// A bulk IN transfer left running on its channel.
#[derive(Clone, Copy, Debug)]
struct Armed {
    size: TransferSize,
}

/// How one channel run is set up.
#[derive(Clone, Copy)]
struct ChannelSetup {
    address: u8,
    endpoint: u8,
    is_in: bool,
    kind: u32,
    mps: u16,
    speed: Speed,
    split: Option<HubPort>,
}

/// The controller, with the root port reset and enabled.
pub struct Dwc2 {
    registers: &'static Registers,
    dma: &'static mut DmaBuffers,
    timer: GenericTimer,
    channels: ChannelMap<CHANNELS>,
    toggles: DeviceToggles<MAX_DEVICES>,
    armed: [Option<Armed>; CHANNELS],
    /// Speed of the device on the root port.
    root_speed: Speed,
    /// The core's id (GSNPSID).
    id: u32,
}

impl Dwc2 {
    /// Powers the controller on, resets the core, sets DMA mode and FIFO sizes, powers the root
    /// port, waits for a device and resets the port.
    ///
    /// # Safety
    /// `base` must be the DWC2's register block (0x3F98_0000 on the BCM2837), mapped as device
    /// memory, and no other code may drive the controller.
    pub unsafe fn init(base: usize, mailbox: &mut Mailbox) -> Result<Dwc2, InitError> {
        if DMA_TAKEN.swap(true, Ordering::Acquire) {
            return Err(InitError::Busy);
        }

        // SAFETY: the flag above hands the buffers out once, so this is the only reference; `.dma`
        // is RAM mapped for the whole run.
        let dma = unsafe { &mut *core::ptr::addr_of_mut!(DMA) };
        // SAFETY: the caller guarantees `base` points at the controller's registers for 'static.
        let registers = unsafe { &*(base as *const Registers) };
        let mut host = Dwc2 {
            registers,
            dma,
            timer: GenericTimer::new(),
            channels: ChannelMap::new(1),
            toggles: DeviceToggles::new(),
            armed: [None; CHANNELS],
            root_speed: Speed::Full,
            id: 0,
        };
        match mailbox.set_power_state(PowerDevice::UsbHcd, true, true) {
            Ok(true) => {}
            Ok(false) => return Err(InitError::PoweredOff),
            Err(e) => return Err(InitError::Power(e)),
        }
        host.init_core()?;
        host.root_speed = host.reset_root_port()?;
        Ok(host)
    }

    /// Speed of the device on the root port, for [`usb::enumerate::Enumerator::enumerate`].
    pub fn root_speed(&self) -> Speed {
        self.root_speed
    }

    /// GSNPSID.
    pub fn core_id(&self) -> u32 {
        self.id
    }

    /// Host channels in use (GHWCFG2).
    pub fn channel_count(&self) -> usize {
        self.registers.ghwcfg2.read(GHWCFG2::NUM_HST_CHNL) as usize + 1
    }

    fn init_core(&mut self) -> Result<(), InitError> {
        let r = self.registers;
        self.id = r.gsnpsid.get();
        if self.id >> 16 != 0x4F54 {
            return Err(InitError::NotDwc2 { id: self.id });
        }
        if r.ghwcfg2.read(GHWCFG2::OTG_ARCH) != 2 {
            return Err(InitError::NoDma);
        }
        self.channels = ChannelMap::new(self.channel_count().min(CHANNELS));
        r.gahbcfg.modify(GAHBCFG::GLBL_INTR_EN::CLEAR);
        r.gusbcfg.modify(GUSBCFG::ULPI_EXT_VBUS_DRV::CLEAR + GUSBCFG::TERM_SEL_DL_PULSE::CLEAR);

        self.wait_register(|r| r.grstctl.is_set(GRSTCTL::AHB_IDLE))?;
        r.grstctl.modify(GRSTCTL::CSFT_RST::SET);
        self.wait_register(|r| !r.grstctl.is_set(GRSTCTL::CSFT_RST))?;
        self.delay_ms(RESET_SETTLE_MS);

        r.gusbcfg.modify(GUSBCFG::ULPI_UTMI_SEL::CLEAR + GUSBCFG::PHYIF::CLEAR);
        r.gahbcfg.write(GAHBCFG::DMA_EN::SET + GAHBCFG::AXI_WAIT::SET + GAHBCFG::AXI_BURST.val(0));
        r.gusbcfg.modify(GUSBCFG::HNP_CAP::CLEAR + GUSBCFG::SRP_CAP::CLEAR);
        r.gintmsk.set(0);
        r.pcgcctl.set(0);
        r.hcfg.modify(HCFG::FSLS_PCLK_SEL.val(0));

        // FIFOs in 32-bit words: 4 KiB receive, 4 KiB non-periodic and 4 KiB periodic transmit.
        r.grxfsiz.set(1024);
        r.gnptxfsiz.write(regs::FIFO_SIZE::START.val(1024) + regs::FIFO_SIZE::DEPTH.val(1024));
        r.hptxfsiz.write(regs::FIFO_SIZE::START.val(2048) + regs::FIFO_SIZE::DEPTH.val(1024));
        r.grstctl.write(GRSTCTL::TX_FNUM.val(0x10) + GRSTCTL::TX_FFLSH::SET);
        self.wait_register(|r| !r.grstctl.is_set(GRSTCTL::TX_FFLSH))?;
        r.grstctl.write(GRSTCTL::RX_FFLSH::SET);
        self.wait_register(|r| !r.grstctl.is_set(GRSTCTL::RX_FFLSH))?;

        r.haintmsk.set(0);
        for ch in &r.channels {
            ch.hcintmsk.set(0);
            ch.hcint.set(hcint::ALL);
        }
        Ok(())
    }

    /// Read-modify-write of HPRT0 that never writes 1 to its write-1-to-clear bits.
    fn hprt0_modify(&self, f: impl FnOnce(&mut LocalRegisterCopy<u32, HPRT0::Register>)) {
        let mut v = self.registers.hprt0.extract();
        v.modify(
            HPRT0::CONN_DET::CLEAR + HPRT0::ENA::CLEAR + HPRT0::ENA_CHG::CLEAR + HPRT0::OVRCUR_CHG::CLEAR,
        );
        f(&mut v);
        self.registers.hprt0.set(v.get());
    }

    fn reset_root_port(&mut self) -> Result<Speed, InitError> {
        let r = self.registers;
        self.hprt0_modify(|v| v.modify(HPRT0::PWR::SET));
        let start = self.timer.now_us();
        while !r.hprt0.is_set(HPRT0::CONN_STS) {
            if self.timer.now_us() - start > CONNECT_WAIT_MS as u64 * 1000 {
                return Err(InitError::NoDevice);
            }
            self.delay_ms(1);
        }
        self.delay_ms(CONNECT_DEBOUNCE_MS);
        self.hprt0_modify(|v| v.modify(HPRT0::RST::SET));
        self.delay_ms(PORT_RESET_MS);
        self.hprt0_modify(|v| v.modify(HPRT0::RST::CLEAR));
        self.delay_ms(PORT_RESET_RECOVERY_MS);
        let port = r.hprt0.extract();
        if !port.is_set(HPRT0::ENA) {
            return Err(InitError::PortNotEnabled);
        }
        // Acknowledge the change bits the reset raised.
        r.hprt0.set(port.get() & !HPRT0::ENA::SET.value);
        Ok(match port.read_as_enum(HPRT0::SPD) {
            Some(HPRT0::SPD::Value::High) => Speed::High,
            Some(HPRT0::SPD::Value::Low) => Speed::Low,
            _ => Speed::Full,
        })
    }

    fn wait_register(&self, done: impl Fn(&Registers) -> bool) -> Result<(), InitError> {
        let start = self.timer.now_us();
        while !done(self.registers) {
            if self.timer.now_us() - start > REGISTER_POLL_MS * 1000 {
                return Err(InitError::ResetTimeout);
            }
            timer::pause();
        }
        Ok(())
    }

    fn channel(&self, i: usize) -> &'static ChannelRegisters {
        &self.registers.channels[i]
    }

    /// Programs channel `ch` and enables it: `size` bytes from/to its DMA buffer at `offset`.
    fn start(&self, ch: usize, s: &ChannelSetup, pid_value: u32, size: TransferSize, offset: usize) {
        let c = self.channel(ch);
        c.hcint.set(hcint::ALL);
        c.hcsplt.set(0);
        c.hctsiz.write(
            regs::HCTSIZ::XFERSIZE.val(size.bytes)
                + regs::HCTSIZ::PKTCNT.val(size.packets)
                + regs::HCTSIZ::PID.val(pid_value),
        );
        let buffer = if ch == ChannelMap::<CHANNELS>::CONTROL && pid_value == pid::SETUP && !s.is_in {
            self.dma.setup.as_ptr() as usize
        } else {
            self.dma.channel[ch].as_ptr() as usize + offset
        };
        c.hcdma.set(bus_address(buffer));
        // The buffer writes (normal memory) must be visible before the core starts its DMA.
        barrier::dsb(barrier::SY);
        c.hcchar.write(
            HCCHAR::MPS.val(s.mps as u32)
                + HCCHAR::EPNUM.val((s.endpoint & 0x0F) as u32)
                + HCCHAR::EPDIR.val(s.is_in as u32)
                + HCCHAR::LSPDDEV.val((s.speed == Speed::Low) as u32)
                + HCCHAR::EPTYPE.val(s.kind)
                + HCCHAR::MC.val(1)
                + HCCHAR::DEVADDR.val(s.address as u32)
                + HCCHAR::CHENA::SET,
        );
    }

    /// Polls channel `ch` until its transfer ends or `timeout_us` passes (then halts it).
    fn wait(&self, ch: usize, timeout_us: u64) -> Result<(), TransferError> {
        let _waiting = WaitMeter::start();
        let c = self.channel(ch);
        let start = self.timer.now_us();
        loop {
            match decode(c.hcint.get()) {
                ChannelState::Done => {
                    barrier::dsb(barrier::SY);
                    return Ok(());
                }
                ChannelState::Failed(e) => return Err(e),
                ChannelState::Busy if self.timer.now_us() - start > timeout_us => {
                    self.halt(ch);
                    return Err(TransferError::Timeout);
                }
                ChannelState::Busy => timer::pause(),
            }
        }
    }

    /// Asks a channel to halt and waits briefly for it (QEMU halts at once, but may keep retrying a
    /// NAKed transfer: see the module docs).
    fn halt(&self, ch: usize) {
        let c = self.channel(ch);
        if !c.hcchar.is_set(HCCHAR::CHENA) {
            return;
        }
        c.hcchar.modify(HCCHAR::CHDIS::SET + HCCHAR::CHENA::SET);
        let start = self.timer.now_us();
        while c.hcint.get() & hcint::CH_HLTD == 0 && self.timer.now_us() - start < 10_000 {
            timer::pause();
        }
    }

    /// Bytes the last transfer on `ch` moved.
    fn moved(&self, ch: usize, size: TransferSize) -> usize {
        transferred(size.bytes, self.channel(ch).hctsiz.read(regs::HCTSIZ::XFERSIZE))
    }

    /// One whole transfer on `ch`, synchronously: directly, or packet by packet through the hub's
    /// transaction translator for a split device.
    fn transfer(
        &mut self,
        ch: usize,
        s: &ChannelSetup,
        pid_value: u32,
        size: TransferSize,
        timeout_us: u64,
    ) -> Result<usize, TransferError> {
        match s.split {
            None => {
                self.start(ch, s, pid_value, size, 0);
                self.wait(ch, timeout_us)?;
                Ok(self.moved(ch, size))
            }
            Some(hub) => self.split_transfer(ch, s, hub, pid_value, size),
        }
    }

    /// A transfer as a series of split transactions, one packet each. UNTESTED (QEMU ignores
    /// HCSPLT): written from the notes for a full/low-speed device behind the Pi's high-speed hub.
    fn split_transfer(
        &mut self,
        ch: usize,
        s: &ChannelSetup,
        hub: HubPort,
        first_pid: u32,
        size: TransferSize,
    ) -> Result<usize, TransferError> {
        let mps = s.mps.max(1) as u32;
        let mut done = 0u32;
        let mut pid_value = first_pid;
        for _ in 0..size.packets {
            let want = if s.is_in { mps } else { (size.bytes - done).min(mps) };
            let packet = TransferSize { bytes: want, packets: 1 };
            let start = self.timer.now_us();
            let mut phase = SplitPhase::Start;
            let got = loop {
                if self.timer.now_us() - start > SPLIT_TIMEOUT_MS * 1000 {
                    self.halt(ch);
                    return Err(TransferError::Timeout);
                }
                self.start(ch, s, pid_value, packet, done as usize);
                self.channel(ch).hcsplt.set(hcsplt(hub.hub_address, hub.port, phase));
                // HCSPLT is read when the channel starts: re-enable after setting it.
                self.channel(ch).hcchar.modify(HCCHAR::CHENA::SET);
                let c = self.channel(ch);
                while c.hcint.get() & hcint::CH_HLTD == 0 {
                    if self.timer.now_us() - start > SPLIT_TIMEOUT_MS * 1000 {
                        self.halt(ch);
                        return Err(TransferError::Timeout);
                    }
                    timer::pause();
                }
                match split_next(phase, c.hcint.get()) {
                    SplitNext::Complete | SplitNext::RetryComplete => phase = SplitPhase::Complete,
                    SplitNext::Restart if s.is_in && s.kind == HCCHAR::EPTYPE::Bulk.value => {
                        return if done == 0 { Err(TransferError::Nak) } else { Ok(done as usize) };
                    }
                    SplitNext::Restart => {
                        phase = SplitPhase::Start;
                        self.delay_ms(1);
                    }
                    SplitNext::Done => break self.moved(ch, packet) as u32,
                    SplitNext::Failed(e) => return Err(e),
                }
            };
            done += got;
            pid_value = if pid_value == pid::DATA0 { pid::DATA1 } else { pid::DATA0 };
            if s.is_in && got < mps {
                break;
            }
        }
        Ok(done as usize)
    }

    fn control(
        &mut self,
        dev: DeviceHandle,
        setup: Setup,
        data_in: Option<&mut [u8]>,
        data_out: &[u8],
    ) -> Result<usize, TransferError> {
        let ch = ChannelMap::<CHANNELS>::CONTROL;
        let s = |is_in| ChannelSetup {
            address: dev.address,
            endpoint: 0,
            is_in,
            kind: HCCHAR::EPTYPE::Control.value,
            mps: dev.max_packet_size0,
            speed: dev.speed,
            split: dev.split,
        };
        let timeout = CONTROL_TIMEOUT_MS * 1000;
        self.dma.setup[..8].copy_from_slice(&setup.to_bytes());
        self.transfer(ch, &s(false), pid::SETUP, TransferSize { bytes: 8, packets: 1 }, timeout)?;

        let mut received = 0;
        let mut data_stage_in = false;
        match data_in {
            Some(buf) if !buf.is_empty() && setup.length > 0 => {
                let len = buf.len().min(setup.length as usize);
                let size = transfer_size(len, dev.max_packet_size0, true)?;
                if size.bytes as usize > CHANNEL_BUFFER {
                    return Err(TransferError::Unsupported);
                }
                let n = self.transfer(ch, &s(true), pid::DATA1, size, timeout)?;
                if n > len {
                    return Err(TransferError::Babble);
                }
                buf[..n].copy_from_slice(&self.dma.channel[ch][..n]);
                received = n;
                data_stage_in = true;
            }
            _ if !data_out.is_empty() => {
                if data_out.len() > CHANNEL_BUFFER {
                    return Err(TransferError::Unsupported);
                }
                self.dma.channel[ch][..data_out.len()].copy_from_slice(data_out);
                let size = transfer_size(data_out.len(), dev.max_packet_size0, false)?;
                self.transfer(ch, &s(false), pid::DATA1, size, timeout)?;
            }
            _ => {}
        }
        // Status stage: a zero-length packet the other way from the data stage (IN when there was
        // none), always DATA1.
        let zlp = TransferSize { bytes: 0, packets: 1 };
        self.transfer(ch, &s(!data_stage_in), pid::DATA1, zlp, timeout)?;

        if setup.request == usb::setup::request::SET_ADDRESS
            && setup.kind == usb::setup::RequestKind::Standard
        {
            self.toggles.forget(setup.value as u8);
        } else {
            self.toggles.observe(dev.address, &setup);
        }
        Ok(received)
    }

    fn toggle(&mut self, dev: DeviceHandle, endpoint: u8) -> Result<&mut DataToggle, TransferError> {
        self.toggles.get_mut(dev.address, endpoint).ok_or(TransferError::Unsupported)
    }

    fn bulk_setup(dev: DeviceHandle, ep: EndpointHandle) -> ChannelSetup {
        ChannelSetup {
            address: dev.address,
            endpoint: ep.number(),
            is_in: ep.is_in(),
            kind: HCCHAR::EPTYPE::Bulk.value,
            mps: ep.max_packet_size,
            speed: dev.speed,
            split: dev.split,
        }
    }
}

impl UsbHost for Dwc2 {
    fn control_in(
        &mut self,
        dev: DeviceHandle,
        setup: Setup,
        buf: &mut [u8],
    ) -> Result<usize, TransferError> {
        self.control(dev, setup, Some(buf), &[])
    }

    fn control_out(&mut self, dev: DeviceHandle, setup: Setup, data: &[u8]) -> Result<(), TransferError> {
        self.control(dev, setup, None, data).map(|_| ())
    }

    fn bulk_in(
        &mut self,
        dev: DeviceHandle,
        endpoint: EndpointHandle,
        buf: &mut [u8],
    ) -> Result<usize, TransferError> {
        let ch = self.channels.channel((dev.address, endpoint.address))?;
        let s = Self::bulk_setup(dev, endpoint);
        let mps = endpoint.max_packet_size.max(1) as usize;
        let len = buf.len().min(CHANNEL_BUFFER / mps * mps);
        if s.split.is_some() {
            let size = transfer_size(len, endpoint.max_packet_size, true)?;
            let pid_value = pid_bits(self.toggle(dev, endpoint.address)?.pid());
            let n = self.transfer(ch, &s, pid_value, size, 0)?;
            self.toggle(dev, endpoint.address)?.advance(DataToggle::packets(n, mps as u16, n < len));
            buf[..n].copy_from_slice(&self.dma.channel[ch][..n]);
            return Ok(n);
        }
        let armed = match self.armed[ch] {
            Some(a) => a,
            None => {
                let size = transfer_size(len, endpoint.max_packet_size, true)?;
                let pid_value = pid_bits(self.toggle(dev, endpoint.address)?.pid());
                self.start(ch, &s, pid_value, size, 0);
                let a = Armed { size };
                self.armed[ch] = Some(a);
                a
            }
        };
        match self.wait_armed(ch) {
            ChannelState::Busy => Err(TransferError::Nak),
            ChannelState::Failed(e) => {
                self.armed[ch] = None;
                Err(e)
            }
            ChannelState::Done => {
                self.armed[ch] = None;
                let n = self.moved(ch, armed.size);
                let ended_short = n < armed.size.bytes as usize;
                self.toggle(dev, endpoint.address)?.advance(DataToggle::packets(n, mps as u16, ended_short));
                if n > buf.len() {
                    return Err(TransferError::Babble);
                }
                buf[..n].copy_from_slice(&self.dma.channel[ch][..n]);
                Ok(n)
            }
        }
    }

    fn bulk_out(
        &mut self,
        dev: DeviceHandle,
        endpoint: EndpointHandle,
        data: &[u8],
    ) -> Result<(), TransferError> {
        let ch = self.channels.channel((dev.address, endpoint.address))?;
        if data.len() > CHANNEL_BUFFER {
            return Err(TransferError::Unsupported);
        }
        self.dma.channel[ch][..data.len()].copy_from_slice(data);
        let size = transfer_size(data.len(), endpoint.max_packet_size, false)?;
        let pid_value = pid_bits(self.toggle(dev, endpoint.address)?.pid());
        let s = Self::bulk_setup(dev, endpoint);
        self.transfer(ch, &s, pid_value, size, BULK_OUT_TIMEOUT_MS * 1000)?;
        self.toggle(dev, endpoint.address)?.advance(size.packets);
        Ok(())
    }

    fn delay_ms(&mut self, ms: u32) {
        self.timer.spin_us(ms as u64 * 1000);
    }
}

impl Dwc2 {
    /// Polls an armed bulk IN channel for a short while.
    fn wait_armed(&self, ch: usize) -> ChannelState {
        let _waiting = WaitMeter::start();
        let c = self.channel(ch);
        let start = self.timer.now_us();
        loop {
            let state = decode(c.hcint.get());
            if state != ChannelState::Busy || self.timer.now_us() - start > BULK_IN_POLL_US {
                if state == ChannelState::Done {
                    barrier::dsb(barrier::SY);
                }
                return state;
            }
            timer::pause();
        }
    }
}

/// PMU cycles spent polling channels for transfers in flight (under QEMU -icount: instructions).
/// QEMU's model moves a transfer of 1536 bytes or less one 64-byte packet per 250 us of guest time,
/// which a polling driver spends spinning; separating it shows what the stack itself costs.
static WAITING: AtomicU64 = AtomicU64::new(0);

/// PMU cycles spent waiting on the controller since boot.
pub fn waiting_cycles() -> u64 {
    WAITING.load(Ordering::Relaxed)
}

/// Adds the cycles between its start and its drop to [`WAITING`].
struct WaitMeter(u64);

impl WaitMeter {
    fn start() -> WaitMeter {
        WaitMeter(crate::arch::aarch64::pmu::cycles())
    }
}

impl Drop for WaitMeter {
    fn drop(&mut self) {
        let spent = crate::arch::aarch64::pmu::cycles().wrapping_sub(self.0);
        WAITING.fetch_add(spent, Ordering::Relaxed);
    }
}
