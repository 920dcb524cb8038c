//! Fixed-point LeNet training kernels: the same `no_std`, allocation-free code trains on every
//! Raspberry Pi's firmware, inside the host's simulated nodes, and validates on the master.
//!
//! - [`fixed`]: the number formats (documented there) and the rounding rule.
//! - [`layers`]: 5x5 convolution, 2x2 max-pool, tanh, ReLU, dense, softmax cross-entropy; each with a
//!   forward and a backward pass, generic over the [`Arith`]metic.
//! - [`models`]: [`MxLenet`] (the paper's network, 431,080 parameters) and [`Lenet5`].
//! - [`train`]: initialisation, SGD with momentum and weight decay, batch statistics, the weight hash,
//!   static state containers and their [`Footprint`].
//! - [`rng`]: the seeded generator and the global batch schedule.
//!
//! **Exactness.** Gradients are exact `i64` sums over samples and positions; rounding happens per
//! sample (activations, deltas) or once per step (the update). A batch's gradient is therefore the same
//! integer however its samples are split between cores or nodes, and the trained weights are the
//! same bits on any CPU: floats enter training only through the softmax, with `libm`.
//!
//! With the `reference` feature, [`Float`] computes the same networks in `f32`; with `alloc`, [`heap`]
//! has heap-backed storage for hosts.

#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod arith;
mod blocks;
mod fast;
pub mod fixed;
#[cfg(feature = "alloc")]
pub mod heap;
pub mod layers;
pub mod models;
pub mod network;
pub mod profile;
pub mod rng;
pub mod sgd;
pub mod simd;
pub mod tanh;
pub mod train;

#[cfg(feature = "reference")]
pub use arith::Float;
pub use arith::{Arith, Fixed, SgdConfig};
pub use models::{Lenet5, MxLenet};
pub use network::{LayerSpec, Network, ScratchMut, ScratchSize, Weights, CLASSES, IMAGE_PIXELS, IMAGE_SIDE};
pub use train::{BatchStats, Footprint};
