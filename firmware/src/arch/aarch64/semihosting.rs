//! ARM semihosting, used only to end a QEMU run with a status code (`-semihosting`). On a real board
//! there is no debugger to answer, so the firmware never calls this there.

/// SYS_EXIT.
const SYS_EXIT: u64 = 0x18;
/// ADP_Stopped_ApplicationExit: the exit reason that carries a status code.
const APPLICATION_EXIT: u64 = 0x20026;

/// Ends the QEMU run; QEMU exits with `code`.
pub fn exit(code: u32) -> ! {
    let block: [u64; 2] = [APPLICATION_EXIT, code as u64];
    // SAFETY: `hlt #0xf000` is the AArch64 semihosting call; with QEMU's -semihosting it reads the
    // two-word parameter block (valid for the duration of the call) and does not return. Without a
    // semihosting host it raises an exception, and the exception handler parks the core.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
    }
    super::park()
}
