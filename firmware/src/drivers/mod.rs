//! Peripheral drivers, one module each, with their registers typed.

pub mod pl011;
pub mod system_timer;
