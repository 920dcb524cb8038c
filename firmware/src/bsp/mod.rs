//! Board support: the Raspberry Pi 3.

pub mod rpi3;
