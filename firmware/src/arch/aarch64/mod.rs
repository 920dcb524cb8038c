//! CPU-specific code for the Cortex-A53: the boot entry and semihosting.

pub mod boot;
pub mod semihosting;
