//! Raspberry Pi 3 node firmware.
//!
//! This slice boots (EL2 to EL1, FP on, stack, `.bss`), reports over the PL011 UART and, under QEMU,
//! ends the run through semihosting. MMU and caches, the other drivers, defmt, four cores and local
//! training come with the firmware-platform issue.

#![no_std]
#![no_main]

mod arch;
mod bsp;
mod drivers;

use core::fmt::Write;
use core::panic::PanicInfo;

use drivers::pl011::Pl011;
use kernels::{Fixed, Footprint, MxLenet};

/// Called by `_start` on core 0 in EL1 with a stack and a zeroed `.bss`.
#[no_mangle]
extern "C" fn kernel_init() -> ! {
    // SAFETY: the PL011 is at this address on the BCM2837, the MMU is off (all accesses are device
    // accesses), and only this code drives UART0.
    let mut uart = unsafe { Pl011::new(bsp::rpi3::PL011_BASE) };
    uart.init();
    arch::aarch64::exception::install();
    kernel_main(&mut uart)
}

/// The safe part of the boot.
fn kernel_main(uart: &mut Pl011) -> ! {
    let el = current_el();
    let footprint = Footprint::of::<MxLenet, Fixed>().total(4);
    let _ = writeln!(uart, "pitrain firmware {}: booted in EL{el}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(uart, "MxLenet needs {footprint} bytes of static memory on four cores");
    uart.flush();
    if cfg!(feature = "selftest-fault") {
        let _ = writeln!(uart, "self-test: executing brk #0x42");
        // SAFETY: deliberately raises a synchronous exception to exercise the vectors (test builds).
        unsafe { core::arch::asm!("brk #0x42", options(nomem, nostack)) };
    }
    arch::aarch64::semihosting::exit(if el == 1 { 0 } else { 3 })
}

/// Writes one line about an exception to the UART (called by the exception vectors).
pub fn report_exception(message: core::fmt::Arguments<'_>) {
    // SAFETY: the exception handler has stopped everything else that could use the UART.
    let mut uart = unsafe { Pl011::new(bsp::rpi3::PL011_BASE) };
    let _ = writeln!(uart, "{message}");
    uart.flush();
}

fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack)) };
    (el >> 2) & 3
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    // SAFETY: as in kernel_init; a panic ends all other use of the UART.
    let mut uart = unsafe { Pl011::new(bsp::rpi3::PL011_BASE) };
    let _ = writeln!(uart, "panic: {info}");
    uart.flush();
    arch::aarch64::semihosting::exit(101)
}
