//! The ARM-local per-core mailboxes (BCM2836 "ARM control" block at 0x4000_0000, kept by the
//! BCM2837): four 32-bit mailboxes per core. Setting a bit in core `k`'s mailbox 0 raises core `k`'s
//! IRQ line for as long as any bit stays set.
//!
//! The firmware never takes interrupts (they stay masked), but a pending IRQ still ends `wfi`, so this
//! is how one core wakes another that sleeps in `wfi`: the sleeping core spends no instructions, which
//! keeps instruction counts exact and a host core free under QEMU.

use tock_registers::interfaces::{ReadWriteable, Writeable};
use tock_registers::registers::{ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {
    u32,
    /// Per-core mailbox interrupt control.
    MAILBOX_CONTROL [
        /// Mailbox 0 raises an IRQ.
        MAILBOX0_IRQ OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    Registers {
        (0x00 => _reserved0),
        (0x50 => mailbox_control: [ReadWrite<u32, MAILBOX_CONTROL::Register>; 4]),
        (0x60 => _reserved1),
        /// Write-set: core k's mailbox m is at index 4k + m.
        (0x80 => set: [WriteOnly<u32>; 16]),
        /// Read, and write-1-to-clear: same indexing.
        (0xC0 => clear: [ReadWrite<u32>; 16]),
        (0x100 => @END),
    }
}

/// The per-core mailboxes.
pub struct CoreMailboxes {
    registers: &'static Registers,
}

impl CoreMailboxes {
    /// # Safety
    /// `base` must be the ARM-local peripherals, mapped as device memory (or with the MMU off). Any
    /// core may hold one: each register is written by one core at a time by the protocol in
    /// [`crate::smp`] (set registers may be written by several; setting bits is idempotent).
    pub const unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` points at the register block for 'static.
        CoreMailboxes { registers: unsafe { &*(base as *const Registers) } }
    }

    /// Lets mailbox 0 of `core` raise that core's IRQ line (to end its `wfi`).
    pub fn enable_wakeup(&self, core: usize) {
        self.registers.mailbox_control[core].modify(MAILBOX_CONTROL::MAILBOX0_IRQ::SET);
    }

    /// Wakes `core` (or keeps it from sleeping if it is about to).
    pub fn wake(&self, core: usize) {
        self.registers.set[4 * core].set(1);
    }

    /// Clears `core`'s wake-up, before it checks whether there is work.
    pub fn clear(&self, core: usize) {
        self.registers.clear[4 * core].set(u32::MAX);
    }
}
