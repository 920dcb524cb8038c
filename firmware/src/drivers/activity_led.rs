//! The green activity (ACT) LED, as an `embedded_hal` output pin. Where it is wired depends on the
//! board (the Raspberry Pi device trees, bcm2837-rpi-3-*.dts): on a Pi 3B+ and 3A+ it is GPIO 29,
//! active high; on a Pi 3B the SoC's lines ran out, so it hangs off the GPU firmware's GPIO
//! expander (line 2, numbered 130 in the firmware's GPIO space), reached through the mailbox.

use core::fmt;

use super::gpio::{Function, Gpio, Pin};
use super::mailbox::{BoardRevision, Mailbox, MailboxError};

/// GPIO line of the LED on a Pi 3B+ and 3A+.
const DIRECT_LINE: u8 = 29;
/// The firmware numbers its expander lines from 128; the LED is expander line 2.
const EXPANDER_LINE: u32 = 128 + 2;

/// Why the LED cannot be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedError {
    /// This board has no activity LED this driver knows of.
    UnknownBoard(BoardRevision),
    /// The firmware did not switch the expander line (QEMU does not implement the tag).
    Mailbox(MailboxError),
}

impl fmt::Display for LedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedError::UnknownBoard(revision) => write!(f, "no known activity LED on board {revision}"),
            LedError::Mailbox(error) => write!(f, "{error}"),
        }
    }
}

impl embedded_hal::digital::Error for LedError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

/// The activity LED, wired as the board revision says.
pub struct ActivityLed<'a> {
    wiring: Wiring<'a>,
}

enum Wiring<'a> {
    Direct(Pin),
    Expander(&'a mut Mailbox),
}

impl<'a> ActivityLed<'a> {
    /// The LED of the board with `revision`: a GPIO output (configured here) or the firmware's
    /// expander line through `mailbox`.
    pub fn new(revision: BoardRevision, gpio: &Gpio, mailbox: &'a mut Mailbox) -> Result<Self, LedError> {
        let wiring = match revision.board_type() {
            Some(BoardRevision::TYPE_3B_PLUS | BoardRevision::TYPE_3A_PLUS) => {
                let mut pin = gpio.pin(DIRECT_LINE).ok_or(LedError::UnknownBoard(revision))?;
                pin.set_function(Function::Output);
                Wiring::Direct(pin)
            }
            Some(BoardRevision::TYPE_3B) => Wiring::Expander(mailbox),
            _ => return Err(LedError::UnknownBoard(revision)),
        };
        Ok(ActivityLed { wiring })
    }

    fn set(&mut self, on: bool) -> Result<(), LedError> {
        match &mut self.wiring {
            Wiring::Direct(pin) => {
                pin.set_level(on);
                Ok(())
            }
            Wiring::Expander(mailbox) => {
                mailbox.set_firmware_gpio(EXPANDER_LINE, on).map_err(LedError::Mailbox)
            }
        }
    }
}

impl embedded_hal::digital::ErrorType for ActivityLed<'_> {
    type Error = LedError;
}

impl embedded_hal::digital::OutputPin for ActivityLed<'_> {
    fn set_low(&mut self) -> Result<(), LedError> {
        self.set(false)
    }

    fn set_high(&mut self) -> Result<(), LedError> {
        self.set(true)
    }
}
