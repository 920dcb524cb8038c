//! Authentication and replay protection.
//!
//! Every datagram ends in the first 16 bytes of HMAC-SHA256 (RustCrypto's `hmac` and `sha2`, both
//! `no_std`) over its header and body, under the 32-byte cluster key. A receiver keeps, per peer and
//! join token, the highest sequence number it accepted and a 64-entry window below it (as IPsec does),
//! so a datagram is accepted at most once even when the network reorders.

#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::{Datagram, Header, Message, WireError, MAC_LEN};

/// The per-cluster secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; 32]);

impl core::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    fn mac(&self, bytes: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Writes a complete datagram (header, body, MAC) into `out`; returns its length.
    pub fn seal(&self, header: &Header, message: &Message<'_>, out: &mut [u8]) -> Result<usize, WireError> {
        let body_len = message.len();
        let total = Header::datagram_len(body_len);
        if out.len() < total {
            return Err(WireError::TooLong);
        }
        header.emit(body_len, out);
        let mut d = Datagram::new_unchecked(&mut out[..total]);
        message.emit(d.payload_mut())?;
        let mac = self.mac(d.authenticated());
        d.mac_mut().copy_from_slice(&mac);
        Ok(total)
    }

    /// Checks a received datagram's format and MAC (in constant time) and parses it. Replay is
    /// checked separately, per peer, with a [`ReplayWindow`].
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<(Header, Message<'a>), Rejection> {
        let d = Datagram::new_checked(bytes).map_err(Rejection::Malformed)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(d.authenticated());
        mac.verify_truncated_left(d.mac()).map_err(|_| Rejection::Forged)?;
        let header = Header::parse(&d);
        let body = &bytes[crate::wire::HEADER_LEN..crate::wire::HEADER_LEN + d.payload_len()];
        let message = Message::parse(header.kind, body).map_err(Rejection::Malformed)?;
        Ok((header, message))
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// It does not parse.
    Malformed(WireError),
    /// Its MAC is wrong: not from a holder of the cluster key, or altered.
    Forged,
    /// Already accepted once, or too old to tell.
    Replayed,
    /// Authentic but for another session, peer or state.
    Unexpected,
}

/// Counts of dropped datagrams, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts {
    /// Did not parse.
    pub malformed: u64,
    /// Failed authentication.
    pub forged: u64,
    /// Replays.
    pub replayed: u64,
    /// Out of place.
    pub unexpected: u64,
}

impl RejectCounts {
    /// Counts one rejection.
    pub fn count(&mut self, r: Rejection) {
        match r {
            Rejection::Malformed(_) => self.malformed += 1,
            Rejection::Forged => self.forged += 1,
            Rejection::Replayed => self.replayed += 1,
            Rejection::Unexpected => self.unexpected += 1,
        }
    }
    /// All rejections.
    pub fn total(&self) -> u64 {
        self.malformed + self.forged + self.replayed + self.unexpected
    }
}

/// Sliding anti-replay window over sequence numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest accepted sequence number (0: none yet; senders start at 1).
    highest: u64,
    /// Bit i set: `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Width of the window below the highest number.
    pub const WIDTH: u64 = 64;

    /// Accepts `seq` if it was never accepted and is not older than the window; records it.
    pub fn accept(&mut self, seq: u64) -> Result<(), Rejection> {
        if seq == 0 {
            return Err(Rejection::Replayed);
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= Self::WIDTH { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
            return Ok(());
        }
        let age = self.highest - seq;
        if age >= Self::WIDTH || self.seen & (1 << age) != 0 {
            return Err(Rejection::Replayed);
        }
        self.seen |= 1 << age;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Kind, MAX_DATAGRAM};

    const KEY: ClusterKey = ClusterKey([7; 32]);

    fn sealed(seq: u64) -> ([u8; MAX_DATAGRAM], usize) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let header = Header { kind: Kind::Ack as u8, session: 5, sender: 2, sequence: seq };
        let n = KEY.seal(&header, &Message::Ack { transfer: 9 }, &mut buf).unwrap();
        (buf, n)
    }

    #[test]
    fn sealed_datagrams_open() {
        let (buf, n) = sealed(1);
        let (h, m) = KEY.open(&buf[..n]).unwrap();
        assert_eq!((h.sender, h.session, h.sequence), (2, 5, 1));
        assert_eq!(m, Message::Ack { transfer: 9 });
    }

    #[test]
    fn forged_and_altered_datagrams_are_refused() {
        let (buf, n) = sealed(1);
        assert_eq!(ClusterKey([8; 32]).open(&buf[..n]).unwrap_err(), Rejection::Forged);
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 0x01;
            let r = KEY.open(&bad[..n]).unwrap_err();
            assert!(matches!(r, Rejection::Forged | Rejection::Malformed(_)), "byte {i}: {r:?}");
        }
    }

    #[test]
    fn window_accepts_each_number_once_in_any_order() {
        let mut w = ReplayWindow::default();
        for seq in [5u64, 3, 4, 1, 2, 10, 7] {
            w.accept(seq).unwrap();
        }
        for seq in [5u64, 3, 10, 7, 0] {
            assert_eq!(w.accept(seq), Err(Rejection::Replayed));
        }
        w.accept(200).unwrap();
        assert_eq!(w.accept(136), Err(Rejection::Replayed)); // older than the window
        w.accept(137).unwrap();
    }
}
