//! What the large transfers carry, and how it is encoded.
//!
//! - **Model** (master to nodes, every synchronisation): for each layer, its working weights as `i16`
//!   and its master biases as `i32`, little-endian. That is everything a forward and backward pass
//!   reads, so a node computes exactly what the master would: 863,320 bytes for MxLenet.
//! - **Gradient** (node to master): the node's batch statistics, then its exact `i64` gradient sums,
//!   each zigzag-encoded as a LEB128 varint. The sums are exact integers, so they must travel without
//!   loss; most need four or five bytes instead of eight.
//! - With a sync period above 1 the nodes run their own updates between synchronisations, so the
//!   master sends its full master parameters (**state**, `i32` each) and a node answers with its
//!   parameter change over its local steps, in the gradient encoding.

#![forbid(unsafe_code)]

use kernels::train::BatchStats;
use kernels::Network;

/// A transfer's content that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// Wrong length for this model.
    Length,
    /// A varint that runs past the end or past 64 bits.
    Varint,
    /// Bytes left over after the last value.
    Trailing,
}

/// Bytes of the model payload of network `N`.
pub const fn model_len<N: Network>() -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < N::LAYERS.len() {
        len += 2 * N::LAYERS[i].weight_len() + 4 * N::LAYERS[i].outputs();
        i += 1;
    }
    len
}

/// Writes the model payload: working weights and master biases, layer by layer.
pub fn encode_model<N: Network>(working: &[i16], master: &[i32], out: &mut [u8]) -> usize {
    assert!(out.len() >= model_len::<N>());
    let mut at = 0;
    for layer in N::LAYERS {
        for &w in layer.weights(working) {
            out[at..at + 2].copy_from_slice(&w.to_le_bytes());
            at += 2;
        }
        for &b in layer.biases(master) {
            out[at..at + 4].copy_from_slice(&b.to_le_bytes());
            at += 4;
        }
    }
    at
}

/// Reads a model payload into the working weights and the master biases.
pub fn decode_model<N: Network>(
    bytes: &[u8],
    working: &mut [i16],
    master: &mut [i32],
) -> Result<(), CodecError> {
    if bytes.len() != model_len::<N>() || working.len() != N::PARAMS || master.len() != N::PARAMS {
        return Err(CodecError::Length);
    }
    let mut at = 0;
    for layer in N::LAYERS {
        for w in &mut working[layer.weight_range()] {
            *w = i16::from_le_bytes([bytes[at], bytes[at + 1]]);
            at += 2;
        }
        for b in &mut master[layer.bias_range()] {
            *b = i32::from_le_bytes(bytes[at..at + 4].try_into().map_err(|_| CodecError::Length)?);
            at += 4;
        }
    }
    Ok(())
}

/// Bytes of the full-state payload (sync period above 1): every master parameter as `i32`.
pub const fn state_len<N: Network>() -> usize {
    4 * N::PARAMS
}

/// Writes every master parameter (sync period above 1: nodes run their own updates).
pub fn encode_state(master: &[i32], out: &mut [u8]) -> usize {
    for (chunk, &p) in out.chunks_exact_mut(4).zip(master) {
        chunk.copy_from_slice(&p.to_le_bytes());
    }
    4 * master.len()
}

/// Reads every master parameter.
pub fn decode_state(bytes: &[u8], master: &mut [i32]) -> Result<(), CodecError> {
    if bytes.len() != 4 * master.len() {
        return Err(CodecError::Length);
    }
    for (p, chunk) in master.iter_mut().zip(bytes.chunks_exact(4)) {
        *p = i32::from_le_bytes(chunk.try_into().map_err(|_| CodecError::Length)?);
    }
    Ok(())
}

/// Bytes of the statistics in front of a gradient payload.
pub const STATS_LEN: usize = 4 + 4 + 8;

/// Largest gradient payload for `params` parameters.
pub const fn max_gradient_len(params: usize) -> usize {
    STATS_LEN + 10 * params
}

