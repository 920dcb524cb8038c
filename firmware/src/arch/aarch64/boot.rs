//! The entry point. The GPU firmware (or QEMU's raspi3b loader) starts core 0 at 0x80000 in EL2 with
//! the MMU off; cores 1-3 wait in the boot stub's spin table until released.
//!
//! `_start` drops to EL1 (AArch64, timers readable, interrupts masked), enables the FP/NEON unit
//! (the compiler uses it everywhere), sets the stack, zeroes `.bss` and calls `kernel_init`.

core::arch::global_asm!(
    ".section .text.boot",
    ".global _start",
    "_start:",
    // Only core 0 boots; any other core that gets here parks.
    "    mrs     x1, mpidr_el1",
    "    and     x1, x1, #3",
    "    cbnz    x1, 9f",
    // EL2 -> EL1.
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
    "    adr     x0, 1f",
    "    msr     elr_el2, x0",
    "    eret",
    "1:",
    "    ldr     x0, =__stack_top",
    "    mov     sp, x0",
    "    mov     x0, #(3 << 20)", // CPACR_EL1.FPEN: no FP/NEON traps
    "    msr     cpacr_el1, x0",
    "    isb",
    "    ldr     x0, =__bss_start",
    "    ldr     x1, =__bss_end",
    "2:  cmp     x0, x1",
    "    b.hs    3f",
    "    str     xzr, [x0], #8",
    "    b       2b",
    "3:  bl      kernel_init",
    "9:  wfi",
    "    b       9b",
);
