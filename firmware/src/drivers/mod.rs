//! Peripheral drivers, one module each, with their registers typed.

pub mod pl011;
