//! The BCM2835/BCM2837 power-management block's watchdog: how the SoC reboots itself (BCM2835 ARM
//! Peripherals does not document the block; the register facts below agree with the Linux
//! `bcm2835_wdt` driver's description and with QEMU's model of it, `hw/misc/bcm2835_powermgt.c`).
//!
//! Every write to the block must carry the password 0x5A in its top byte, or it is ignored.
//! `WDOG` holds a countdown in ticks of about 16 µs (a 20-bit field); `RSTC.WRCFG` chooses what
//! happens when it runs out: 0b10 is a full reset (the GPU firmware boots again from the SD card,
//! loading `kernel8.img` and the node blob anew). QEMU resets the machine as soon as `RSTC` is
//! written with a full-reset configuration, without counting (and with `-no-reboot` it ends instead,
//! which the tests use); a board counts the few ticks down first.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::ReadWrite;
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {
    u32,
    /// Reset control.
    RSTC [
        /// What the watchdog does when it expires.
        WRCFG OFFSET(4) NUMBITS(2) [
            /// Nothing (cleared).
            Clear = 0b00,
            /// Full reset of the chip.
            FullReset = 0b10,
        ],
        /// Must be 0x5A for a write to take effect.
        PASSWORD OFFSET(24) NUMBITS(8) [
            Value = 0x5A,
        ],
    ],
    /// The watchdog's countdown.
    WDOG [
        /// Ticks (about 16 µs each) until it expires.
        TIME OFFSET(0) NUMBITS(20) [],
        /// Must be 0x5A for a write to take effect.
        PASSWORD OFFSET(24) NUMBITS(8) [
            Value = 0x5A,
        ],
    ],
    /// Reset status: which partition the next boot uses, and why the last one happened. Read-only
    /// here: writing the wrong pattern (0x555 in the low bits) would halt instead of reboot.
    RSTS [
        /// Boot partition (and the halt pattern); left as it is.
        PARTITION OFFSET(0) NUMBITS(12) [],
    ],
}

register_structs! {
    Registers {
        (0x00 => _before),
        (0x1c => rstc: ReadWrite<u32, RSTC::Register>),
        (0x20 => rsts: ReadWrite<u32, RSTS::Register>),
        (0x24 => wdog: ReadWrite<u32, WDOG::Register>),
        (0x28 => @END),
    }
}

/// The watchdog.
pub struct Watchdog {
    registers: &'static Registers,
}

/// Ticks before a board resets: 10 ticks, about 160 µs (enough for the UART to finish the line
/// before it).
const RESET_TICKS: u32 = 10;

/// The halt pattern in RSTS that turns a reset into a power-off.
const HALT_PATTERN: u32 = 0x555;

impl Watchdog {
    /// # Safety
    /// `base` must be the power-management block (`PM_BASE`), mapped as device memory, and nothing
    /// else may drive it.
    pub const unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` points at the register block for 'static.
        Watchdog { registers: unsafe { &*(base as *const Registers) } }
    }

    /// True if the next reset would power off instead (the halt pattern is in RSTS).
    pub fn halt_pending(&self) -> bool {
        self.registers.rsts.read(RSTS::PARTITION) == HALT_PATTERN
    }

    /// Reboots the whole chip through the watchdog: a full reset [`RESET_TICKS`] ticks from now.
    /// Never returns; should the reset not come (a machine without the block), the core waits.
    pub fn reset(&self) -> ! {
        self.registers.wdog.write(WDOG::PASSWORD::Value + WDOG::TIME.val(RESET_TICKS));
        // Keep RSTC's other bits, replace WRCFG; the password goes with the same write.
        self.registers.rstc.modify(RSTC::PASSWORD::Value + RSTC::WRCFG::FullReset);
        loop {
            aarch64_cpu::asm::wfi();
        }
    }
}
