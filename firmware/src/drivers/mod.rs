//! Peripheral drivers, one module each, with their registers typed.

pub mod activity_led;
pub mod core_mailbox;
pub mod dwc2;
pub mod gpio;
pub mod mailbox;
pub mod pl011;
pub mod system_timer;
pub mod watchdog;
