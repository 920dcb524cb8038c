//! Raspberry Pi 3 node firmware.
//!
//! It boots (EL2 to EL1, FP on, stack, `.bss`), installs exception vectors, turns on the MMU and
//! caches (identity map; a non-cacheable DMA block), checks that the fixed-point kernels run, reports
//! the board (mailbox) and its timers, brings up USB and the Ethernet device behind it (if any), then checks the node blob the boot loader placed at
//! [`blob::LOAD_ADDRESS`], releases cores 1-3 and trains the blob's model on its shard for its epochs,
//! all in static memory. Everything is logged with defmt over the PL011 UART. Under QEMU the run ends
//! through semihosting with a status: 0 trained, 2 exception, 3 not in EL1, 4 self-check failed,
//! 5 bad node blob, 6 shard too large, 101 panic. On a real board, where no debugger answers
//! semihosting, the core logs "halted with status N" and parks instead. When the master asks for a
//! reboot (`pitrain cluster reboot`), the node reboots the board through the power-management
//! watchdog and joins again from scratch.

#![no_std]
#![no_main]

mod arch;
mod bsp;
mod drivers;
mod log;
mod net;
mod node;
mod smp;
mod training;

use core::fmt::{self, Display};
use core::panic::PanicInfo;

use drivers::mailbox::{Clock, MailboxError};
use drivers::pl011::Pl011;
use protocol::blob::{self, Blob};

/// Exit status (under QEMU, through semihosting): the firmware did not reach EL1.
const EXIT_WRONG_EL: u32 = 3;
/// Exit status: the kernels' self-check failed.
const EXIT_SELF_CHECK: u32 = 4;
/// Exit status: no valid node blob.
const EXIT_BAD_BLOB: u32 = 5;
/// Exit status: the blob's shard cannot be trained on.
const EXIT_TRAINING: u32 = 6;
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

/// Called by `_start_secondary` on cores 1-3 in EL1 with their own stacks, once core 0 has released
/// them ([`smp::start_secondaries`]).
#[no_mangle]
extern "C" fn secondary_init(core: usize) -> ! {
    arch::aarch64::exception::install();
    // SAFETY: core 0 built the tables before releasing this core; this core's MMU is off.
    unsafe { arch::aarch64::mmu::enable_on_this_core() };
    smp::worker(core)
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
    // Kept for the node's protocol (to come); the self-test uses it now.
    #[allow(unused_mut, unused_variables)]
    let mut network = net::bring_up();
    #[cfg(feature = "selftest-net")]
    if let Some(eth) = network.as_mut() {
        net::self_test(eth);
    }
    if cfg!(feature = "selftest-fault") {
        defmt::info!("self-test: executing brk #0x42");
        // SAFETY: deliberately raises a synchronous exception to exercise the vectors (test builds).
        unsafe { core::arch::asm!("brk #0x42", options(nomem, nostack)) };
    }
    if cfg!(feature = "selftest-panic") {
        panic!("self-test: deliberate panic");
    }
    if (el, check) != (1, "ok") {
        arch::aarch64::semihosting::exit(if el == 1 { EXIT_SELF_CHECK } else { EXIT_WRONG_EL });
    }
    let blob = match node_blob() {
        Ok(blob) => blob,
        Err(error) => {
            defmt::error!(
                "node blob at {=usize:#x} refused: {=str}; halting",
                blob::LOAD_ADDRESS,
                error.as_str()
            );
            arch::aarch64::semihosting::exit(EXIT_BAD_BLOB)
        }
    };
    let s = blob.settings();
    defmt::info!(
        "node {=u16} of {=u16}: {=usize} samples (shard hash {=u64:016x}), {=str}, {=u32} epochs, batch {=u32}, seed {=u64}, {=u8} cores",
        s.node_id,
        s.nodes,
        blob.samples(),
        blob.shard_hash(),
        match s.model {
            protocol::wire::ModelId::MxLenet => "MxLenet",
            protocol::wire::ModelId::Lenet5 => "LeNet-5",
        },
        s.epochs,
        s.batch,
        s.seed,
        s.cores
    );
    let n = &s.net;
    let [m0, m1, m2, m3] = n.master_address;
    defmt::info!(
        "network: master {=u8}.{=u8}.{=u8}.{=u8}:{=u16}, node port {=u16}, MAC {=[u8; 6]:02x} (all zero: the board's)",
        m0,
        m1,
        m2,
        m3,
        n.master_port,
        n.node_port,
        n.mac
    );
    if n.static_address {
        let ([a0, a1, a2, a3], [g0, g1, g2, g3]) = (n.address, n.gateway);
        defmt::info!(
            "network: static address {=u8}.{=u8}.{=u8}.{=u8}/{=u8} via {=u8}.{=u8}.{=u8}.{=u8}",
            a0,
            a1,
            a2,
            a3,
            n.prefix,
            g0,
            g1,
            g2,
            g3
        );
    } else {
        defmt::info!("network: address by DHCP");
    }
    let online = if s.cores > 1 { smp::start_secondaries() } else { 1 };
    let cores = (s.cores as usize).min(online);
    defmt::info!("training on {=usize} of {=usize} cores", cores, online);
    if let Some(eth) = network {
        // With a network the node trains with the master; without one, on its own.
        let mac = net::node_mac(&eth, &s.net);
        let mut net = net::interface(eth, &s.net);
        if cfg!(feature = "link-test") {
            net::link_test(&mut net);
            net::log_counters(&mut net);
            arch::aarch64::semihosting::exit(0)
        }
        let entropy = arch::aarch64::timer::GenericTimer::new().now_us() ^ u64::from(s.node_id) << 48;
        let outcome = node::run(&blob, cores, &mut net, entropy, mac);
        net::log_counters(&mut net);
        match outcome {
            Ok(node::Outcome::Stopped) => arch::aarch64::semihosting::exit(0),
            Ok(node::Outcome::Reboot) => reboot(),
            Err(error) => {
                defmt::error!("cannot take part: {}", error);
                arch::aarch64::semihosting::exit(EXIT_TRAINING)
            }
        }
    }
    match training::train(&blob, cores) {
        Ok(summary) => {
            defmt::info!(
                "trained {=u64} samples in {=u64} instructions ({=u64} per sample), weights {=u64:016x}",
                summary.samples,
                summary.instructions,
                summary.instructions / summary.samples.max(1),
                summary.weight_hash
            );
            defmt::info!("samples per core: {}", summary.per_core);
            arch::aarch64::semihosting::exit(0)
        }
        Err(error) => {
            defmt::error!("cannot train: {}", error);
            arch::aarch64::semihosting::exit(EXIT_TRAINING)
        }
    }
}

