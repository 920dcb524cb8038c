//! The link test: what a node runs instead of training when its firmware is built for it (feature
//! `link-test`), so that `pitrain qemu link-test` can check the whole network path datagram by
//! datagram (DWC2, hub, USB NIC, smoltcp, UDP) and measure its throughput and its cost in guest
//! instructions.
//!
//! The node talks only to its master endpoint, through the same [`NodeNet`](crate::node::NodeNet)
//! and UDP socket as in training. It announces itself with [`Reply::Ready`] until the master speaks,
//! then obeys control datagrams (they start with [`PREFIX`]); every other datagram is data:
//! - in **echo** mode (the start) it is sent back unchanged;
//! - in **sink** mode it is only counted (master-to-node throughput);
//! - [`Control::Source`] makes the node send datagrams of a given size as fast as it can
//!   (node-to-master throughput), each carrying [`source_payload`] so the receiver can check it.
//!
//! [`Control::Report`] answers with the data datagrams, bytes and instructions since the last mode
//! change; [`Control::Stop`] ends the test. The text format is plain ASCII so that a capture reads.

use core::fmt::Write as _;

/// Every control datagram and reply starts with this.
pub const PREFIX: &[u8] = b"pitrain-link:";
/// How often the node repeats [`Reply::Ready`] until the master answers, microseconds.
pub const READY_INTERVAL_US: u64 = 200_000;
/// The node ends the test after this long without a datagram from the master, microseconds.
pub const IDLE_LIMIT_US: u64 = 120_000_000;
/// The largest control datagram or reply.
pub const MAX_CONTROL: usize = 128;

/// What the master asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Send every data datagram back; resets the counts.
    Echo,
    /// Count data datagrams without answering; resets the counts.
    Sink,
    /// Send `count` datagrams of `size` bytes, then [`Reply::Sent`]; resets the counts first.
    Source {
        /// Datagrams to send.
        count: u32,
        /// Bytes in each, 4 to 1472.
        size: u16,
    },
    /// Answer with [`Reply::Report`].
    Report,
    /// End the test (answered with [`Reply::Bye`]).
    Stop,
}

/// What the node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The node is up and waiting (repeated until the master speaks).
    Ready,
    /// A mode change was done.
    Ok,
    /// A [`Control::Source`] run is over: this many datagrams were queued.
    Sent(u32),
    /// Counts since the last mode change.
    Report(Counts),
    /// The test is over.
    Bye,
    /// The control datagram was not understood.
    Refused,
}

/// Data datagrams, their bytes and the instructions the node executed (its PMU count) since the
/// last mode change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Data datagrams received (echo, sink) or sent (source).
    pub datagrams: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Instructions (cycles on a board) spent since the mode change.
    pub instructions: u64,
    /// The part of `instructions` spent waiting for the USB controller to move data.
    pub waiting: u64,
}

/// The smallest and largest [`Control::Source`] datagram: the sequence number must fit, and one
/// datagram must fit one 1500-byte frame without fragmentation.
pub const SOURCE_SIZES: core::ops::RangeInclusive<u16> = 4..=1472;

fn words(datagram: &[u8]) -> Option<core::str::SplitAsciiWhitespace<'_>> {
    let text = core::str::from_utf8(datagram.strip_prefix(PREFIX)?).ok()?;
    Some(text.split_ascii_whitespace())
}

fn number<T: core::str::FromStr>(word: Option<&str>) -> Option<T> {
    word?.parse().ok()
}

