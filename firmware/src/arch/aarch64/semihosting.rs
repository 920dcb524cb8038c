//! ARM semihosting, used only to end a QEMU run with a status code (`-semihosting`).
//!
//! The same image runs on a real board, where no debugger answers: there the `hlt` raises an
//! exception, which the vectors recognise through [`exit_in_progress`] and turn into a log line and a
//! parked core, so a board ends a run quietly in `wfi`.

use core::sync::atomic::{AtomicU32, Ordering};

/// SYS_EXIT.
const SYS_EXIT: u64 = 0x18;
/// ADP_Stopped_ApplicationExit: the exit reason that carries a status code.
const APPLICATION_EXIT: u64 = 0x20026;
/// Stored in [`EXITING`] while no exit is in progress.
const NOT_EXITING: u32 = u32::MAX;

/// The status being exited with, or [`NOT_EXITING`].
static EXITING: AtomicU32 = AtomicU32::new(NOT_EXITING);

/// The status of the exit that raised the current exception, if one did.
pub fn exit_in_progress() -> Option<u32> {
    match EXITING.load(Ordering::Relaxed) {
        NOT_EXITING => None,
        status => Some(status),
    }
}

/// Ends the QEMU run; QEMU exits with `code`. On a board, parks the core (see the module docs).
pub fn exit(code: u32) -> ! {
    EXITING.store(code.min(NOT_EXITING - 1), Ordering::Relaxed);
    let block: [u64; 2] = [APPLICATION_EXIT, code as u64];
    // SAFETY: `hlt #0xf000` is the AArch64 semihosting call; with QEMU's -semihosting it reads the
    // two-word parameter block (valid for the duration of the call) and does not return. Without a
    // semihosting host it raises an exception, and the exception handler parks the core.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    super::park()
}
