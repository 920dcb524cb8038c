//! The datagram format, in the style of smoltcp's `wire` modules: a zero-copy view over a byte buffer
//! (`Datagram<T: AsRef<[u8]>>`, checked on construction), byte ranges in a private `field` module, and
//! `Repr` types with `parse` and `emit` for each message body.
//!
//! Every datagram is
//!
//! ```text
//! offset  size  field
//!      0     2  magic "PT"
//!      2     1  version (2: Hello carries the node's MAC and uptime; version 1 nodes are refused
//!                 as `BadVersion`, so a mixed cluster says why instead of misreading Hellos)
//!      3     1  kind (see Kind)
//!      4     4  session: the join token the master gave this node (0 in Hello)
//!      8     2  sender: node id, or 0xFFFF for the master
//!     10     2  payload length n
//!     12     8  sequence number, strictly increasing per sender and session
//!     20     n  payload
//!   20+n    16  MAC: HMAC-SHA256 under the cluster key of bytes 0..20+n, first 16 bytes
//! ```
//!
//! and fits one 1500-byte Ethernet frame: at most [`MAX_DATAGRAM`] bytes of UDP payload.

#![forbid(unsafe_code)]

mod datagram;
mod message;

pub use datagram::{Datagram, Header, HEADER_LEN, MAC_LEN};
pub use message::*;

/// Protocol version carried in every datagram. 2 added [`Hello::mac`] and [`Hello::uptime_ms`].
pub const VERSION: u8 = 2;
/// The two magic bytes.
pub const MAGIC: [u8; 2] = *b"PT";
/// Sender id of the master.
pub const MASTER_ID: u16 = 0xFFFF;
/// Largest UDP payload in one 1500-byte Ethernet frame (1500 - 20 IPv4 - 8 UDP).
pub const MAX_DATAGRAM: usize = 1472;
/// Largest message body.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN - MAC_LEN;

/// Why a datagram or message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header or than its stated length.
    Truncated,
    /// Longer than one datagram may be, or longer than its stated length.
    TooLong,
    /// Not our magic number.
    BadMagic,
    /// A protocol version this build does not speak.
    BadVersion,
    /// An unknown message kind or enumeration value.
    BadValue,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated datagram",
            WireError::TooLong => "datagram too long",
            WireError::BadMagic => "not a pitrain datagram",
            WireError::BadVersion => "unsupported protocol version",
            WireError::BadValue => "invalid field value",
        })
    }
}

/// A field's byte range.
pub(crate) type Field = core::ops::Range<usize>;

/// Reads fixed-size little-endian integers from a message body, failing on short input.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| WireError::Truncated)?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| WireError::Truncated)?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| WireError::Truncated)?))
    }
    /// The rest of the body.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.bytes
    }
    /// Fails if anything is left.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(WireError::TooLong)
        }
    }
}

/// Writes fixed-size little-endian integers into a message body.
pub(crate) struct Writer<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Writer { bytes, at: 0 }
    }
    pub(crate) fn put(&mut self, v: &[u8]) {
        self.bytes[self.at..self.at + v.len()].copy_from_slice(v);
        self.at += v.len();
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn written(&self) -> usize {
        self.at
    }
}
