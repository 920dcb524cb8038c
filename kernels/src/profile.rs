//! Where the instructions go: counters per layer and phase, read from a clock the platform installs
//! (the firmware's PMU cycle counter, which counts instructions under QEMU `-icount`). Compiled in
//! only with the `profile` feature; without it every call here is empty and costs nothing.
//!
//! The counters are global, not per core: on several cores a span also counts what the other
//! cores execute meanwhile, so the per-phase table is exact on one core only.
//!
//! Besides time, the fast path counts the bytes of `i64` gradient-accumulator memory it reads and
//! writes per layer ([`count_traffic`]): what a board's caches and DRAM would carry.

/// The part of a layer's work a span measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forward pass: im2col, the product, bias, tanh, pooling.
    Forward = 0,
    /// Weight and bias gradients.
    WeightGradient = 1,
    /// Deltas (tanh and pooling backward) and the input gradient passed down.
    InputGradient = 2,
}

/// What a span is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A phase of parametrised layer `layer` (0-based, at most [`LAYERS`]).
    Layer(usize, Phase),
    /// Per-call preparation: transposed weights, filter chunk schedules.
    Prepare,
    /// Softmax cross-entropy.
    Loss,
    /// The optimizer step and the refresh of the working weights.
    Update,
    /// Summing the cores' gradients.
    Reduce,
}

/// Most parametrised layers a model has.
pub const LAYERS: usize = 5;
const PHASES: usize = 3;
const SLOTS: usize = LAYERS * PHASES + 4;

impl Slot {
    fn index(self) -> usize {
        match self {
            Slot::Layer(layer, phase) => layer.min(LAYERS - 1) * PHASES + phase as usize,
            Slot::Prepare => LAYERS * PHASES,
            Slot::Loss => LAYERS * PHASES + 1,
            Slot::Update => LAYERS * PHASES + 2,
            Slot::Reduce => LAYERS * PHASES + 3,
        }
    }
}

/// The counters: clock ticks per slot and accumulator bytes per layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    ticks: [u64; SLOTS],
    traffic: [u64; LAYERS],
}

impl Report {
    /// Ticks charged to a slot.
    pub fn ticks(&self, slot: Slot) -> u64 {
        self.ticks[slot.index()]
    }
    /// Bytes of `i64` gradient accumulators read and written for layer `layer`.
    pub fn traffic(&self, layer: usize) -> u64 {
        self.traffic[layer]
    }
    /// Ticks of every slot together.
    pub fn total_ticks(&self) -> u64 {
        self.ticks.iter().sum()
    }
}

#[cfg(feature = "profile")]
mod imp {
    use super::{Report, Slot, LAYERS, SLOTS};
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static CLOCK: spin::Once<fn() -> u64> = spin::Once::new();
    static TICKS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
    static TRAFFIC: [AtomicU64; LAYERS] = [const { AtomicU64::new(0) }; LAYERS];

    pub fn install(clock: fn() -> u64) {
        CLOCK.call_once(|| clock);
    }

    pub fn now() -> u64 {
        CLOCK.get().map_or(0, |clock| clock())
    }

    pub fn charge(slot: Slot, ticks: u64) {
        TICKS[slot.index()].fetch_add(ticks, Relaxed);
    }

    pub fn count_traffic(layer: usize, bytes: u64) {
        TRAFFIC[layer.min(LAYERS - 1)].fetch_add(bytes, Relaxed);
    }

    pub fn take() -> Report {
        let mut report = Report::default();
        for (r, t) in report.ticks.iter_mut().zip(&TICKS) {
            *r = t.swap(0, Relaxed);
        }
        for (r, t) in report.traffic.iter_mut().zip(&TRAFFIC) {
            *r = t.swap(0, Relaxed);
        }
        report
    }
}

#[cfg(not(feature = "profile"))]
mod imp {
    use super::{Report, Slot};

    pub fn install(_clock: fn() -> u64) {}
    #[inline(always)]
    pub fn now() -> u64 {
        0
    }
    #[inline(always)]
    pub fn charge(_slot: Slot, _ticks: u64) {}
    #[inline(always)]
    pub fn count_traffic(_layer: usize, _bytes: u64) {}
    pub fn take() -> Report {
        Report::default()
    }
}

/// Sets the clock spans read (once; later calls are ignored).
pub fn install(clock: fn() -> u64) {
    imp::install(clock)
}

/// The counters since the last call, which resets them.
pub fn take() -> Report {
    imp::take()
}

/// Counts `bytes` of gradient-accumulator traffic for `layer`.
#[inline(always)]
pub fn count_traffic(layer: usize, bytes: usize) {
    imp::count_traffic(layer, bytes as u64)
}

/// Whether this build counts anything.
pub const ENABLED: bool = cfg!(feature = "profile");

/// A running span: charges the clock ticks from its start to its end (or drop) to its slot.
#[must_use = "a span measures until it is dropped"]
pub struct Span {
    slot: Slot,
    start: u64,
}

/// Starts a span charged to `slot`.
#[inline(always)]
pub fn span(slot: Slot) -> Span {
    Span { slot, start: imp::now() }
}

impl Span {
    /// Ends this span and starts one for `slot`.
    #[inline(always)]
    pub fn then(self, slot: Slot) -> Span {
        drop(self);
        span(slot)
    }
}

impl Drop for Span {
    #[inline(always)]
    fn drop(&mut self) {
        if ENABLED {
            imp::charge(self.slot, imp::now().wrapping_sub(self.start));
        }
    }
}

#[cfg(all(test, feature = "profile"))]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    static FAKE: AtomicU64 = AtomicU64::new(0);

    #[test]
    fn spans_charge_their_slots() {
        install(|| FAKE.fetch_add(10, Ordering::Relaxed));
        let _ = take();
        {
            let s = span(Slot::Loss);
            let _s = s.then(Slot::Layer(1, Phase::Forward));
        }
        count_traffic(2, 64);
        let r = take();
        assert_eq!(r.ticks(Slot::Loss), 10);
        assert_eq!(r.ticks(Slot::Layer(1, Phase::Forward)), 10);
        assert_eq!(r.traffic(2), 64);
        assert_eq!(take(), Report::default());
    }
}
