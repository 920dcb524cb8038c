//! The VideoCore mailbox's property channel (8): how the ARM asks the GPU firmware about the board
//! (model, revision, MAC address, serial, memory split, clock rates) and asks it to switch power
//! domains and its own GPIO expander lines. Register layout, message format and tag numbers from the
//! Raspberry Pi firmware wiki ("Mailboxes", "Mailbox property interface"); QEMU's
//! hw/misc/bcm2835_mbox.c and bcm2835_property.c model the same interface.
//!
//! A request is one buffer in RAM: its size, a request code, tags (id, value buffer size, request
//! or response indicator, values) and an end tag. The ARM writes the buffer's bus address, ORed
//! with the channel, to mailbox 1; the firmware overwrites the buffer with its answers and posts
//! the same word to mailbox 0.

use core::fmt;

use aarch64_cpu::asm::barrier;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

use crate::arch::aarch64::timer::GenericTimer;
use crate::bsp::rpi3::bus_address;

register_bitfields! {
    u32,
    /// Mailbox status.
    STATUS [
        /// No room for another word.
        FULL OFFSET(31) NUMBITS(1) [],
        /// Nothing to read.
        EMPTY OFFSET(30) NUMBITS(1) []
    ]
}

register_structs! {
    Registers {
        // Mailbox 0 carries the GPU's answers to the ARM, mailbox 1 the ARM's requests.
        (0x00 => read: ReadOnly<u32>),
        (0x04 => _reserved0),
        (0x18 => read_status: ReadOnly<u32, STATUS::Register>),
        (0x1c => _reserved1),
        (0x20 => write: WriteOnly<u32>),
        (0x24 => _reserved2),
        (0x38 => write_status: ReadOnly<u32, STATUS::Register>),
        (0x3c => @END),
    }
}

/// The property channel (ARM to VideoCore).
const PROPERTY_CHANNEL: u32 = 8;
/// Buffer request code, and the code of a buffer the firmware handled.
const REQUEST: u32 = 0;
const RESPONSE_SUCCESS: u32 = 0x8000_0000;
/// Set in a tag's indicator word when the firmware has written its answer.
const TAG_RESPONSE: u32 = 1 << 31;
/// Linux allows the firmware a second; power-on with the wait bit is the slowest request.
const TIMEOUT_US: u64 = 1_000_000;

/// Words in the property buffer: ample for the single-tag requests this driver makes.
const BUFFER_WORDS: usize = 64;
/// Words around a tag's values: buffer size, request code, tag id, value size, indicator, end tag.
const OVERHEAD_WORDS: usize = 6;

/// The property buffer. The mailbox word keeps only address bits 31:4, so 16-byte alignment.
#[repr(C, align(16))]
struct PropertyBuffer([u32; BUFFER_WORDS]);

/// The one property buffer. It lives in `.dma`, which the MMU maps non-cacheable, so the GPU (which
/// does not snoop the ARM caches) sees what the ARM wrote, and vice versa, without cache
/// maintenance. Only [`Mailbox`] touches it.
#[link_section = ".dma"]
static mut PROPERTY_BUFFER: PropertyBuffer = PropertyBuffer([0; BUFFER_WORDS]);

/// Tags this driver sends.
mod tag {
    pub const GET_BOARD_MODEL: u32 = 0x0001_0001;
    pub const GET_BOARD_REVISION: u32 = 0x0001_0002;
    pub const GET_BOARD_MAC_ADDRESS: u32 = 0x0001_0003;
    pub const GET_BOARD_SERIAL: u32 = 0x0001_0004;
    pub const GET_ARM_MEMORY: u32 = 0x0001_0005;
    pub const SET_POWER_STATE: u32 = 0x0002_8001;
    pub const GET_CLOCK_RATE: u32 = 0x0003_0002;
    pub const SET_GPIO_STATE: u32 = 0x0003_8041;
}

