//! The ARM generic timer (CNTPCT_EL0 at CNTFRQ_EL0 Hz: 19.2 MHz on a Pi 3, 62.5 MHz in QEMU) as a
//! monotonic clock and an `embedded_hal::delay::DelayNs`.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};

/// The generic timer of this core.
#[derive(Clone, Copy, Debug)]
pub struct GenericTimer {
    hz: u64,
}

impl GenericTimer {
    /// Reads the counter frequency the firmware set (never assumed).
    pub fn new() -> Self {
        GenericTimer { hz: CNTFRQ_EL0.get().max(1) }
    }

    /// Counter frequency in Hz.
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// Ticks since boot.
    pub fn ticks(&self) -> u64 {
        // The ISB keeps the read from being hoisted above earlier instructions.
        barrier::isb(barrier::SY);
        CNTPCT_EL0.get()
    }

    /// Waits `us` microseconds, reading the counter only every few thousand instructions. Under
    /// QEMU's `-icount` every counter read ends a translation block, so a tight polling loop runs
    /// about ten times slower (in host time per virtual millisecond) than plain instructions; on a
    /// board the two are alike. Overshoots by at most a few microseconds.
    pub fn spin_us(&self, us: u64) {
        let ticks = (us as u128 * self.hz as u128).div_ceil(1_000_000) as u64;
        let start = self.ticks();
        while self.ticks().wrapping_sub(start) < ticks {
            pause();
        }
    }

    /// Microseconds since boot.
    pub fn now_us(&self) -> u64 {
        (self.ticks() as u128 * 1_000_000 / self.hz as u128) as u64
    }
}

impl embedded_hal::delay::DelayNs for GenericTimer {
    fn delay_ns(&mut self, ns: u32) {
        let ticks = (ns as u128 * self.hz as u128).div_ceil(1_000_000_000) as u64;
        let start = self.ticks();
        while self.ticks().wrapping_sub(start) < ticks {
            core::hint::spin_loop();
        }
    }
}

/// Spins 1024 `nop`s (about a microsecond on a Pi 3) without reading the counter or any device
/// register. Loops that poll a register pause with this between reads: under QEMU's `-icount`
/// every such read ends a translation block, so a loop that only polls moves guest time a few
/// nanoseconds per exit, and a guest wait of milliseconds (a USB transfer) costs a hundred times
/// as much host time. On a board it delays noticing an event by at most this long.
pub fn pause() {
    for _ in 0..1024 {
        // SAFETY: `nop` does nothing; the asm keeps the loop from being optimised away.
        unsafe { core::arch::asm!("nop", options(nomem, nostack, preserves_flags)) };
    }
}
