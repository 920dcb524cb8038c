//! BCM2837 GPIO controller: 54 lines, each an input, an output or one of six alternate functions,
//! with optional pull-up or pull-down. Register map and the pull sequence from the BCM2835 ARM
//! Peripherals manual, chapter 6 (the BCM2837 has the same block); pins are
//! `embedded_hal::digital` pins.

use core::convert::Infallible;

use embedded_hal::delay::DelayNs;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

use crate::arch::aarch64::timer::GenericTimer;

register_bitfields! {
    u32,
    /// Pull-up/down control, applied to the lines then clocked in through GPPUDCLK.
    GPPUD [
        PUD OFFSET(0) NUMBITS(2) [Off = 0, Down = 1, Up = 2]
    ]
}

register_structs! {
    Registers {
        // Three bits per line, ten lines per register.
        (0x00 => fsel: [ReadWrite<u32>; 6]),
        (0x18 => _reserved0),
        // One bit per line, 32 lines per register; writing 0 bits leaves those lines alone.
        (0x1c => set: [WriteOnly<u32>; 2]),
        (0x24 => _reserved1),
        (0x28 => clear: [WriteOnly<u32>; 2]),
        (0x30 => _reserved2),
        (0x34 => level: [ReadOnly<u32>; 2]),
        (0x3c => _reserved3),
        (0x94 => pud: ReadWrite<u32, GPPUD::Register>),
        (0x98 => pud_clock: [ReadWrite<u32>; 2]),
        (0xa0 => @END),
    }
}

/// What a line does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code, reason = "the whole function select; the firmware so far uses Output and Alt0")]
pub enum Function {
    /// A digital input.
    Input,
    /// A digital output.
    Output,
    /// Alternate function 0 (e.g. the PL011 on lines 14 and 15).
    Alt0,
    /// Alternate function 1.
    Alt1,
    /// Alternate function 2.
    Alt2,
    /// Alternate function 3.
    Alt3,
    /// Alternate function 4.
    Alt4,
    /// Alternate function 5 (e.g. the mini UART on lines 14 and 15).
    Alt5,
}

impl Function {
    /// The GPFSEL field value; the alternate functions are not numbered in order.
    fn bits(self) -> u32 {
        match self {
            Function::Input => 0b000,
            Function::Output => 0b001,
            Function::Alt0 => 0b100,
            Function::Alt1 => 0b101,
            Function::Alt2 => 0b110,
            Function::Alt3 => 0b111,
            Function::Alt4 => 0b011,
            Function::Alt5 => 0b010,
        }
    }
}

/// A line's pull resistor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code, reason = "the whole pull control; the firmware so far pulls up or not at all")]
pub enum Pull {
    /// Neither.
    None,
    /// Pull-down.
    Down,
    /// Pull-up.
    Up,
}

/// The GPIO controller.
pub struct Gpio {
    registers: &'static Registers,
}

impl Gpio {
    /// Number of lines.
    pub const LINES: u8 = 54;
    /// The PL011's transmit and receive lines (ALT0).
    const UART0_TX: u8 = 14;
    const UART0_RX: u8 = 15;

    /// # Safety
    /// `base` must be the GPIO controller's register block, mapped as device memory (or with the
    /// MMU off), and no other code may drive it.
    pub const unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` points at the register block for 'static.
        Gpio { registers: unsafe { &*(base as *const Registers) } }
    }

    /// A handle to line `number`, or `None` past the last line. Setting and reading a level touch
    /// only that line; the function select and pull are read-modify-write sequences on state shared
    /// between lines, so configure pins from one core.
    pub fn pin(&self, number: u8) -> Option<Pin> {
        (number < Self::LINES).then_some(Pin { registers: self.registers, number })
    }

    /// Connects the PL011 to lines 14 (TX) and 15 (RX). A real board needs this before the UART
    /// can be heard (unless config.txt already did it); QEMU has no pin muxing, so there it changes
    /// nothing. RX gets a pull-up so an unconnected line idles high instead of reading as a break.
    pub fn route_uart0(&self) {
        for (number, pull) in [(Self::UART0_TX, Pull::None), (Self::UART0_RX, Pull::Up)] {
            let mut pin = Pin { registers: self.registers, number };
            pin.set_pull(pull);
            pin.set_function(Function::Alt0);
        }
    }
}

/// One GPIO line, as an `embedded_hal` input and output pin.
pub struct Pin {
    registers: &'static Registers,
    number: u8,
}

impl Pin {
    /// Selects what the line does.
    pub fn set_function(&mut self, function: Function) {
        let register = &self.registers.fsel[usize::from(self.number / 10)];
        let shift = 3 * u32::from(self.number % 10);
        let value = (register.get() & !(0b111 << shift)) | (function.bits() << shift);
        register.set(value);
    }

    /// Sets the pull resistor. The controller latches the GPPUD setting into the lines whose
    /// GPPUDCLK bit is pulsed, and each step needs 150 cycles to settle; 1 us covers that at any
    /// core clock the Pi runs (and QEMU ignores pulls altogether).
    pub fn set_pull(&mut self, pull: Pull) {
        const SETTLE_NS: u32 = 1_000;
        let mut timer = GenericTimer::new();
        let (bank, bit) = self.bank_bit();
        self.registers.pud.write(match pull {
            Pull::None => GPPUD::PUD::Off,
            Pull::Down => GPPUD::PUD::Down,
            Pull::Up => GPPUD::PUD::Up,
        });
        timer.delay_ns(SETTLE_NS);
        self.registers.pud_clock[bank].set(bit);
        timer.delay_ns(SETTLE_NS);
        self.registers.pud.write(GPPUD::PUD::Off);
        self.registers.pud_clock[bank].set(0);
    }

    /// Drives the line (when it is an output).
    pub fn set_level(&mut self, high: bool) {
        let (bank, bit) = self.bank_bit();
        if high {
            self.registers.set[bank].set(bit);
        } else {
            self.registers.clear[bank].set(bit);
        }
    }

    /// The line's level, whatever its function.
    pub fn level(&self) -> bool {
        let (bank, bit) = self.bank_bit();
        self.registers.level[bank].get() & bit != 0
    }

    fn bank_bit(&self) -> (usize, u32) {
        (usize::from(self.number / 32), 1 << (self.number % 32))
    }
}

impl embedded_hal::digital::ErrorType for Pin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.set_level(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.set_level(true);
        Ok(())
    }
}

impl embedded_hal::digital::InputPin for Pin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.level())
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.level())
    }
}
