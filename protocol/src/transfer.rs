//! Large tensors over datagrams: splitting into chunks, reassembly, and selective repeat.
//!
//! The sender sends every chunk once. The receiver records which arrived in a bitmap; when a transfer
//! stays incomplete it sends a [`Nack`] listing the missing chunks and the sender repeats only those.
//! When it is complete the receiver sends an `Ack`. A sender that hears nothing repeats the last chunk,
//! which tells a receiver that lost everything that the transfer exists. Buffers are the caller's, so
//! the firmware can use static memory.

#![forbid(unsafe_code)]

use crate::wire::{Chunk, Content, Nack, CHUNK_DATA};

/// Number of chunks a transfer of `len` bytes takes (at least one, so that empty transfers exist).
pub const fn chunk_count(len: usize) -> usize {
    if len == 0 {
        1
    } else {
        len.div_ceil(CHUNK_DATA)
    }
}

/// Bytes of bitmap needed for a transfer of `len` bytes.
pub const fn bitmap_len(len: usize) -> usize {
    chunk_count(len).div_ceil(8)
}

/// Largest number of chunks one Nack can list (128 bytes of bitmap).
pub const NACK_SPAN: usize = 1024;

/// The sending side of one transfer: hands out chunks by index.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    /// Transfer id.
    pub transfer: u32,
    /// What it carries.
    pub content: Content,
    /// Training step.
    pub step: u32,
    data: &'a [u8],
}

impl<'a> Outgoing<'a> {
    /// A transfer of `data`.
    pub fn new(transfer: u32, content: Content, step: u32, data: &'a [u8]) -> Self {
        assert!(chunk_count(data.len()) <= u16::MAX as usize, "transfer too large");
        Outgoing { transfer, content, step, data }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u16 {
        chunk_count(self.data.len()) as u16
    }

    /// Chunk `index`.
    pub fn chunk(&self, index: u16) -> Chunk<'a> {
        let start = (index as usize * CHUNK_DATA).min(self.data.len());
        let end = (start + CHUNK_DATA).min(self.data.len());
        Chunk {
            transfer: self.transfer,
            content: self.content,
            step: self.step,
            total_len: self.data.len() as u32,
            index,
            data: &self.data[start..end],
        }
    }

    /// The chunk indices a Nack for this transfer asks for again (at most [`NACK_SPAN`]).
    pub fn requested<'n>(&self, nack: &Nack<'n>) -> impl Iterator<Item = u16> + 'n {
        let count = self.chunks() as usize;
        let base = nack.base as usize;
        let valid = nack.transfer == self.transfer;
        nack.missing
            .iter()
            .enumerate()
            .flat_map(move |(byte, &bits)| {
                (0..8).filter(move |b| bits & (1 << b) != 0).map(move |b| base + byte * 8 + b)
            })
            .filter(move |&i| valid && i < count)
            .take(NACK_SPAN)
            .map(|i| i as u16)
    }
}

/// What a received chunk did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// New data; the transfer is still incomplete.
    Progress,
    /// Already had it.
    Duplicate,
    /// That was the last missing chunk.
    Complete,
}

/// Why a chunk was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// It belongs to another transfer than the one being reassembled.
    OtherTransfer,
    /// Larger than the buffer, index out of range, or a length that does not match its position.
    Inconsistent,
}