/// Why a property request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxError {
    /// Mailbox 1 stayed full, or no answer came, within the timeout.
    Timeout,
    /// The firmware did not handle the buffer: its response code (0x8000_0001 is a parse error).
    Response(u32),
    /// The firmware left the tag unanswered: it does not know the tag. (QEMU marks unknown tags
    /// answered with zero bytes, which is reported the same way.)
    TagNotAnswered {
        /// The tag.
        tag: u32,
    },
    /// The answer is shorter than the tag's values, or longer than the buffer sent for it.
    Truncated {
        /// The tag.
        tag: u32,
        /// Bytes the firmware answered (or wanted to).
        length: u32,
        /// Bytes expected.
        expected: u32,
    },
    /// The firmware answered but refused: the status or state word it returned.
    Refused {
        /// The tag.
        tag: u32,
        /// What the firmware returned.
        status: u32,
    },
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MailboxError::Timeout => write!(f, "the mailbox timed out"),
            MailboxError::Response(code) => write!(f, "the firmware rejected the request (code {code:#x})"),
            MailboxError::TagNotAnswered { tag } => write!(f, "the firmware does not answer tag {tag:#010x}"),
            MailboxError::Truncated { tag, length, expected } => {
                write!(f, "tag {tag:#010x} answered {length} bytes, expected {expected}")
            }
            MailboxError::Refused { tag, status } => {
                write!(f, "the firmware refused tag {tag:#010x} (status {status:#x})")
            }
        }
    }
}

/// A board revision code. New-style codes (bit 23 set) pack fields: revision (3:0), type (11:4),
/// processor (15:12), manufacturer (19:16), memory size (22:20); old-style codes are all Pi 1
/// boards. Field meanings from the Raspberry Pi documentation ("Raspberry Pi revision codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardRevision(pub u32);

impl BoardRevision {
    /// Board type of a Pi 3 Model B.
    pub const TYPE_3B: u8 = 0x08;
    /// Board type of a Pi 3 Model B+.
    pub const TYPE_3B_PLUS: u8 = 0x0D;
    /// Board type of a Pi 3 Model A+.
    pub const TYPE_3A_PLUS: u8 = 0x0E;

    /// The board type, for new-style codes.
    pub fn board_type(self) -> Option<u8> {
        (self.0 & 1 << 23 != 0).then_some((self.0 >> 4) as u8)
    }

    /// The model's name ("3B", "3B+", ...), or "unknown".
    pub fn model_name(self) -> &'static str {
        let Some(board_type) = self.board_type() else { return "1 (old-style code)" };
        match board_type {
            0x00 => "1A",
            0x01 => "1B",
            0x02 => "1A+",
            0x03 => "1B+",
            0x04 => "2B",
            0x06 => "CM1",
            Self::TYPE_3B => "3B",
            0x09 => "Zero",
            0x0A => "CM3",
            0x0C => "Zero W",
            Self::TYPE_3B_PLUS => "3B+",
            Self::TYPE_3A_PLUS => "3A+",
            0x10 => "CM3+",
            0x11 => "4B",
            0x12 => "Zero 2 W",
            0x13 => "400",
            0x14 => "CM4",
            _ => "unknown",
        }
    }

    /// RAM size in MiB, for new-style codes.
    pub fn memory_mib(self) -> Option<u32> {
        self.board_type().map(|_| 256 << ((self.0 >> 20) & 7))
    }
}

impl fmt::Display for BoardRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} (Pi {}", self.0, self.model_name())?;
        if let Some(mib) = self.memory_mib() {
            write!(f, ", {mib} MiB")?;
        }
        write!(f, ")")
    }
}

/// A 48-bit MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A block of ARM physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    /// First address.
    pub base: u32,
    /// Size in bytes.
    pub size: u32,
}

impl fmt::Display for MemoryRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}+{:#010x}", self.base, self.size)
    }
}

