//! Raspberry Pi 3 node firmware.
//!
//! So far it boots (EL2 to EL1, FP on, stack, `.bss`), installs exception vectors, turns on the MMU
//! and caches (identity map; a non-cacheable DMA block), checks that the fixed-point kernels run,
//! reports over the PL011 UART and, under QEMU, ends the run through semihosting. The other drivers,
//! defmt, four cores and local training come with the rest of the firmware-platform issue.

#![no_std]
#![no_main]

mod arch;
mod bsp;
mod drivers;
mod log;

use core::fmt::{self, Display};
use core::panic::PanicInfo;

use drivers::mailbox::{Clock, MailboxError};
use drivers::pl011::Pl011;
use kernels::{Fixed, Footprint, MxLenet};

/// Called by `_start` on core 0 in EL1 with a stack and a zeroed `.bss`.
#[no_mangle]
extern "C" fn kernel_init() -> ! {
    // SAFETY: the GPIO block is at this address on the BCM2837, the MMU is off, and nothing else
    // drives it yet.
    unsafe { drivers::gpio::Gpio::new(bsp::rpi3::GPIO_BASE) }.route_uart0();
    // SAFETY: the PL011 is at this address on the BCM2837, the MMU is off (all accesses are device
    // accesses), and no other core runs yet; from here on only the defmt logger drives UART0.
    unsafe { Pl011::new(bsp::rpi3::PL011_BASE) }.init();
    arch::aarch64::exception::install();
    // SAFETY: core 0 only (the others are parked), MMU still off, called once.
    unsafe { arch::aarch64::mmu::enable() };
    kernel_main()
}

/// The safe part of the boot.
fn kernel_main() -> ! {
    let el = current_el();
    let footprint = Footprint::of::<MxLenet, Fixed>().total(4);
    defmt::info!("pitrain firmware {=str}: booted in EL{=u64}", env!("CARGO_PKG_VERSION"), el);
    defmt::info!("MxLenet needs {=usize} bytes of static memory on four cores", footprint);
    let mmu = if arch::aarch64::mmu::is_enabled() { "on" } else { "off" };
    defmt::info!("MMU and caches {=str}", mmu);
    let check = self_check();
    defmt::info!("kernels self-check: {=str}", check);
    report_timers();
    report_board();
    if cfg!(feature = "selftest-fault") {
        defmt::info!("self-test: executing brk #0x42");
        // SAFETY: deliberately raises a synchronous exception to exercise the vectors (test builds).
        unsafe { core::arch::asm!("brk #0x42", options(nomem, nostack)) };
    }
    let status = match (el, check) {
        (1, "ok") => 0,
        (1, _) => 4,
        _ => 3,
    };
    arch::aarch64::semihosting::exit(status)
}

/// Times a 10 ms delay of each timer with the other one, so a test can check that they agree.
fn report_timers() {
    use embedded_hal::delay::DelayNs;
    let mut generic = arch::aarch64::timer::GenericTimer::new();
    // SAFETY: the system timer is at this address on the BCM2837 and mapped as device memory; the
    // driver only reads it.
    let mut system = unsafe { drivers::system_timer::SystemTimer::new(bsp::rpi3::SYSTEM_TIMER_BASE) };
    defmt::info!("generic timer at {=u64} Hz", generic.hz());
    let start = system.now_us();
    generic.delay_ms(10);
    let by_generic = system.now_us() - start;
    let start = generic.now_us();
    system.delay_ms(10);
    let by_system = generic.now_us() - start;
    defmt::info!("10 ms by the generic timer = {=u64} us by the system timer", by_generic);
    defmt::info!("10 ms by the system timer = {=u64} us by the generic timer", by_system);
}

/// Asks the GPU firmware what board this is and switches the activity LED on.
fn report_board() {
    use embedded_hal::digital::OutputPin;
    // SAFETY: the mailbox and GPIO blocks are at these addresses on the BCM2837 and mapped as device
    // memory; nothing else uses them now (`kernel_init` is done with the GPIO), and this is the only
    // `Mailbox`.
    let (mut mailbox, gpio) = unsafe {
        (
            drivers::mailbox::Mailbox::new(bsp::rpi3::MAILBOX_BASE),
            drivers::gpio::Gpio::new(bsp::rpi3::GPIO_BASE),
        )
    };
    let revision = mailbox.board_revision();
    use defmt::Display2Format as Text;
    defmt::info!(
        "board: model {}, revision {}, serial {}, MAC {}, ARM memory {}, ARM clock {}, core clock {}, UART clock {}",
        Text(&Answer(mailbox.board_model().map(Hex))),
        Text(&Answer(revision)),
        Text(&Answer(mailbox.board_serial().map(Hex))),
        Text(&Answer(mailbox.mac_address())),
        Text(&Answer(mailbox.arm_memory())),
        Text(&Answer(mailbox.clock_rate(Clock::Arm).map(Hz))),
        Text(&Answer(mailbox.clock_rate(Clock::Core).map(Hz))),
        Text(&Answer(mailbox.clock_rate(Clock::Uart).map(Hz))),
    );
    let led = revision
        .map_err(drivers::activity_led::LedError::Mailbox)
        .and_then(|revision| drivers::activity_led::ActivityLed::new(revision, &gpio, &mut mailbox))
        .and_then(|mut led| led.set_high());
    match led {
        Ok(()) => defmt::info!("activity LED: on"),
        Err(error) => defmt::warn!("activity LED: {}", Text(&error)),
    }
}

/// A mailbox answer, or why there is none.
struct Answer<T>(Result<T, MailboxError>);

impl<T: Display> Display for Answer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(value) => value.fmt(f),
            Err(error) => write!(f, "unknown ({error})"),
        }
    }
}

/// A number in hex.
struct Hex<T>(T);

impl<T: fmt::LowerHex> Display for Hex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A clock rate.
struct Hz(u32);

impl Display for Hz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.0)
    }
}

/// A little fixed-point work that needs the MMU (the compiler emits unaligned and NEON accesses,
/// which fault on device memory): the tanh of 1.0, and an exact dot product.
fn self_check() -> &'static str {
    let a = [1000i16; 37];
    let b = [-3i16; 37];
    let ok = kernels::tanh::tanh_q(4096) == 24956 && kernels::simd::dot_i16(&a, &b) == -111_000;
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}

fn current_el() -> u64 {
    let el: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { core::arch::asm!("mrs {}, CurrentEL", out(reg) el, options(nomem, nostack)) };
    (el >> 2) & 3
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    arch::aarch64::semihosting::exit(101)
}
