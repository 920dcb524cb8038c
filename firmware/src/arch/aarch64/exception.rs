//! Exception vectors: any exception is logged (defmt, over the UART) (its class, ESR, ELR and FAR) and the
//! core halts. Nothing is recoverable yet, so no register state is saved.

use core::sync::atomic::{AtomicBool, Ordering};

// Sixteen entries of 0x80 bytes in a 0x800-aligned table: {current EL with SP0, current EL with SPx,
// lower EL AArch64, lower EL AArch32} x {synchronous, IRQ, FIQ, SError}.
core::arch::global_asm!(
    ".section .text.vectors, \"ax\"",
    ".balign 0x800",
    ".global __exception_vectors",
    "__exception_vectors:",
    ".set entry, 0",
    ".rept 16",
    ".balign 0x80",
    "    mov     x0, #entry",
    "    b       {handler}",
    ".set entry, entry + 1",
    ".endr",
    handler = sym exception_entry,
);

/// Set while an exception is being reported, so that a fault inside the report (or a semihosting
/// call on a board without a debugger) parks the core instead of recursing.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Points VBAR_EL1 at the table. Called once at boot, before anything can fault.
pub fn install() {
    extern "C" {
        static __exception_vectors: u8;
    }
    // SAFETY: the table is 0x800-aligned code placed by the linker; writing VBAR_EL1 at EL1 only
    // changes where exceptions go.
    unsafe {
        core::arch::asm!(
            "msr vbar_el1, {0}",
            "isb",
            in(reg) core::ptr::addr_of!(__exception_vectors),
            options(nostack)
        );
    }
}

/// The name of an exception class (ESR_EL1.EC), per the Arm ARM, D17.2.37.
pub fn class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x07 => "FP/SIMD access",
        0x15 => "SVC",
        0x18 => "system register access",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2F => "SError",
        0x3C => "BRK instruction",
        _ => "other",
    }
}

const KINDS: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];

extern "C" fn exception_entry(entry: u64) -> ! {
    if let Some(status) = super::semihosting::exit_in_progress() {
        // No semihosting host (a real board): the run is over, not broken.
        defmt::info!("halted with status {=u32}", status);
        super::park();
    }
    if REPORTING.swap(true, Ordering::Relaxed) {
        super::park();
    }
    let (esr, elr, far): (u64, u64, u64);
    // SAFETY: reading the syndrome, link and fault-address registers has no side effects.
    unsafe {
        core::arch::asm!(
            "mrs {0}, esr_el1", "mrs {1}, elr_el1", "mrs {2}, far_el1",
            out(reg) esr, out(reg) elr, out(reg) far,
            options(nomem, nostack)
        );
    }
    let ec = (esr >> 26) & 0x3f;
    defmt::error!(
        "exception: {=str} ({=str}), EC {=u64:#04x}, ESR {=u64:#010x}, ELR {=u64:#x}, FAR {=u64:#x}; halting",
        KINDS[(entry % 4) as usize],
        class_name(ec),
        ec,
        esr,
        elr,
        far
    );
    super::semihosting::exit(2)
}