/// Clocks the firmware reports (clock ids of the property interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(dead_code, reason = "the firmware so far reports the ARM, core and UART clocks")]
pub enum Clock {
    /// The EMMC (SD card) controller.
    Emmc = 1,
    /// The PL011's reference clock.
    Uart = 2,
    /// The ARM cores.
    Arm = 3,
    /// The VPU core clock, which also clocks the mini UART and most peripherals.
    Core = 4,
}

/// Power domains the firmware switches (device ids of the property interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(dead_code, reason = "only the USB controller is switched so far")]
pub enum PowerDevice {
    /// The SD card.
    SdCard = 0,
    /// The USB host controller (DWC2); the Ethernet chip hangs off it.
    UsbHcd = 3,
}

/// The property channel of the mailbox, with its buffer.
pub struct Mailbox {
    registers: &'static Registers,
}

impl Mailbox {
    /// # Safety
    /// `base` must be the ARM mailbox block (mapped as device memory, or with the MMU off), no other
    /// code may use the mailbox, and at most one `Mailbox` may exist at a time: it owns the property
    /// buffer.
    pub const unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` points at the mailbox registers for 'static.
        Mailbox { registers: unsafe { &*(base as *const Registers) } }
    }

    /// The board model (0 on current firmware, and in QEMU, which does not implement the tag; the
    /// revision identifies the board).
    pub fn board_model(&mut self) -> Result<u32, MailboxError> {
        Ok(self.property(tag::GET_BOARD_MODEL, [0], 4)?[0])
    }

    /// The board revision code.
    pub fn board_revision(&mut self) -> Result<BoardRevision, MailboxError> {
        Ok(BoardRevision(self.property(tag::GET_BOARD_REVISION, [0], 4)?[0]))
    }

    /// The board's MAC address (on a real board that of its Ethernet chip; QEMU answers
    /// 52:54:00:12:34:56 in every instance).
    pub fn mac_address(&mut self) -> Result<MacAddress, MailboxError> {
        let [low, high] = self.property(tag::GET_BOARD_MAC_ADDRESS, [0, 0], 6)?;
        let (low, high) = (low.to_le_bytes(), high.to_le_bytes());
        Ok(MacAddress([low[0], low[1], low[2], low[3], high[0], high[1]]))
    }

    /// The board's serial number (QEMU answers without writing one, which reads as 0).
    pub fn board_serial(&mut self) -> Result<u64, MailboxError> {
        let [low, high] = self.property(tag::GET_BOARD_SERIAL, [0, 0], 8)?;
        Ok((high as u64) << 32 | low as u64)
    }

    /// The RAM the GPU leaves to the ARM.
    pub fn arm_memory(&mut self) -> Result<MemoryRange, MailboxError> {
        let [base, size] = self.property(tag::GET_ARM_MEMORY, [0, 0], 8)?;
        Ok(MemoryRange { base, size })
    }

    /// A clock's current rate in Hz (0 if the board has no such clock).
    pub fn clock_rate(&mut self, clock: Clock) -> Result<u32, MailboxError> {
        Ok(self.property(tag::GET_CLOCK_RATE, [clock as u32, 0], 8)?[1])
    }

    /// Switches a power domain on or off; with `wait`, the firmware answers only once the domain
    /// is stable. Returns whether the domain is now on.
    pub fn set_power_state(
        &mut self,
        device: PowerDevice,
        on: bool,
        wait: bool,
    ) -> Result<bool, MailboxError> {
        let request = on as u32 | (wait as u32) << 1;
        let [_, state] = self.property(tag::SET_POWER_STATE, [device as u32, request], 8)?;
        // Bit 1 of the answer: no such device.
        if state & 2 != 0 {
            return Err(MailboxError::Refused { tag: tag::SET_POWER_STATE, status: state });
        }
        Ok(state & 1 != 0)
    }

    /// Drives a line of the GPU firmware's GPIO expander (lines 128 and up, such as the Pi 3B's
    /// activity LED). QEMU does not implement this tag.
    pub fn set_firmware_gpio(&mut self, line: u32, high: bool) -> Result<(), MailboxError> {
        // The firmware overwrites the line number with a status: 0 when it did it.
        let [status, _] = self.property(tag::SET_GPIO_STATE, [line, high as u32], 4)?;
        if status != 0 {
            return Err(MailboxError::Refused { tag: tag::SET_GPIO_STATE, status });
        }
        Ok(())
    }

    /// Sends one tag with `values` (N words, also the room for the answer) and returns the value
    /// words the firmware wrote back, once it has answered with at least `answer_bytes`.
    fn property<const N: usize>(
        &mut self,
        tag: u32,
        values: [u32; N],
        answer_bytes: u32,
    ) -> Result<[u32; N], MailboxError> {
        const { assert!(N + OVERHEAD_WORDS <= BUFFER_WORDS) };
        let value_bytes = 4 * N as u32;
        self.put(0, 4 * (N + OVERHEAD_WORDS) as u32);
        self.put(1, REQUEST);
        self.put(2, tag);
        self.put(3, value_bytes);
        self.put(4, 0);
        for (i, value) in values.into_iter().enumerate() {
            self.put(5 + i, value);
        }
        self.put(5 + N, 0);
        self.exchange()?;

        let code = self.get(1);
        if code != RESPONSE_SUCCESS {
            return Err(MailboxError::Response(code));
        }
        let indicator = self.get(4);
        let length = indicator & !TAG_RESPONSE;
        if indicator & TAG_RESPONSE == 0 || (length == 0 && answer_bytes > 0) {
            return Err(MailboxError::TagNotAnswered { tag });
        }
        if length < answer_bytes || length > value_bytes {
            return Err(MailboxError::Truncated { tag, length, expected: answer_bytes });
        }
        Ok(core::array::from_fn(|i| self.get(5 + i)))
    }

    /// Posts the buffer on the property channel and waits for the firmware to hand it back.
    fn exchange(&mut self) -> Result<(), MailboxError> {
        let message = bus_address(core::ptr::addr_of!(PROPERTY_BUFFER) as usize) | PROPERTY_CHANNEL;
        let timer = GenericTimer::new();
        let start = timer.now_us();
        let timed_out = || timer.now_us().wrapping_sub(start) > TIMEOUT_US;
        while self.registers.write_status.is_set(STATUS::FULL) {
            if timed_out() {
                return Err(MailboxError::Timeout);
            }
            core::hint::spin_loop();
        }
        // The buffer writes (normal memory) must reach RAM before the GPU sees the device write.
        barrier::dsb(barrier::SY);
        self.registers.write.set(message);
        loop {
            if timed_out() {
                return Err(MailboxError::Timeout);
            }
            if self.registers.read_status.is_set(STATUS::EMPTY) {
                core::hint::spin_loop();
                continue;
            }
            // Answers on other channels are not ours to keep: nothing else uses the mailbox.
            if self.registers.read.get() == message {
                // And the firmware's answer must not be read from before its mailbox word.
                barrier::dsb(barrier::SY);
                return Ok(());
            }
        }
    }

    /// Word `index` of the buffer; `property` only asks for words below `OVERHEAD_WORDS + N`, which
    /// it checks at compile time to fit.
    fn word(index: usize) -> *mut u32 {
        debug_assert!(index < BUFFER_WORDS);
        core::ptr::addr_of_mut!(PROPERTY_BUFFER).cast::<u32>().wrapping_add(index)
    }

    fn put(&mut self, index: usize, value: u32) {
        // SAFETY: the word is inside the buffer (see `word`), the buffer belongs to this `Mailbox`
        // alone (see `new`), and the access is volatile because the GPU reads it.
        unsafe { Self::word(index).write_volatile(value) }
    }

    fn get(&self, index: usize) -> u32 {
        // SAFETY: as in `put`; volatile because the GPU wrote it.
        unsafe { Self::word(index).read_volatile() }
    }
}
