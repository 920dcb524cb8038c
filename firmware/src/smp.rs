//! All four cores: releasing cores 1-3 from the boot stub's spin table, and fork-join work sharing.
//!
//! [`run_on_cores`] hands a closure to cores 0..n and returns when all have finished, like a scoped
//! thread pool. Waiting cores sleep in `wfi` and are woken through their ARM-local mailbox
//! ([`CoreMailboxes`]), so an idle core executes nothing.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use kernels::train::Cores;
use spin::Mutex;

use crate::bsp::rpi3::{LOCAL_PERIPHERALS_BASE, SPIN_TABLE};
use crate::drivers::core_mailbox::CoreMailboxes;

/// Cores of the Cortex-A53 cluster.
pub const CORES: usize = 4;

/// A type-erased `&F` where `F: Fn(usize) + Sync`, and the function that calls it.
#[derive(Clone, Copy)]
struct Job {
    closure: *const (),
    call: unsafe fn(*const (), usize),
    cores: usize,
}

/// The one job in flight, and the counters the cores synchronise on.
struct Dispatch {
    /// Bumped (Release) by core 0 after it has written `job`; workers read `job` after seeing it
    /// (Acquire).
    generation: AtomicU32,
    /// Workers done with the current job (Release); core 0 reads it (Acquire) before returning.
    finished: AtomicUsize,
    /// Worker cores that have come up.
    online: AtomicUsize,
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by core 0 inside `run_on_cores`, before `generation` is bumped and
// while every worker has finished the previous job (so none reads it); workers read it only after
// seeing the bump and before reporting `finished`. The atomics order those accesses.
unsafe impl Sync for Dispatch {}

static DISPATCH: Dispatch = Dispatch {
    generation: AtomicU32::new(0),
    finished: AtomicUsize::new(0),
    online: AtomicUsize::new(0),
    job: UnsafeCell::new(None),
};

fn mailboxes() -> CoreMailboxes {
    // SAFETY: the ARM-local peripherals are at this address and mapped as device memory; the wake-up
    // protocol below gives each register one writer at a time (setting bits is idempotent).
    unsafe { CoreMailboxes::new(LOCAL_PERIPHERALS_BASE) }
}

fn sleep() {
    // SAFETY: `wfi` only waits; a pending mailbox IRQ ends it even with interrupts masked.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}

/// Releases cores 1-3 to `_start_secondary` and waits (at most about a second) until they are up.
/// Returns how many cores are online, core 0 included.
pub fn start_secondaries() -> usize {
    extern "C" {
        fn _start_secondary();
    }
    let mailboxes = mailboxes();
    mailboxes.enable_wakeup(0);
    for &slot in &SPIN_TABLE[1..] {
        let slot = slot as *mut u64;
        // SAFETY: the spin table is RAM below the firmware that nothing else uses; the waiting cores
        // read it with their caches off, so the line is cleaned to memory before they are woken.
        unsafe {
            slot.write_volatile(_start_secondary as *const () as usize as u64);
            core::arch::asm!("dc civac, {0}", in(reg) slot, options(nostack));
        }
    }
    // SAFETY: barriers and `sev` only order memory and signal the waiting cores.
    unsafe { core::arch::asm!("dsb sy", "sev", options(nostack)) };
    let timer = crate::arch::aarch64::timer::GenericTimer::new();
    let deadline = timer.now_us() + 1_000_000;
    while DISPATCH.online.load(Ordering::Acquire) < CORES - 1 && timer.now_us() < deadline {
        mailboxes.clear(0);
        if DISPATCH.online.load(Ordering::Acquire) < CORES - 1 {
            sleep();
        }
    }
    1 + DISPATCH.online.load(Ordering::Acquire)
}

/// Cores 1-3 after boot: wait for jobs, run them, report, forever.
pub fn worker(core: usize) -> ! {
    let mailboxes = mailboxes();
    mailboxes.enable_wakeup(core);
    let mut seen = DISPATCH.generation.load(Ordering::Acquire);
    DISPATCH.online.fetch_add(1, Ordering::Release);
    mailboxes.wake(0);
    loop {
        // Clear before checking: a wake-up that lands after the check stays pending and ends `wfi`.
        mailboxes.clear(core);
        let generation = DISPATCH.generation.load(Ordering::Acquire);
        if generation == seen {
            sleep();
            continue;
        }
        seen = generation;
        // SAFETY: the generation changed, so `job` is written and stays put until this core reports
        // `finished` (see `Dispatch`).
        let job = unsafe { *DISPATCH.job.get() }.expect("a job is published before the generation moves");
        if core < job.cores {
            // SAFETY: `closure` points at the `F` that `call` was instantiated for, alive until
            // `run_on_cores` returns, which it does only after this core reports `finished`.
            unsafe { (job.call)(job.closure, core) };
            DISPATCH.finished.fetch_add(1, Ordering::Release);
            mailboxes.wake(0);
        }
    }
}

/// Calls `work(core)` on cores `0..cores` (as many as are online) at once and returns when all
/// calls have returned. Must be called on core 0.
pub fn run_on_cores<F: Fn(usize) + Sync>(cores: usize, work: &F) {
    /// Calls the erased closure.
    ///
    /// # Safety
    /// `closure` must point at a live `F`.
    unsafe fn call<F: Fn(usize) + Sync>(closure: *const (), core: usize) {
        // SAFETY: the caller passes the `&F` that `run_on_cores` erased.
        unsafe { (*(closure as *const F))(core) }
    }
    let cores = cores.clamp(1, 1 + DISPATCH.online.load(Ordering::Acquire));
    if cores == 1 {
        work(0);
        return;
    }
    let mailboxes = mailboxes();
    // SAFETY: no worker reads `job` now: each finished the previous job before the previous call
    // returned, and none looks again until the generation moves (below).
    unsafe {
        *DISPATCH.job.get() = Some(Job { closure: work as *const F as *const (), call: call::<F>, cores })
    };
    DISPATCH.finished.store(0, Ordering::Relaxed);
    DISPATCH.generation.fetch_add(1, Ordering::Release);
    for core in 1..cores {
        mailboxes.wake(core);
    }
    work(0);
    loop {
        mailboxes.clear(0);
        if DISPATCH.finished.load(Ordering::Acquire) == cores - 1 {
            break;
        }
        sleep();
    }
}

/// The Pi's cores as [`Cores`] for [`kernels::train::batch_gradient`]: each item handed to a core
/// through a slot of its own.
pub struct PiCores;

impl Cores for PiCores {
    fn run<T: Send>(&self, items: impl Iterator<Item = T>, job: &(dyn Fn(usize, T) + Sync)) {
        let slots: [Mutex<Option<T>>; CORES] = core::array::from_fn(|_| Mutex::new(None));
        let mut items = items.fuse();
        let mut count = 0;
        for (slot, item) in slots.iter().zip(&mut items) {
            *slot.lock() = Some(item);
            count += 1;
        }
        assert!(items.next().is_none(), "at most one item per core");
        run_on_cores(count, &|core| {
            if let Some(item) = slots[core].lock().take() {
                job(core, item);
            }
        });
        // Cores that are not online (`run_on_cores` uses only those) leave their item: core 0
        // runs it, so that no share of a batch is lost.
        for (core, slot) in slots.iter().enumerate() {
            if let Some(item) = slot.lock().take() {
                job(core, item);
            }
        }
    }
}
