//! MMU and caches: an identity map of the 4 GiB physical space with 4 KiB granules and 2 MiB blocks.
//!
//! - RAM below the peripherals (0 .. 0x3F00_0000) is normal memory, write-back cacheable, inner
//!   shareable; the `.dma` section (whole 2 MiB blocks) is normal *non-cacheable* memory for
//!   buffers the GPU and the USB controller read and write, so they need no cache maintenance.
//! - The BCM2837 peripherals (0x3F00_0000 .. 0x4000_0000) and the ARM local peripherals above 1 GiB
//!   are Device-nGnRnE, never executable.
//!
//! Facts from the Arm ARM (VMSAv8-64, D8) and the BCM2837 memory map; the code is ours.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

use crate::bsp::rpi3::PERIPHERAL_BASE;

/// 2 MiB.
const BLOCK: usize = 2 << 20;

/// MAIR_EL1 attribute indices.
const ATTR_DEVICE: u64 = 0; // 0x00: Device-nGnRnE
const ATTR_NORMAL: u64 = 1; // 0xFF: Normal, inner and outer write-back, read/write-allocate
const ATTR_NORMAL_NC: u64 = 2; // 0x44: Normal, inner and outer non-cacheable
/// Attribute 0 is 0x00 (device), so only attributes 1 and 2 have bits set.
const MAIR: u64 = (0xFF << (8 * ATTR_NORMAL)) | (0x44 << (8 * ATTR_NORMAL_NC));

// Descriptor bits (level 1 and 2 blocks, table descriptors).
const VALID_BLOCK: u64 = 0b01;
const VALID_TABLE: u64 = 0b11;
const ACCESS_FLAG: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// A 4 KiB-aligned translation table.
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Level 1: four 1 GiB entries cover the 32-bit space. Level 2: 512 x 2 MiB for the first GiB.
static mut LEVEL1: Table = Table([0; 512]);
static mut LEVEL2: Table = Table([0; 512]);

extern "C" {
    /// Bounds of the `.dma` section, 2 MiB aligned (linker script).
    static __dma_start: u8;
    static __dma_end: u8;
}

/// The block descriptor for the 2 MiB block at `base`.
fn block(base: usize, dma: &core::ops::Range<usize>) -> u64 {
    let attributes = if base >= PERIPHERAL_BASE {
        (ATTR_DEVICE << 2) | PXN | UXN
    } else if dma.contains(&base) {
        (ATTR_NORMAL_NC << 2) | INNER_SHAREABLE | PXN | UXN
    } else {
        (ATTR_NORMAL << 2) | INNER_SHAREABLE
    };
    base as u64 | attributes | ACCESS_FLAG | VALID_BLOCK
}

/// Builds the tables and turns on the MMU, the data cache and the instruction cache on core 0.
///
/// # Safety
/// Call once, on core 0, before other cores run and while the MMU is off. The identity map keeps every
/// address the code uses valid across the switch.
pub unsafe fn enable() {
    // SAFETY: single core, MMU off, nothing else references the tables yet (caller's contract).
    let (level1, level2) =
        unsafe { (&mut *core::ptr::addr_of_mut!(LEVEL1), &mut *core::ptr::addr_of_mut!(LEVEL2)) };
    let dma = core::ptr::addr_of!(__dma_start) as usize..core::ptr::addr_of!(__dma_end) as usize;
    for (i, entry) in level2.0.iter_mut().enumerate() {
        *entry = block(i * BLOCK, &dma);
    }
    level1.0[0] = level2.0.as_ptr() as u64 | VALID_TABLE;
    // Above 1 GiB: the ARM local peripherals (0x4000_0000) and nothing else; device memory.
    for (gib, entry) in level1.0.iter_mut().enumerate().take(4).skip(1) {
        *entry = (gib as u64) << 30 | (ATTR_DEVICE << 2) | PXN | UXN | ACCESS_FLAG | VALID_BLOCK;
    }

    // SAFETY: the tables are complete; the caller's contract is this function's.
    unsafe { enable_on_this_core() }
}

/// Turns on the MMU and caches of the calling core with the tables [`enable`] built.
///
/// # Safety
/// [`enable`] has run on core 0; the calling core's MMU is off.
pub unsafe fn enable_on_this_core() {
    let level1 = core::ptr::addr_of!(LEVEL1) as u64;
    MAIR_EL1.set(MAIR);
    TTBR0_EL1.set_baddr(level1);
    TCR_EL1.write(
        TCR_EL1::TBI0::Used
            + TCR_EL1::IPS::Bits_32
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::SH0::Inner
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::EPD0::EnableTTBR0Walks
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::T0SZ.val(32),
    );
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating all EL1 TLB entries before the first walk is always allowed.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb ish", "isb", options(nostack)) };
    SCTLR_EL1.modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable);
    barrier::isb(barrier::SY);
}

/// True when the MMU is on.
pub fn is_enabled() -> bool {
    SCTLR_EL1.matches_all(SCTLR_EL1::M::Enable)
}
