//! Facts about the Raspberry Pi 3 (BCM2837) that the drivers need: where the peripherals are.

/// Start of the peripheral window in the ARM physical address space.
pub const PERIPHERAL_BASE: usize = 0x3F00_0000;
/// The PL011 UART (UART0).
pub const PL011_BASE: usize = PERIPHERAL_BASE + 0x20_1000;
/// The system timer (1 MHz free-running counter).
pub const SYSTEM_TIMER_BASE: usize = PERIPHERAL_BASE + 0x3000;