/// Writes the gradient payload; `out` must hold [`max_gradient_len`] bytes.
pub fn encode_gradient(stats: &BatchStats, grads: &[i64], out: &mut [u8]) -> usize {
    assert!(out.len() >= max_gradient_len(grads.len()));
    out[0..4].copy_from_slice(&(stats.samples as u32).to_le_bytes());
    out[4..8].copy_from_slice(&(stats.correct as u32).to_le_bytes());
    out[8..16].copy_from_slice(&stats.loss_sum.to_le_bytes());
    let mut at = STATS_LEN;
    for &g in grads {
        let mut z = ((g << 1) ^ (g >> 63)) as u64;
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out[at] = byte;
                at += 1;
                break;
            }
            out[at] = byte | 0x80;
            at += 1;
        }
    }
    at
}

/// Reads a gradient payload into `grads` (overwritten); exactly `grads.len()` values must be there.
pub fn decode_gradient(bytes: &[u8], grads: &mut [i64]) -> Result<BatchStats, CodecError> {
    if bytes.len() < STATS_LEN {
        return Err(CodecError::Length);
    }
    let word = |r: core::ops::Range<usize>| -> u64 {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&bytes[r]);
        u64::from_le_bytes(b)
    };
    let stats = BatchStats { samples: word(0..4), correct: word(4..8), loss_sum: word(8..16) as i64 };
    let mut at = STATS_LEN;
    for g in grads.iter_mut() {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let &byte = bytes.get(at).ok_or(CodecError::Varint)?;
            at += 1;
            if shift == 63 && byte > 1 {
                return Err(CodecError::Varint);
            }
            z |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(CodecError::Varint);
            }
        }
        *g = ((z >> 1) as i64) ^ -((z & 1) as i64);
    }
    if at != bytes.len() {
        return Err(CodecError::Trailing);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::{Lenet5, MxLenet};

    #[test]
    fn model_payload_size() {
        assert_eq!(model_len::<MxLenet>(), 863_320);
        assert_eq!(model_len::<Lenet5>(), 2 * (61_706 - 236) + 4 * 236);
    }

    #[test]
    fn gradient_round_trips_at_the_extremes() {
        let grads = [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40, -(1 << 40) - 3];
        let stats = BatchStats { samples: 7, correct: 5, loss_sum: -3 };
        let mut buf = [0u8; max_gradient_len(10)];
        let n = encode_gradient(&stats, &grads, &mut buf);
        let mut back = [9i64; 10];
        assert_eq!(decode_gradient(&buf[..n], &mut back), Ok(stats));
        assert_eq!(back, grads);
        // Too few bytes, a value too many, and trailing bytes are refused.
        assert_eq!(decode_gradient(&buf[..n - 1], &mut back), Err(CodecError::Varint));
        assert_eq!(decode_gradient(&buf[..n], &mut [0i64; 11]), Err(CodecError::Varint));
        assert_eq!(decode_gradient(&buf[..n], &mut [0i64; 9]), Err(CodecError::Trailing));
        // An eleven-byte varint.
        let mut bad = [0xffu8; STATS_LEN + 11];
        bad[STATS_LEN + 10] = 0;
        assert_eq!(decode_gradient(&bad, &mut [0i64; 1]), Err(CodecError::Varint));
    }

    #[test]
    fn model_round_trips() {
        let mut working = [0i16; 61_706];
        let mut master = [0i32; 61_706];
        for (i, w) in working.iter_mut().enumerate() {
            *w = (i as i16).wrapping_mul(7);
        }
        for (i, m) in master.iter_mut().enumerate() {
            *m = (i as i32) * -3;
        }
        let mut buf = [0u8; model_len::<Lenet5>()];
        assert_eq!(encode_model::<Lenet5>(&working, &master, &mut buf), buf.len());
        let (mut w2, mut m2) = ([0i16; 61_706], [0i32; 61_706]);
        decode_model::<Lenet5>(&buf, &mut w2, &mut m2).unwrap();
        for layer in Lenet5::LAYERS {
            assert_eq!(layer.weights(&w2), layer.weights(&working));
            assert_eq!(layer.biases(&m2), layer.biases(&master));
        }
        assert_eq!(decode_model::<Lenet5>(&buf[1..], &mut w2, &mut m2), Err(CodecError::Length));
    }
}
