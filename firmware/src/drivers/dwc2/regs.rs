//! DWC2 (Synopsys DesignWare USB 2.0 OTG) registers as the BCM2837 maps them at 0x3F98_0000: the
//! core globals, the host block at +0x400, eight host channels at +0x500 (0x20 apart) and the power
//! and clock gating register at +0xE00. Bit layout as in the Linux dwc2 driver's hw.h, Circle's
//! dwhci.h and QEMU's hcd-dwc2 model (see the project's notes, sections 1 and 4).

use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

/// Host channels the BCM2837's core has (GHWCFG2.NumHstChnl + 1 = 8; QEMU models 8 too).
pub const CHANNELS: usize = 8;

register_bitfields! {
    u32,
    /// AHB configuration.
    pub GAHBCFG [
        /// BCM2835-specific: wait for AXI writes to complete before signalling DMA done.
        AXI_WAIT OFFSET(4) NUMBITS(1) [],
        /// Use the internal DMA engine (buffer DMA mode).
        DMA_EN OFFSET(5) NUMBITS(1) [],
        /// AXI burst length (BCM: 0 = 4 beats).
        AXI_BURST OFFSET(1) NUMBITS(2) [],
        /// Global interrupt enable (gates the IRQ line only).
        GLBL_INTR_EN OFFSET(0) NUMBITS(1) []
    ],
    /// USB configuration.
    pub GUSBCFG [
        /// Drive the term select data line pulse (ULPI).
        TERM_SEL_DL_PULSE OFFSET(22) NUMBITS(1) [],
        /// Use the external VBUS driver (ULPI).
        ULPI_EXT_VBUS_DRV OFFSET(20) NUMBITS(1) [],
        /// HNP capable.
        HNP_CAP OFFSET(9) NUMBITS(1) [],
        /// SRP capable.
        SRP_CAP OFFSET(8) NUMBITS(1) [],
        /// 1 = ULPI PHY, 0 = UTMI+.
        ULPI_UTMI_SEL OFFSET(4) NUMBITS(1) [],
        /// PHY interface width (0 = 8 bits).
        PHYIF OFFSET(3) NUMBITS(1) []
    ],
    /// Reset control.
    pub GRSTCTL [
        /// The AHB master is idle.
        AHB_IDLE OFFSET(31) NUMBITS(1) [],
        /// Which TX FIFO to flush (0x10 = all).
        TX_FNUM OFFSET(6) NUMBITS(5) [],
        /// Flush the TX FIFO(s) (self-clearing).
        TX_FFLSH OFFSET(5) NUMBITS(1) [],
        /// Flush the RX FIFO (self-clearing).
        RX_FFLSH OFFSET(4) NUMBITS(1) [],
        /// Core soft reset (self-clearing).
        CSFT_RST OFFSET(0) NUMBITS(1) []
    ],
    /// Core interrupt status.
    pub GINTSTS [
        /// A host channel interrupt is pending (see HAINT).
        HCH_INT OFFSET(25) NUMBITS(1) [],
        /// A host port interrupt is pending (see HPRT0).
        PRT_INT OFFSET(24) NUMBITS(1) [],
        /// Start of frame.
        SOF OFFSET(3) NUMBITS(1) [],
        /// 1 = host mode.
        CUR_MODE OFFSET(0) NUMBITS(1) []
    ],
    /// A FIFO's start address and depth, in 32-bit words.
    pub FIFO_SIZE [
        /// Depth.
        DEPTH OFFSET(16) NUMBITS(16) [],
        /// Start address.
        START OFFSET(0) NUMBITS(16) []
    ],
    /// Hardware configuration 2.
    pub GHWCFG2 [
        /// Host channels minus one.
        NUM_HST_CHNL OFFSET(14) NUMBITS(4) [],
        /// Architecture: 0 slave only, 1 external DMA, 2 internal DMA.
        OTG_ARCH OFFSET(3) NUMBITS(2) []
    ],
    /// Host configuration.
    pub HCFG [
        /// Full/low-speed PHY clock: 0 = 30/60 MHz.
        FSLS_PCLK_SEL OFFSET(0) NUMBITS(2) []
    ],
    /// Host port control and status. CONN_DET, ENA, ENA_CHG and OVRCUR_CHG are write-1-to-clear:
    /// writing ENA = 1 *disables* the port, so every read-modify-write must mask them.
    pub HPRT0 [
        /// Port speed: 0 high, 1 full, 2 low.
        SPD OFFSET(17) NUMBITS(2) [High = 0, Full = 1, Low = 2],
        /// Port power.
        PWR OFFSET(12) NUMBITS(1) [],
        /// Port reset (the host holds it for the reset time).
        RST OFFSET(8) NUMBITS(1) [],
        /// Over-current change (W1C).
        OVRCUR_CHG OFFSET(5) NUMBITS(1) [],
        /// Enable change (W1C).
        ENA_CHG OFFSET(3) NUMBITS(1) [],
        /// Port enabled (W1C: writing 1 disables).
        ENA OFFSET(2) NUMBITS(1) [],
        /// Connect detected (W1C).
        CONN_DET OFFSET(1) NUMBITS(1) [],
        /// A device is connected.
        CONN_STS OFFSET(0) NUMBITS(1) []
    ],
    /// Host channel characteristics.
    pub HCCHAR [
        /// Start the channel (the core clears it when the channel halts).
        CHENA OFFSET(31) NUMBITS(1) [],
        /// Ask the channel to halt.
        CHDIS OFFSET(30) NUMBITS(1) [],
        /// Odd frame (periodic transfers).
        ODDFRM OFFSET(29) NUMBITS(1) [],
        /// Device address.
        DEVADDR OFFSET(22) NUMBITS(7) [],
        /// Transactions per frame (periodic) / 1 otherwise.
        MC OFFSET(20) NUMBITS(2) [],
        /// Endpoint type.
        EPTYPE OFFSET(18) NUMBITS(2) [Control = 0, Isochronous = 1, Bulk = 2, Interrupt = 3],
        /// Low-speed device.
        LSPDDEV OFFSET(17) NUMBITS(1) [],
        /// Direction: 1 = IN.
        EPDIR OFFSET(15) NUMBITS(1) [],
        /// Endpoint number.
        EPNUM OFFSET(11) NUMBITS(4) [],
        /// Maximum packet size.
        MPS OFFSET(0) NUMBITS(11) []
    ],
    /// Host channel transfer size.
    pub HCTSIZ [
        /// Do PING (high-speed OUT).
        DOPNG OFFSET(31) NUMBITS(1) [],
        /// PID of the first packet (DATA0 0, DATA2 1, DATA1 2, SETUP/MDATA 3).
        PID OFFSET(29) NUMBITS(2) [],
        /// Packet count.
        PKTCNT OFFSET(19) NUMBITS(10) [],
        /// Transfer size in bytes.
        XFERSIZE OFFSET(0) NUMBITS(19) []
    ]
}

