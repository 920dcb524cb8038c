//! The entry points. The GPU firmware (or QEMU's raspi3b loader) starts core 0 at 0x80000 in EL2 with
//! the MMU off; cores 1-3 wait in the boot stub's spin table until [`crate::smp`] releases them to
//! `_start_secondary`.
//!
//! Both paths drop to EL1 (AArch64, timers readable, interrupts masked), enable the FP/NEON unit (the
//! compiler uses it everywhere) and take their core's stack: core `k` uses the `k`-th stack down from
//! `__stack_top`. Core 0 then zeroes `.bss` and calls `kernel_init`; the others call
//! `secondary_init`.
//!
//! On a real Pi 3 the boot stub (armstub8) has already set CPUECTLR_EL1.SMPEN on every core, which
//! the A53 needs before its caches take part in coherency; QEMU does not model it.

core::arch::global_asm!(
    ".section .text.boot",
    ".global _start",
    "_start:",
    // Only core 0 boots this way; any other core that gets here parks.
    "    mrs     x1, mpidr_el1",
    "    and     x1, x1, #3",
    "    cbnz    x1, 9f",
    "    bl      drop_to_el1",
    "    ldr     x0, =__stack_top",
    "    mov     sp, x0",
    "    bl      enable_fp",
    "    ldr     x0, =__bss_start",
    "    ldr     x1, =__bss_end",
    "2:  cmp     x0, x1",
    "    b.hs    3f",
    "    str     xzr, [x0], #8",
    "    b       2b",
    "3:  bl      kernel_init",
    "9:  wfi",
    "    b       9b",
    "",
    ".global _start_secondary",
    "_start_secondary:",
    "    bl      drop_to_el1",
    "    mrs     x19, mpidr_el1",
    "    and     x19, x19, #3",
    "    ldr     x0, =__stack_top",
    "    ldr     x1, =__stack_size",
    "    msub    x0, x1, x19, x0", // sp = __stack_top - core * __stack_size
    "    mov     sp, x0",
    "    bl      enable_fp",
    "    mov     x0, x19",
    "    bl      secondary_init",
    "    b       9b",
    "",
    // EL2 -> EL1, returning to the caller in EL1 (no-op when already in EL1). Clobbers x0.
    "drop_to_el1:",
    "    mrs     x0, CurrentEL",
    "    lsr     x0, x0, #2",
    "    cmp     x0, #2",
    "    b.ne    1f",
    "    mov     x0, #(1 << 31)", // HCR_EL2.RW: EL1 is AArch64
    "    msr     hcr_el2, x0",
    "    mov     x0, #3", // CNTHCTL_EL2: EL1 may read the counter and timer
    "    msr     cnthctl_el2, x0",
    "    msr     cntvoff_el2, xzr",
    "    ldr     x0, =0x30d00800", // SCTLR_EL1: RES1 bits, MMU and caches off
    "    msr     sctlr_el1, x0",
    "    mov     x0, #0x3c5", // SPSR_EL2: EL1h with D, A, I, F masked
    "    msr     spsr_el2, x0",
    "    msr     elr_el2, x30",
    "    eret",
    "1:  ret",
    "",
    // CPACR_EL1.FPEN: no FP/NEON traps. Clobbers x0.
    "enable_fp:",
    "    mov     x0, #(3 << 20)",
    "    msr     cpacr_el1, x0",
    "    isb",
    "    ret",
);
