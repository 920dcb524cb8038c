//! The layers, each with a forward and a backward pass, generic over the [`Arith`](crate::Arith).
//!
//! Conventions shared by all layers:
//! - Tensors are flat slices in channel-major order (`[channel][row][column]`).
//! - Linear layers (conv, dense) write *pre-activations* as accumulators (`A::Acc`), and their input
//!   gradients as exact accumulator sums; an activation's backward pass turns such a sum into a stored
//!   delta (`A::Val`) with a single rounding.
//! - Gradients are *added* into caller-owned accumulators, so a batch's gradient is the sum over its
//!   samples in any order and any split.
//! - A zero delta contributes nothing and is skipped: after max-pooling three deltas in four are zero.

#![forbid(unsafe_code)]

pub mod activation;
pub mod conv;
pub mod dense;
pub mod loss;
pub mod pool;

pub use activation::{relu_backward, relu_forward, tanh_backward, tanh_forward};
pub use conv::Conv5x5;
pub use dense::Dense;
pub use loss::{softmax_cross_entropy, SampleOutcome};
pub use pool::MaxPool2;