register_structs! {
    /// One host channel.
    pub ChannelRegisters {
        (0x00 => pub hcchar: ReadWrite<u32, HCCHAR::Register>),
        /// Split control: see `usb::dwc2::hcsplt` (ignored by QEMU).
        (0x04 => pub hcsplt: ReadWrite<u32>),
        /// Interrupt status (W1C): `usb::dwc2::hcint` bits.
        (0x08 => pub hcint: ReadWrite<u32>),
        (0x0C => pub hcintmsk: ReadWrite<u32>),
        (0x10 => pub hctsiz: ReadWrite<u32, HCTSIZ::Register>),
        /// DMA address (GPU bus address, 4-byte aligned).
        (0x14 => pub hcdma: ReadWrite<u32>),
        (0x18 => _reserved),
        (0x1C => pub hcdmab: ReadOnly<u32>),
        (0x20 => @END),
    },

    /// The controller.
    pub Registers {
        (0x000 => _gotgctl),
        (0x008 => pub gahbcfg: ReadWrite<u32, GAHBCFG::Register>),
        (0x00C => pub gusbcfg: ReadWrite<u32, GUSBCFG::Register>),
        (0x010 => pub grstctl: ReadWrite<u32, GRSTCTL::Register>),
        (0x014 => pub gintsts: ReadWrite<u32, GINTSTS::Register>),
        (0x018 => pub gintmsk: ReadWrite<u32>),
        (0x01C => _grxsts),
        (0x024 => pub grxfsiz: ReadWrite<u32>),
        (0x028 => pub gnptxfsiz: ReadWrite<u32, FIFO_SIZE::Register>),
        (0x02C => _gnptxsts),
        /// Synopsys id: 0x4F54xxxx ("OT"); 0x4F54280A on the Pi, 0x4F54294A in QEMU.
        (0x040 => pub gsnpsid: ReadOnly<u32>),
        (0x044 => pub ghwcfg1: ReadOnly<u32>),
        (0x048 => pub ghwcfg2: ReadOnly<u32, GHWCFG2::Register>),
        (0x04C => pub ghwcfg3: ReadOnly<u32>),
        (0x050 => pub ghwcfg4: ReadOnly<u32>),
        (0x054 => _reserved0),
        (0x100 => pub hptxfsiz: ReadWrite<u32, FIFO_SIZE::Register>),
        (0x104 => _device_mode),
        (0x400 => pub hcfg: ReadWrite<u32, HCFG::Register>),
        (0x404 => pub hfir: ReadWrite<u32>),
        (0x408 => pub hfnum: ReadOnly<u32>),
        (0x40C => _reserved1),
        (0x414 => pub haint: ReadOnly<u32>),
        (0x418 => pub haintmsk: ReadWrite<u32>),
        (0x41C => _reserved2),
        (0x440 => pub hprt0: ReadWrite<u32, HPRT0::Register>),
        (0x444 => _reserved3),
        (0x500 => pub channels: [ChannelRegisters; CHANNELS]),
        (0x600 => _reserved4),
        /// Power and clock gating: 0 = everything on.
        (0xE00 => pub pcgcctl: ReadWrite<u32>),
        (0xE04 => @END),
    }
}
