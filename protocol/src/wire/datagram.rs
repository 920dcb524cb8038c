//! The datagram envelope: header, payload and MAC trailer.

#![forbid(unsafe_code)]

use super::{Field, WireError, MAGIC, MAX_DATAGRAM, VERSION};

mod field {
    use super::Field;
    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const SESSION: Field = 4..8;
    pub const SENDER: Field = 8..10;
    pub const LENGTH: Field = 10..12;
    pub const SEQUENCE: Field = 12..20;
    pub const PAYLOAD: usize = 20;
}

/// Header length in bytes.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// MAC trailer length in bytes.
pub const MAC_LEN: usize = 16;

/// A zero-copy view of a datagram in a byte buffer.
#[derive(Debug, Clone)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Datagram { buffer }
    }

    /// Wraps a buffer after [`check`](Self::check)ing it: every accessor is then in bounds.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let d = Self::new_unchecked(buffer);
        d.check()?;
        Ok(d)
    }

    /// Checks the length against the header and the magic number and version.
    pub fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() > MAX_DATAGRAM {
            return Err(WireError::TooLong);
        }
        if b.len() < HEADER_LEN + MAC_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::MAGIC] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(WireError::BadVersion);
        }
        let total = HEADER_LEN + self.payload_len() + MAC_LEN;
        match b.len().cmp(&total) {
            core::cmp::Ordering::Less => Err(WireError::Truncated),
            core::cmp::Ordering::Greater => Err(WireError::TooLong),
            core::cmp::Ordering::Equal => Ok(()),
        }
    }

    fn u16_at(&self, f: Field) -> u16 {
        u16::from_le_bytes(self.buffer.as_ref()[f].try_into().expect("2-byte field"))
    }

    /// Message kind byte.
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    /// Join token.
    pub fn session(&self) -> u32 {
        u32::from_le_bytes(self.buffer.as_ref()[field::SESSION].try_into().expect("4-byte field"))
    }
    /// Sender id.
    pub fn sender(&self) -> u16 {
        self.u16_at(field::SENDER)
    }
    /// Payload length.
    pub fn payload_len(&self) -> usize {
        self.u16_at(field::LENGTH) as usize
    }
    /// Sequence number.
    pub fn sequence(&self) -> u64 {
        u64::from_le_bytes(self.buffer.as_ref()[field::SEQUENCE].try_into().expect("8-byte field"))
    }
    /// The message body.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..field::PAYLOAD + self.payload_len()]
    }
    /// The bytes the MAC covers: header and payload.
    pub fn authenticated(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::PAYLOAD + self.payload_len()]
    }
    /// The MAC trailer.
    pub fn mac(&self) -> &[u8] {
        let start = field::PAYLOAD + self.payload_len();
        &self.buffer.as_ref()[start..start + MAC_LEN]
    }
    /// The whole datagram.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
    /// The message body, to write into (the length must be set first).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = self.payload_len();
        &mut self.buffer.as_mut()[field::PAYLOAD..field::PAYLOAD + n]
    }
    /// The MAC trailer, to write into.
    pub fn mac_mut(&mut self) -> &mut [u8] {
        let start = field::PAYLOAD + self.payload_len();
        &mut self.buffer.as_mut()[start..start + MAC_LEN]
    }
}

/// The header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message kind.
    pub kind: u8,
    /// Join token (0 in Hello).
    pub session: u32,
    /// Sender id.
    pub sender: u16,
    /// Sequence number.
    pub sequence: u64,
}

impl Header {
    /// Reads the header of a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(d: &Datagram<T>) -> Header {
        Header { kind: d.kind(), session: d.session(), sender: d.sender(), sequence: d.sequence() }
    }

    /// Bytes a datagram with a `payload_len`-byte body takes.
    pub const fn datagram_len(payload_len: usize) -> usize {
        HEADER_LEN + payload_len + MAC_LEN
    }

    /// Writes the header for a `payload_len`-byte body into `buffer` (at least
    /// [`datagram_len`](Self::datagram_len) long); the body and MAC are written afterwards.
    pub fn emit(&self, payload_len: usize, buffer: &mut [u8]) {
        let b = buffer;
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::KIND] = self.kind;
        b[field::SESSION].copy_from_slice(&self.session.to_le_bytes());
        b[field::SENDER].copy_from_slice(&self.sender.to_le_bytes());
        b[field::LENGTH].copy_from_slice(&(payload_len as u16).to_le_bytes());
        b[field::SEQUENCE].copy_from_slice(&self.sequence.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; 40] {
        let mut b = [0u8; 40];
        Header { kind: 7, session: 0xDEAD_BEEF, sender: 3, sequence: 99 }.emit(4, &mut b);
        b[20..24].copy_from_slice(&[1, 2, 3, 4]);
        b
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let d = Datagram::new_checked(&b[..]).unwrap();
        assert_eq!(Header::parse(&d), Header { kind: 7, session: 0xDEAD_BEEF, sender: 3, sequence: 99 });
        assert_eq!(d.payload(), &[1, 2, 3, 4]);
        assert_eq!(d.mac().len(), MAC_LEN);
        assert_eq!(d.authenticated().len(), 24);
    }

    #[test]
    fn malformed_are_refused() {
        let b = sample();
        assert_eq!(Datagram::new_checked(&b[..39]).unwrap_err(), WireError::Truncated);
        assert_eq!(Datagram::new_checked(&b[..10]).unwrap_err(), WireError::Truncated);
        let mut long = [0u8; 41];
        long[..40].copy_from_slice(&b);
        assert_eq!(Datagram::new_checked(&long[..]).unwrap_err(), WireError::TooLong);
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Datagram::new_checked(&bad[..]).unwrap_err(), WireError::BadMagic);
        let mut bad = b;
        bad[2] = 9;
        assert_eq!(Datagram::new_checked(&bad[..]).unwrap_err(), WireError::BadVersion);
        assert_eq!(Datagram::new_checked(&[0u8; 1500][..]).unwrap_err(), WireError::TooLong);
    }
}
