//! Facts about the Raspberry Pi 3 (BCM2837) that the drivers need: where the peripherals are, and
//! how the GPU (and the DMA masters behind it) sees ARM memory.

/// Start of the peripheral window in the ARM physical address space.
pub const PERIPHERAL_BASE: usize = 0x3F00_0000;
/// The PL011 UART (UART0).
pub const PL011_BASE: usize = PERIPHERAL_BASE + 0x20_1000;
/// The system timer (1 MHz free-running counter).
pub const SYSTEM_TIMER_BASE: usize = PERIPHERAL_BASE + 0x3000;
/// The VideoCore mailboxes (ARM side): mailbox 0 at +0x00 (GPU to ARM), mailbox 1 at +0x20.
pub const MAILBOX_BASE: usize = PERIPHERAL_BASE + 0xB880;
/// The DWC2 USB host controller (the Ethernet chip hangs off it).
pub const USB_BASE: usize = PERIPHERAL_BASE + 0x98_0000;
/// The power-management block (PM): reset control and the watchdog.
pub const PM_BASE: usize = PERIPHERAL_BASE + 0x10_0000;
/// The GPIO controller (54 lines).
pub const GPIO_BASE: usize = PERIPHERAL_BASE + 0x20_0000;

/// The bus alias under which the GPU sees RAM without going through its L2 cache. The GPU bus
/// address space repeats RAM at 0x0, 0x4000_0000, 0x8000_0000 and 0xC000_0000, the four aliases
/// differing in how the VideoCore L2 caches them; the ARM on a Pi 2/3 does not use that L2, so
/// anything the GPU or a DMA master must see coherently with the ARM is addressed through the
/// uncached alias (the device trees' `dma-ranges` say the same). QEMU models all four aliases.
pub const BUS_UNCACHED_ALIAS: u32 = 0xC000_0000;

/// The GPU bus address of ARM physical address `physical` (which must be in RAM, below 1 GiB).
pub const fn bus_address(physical: usize) -> u32 {
    (physical as u32 & !BUS_UNCACHED_ALIAS) | BUS_UNCACHED_ALIAS
}

/// The BCM2836-style ARM-local peripherals (core timers, per-core mailboxes and interrupt routing),
/// outside the BCM2837 peripheral window.
pub const LOCAL_PERIPHERALS_BASE: usize = 0x4000_0000;

/// The boot stub's spin table: core `k` (1 to 3) waits until the 64-bit word at `SPIN_TABLE[k]` is
/// non-zero, then jumps there (the Pi's armstub8 and QEMU's raspi3b stub agree on these addresses).
pub const SPIN_TABLE: [usize; 4] = [0xD8, 0xE0, 0xE8, 0xF0];