/// The receiving side of one transfer at a time, in caller-provided storage (`&mut [u8]` in static
/// memory on the firmware, `Vec<u8>` on the host).
#[derive(Debug)]
pub struct Reassembly<B: AsRef<[u8]> + AsMut<[u8]>> {
    buffer: B,
    bitmap: B,
    current: Option<Current>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    transfer: u32,
    content: Content,
    step: u32,
    total_len: u32,
    count: u16,
    have: u16,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Reassembly<B> {
    /// Reassembles transfers of up to `buffer.len()` bytes; `bitmap` must hold
    /// [`bitmap_len`]`(buffer.len())` bytes.
    pub fn new(buffer: B, bitmap: B) -> Self {
        assert!(
            bitmap.as_ref().len() >= bitmap_len(buffer.as_ref().len()),
            "bitmap too small for the buffer"
        );
        Reassembly { buffer, bitmap, current: None }
    }

    /// Forgets the current transfer.
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// Starts reassembling the transfer `chunk` belongs to, dropping any other.
    pub fn start(&mut self, chunk: &Chunk<'_>) -> Result<(), ChunkError> {
        let total = chunk.total_len as usize;
        if total > self.buffer.as_ref().len() {
            return Err(ChunkError::Inconsistent);
        }
        let count = chunk_count(total);
        self.bitmap.as_mut()[..count.div_ceil(8)].fill(0);
        self.current = Some(Current {
            transfer: chunk.transfer,
            content: chunk.content,
            step: chunk.step,
            total_len: chunk.total_len,
            count: count as u16,
            have: 0,
        });
        Ok(())
    }

    /// The transfer being reassembled: (transfer id, content, step).
    pub fn current(&self) -> Option<(u32, Content, u32)> {
        self.current.map(|c| (c.transfer, c.content, c.step))
    }

    /// Takes a chunk of the current transfer.
    pub fn accept(&mut self, chunk: &Chunk<'_>) -> Result<Received, ChunkError> {
        let c = self.current.as_mut().ok_or(ChunkError::OtherTransfer)?;
        if chunk.transfer != c.transfer {
            return Err(ChunkError::OtherTransfer);
        }
        let total = c.total_len as usize;
        let index = chunk.index as usize;
        let start = index * CHUNK_DATA;
        let expected = total.saturating_sub(start).min(CHUNK_DATA);
        if chunk.total_len != c.total_len
            || chunk.step != c.step
            || chunk.content != c.content
            || index >= c.count as usize
            || chunk.data.len() != expected
        {
            return Err(ChunkError::Inconsistent);
        }
        let (byte, bit) = (index / 8, 1u8 << (index % 8));
        if self.bitmap.as_ref()[byte] & bit != 0 {
            return Ok(Received::Duplicate);
        }
        self.bitmap.as_mut()[byte] |= bit;
        self.buffer.as_mut()[start..start + expected].copy_from_slice(chunk.data);
        c.have += 1;
        Ok(if c.have == c.count { Received::Complete } else { Received::Progress })
    }

    /// Chunks of the current transfer received so far.
    pub fn received(&self) -> u16 {
        self.current.map_or(0, |c| c.have)
    }

    /// True when every chunk of the current transfer is here.
    pub fn is_complete(&self) -> bool {
        self.current.is_some_and(|c| c.have == c.count)
    }

    /// The reassembled bytes, once complete.
    pub fn data(&self) -> Option<&[u8]> {
        let c = self.current.filter(|c| c.have == c.count)?;
        Some(&self.buffer.as_ref()[..c.total_len as usize])
    }

    /// A Nack for the first missing chunks (up to [`NACK_SPAN`]), written into `scratch` (128 bytes).
    pub fn nack<'s>(&self, scratch: &'s mut [u8; NACK_SPAN / 8]) -> Option<Nack<'s>> {
        let c = self.current.filter(|c| c.have < c.count)?;
        self.missing_before(c.count as usize, scratch)
    }

    /// A Nack for the chunks missing before the highest one received: lost, where datagrams keep
    /// their order, while those after it may still be on their way from a slow sender. `None` when
    /// there is no such gap.
    pub fn gaps<'s>(&self, scratch: &'s mut [u8; NACK_SPAN / 8]) -> Option<Nack<'s>> {
        let c = self.current.filter(|c| c.have < c.count)?;
        let bitmap = self.bitmap.as_ref();
        let highest = (0..c.count as usize).rev().find(|&i| bitmap[i / 8] & (1 << (i % 8)) != 0)?;
        self.missing_before(highest, scratch)
    }

    /// A Nack for the first missing chunks below index `end` (up to [`NACK_SPAN`] from the first).
    fn missing_before<'s>(&self, end: usize, scratch: &'s mut [u8; NACK_SPAN / 8]) -> Option<Nack<'s>> {
        let c = self.current?;
        let bitmap = self.bitmap.as_ref();
        let first = (0..end).find(|&i| bitmap[i / 8] & (1 << (i % 8)) == 0)?;
        let base = first - first % 8;
        let span = (end - base).min(NACK_SPAN);
        scratch.fill(0);
        for i in 0..span {
            let idx = base + i;
            if bitmap[idx / 8] & (1 << (idx % 8)) == 0 {
                scratch[i / 8] |= 1 << (i % 8);
            }
        }
        Some(Nack { transfer: c.transfer, base: base as u16, missing: &scratch[..span.div_ceil(8)] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: usize = CHUNK_DATA * 20 + 77;

    fn data() -> [u8; LEN] {
        let mut d = [0u8; LEN];
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        d
    }

    #[test]
    fn reassembles_in_any_order_with_losses_and_duplicates() {
        let source = data();
        let out = Outgoing::new(5, Content::Model, 3, &source);
        assert_eq!(out.chunks(), 21);
        let mut buffer = [0u8; LEN + 100];
        let mut bitmap = [0u8; bitmap_len(LEN + 100)];
        let mut r = Reassembly::new(&mut buffer[..], &mut bitmap[..]);
        r.start(&out.chunk(20)).unwrap();
        // Reversed, every third chunk lost, some duplicated.
        for i in (0..21u16).rev().filter(|i| i % 3 != 0) {
            assert_eq!(r.accept(&out.chunk(i)).unwrap(), Received::Progress);
            if i % 5 == 0 {
                assert_eq!(r.accept(&out.chunk(i)).unwrap(), Received::Duplicate);
            }
        }
        let mut scratch = [0u8; NACK_SPAN / 8];
        let nack = r.nack(&mut scratch).unwrap();
        let missing: heapless::Vec<u16, 64> = out.requested(&nack).collect();
        assert_eq!(missing.as_slice(), &[0, 3, 6, 9, 12, 15, 18]);
        let mut last = Received::Progress;
        for &i in &missing {
            last = r.accept(&out.chunk(i)).unwrap();
        }
        assert_eq!(last, Received::Complete);
        assert_eq!(r.data().unwrap(), &source[..]);
        assert!(r.nack(&mut scratch).is_none());
    }

    /// A slow sender is half way through its burst: only the holes before the highest chunk
    /// received are asked for, not the chunks it has yet to send.
    #[test]
    fn gaps_name_only_chunks_missing_before_the_highest_received() {
        let source = data();
        let out = Outgoing::new(5, Content::Gradient, 3, &source);
        let mut buffer = [0u8; LEN];
        let mut bitmap = [0u8; bitmap_len(LEN)];
        let mut r = Reassembly::new(&mut buffer[..], &mut bitmap[..]);
        let mut scratch = [0u8; NACK_SPAN / 8];
        r.start(&out.chunk(0)).unwrap();
        for i in (0..10u16).filter(|&i| i != 4 && i != 7) {
            r.accept(&out.chunk(i)).unwrap();
        }
        let gaps = r.gaps(&mut scratch).unwrap();
        let asked: heapless::Vec<u16, 64> = out.requested(&gaps).collect();
        assert_eq!(asked.as_slice(), &[4, 7]);
        let all = r.nack(&mut scratch).unwrap();
        assert_eq!(out.requested(&all).count(), 2 + 11, "nack names the unsent tail too");
        r.accept(&out.chunk(4)).unwrap();
        r.accept(&out.chunk(7)).unwrap();
        assert!(r.gaps(&mut scratch).is_none(), "in order so far: nothing to ask for");
        assert!(r.nack(&mut scratch).is_some());
    }

    #[test]
    fn inconsistent_chunks_are_refused() {
        let source = data();
        let out = Outgoing::new(5, Content::Model, 3, &source);
        let mut buffer = [0u8; LEN];
        let mut bitmap = [0u8; bitmap_len(LEN)];
        let mut r = Reassembly::new(&mut buffer[..], &mut bitmap[..]);
        assert_eq!(r.accept(&out.chunk(0)), Err(ChunkError::OtherTransfer));
        r.start(&out.chunk(0)).unwrap();
        let mut short = out.chunk(1);
        short.data = &short.data[1..];
        assert_eq!(r.accept(&short), Err(ChunkError::Inconsistent));
        let mut beyond = out.chunk(20);
        beyond.index = 21;
        assert_eq!(r.accept(&beyond), Err(ChunkError::Inconsistent));
        let other = Outgoing::new(6, Content::Model, 3, &source);
        assert_eq!(r.accept(&other.chunk(0)), Err(ChunkError::OtherTransfer));
        let big = [0u8; LEN + 1];
        assert_eq!(
            r.start(&Outgoing::new(7, Content::Model, 3, &big).chunk(0)),
            Err(ChunkError::Inconsistent)
        );
    }
}
