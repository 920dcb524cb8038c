//! defmt's global logger: frames are rzCOBS-encoded onto the PL011 UART, and `pitrain logs --elf`
//! decodes them with the ELF's string table. Timestamps are the BCM system timer in microseconds.
//!
//! Any core may log. A frame is one critical section: a spinlock keyed by the core number keeps
//! frames from different cores from interleaving. Before the MMU is on only core 0 runs, and
//! exclusive loads and stores are not reliable on the device memory every access is then, so the lock
//! is skipped.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::aarch64::{core_id, mmu};
use crate::bsp::rpi3;
use crate::drivers::pl011::Pl011;
use crate::drivers::system_timer::SystemTimer;

/// The lock's value when no core holds it.
const FREE: usize = usize::MAX;

/// The core that is writing a frame, or [`FREE`].
static OWNER: AtomicUsize = AtomicUsize::new(FREE);

/// defmt's frame encoder; touched only by the core holding [`OWNER`].
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();

defmt::timestamp!("{=u64:us}", {
    // SAFETY: the system timer's registers are at this address and the driver only reads them.
    unsafe { SystemTimer::new(rpi3::SYSTEM_TIMER_BASE) }.now_us()
});

fn uart() -> Pl011 {
    // SAFETY: the PL011 is at this address; only the core holding the log lock writes to it (boot
    // code initialises it before the first log line).
    unsafe { Pl011::new(rpi3::PL011_BASE) }
}

#[defmt::global_logger]
struct UartLogger;

// SAFETY: `acquire` gives one core at a time the encoder (the lock), and `release` hands it back;
// `write` and `flush` are only called between the two, as defmt's contract requires.
unsafe impl defmt::Logger for UartLogger {
    fn acquire() {
        if mmu::is_enabled() {
            let me = core_id();
            loop {
                match OWNER.compare_exchange(FREE, me, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => break,
                    // An exception on this core while it was writing a frame: the interrupted frame
                    // is abandoned (the decoder skips it) and the exception's report follows.
                    Err(owner) if owner == me => break,
                    Err(_) => core::hint::spin_loop(),
                }
            }
        }
        let mut uart = uart();
        // SAFETY: this core holds the lock (or is the only core running), so the encoder is ours.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).start_frame(|bytes| write_all(&mut uart, bytes)) };
    }

    unsafe fn flush() {
        uart().flush();
    }

    unsafe fn release() {
        let mut uart = uart();
        // SAFETY: called by the core that acquired the lock (defmt's contract).
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).end_frame(|bytes| write_all(&mut uart, bytes)) };
        if mmu::is_enabled() {
            OWNER.store(FREE, Ordering::Release);
        }
    }

    unsafe fn write(bytes: &[u8]) {
        let mut uart = uart();
        // SAFETY: as in `release`.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, |bytes| write_all(&mut uart, bytes)) };
    }
}

fn write_all(uart: &mut Pl011, bytes: &[u8]) {
    for &b in bytes {
        uart.write_byte(b);
    }
}
