//! Raspberry Pi 3 node firmware. For now a placeholder that proves the `kernels` crate builds and
//! links for `aarch64-unknown-none`; the firmware-platform issue brings boot, drivers and training.

#![no_std]
#![no_main]

use core::panic::PanicInfo;
use kernels::{Fixed, Footprint, MxLenet};

/// Static memory one node needs for MxLenet on four cores, kept in the image so the linker keeps the
/// kernels code paths it depends on.
#[used]
#[no_mangle]
static MXLENET_FOOTPRINT_BYTES: usize = Footprint::of::<MxLenet, Fixed>().total(4);

core::arch::global_asm!(".section .text.boot", ".global _start", "_start:", "1: wfe", "b 1b",);

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
