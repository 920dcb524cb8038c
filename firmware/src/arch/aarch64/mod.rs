//! CPU-specific code for the Cortex-A53: the boot entry, exception vectors, the MMU and semihosting.

pub mod boot;
pub mod exception;
pub mod mmu;
pub mod semihosting;
pub mod timer;

/// Stops this core for good.
pub fn park() -> ! {
    loop {
        // SAFETY: `wfi` only waits; with interrupts masked it waits forever, which is the point.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
