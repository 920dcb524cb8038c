//! A [`Transport`] wrapper that injects faults, in the spirit of smoltcp's `FaultInjector`: it drops,
//! duplicates and reorders datagrams in both directions at seeded random rates. Simulated nodes use
//! it to show the protocol survives a bad network.

#![forbid(unsafe_code)]

use kernels::rng::Rng;

use crate::node::Transport;
use crate::wire::MAX_DATAGRAM;

/// Fault rates, in parts per million of datagrams, applied to each direction separately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Chance a datagram is lost.
    pub drop_ppm: u32,
    /// Chance a datagram is delivered twice.
    pub duplicate_ppm: u32,
    /// Chance a datagram is held back and delivered after the next one.
    pub reorder_ppm: u32,
    /// Seed of the fault pattern.
    pub seed: u64,
}

impl FaultConfig {
    /// True when no fault is configured.
    pub fn is_clean(&self) -> bool {
        self.drop_ppm == 0 && self.duplicate_ppm == 0 && self.reorder_ppm == 0
    }
}

/// Counts of injected faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Datagrams dropped.
    pub dropped: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Datagrams reordered.
    pub reordered: u64,
}

/// One held-back datagram.
struct Held {
    bytes: [u8; MAX_DATAGRAM],
    len: usize,
}

impl Held {
    fn new(bytes: &[u8]) -> Self {
        let mut held = Held { bytes: [0; MAX_DATAGRAM], len: bytes.len().min(MAX_DATAGRAM) };
        held.bytes[..held.len].copy_from_slice(&bytes[..held.len]);
        held
    }
    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Wraps a transport and injects faults in both directions.
pub struct FaultyTransport<T: Transport> {
    inner: T,
    config: FaultConfig,
    rng: Rng,
    held_out: Option<Held>,
    held_in: Option<Held>,
    repeat_in: Option<Held>,
    counts: FaultCounts,
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, config: FaultConfig) -> Self {
        FaultyTransport {
            inner,
            config,
            rng: Rng::new(config.seed),
            held_out: None,
            held_in: None,
            repeat_in: None,
            counts: FaultCounts::default(),
        }
    }

    /// Faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.below(1_000_000) < ppm as u64
    }
}

impl<T: Transport> Transport for FaultyTransport<T> {
    fn send(&mut self, datagram: &[u8]) {
        if self.chance(self.config.drop_ppm) {
            self.counts.dropped += 1;
            return;
        }
        if self.held_out.is_none() && self.chance(self.config.reorder_ppm) {
            self.counts.reordered += 1;
            self.held_out = Some(Held::new(datagram));
            return;
        }
        self.inner.send(datagram);
        if self.chance(self.config.duplicate_ppm) {
            self.counts.duplicated += 1;
            self.inner.send(datagram);
        }
        if let Some(held) = self.held_out.take() {
            self.inner.send(held.bytes());
        }
    }

    fn sending(&mut self) -> bool {
        // A held-back datagram is not waiting for the link: it goes with the next send.
        self.inner.sending()
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        if let Some(repeat) = self.repeat_in.take() {
            buf[..repeat.len].copy_from_slice(repeat.bytes());
            return Some(repeat.len);
        }
        loop {
            let Some(n) = self.inner.recv(buf) else {
                // Nothing new: a held datagram is late, not lost.
                let held = self.held_in.take()?;
                buf[..held.len].copy_from_slice(held.bytes());
                return Some(held.len);
            };
            if self.chance(self.config.drop_ppm) {
                self.counts.dropped += 1;
                continue;
            }
            if self.held_in.is_none() && self.chance(self.config.reorder_ppm) {
                self.counts.reordered += 1;
                self.held_in = Some(Held::new(&buf[..n]));
                continue;
            }
            if self.chance(self.config.duplicate_ppm) {
                self.counts.duplicated += 1;
                self.repeat_in = Some(Held::new(&buf[..n]));
            } else if let Some(held) = self.held_in.take() {
                self.repeat_in = Some(held);
            }
            return Some(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback transport: what is sent is received, in order.
    #[derive(Default)]
    struct Loop {
        queue: heapless::Deque<(u8, usize), 4096>,
    }

    impl Transport for Loop {
        fn send(&mut self, datagram: &[u8]) {
            self.queue.push_back((datagram[0], datagram.len())).unwrap();
        }
        fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
            let (first, len) = self.queue.pop_front()?;
            buf[0] = first;
            Some(len)
        }
    }

    #[test]
    fn faults_happen_at_about_their_rates() {
        let config = FaultConfig { drop_ppm: 50_000, duplicate_ppm: 20_000, reorder_ppm: 30_000, seed: 3 };
        let mut t = FaultyTransport::new(Loop::default(), config);
        let mut received = 0u32;
        let mut out_of_order = 0;
        let mut last = 0u8;
        let mut buf = [0u8; MAX_DATAGRAM];
        for i in 0..2000u32 {
            t.send(&[(i % 251) as u8]);
            while t.recv(&mut buf).is_some() {
                received += 1;
                if buf[0] < last && last - buf[0] < 100 {
                    out_of_order += 1;
                }
                last = buf[0];
            }
        }
        let c = t.counts();
        // Both directions: about 2 x 5% dropped of 2000.
        assert!((120..280).contains(&c.dropped), "{c:?}");
        assert!(c.duplicated > 30 && c.reordered > 50, "{c:?}");
        assert!(out_of_order > 0);
        assert!(received > 1700 && received < 2000, "{received}");
    }

    #[test]
    fn a_clean_config_changes_nothing() {
        let mut t = FaultyTransport::new(Loop::default(), FaultConfig::default());
        let mut buf = [0u8; MAX_DATAGRAM];
        for i in 0..100u8 {
            t.send(&[i]);
            assert_eq!(t.recv(&mut buf), Some(1));
            assert_eq!(buf[0], i);
        }
        assert_eq!(t.counts(), FaultCounts::default());
    }
}