/// A writer into a byte slice that fails instead of overflowing.
struct Cursor<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn write_with(buf: &mut [u8], f: impl FnOnce(&mut Cursor<'_>) -> core::fmt::Result) -> usize {
    let mut cursor = Cursor { buf, len: 0 };
    let prefix = core::str::from_utf8(PREFIX).expect("ASCII");
    match cursor.write_str(prefix).and_then(|()| f(&mut cursor)) {
        Ok(()) => cursor.len,
        Err(_) => 0,
    }
}

impl Control {
    /// Parses a control datagram; `None` for data or anything malformed.
    pub fn parse(datagram: &[u8]) -> Option<Control> {
        let mut w = words(datagram)?;
        let control = match w.next()? {
            "echo" => Control::Echo,
            "sink" => Control::Sink,
            "source" => {
                let count = number(w.next())?;
                let size = number(w.next())?;
                SOURCE_SIZES.contains(&size).then_some(Control::Source { count, size })?
            }
            "report" => Control::Report,
            "stop" => Control::Stop,
            _ => return None,
        };
        w.next().is_none().then_some(control)
    }

    /// Writes it into `buf`; returns the length (0 if `buf` is too small: use [`MAX_CONTROL`]).
    pub fn write(&self, buf: &mut [u8]) -> usize {
        write_with(buf, |c| match *self {
            Control::Echo => c.write_str("echo"),
            Control::Sink => c.write_str("sink"),
            Control::Source { count, size } => write!(c, "source {count} {size}"),
            Control::Report => c.write_str("report"),
            Control::Stop => c.write_str("stop"),
        })
    }
}

impl Reply {
    /// Parses a reply; `None` for data or anything malformed.
    pub fn parse(datagram: &[u8]) -> Option<Reply> {
        let mut w = words(datagram)?;
        let reply = match w.next()? {
            "ready" => Reply::Ready,
            "ok" => Reply::Ok,
            "sent" => Reply::Sent(number(w.next())?),
            "report" => Reply::Report(Counts {
                datagrams: number(w.next())?,
                bytes: number(w.next())?,
                instructions: number(w.next())?,
                waiting: number(w.next())?,
            }),
            "bye" => Reply::Bye,
            "refused" => Reply::Refused,
            _ => return None,
        };
        w.next().is_none().then_some(reply)
    }

    /// Writes it into `buf`; returns the length (0 if `buf` is too small: use [`MAX_CONTROL`]).
    pub fn write(&self, buf: &mut [u8]) -> usize {
        write_with(buf, |c| match *self {
            Reply::Ready => c.write_str("ready"),
            Reply::Ok => c.write_str("ok"),
            Reply::Sent(n) => write!(c, "sent {n}"),
            Reply::Report(n) => {
                write!(c, "report {} {} {} {}", n.datagrams, n.bytes, n.instructions, n.waiting)
            }
            Reply::Bye => c.write_str("bye"),
            Reply::Refused => c.write_str("refused"),
        })
    }
}

/// Fills `buf` with source datagram number `seq`: its sequence number (little-endian u32), then
/// bytes that depend on both the sequence number and their position, so that a lost, repeated,
/// truncated or corrupted datagram is noticed.
pub fn source_payload(seq: u32, buf: &mut [u8]) {
    let (head, rest) = buf.split_at_mut(4.min(buf.len()));
    head.copy_from_slice(&seq.to_le_bytes()[..head.len()]);
    for (i, b) in rest.iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
}

/// What the node needs from its network and its platform.
pub trait Link {
    /// Moves frames (the stack's poll).
    fn poll(&mut self);
    /// Queues a datagram to the master; `false` when the send buffer is full.
    fn try_send(&mut self, datagram: &[u8]) -> bool;
    /// The next datagram from the master.
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Microseconds, monotonic.
    fn now_us(&self) -> u64;
    /// Instructions executed so far (the PMU count), for the cost figures.
    fn instructions(&self) -> u64;
    /// The part of [`instructions`](Link::instructions) spent waiting for the hardware to move
    /// data (0 where that is not measured).
    fn waiting(&self) -> u64;
}

/// How the test ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams received from the master, control included.
    pub received: u64,
    /// Datagrams sent to the master, replies included.
    pub sent: u64,
    /// The master said stop (else the test ended for silence).
    pub stopped: bool,
    /// Datagrams that could not be sent because the send buffer stayed full for [`SEND_PATIENCE_US`].
    pub send_failures: u64,
}

/// Data handling between mode changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Echo,
    Sink,
}

/// How long a send may wait for room in the socket's buffer before it is counted as failed.
pub const SEND_PATIENCE_US: u64 = 10_000_000;

/// Sends and waits (polling) while the buffer is full, up to [`SEND_PATIENCE_US`].
fn send<L: Link>(link: &mut L, datagram: &[u8], summary: &mut Summary) {
    let start = link.now_us();
    while !link.try_send(datagram) {
        link.poll();
        if link.now_us().wrapping_sub(start) > SEND_PATIENCE_US {
            summary.send_failures += 1;
            return;
        }
    }
    summary.sent += 1;
}

fn reply<L: Link>(link: &mut L, r: Reply, summary: &mut Summary) {
    let mut buf = [0u8; MAX_CONTROL];
    let n = r.write(&mut buf);
    send(link, &buf[..n], summary);
    link.poll();
}