/// Reboots the board through the power-management watchdog: the GPU firmware boots again from the
/// card, so the node starts over with a fresh blob and joins the master again. Under QEMU without
/// `-no-reboot` the machine resets and reloads the kernel and blob; with it, QEMU ends.
fn reboot() -> ! {
    // SAFETY: the PM block is at this address on the BCM2837 and mapped as device memory; nothing
    // else in the firmware drives it, and the other cores are idle in the fork-join pool.
    let watchdog = unsafe { drivers::watchdog::Watchdog::new(bsp::rpi3::PM_BASE) };
    if watchdog.halt_pending() {
        defmt::warn!("watchdog: the halt pattern is set in RSTS, this reset will power off");
    }
    defmt::info!("rebooting through the watchdog");
    // Let the UART send the log before the reset cuts it off.
    use embedded_hal::delay::DelayNs;
    arch::aarch64::timer::GenericTimer::new().delay_ms(5);
    watchdog.reset()
}

/// The node blob the boot loader placed at [`blob::LOAD_ADDRESS`], checked.
fn node_blob() -> Result<Blob<&'static [u8]>, blob::BlobError> {
    const _: () = assert!(blob::LOAD_ADDRESS + blob::MAX_LEN <= bsp::rpi3::PERIPHERAL_BASE);
    // SAFETY: the blob area is RAM that the firmware never writes (the linker script keeps the image
    // below it); only the boot loader may have written it, before boot. Reading it is always defined:
    // unloaded RAM just fails the checks.
    let header = unsafe { core::slice::from_raw_parts(blob::LOAD_ADDRESS as *const u8, blob::HEADER_LEN) };
    let len = blob::declared_len(header)?;
    // SAFETY: as above; `declared_len` keeps `len` within MAX_LEN, which the assertion keeps in RAM.
    let bytes = unsafe { core::slice::from_raw_parts(blob::LOAD_ADDRESS as *const u8, len) };
    Blob::new_checked(bytes)
}

/// Times a 10 ms delay of each timer with the other one, so a test can check that they agree.
fn report_timers() {
    use embedded_hal::delay::DelayNs;
    let mut generic = arch::aarch64::timer::GenericTimer::new();
    // SAFETY: the system timer is at this address on the BCM2837 and mapped as device memory; the
    // driver only reads it.
    let mut system = unsafe { drivers::system_timer::SystemTimer::new(bsp::rpi3::SYSTEM_TIMER_BASE) };
    defmt::info!("generic timer at {=u64} Hz", generic.hz());
    // Each measurement starts as its clock moves on to the next microsecond, so that the reading
    // does not depend on where in a microsecond the firmware happens to be (that depends on how
    // long the boot took): otherwise an exact 10 ms reads 10000 or 10001.
    let start = next_microsecond(|| system.now_us());
    generic.delay_ms(10);
    let by_generic = system.now_us() - start;
    let start = next_microsecond(|| generic.now_us());
    system.delay_ms(10);
    let by_system = generic.now_us() - start;
    defmt::info!("10 ms by the generic timer = {=u64} us by the system timer", by_generic);
    defmt::info!("10 ms by the system timer = {=u64} us by the generic timer", by_system);
}

/// Waits until the microsecond clock `now_us` moves on, and returns its new reading.
fn next_microsecond(now_us: impl Fn() -> u64) -> u64 {
    let before = now_us();
    loop {
        let now = now_us();
        if now != before {
            return now;
        }
    }
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
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    defmt::error!("panic: {} at {=str}:{=u32}", defmt::Display2Format(&info.message()), file, line);
    arch::aarch64::semihosting::exit(101)
}
