//! BCM2837 system timer: a free-running 64-bit counter at 1 MHz (BCM2835 ARM Peripherals, chapter
//! 12), as a monotonic clock and an `embedded_hal::delay::DelayNs`.

use tock_registers::interfaces::Readable;
use tock_registers::register_structs;
use tock_registers::registers::ReadOnly;

register_structs! {
    Registers {
        (0x00 => _control_status),
        (0x04 => clo: ReadOnly<u32>),
        (0x08 => chi: ReadOnly<u32>),
        (0x0c => _compare),
        (0x1c => @END),
    }
}

/// The system timer.
pub struct SystemTimer {
    registers: &'static Registers,
}

impl SystemTimer {
    /// Counter frequency.
    pub const HZ: u64 = 1_000_000;

    /// # Safety
    /// `base` must be the system timer's register block, mapped as device memory. Reading it from
    /// several places is harmless (the driver never writes).
    pub const unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` points at the register block for 'static.
        SystemTimer { registers: unsafe { &*(base as *const Registers) } }
    }

    /// Microseconds since the counter started. The two halves are read high, low, high, so a carry
    /// between the reads cannot tear the value.
    pub fn now_us(&self) -> u64 {
        loop {
            let high = self.registers.chi.get();
            let low = self.registers.clo.get();
            if self.registers.chi.get() == high {
                return (high as u64) << 32 | low as u64;
            }
        }
    }
}

impl embedded_hal::delay::DelayNs for SystemTimer {
    fn delay_ns(&mut self, ns: u32) {
        let us = (ns as u64 * Self::HZ).div_ceil(1_000_000_000);
        let start = self.now_us();
        while self.now_us().wrapping_sub(start) < us {
            core::hint::spin_loop();
        }
    }
}