/// Runs the link test until the master says stop or stays silent for [`IDLE_LIMIT_US`]; `buf` must
/// hold the largest datagram (1472 bytes).
pub fn run<L: Link>(link: &mut L, buf: &mut [u8]) -> Summary {
    let mut summary = Summary::default();
    let mut mode = Mode::Echo;
    let mut counts = Counts::default();
    let mut since = (link.instructions(), link.waiting());
    let mut heard = false;
    let mut last_heard = link.now_us();
    let mut last_ready: Option<u64> = None;
    loop {
        link.poll();
        let now = link.now_us();
        if !heard && last_ready.is_none_or(|t| now.wrapping_sub(t) >= READY_INTERVAL_US) {
            reply(link, Reply::Ready, &mut summary);
            last_ready = Some(now);
        }
        let Some(n) = link.recv(buf) else {
            if now.wrapping_sub(last_heard) > IDLE_LIMIT_US {
                return summary;
            }
            continue;
        };
        heard = true;
        last_heard = link.now_us();
        summary.received += 1;
        let datagram = &buf[..n];
        if !datagram.starts_with(PREFIX) {
            counts.datagrams += 1;
            counts.bytes += n as u64;
            if mode == Mode::Echo {
                send(link, &buf[..n], &mut summary);
            }
            continue;
        }
        let reset = |counts: &mut Counts, since: &mut (u64, u64), link: &L| {
            *counts = Counts::default();
            *since = (link.instructions(), link.waiting());
        };
        match Control::parse(datagram) {
            Some(Control::Echo) => {
                mode = Mode::Echo;
                reset(&mut counts, &mut since, link);
                reply(link, Reply::Ok, &mut summary);
            }
            Some(Control::Sink) => {
                mode = Mode::Sink;
                reset(&mut counts, &mut since, link);
                reply(link, Reply::Ok, &mut summary);
            }
            Some(Control::Source { count, size }) => {
                reset(&mut counts, &mut since, link);
                let size = size as usize;
                for seq in 0..count {
                    source_payload(seq, &mut buf[..size]);
                    let failures = summary.send_failures;
                    send(link, &buf[..size], &mut summary);
                    if summary.send_failures == failures {
                        counts.datagrams += 1;
                        counts.bytes += size as u64;
                    }
                }
                reply(link, Reply::Sent(counts.datagrams as u32), &mut summary);
            }
            Some(Control::Report) => {
                let report = Counts {
                    instructions: link.instructions().wrapping_sub(since.0),
                    waiting: link.waiting().wrapping_sub(since.1),
                    ..counts
                };
                reply(link, Reply::Report(report), &mut summary);
            }
            Some(Control::Stop) => {
                reply(link, Reply::Bye, &mut summary);
                // Let the goodbye leave before the caller ends the run.
                let start = link.now_us();
                while link.now_us().wrapping_sub(start) < 100_000 {
                    link.poll();
                }
                summary.stopped = true;
                return summary;
            }
            None => reply(link, Reply::Refused, &mut summary),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn controls_and_replies_round_trip() {
        let mut buf = [0u8; MAX_CONTROL];
        for c in [
            Control::Echo,
            Control::Sink,
            Control::Source { count: 4_000_000_000, size: 1472 },
            Control::Report,
            Control::Stop,
        ] {
            let n = c.write(&mut buf);
            assert!(n > PREFIX.len());
            assert_eq!(Control::parse(&buf[..n]), Some(c));
        }
        let big = Counts { datagrams: u64::MAX, bytes: u64::MAX, instructions: u64::MAX, waiting: u64::MAX };
        for r in [Reply::Ready, Reply::Ok, Reply::Sent(7), Reply::Report(big), Reply::Bye, Reply::Refused] {
            let n = r.write(&mut buf);
            assert!(n > 0, "{r:?} fits MAX_CONTROL");
            assert_eq!(Reply::parse(&buf[..n]), Some(r));
        }
        assert_eq!(Reply::Ready.write(&mut [0u8; 8]), 0, "too small a buffer writes nothing");
    }

    #[test]
    fn malformed_controls_are_not_controls() {
        for bad in [
            &b""[..],
            b"echo",
            b"pitrain-link:",
            b"pitrain-link:echo extra",
            b"pitrain-link:source 10",
            b"pitrain-link:source 10 3",
            b"pitrain-link:source 10 1473",
            b"pitrain-link:source -1 64",
            b"pitrain-link:\xff\xfe",
            b"pitrain-link:launch",
        ] {
            assert_eq!(Control::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Reply::parse(b"pitrain-link:report 1 2 3"), None);
    }

    #[test]
    fn source_payloads_differ_by_sequence_and_position() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        source_payload(1, &mut a);
        source_payload(2, &mut b);
        assert_eq!(&a[..4], &1u32.to_le_bytes());
        assert_ne!(a[4..], b[4..]);
        let mut short = [0u8; 2];
        source_payload(0x0102_0304, &mut short);
        assert_eq!(short, [4, 3]);
    }

    /// A link whose master is a script: datagrams queued for the node, everything the node sent.
    struct Scripted {
        to_node: VecDeque<Vec<u8>>,
        from_node: Vec<Vec<u8>>,
        now: u64,
        room: usize,
    }

    impl Link for Scripted {
        fn poll(&mut self) {
            self.now += 10;
            self.room = 4;
        }
        fn try_send(&mut self, datagram: &[u8]) -> bool {
            if self.room == 0 {
                return false;
            }
            self.room -= 1;
            self.from_node.push(datagram.to_vec());
            true
        }
        fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
            let d = self.to_node.pop_front()?;
            buf[..d.len()].copy_from_slice(&d);
            Some(d.len())
        }
        fn now_us(&self) -> u64 {
            self.now
        }
        fn instructions(&self) -> u64 {
            self.now * 3
        }
        fn waiting(&self) -> u64 {
            self.now
        }
    }

    fn control(c: Control) -> Vec<u8> {
        let mut buf = [0u8; MAX_CONTROL];
        let n = c.write(&mut buf);
        buf[..n].to_vec()
    }

    fn replies(sent: &[Vec<u8>]) -> Vec<Reply> {
        sent.iter().filter_map(|d| Reply::parse(d)).collect()
    }

    #[test]
    fn echoes_sinks_sources_reports_and_stops() {
        let data: Vec<u8> = (0..1472u32).map(|i| i as u8).collect();
        let mut link = Scripted {
            to_node: VecDeque::from([
                data[..1].to_vec(),
                data.clone(),
                control(Control::Report),
                control(Control::Sink),
                data[..100].to_vec(),
                control(Control::Report),
                b"pitrain-link:bogus".to_vec(),
                control(Control::Source { count: 10, size: 64 }),
                control(Control::Stop),
            ]),
            from_node: Vec::new(),
            now: 0,
            room: 4,
        };
        let mut buf = [0u8; 1472];
        let summary = run(&mut link, &mut buf);
        assert!(summary.stopped);
        assert_eq!(summary.received, 9);
        assert_eq!(summary.send_failures, 0);
        let sent = &link.from_node;
        assert_eq!(Reply::parse(&sent[0]), Some(Reply::Ready));
        assert_eq!(sent[1], data[..1], "echoed intact");
        assert_eq!(sent[2], data, "echoed intact");
        let r = replies(sent);
        let reports: Vec<Counts> =
            r.iter().filter_map(|r| if let Reply::Report(c) = r { Some(*c) } else { None }).collect();
        assert_eq!((reports[0].datagrams, reports[0].bytes), (2, 1473));
        assert!(reports[0].instructions > reports[0].waiting && reports[0].waiting > 0);
        assert_eq!((reports[1].datagrams, reports[1].bytes), (1, 100), "sink counts without answering");
        assert!(r.contains(&Reply::Refused));
        let sourced: Vec<&Vec<u8>> =
            sent.iter().filter(|d| d.len() == 64 && !d.starts_with(PREFIX)).collect();
        assert_eq!(sourced.len(), 10);
        let mut expected = [0u8; 64];
        source_payload(9, &mut expected);
        assert_eq!(sourced[9][..], expected[..]);
        assert!(r.contains(&Reply::Sent(10)));
        assert_eq!(r.last(), Some(&Reply::Bye));
    }

    #[test]
    fn silence_ends_the_test_and_ready_repeats_until_then() {
        let mut link = Scripted { to_node: VecDeque::new(), from_node: Vec::new(), now: 0, room: 4 };
        let mut buf = [0u8; 1472];
        let summary = run(&mut link, &mut buf);
        assert!(!summary.stopped);
        assert!(link.now > IDLE_LIMIT_US);
        let readies = replies(&link.from_node).iter().filter(|r| **r == Reply::Ready).count() as u64;
        assert_eq!(readies, IDLE_LIMIT_US / READY_INTERVAL_US + 1);
    }
}
