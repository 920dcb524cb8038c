//! Architecture-specific code, at the same path as what it serves.

pub mod aarch64;
