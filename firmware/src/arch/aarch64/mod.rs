//! CPU-specific code for the Cortex-A53: the boot entry, exception vectors, the MMU and semihosting.

pub mod boot;
pub mod exception;
pub mod mmu;
pub mod pmu;
pub mod semihosting;
pub mod timer;

/// Stops this core for good.
pub fn park() -> ! {
    loop {
        // SAFETY: `wfi` only waits; with interrupts masked it waits forever, which is the point.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

/// This core's number, 0 to 3 (MPIDR_EL1.Aff0 on the Cortex-A53 cluster).
pub fn core_id() -> usize {
    use aarch64_cpu::registers::{Readable, MPIDR_EL1};
    (MPIDR_EL1.get() & 3) as usize
}
