//! The two networks: [`MxLenet`] (the paper's, the default) and classic [`Lenet5`].

#![forbid(unsafe_code)]

mod lenet5;
mod mxlenet;

pub use lenet5::Lenet5;
pub use mxlenet::MxLenet;
