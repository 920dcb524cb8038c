//! The PMU's cycle counter. Under QEMU with `-icount shift=0,sleep=off` it counts executed
//! instructions (of all cores together), exactly and repeatably: the firmware's benchmark figures.
//! On a real A53 it counts core clock cycles. (aarch64-cpu has no PMU registers, hence the `asm!`.)

/// PMCR_EL0: E (enable the counters) and C (reset the cycle counter).
const PMCR_ENABLE_AND_RESET_CYCLES: u64 = (1 << 0) | (1 << 2);
/// PMCNTENSET_EL0.C: count cycles.
const CYCLE_COUNTER: u64 = 1 << 31;

/// Starts the cycle counter from zero.
pub fn start_cycle_counter() {
    // SAFETY: writing the PMU control registers at EL1 only starts and resets the counters.
    unsafe {
        core::arch::asm!(
            "msr pmcr_el0, {0}",
            "msr pmcntenset_el0, {1}",
            "isb",
            in(reg) PMCR_ENABLE_AND_RESET_CYCLES,
            in(reg) CYCLE_COUNTER,
            options(nostack)
        );
    }
}

/// The counter's value.
pub fn cycles() -> u64 {
    let value: u64;
    // SAFETY: reading PMCCNTR_EL0 at EL1 has no side effects.
    unsafe { core::arch::asm!("isb", "mrs {0}, pmccntr_el0", out(reg) value, options(nomem, nostack)) };
    value
}
