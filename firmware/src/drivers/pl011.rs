//! ARM PrimeCell PL011 UART (BCM2837 UART0); register map from the PL011 Technical Reference
//! Manual (DDI 0183), section 3. Text goes out through `core::fmt::Write` (with CR LF line ends),
//! raw bytes both ways through `embedded_io`.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {
    u32,
    /// Data register: a received byte comes with its error flags.
    DR [
        /// Overrun: the receive FIFO was full and a byte was lost.
        OE OFFSET(11) NUMBITS(1) [],
        /// Break: the line was held low for longer than a character.
        BE OFFSET(10) NUMBITS(1) [],
        /// Parity error.
        PE OFFSET(9) NUMBITS(1) [],
        /// Framing error: no valid stop bit.
        FE OFFSET(8) NUMBITS(1) [],
        /// The byte.
        DATA OFFSET(0) NUMBITS(8) []
    ],
    /// Flag register.
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// Busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    /// Line control.
    LCRH [
        /// Word length.
        WLEN OFFSET(5) NUMBITS(2) [EightBit = 0b11],
        /// FIFOs on.
        FEN OFFSET(4) NUMBITS(1) []
    ],
    /// Control.
    CR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    Registers {
        (0x00 => dr: ReadWrite<u32, DR::Register>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x24 => ibrd: WriteOnly<u32>),
        (0x28 => fbrd: WriteOnly<u32>),
        (0x2c => lcrh: WriteOnly<u32, LCRH::Register>),
        (0x30 => cr: WriteOnly<u32, CR::Register>),
        (0x34 => _reserved2),
        (0x44 => icr: WriteOnly<u32>),
        (0x48 => @END),
    }
}

/// What went wrong with a received byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The receive FIFO overflowed: bytes were lost before this one.
    Overrun,
    /// A break condition instead of a byte.
    Break,
    /// A byte with the wrong parity.
    Parity,
    /// A byte without a valid stop bit (e.g. a baud rate mismatch).
    Framing,
}

impl embedded_io::Error for Error {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Error::Overrun => embedded_io::ErrorKind::Other,
            Error::Break | Error::Parity | Error::Framing => embedded_io::ErrorKind::InvalidData,
        }
    }
}

/// The UART.
pub struct Pl011 {
    registers: &'static Registers,
    /// A receive error met after some bytes of a `read` were already taken: reported by the next
    /// `read`, so those bytes are not lost.
    pending_error: Option<Error>,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the address of a PL011's registers, mapped as device memory (or with the MMU
    /// off), and no other code may drive that UART.
    pub const unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` points at the PL011's register block for 'static.
        Pl011 { registers: unsafe { &*(base as *const Registers) }, pending_error: None }
    }

    /// 115200 baud 8N1 with FIFOs, from the 48 MHz UART clock (IBRD 26, FBRD 3). QEMU ignores the
    /// divisor but drops output unless UARTEN and TXE are set.
    pub fn init(&mut self) {
        self.flush();
        self.registers.cr.set(0);
        self.registers.icr.set(0x7ff);
        self.registers.ibrd.set(26);
        self.registers.fbrd.set(3);
        self.registers.lcrh.write(LCRH::WLEN::EightBit + LCRH::FEN::SET);
        self.registers.cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Sends one byte, waiting while the FIFO is full.
    pub fn write_byte(&mut self, byte: u8) {
        while self.registers.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.registers.dr.set(byte as u32);
    }

    /// Waits until everything is on the wire.
    pub fn flush(&mut self) {
        while self.registers.fr.is_set(FR::BUSY) {
            core::hint::spin_loop();
        }
    }

    /// Takes one received byte, if the FIFO holds any.
    fn try_read_byte(&mut self) -> Option<Result<u8, Error>> {
        if self.registers.fr.is_set(FR::RXFE) {
            return None;
        }
        let word = self.registers.dr.extract();
        Some(if word.is_set(DR::OE) {
            Err(Error::Overrun)
        } else if word.is_set(DR::BE) {
            Err(Error::Break)
        } else if word.is_set(DR::PE) {
            Err(Error::Parity)
        } else if word.is_set(DR::FE) {
            Err(Error::Framing)
        } else {
            Ok(word.read(DR::DATA) as u8)
        })
    }
}

impl core::fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

impl embedded_io::ErrorType for Pl011 {
    type Error = Error;
}

/// Bytes go out as they are (no CR before LF, unlike `core::fmt::Write`).
impl embedded_io::Write for Pl011 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        for &b in buf {
            self.write_byte(b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Error> {
        Pl011::flush(self);
        Ok(())
    }
}

/// Waits for at least one byte, then takes what the FIFO holds, up to `buf.len()`.
impl embedded_io::Read for Pl011 {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        let mut count = 0;
        while count < buf.len() {
            match self.try_read_byte() {
                Some(Ok(byte)) => {
                    buf[count] = byte;
                    count += 1;
                }
                Some(Err(error)) if count == 0 => return Err(error),
                Some(Err(error)) => {
                    self.pending_error = Some(error);
                    break;
                }
                None if count == 0 => core::hint::spin_loop(),
                None => break,
            }
        }
        Ok(count)
    }
}

impl embedded_io::ReadReady for Pl011 {
    fn read_ready(&mut self) -> Result<bool, Error> {
        Ok(self.pending_error.is_some() || !self.registers.fr.is_set(FR::RXFE))
    }
}
