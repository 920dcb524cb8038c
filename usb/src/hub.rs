//! Hub port status (USB 2.0 section 11.24.2.7): the 4 bytes GET_STATUS(port) returns, `wPortStatus`
//! then `wPortChange`, both little-endian. The change bits latch until cleared with the matching
//! `C_PORT_*` feature, which is how enumeration learns that a reset has finished.

use crate::host::Speed;

/// Length of a port status report.
pub const PORT_STATUS_LEN: usize = 4;

mod bit {
    pub const CONNECTION: u16 = 1 << 0;
    pub const ENABLE: u16 = 1 << 1;
    pub const SUSPEND: u16 = 1 << 2;
    pub const OVER_CURRENT: u16 = 1 << 3;
    pub const RESET: u16 = 1 << 4;
    pub const POWER: u16 = 1 << 8;
    pub const LOW_SPEED: u16 = 1 << 9;
    pub const HIGH_SPEED: u16 = 1 << 10;
}

/// `wPortStatus`, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortStatus {
    /// A device is attached.
    pub connected: bool,
    /// The port is enabled (only after a reset): traffic reaches the device.
    pub enabled: bool,
    /// The port is suspended.
    pub suspended: bool,
    /// Over-current condition.
    pub over_current: bool,
    /// A reset is in progress.
    pub resetting: bool,
    /// Port power is on.
    pub powered: bool,
    /// The attached device is low speed.
    pub low_speed: bool,
    /// The attached device is high speed.
    pub high_speed: bool,
}

impl PortStatus {
    /// Decodes `wPortStatus` (reserved and test/indicator bits are ignored).
    pub fn from_bits(w: u16) -> Self {
        PortStatus {
            connected: w & bit::CONNECTION != 0,
            enabled: w & bit::ENABLE != 0,
            suspended: w & bit::SUSPEND != 0,
            over_current: w & bit::OVER_CURRENT != 0,
            resetting: w & bit::RESET != 0,
            powered: w & bit::POWER != 0,
            low_speed: w & bit::LOW_SPEED != 0,
            high_speed: w & bit::HIGH_SPEED != 0,
        }
    }

    /// Encodes `wPortStatus`.
    pub fn bits(&self) -> u16 {
        let f = |b: bool, m: u16| if b { m } else { 0 };
        f(self.connected, bit::CONNECTION)
            | f(self.enabled, bit::ENABLE)
            | f(self.suspended, bit::SUSPEND)
            | f(self.over_current, bit::OVER_CURRENT)
            | f(self.resetting, bit::RESET)
            | f(self.powered, bit::POWER)
            | f(self.low_speed, bit::LOW_SPEED)
            | f(self.high_speed, bit::HIGH_SPEED)
    }

    /// Speed of the attached device: low and high speed are flagged, full speed is neither.
    pub fn speed(&self) -> Speed {
        if self.low_speed {
            Speed::Low
        } else if self.high_speed {
            Speed::High
        } else {
            Speed::Full
        }
    }
}

/// `wPortChange`, typed: each bit latches an event until its `C_PORT_*` feature is cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortChange {
    /// C_PORT_CONNECTION: connect or disconnect.
    pub connection: bool,
    /// C_PORT_ENABLE: the port was disabled by an error.
    pub enable: bool,
    /// C_PORT_SUSPEND: resume finished.
    pub suspend: bool,
    /// C_PORT_OVER_CURRENT.
    pub over_current: bool,
    /// C_PORT_RESET: a reset finished.
    pub reset: bool,
}

impl PortChange {
    /// Decodes `wPortChange`.
    pub fn from_bits(w: u16) -> Self {
        PortChange {
            connection: w & 1 != 0,
            enable: w & 2 != 0,
            suspend: w & 4 != 0,
            over_current: w & 8 != 0,
            reset: w & 16 != 0,
        }
    }

    /// Encodes `wPortChange`.
    pub fn bits(&self) -> u16 {
        (self.connection as u16)
            | (self.enable as u16) << 1
            | (self.suspend as u16) << 2
            | (self.over_current as u16) << 3
            | (self.reset as u16) << 4
    }
}

/// A whole GET_STATUS(port) answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortStatusReport {
    /// Current state.
    pub status: PortStatus,
    /// Latched events.
    pub change: PortChange,
}

/// A port status answer shorter than 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncatedPortStatus;

impl PortStatusReport {
    /// Parses the 4 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, TruncatedPortStatus> {
        if b.len() < PORT_STATUS_LEN {
            return Err(TruncatedPortStatus);
        }
        Ok(PortStatusReport {
            status: PortStatus::from_bits(u16::from_le_bytes([b[0], b[1]])),
            change: PortChange::from_bits(u16::from_le_bytes([b[2], b[3]])),
        })
    }

    /// Writes the 4 bytes.
    pub fn emit(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.status.bits().to_le_bytes());
        out[2..4].copy_from_slice(&self.change.bits().to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_bits() {
        // Powered, connected, enabled high-speed device, reset just finished.
        let r = PortStatusReport::parse(&[0x03, 0x05, 0x10, 0x00]).unwrap();
        assert!(r.status.connected && r.status.enabled && r.status.powered && r.status.high_speed);
        assert!(!r.status.low_speed && !r.status.resetting && !r.status.suspended && !r.status.over_current);
        assert_eq!(r.status.speed(), Speed::High);
        assert!(r.change.reset && !r.change.connection);
        // Powered, connected low-speed, connection change.
        let r = PortStatusReport::parse(&[0x01, 0x03, 0x01, 0x00]).unwrap();
        assert_eq!(r.status.speed(), Speed::Low);
        assert!(r.change.connection);
        // Powered, connected, resetting full-speed; reserved bits ignored.
        let r = PortStatusReport::parse(&[0x11, 0xE1, 0xE0, 0xFF]).unwrap();
        assert!(r.status.resetting);
        assert_eq!(r.status.speed(), Speed::Full);
        assert_eq!(r.change, PortChange::default());
    }

    #[test]
    fn round_trip_every_defined_bit() {
        for s in 0..=0x7FFu16 {
            let status = PortStatus::from_bits(s);
            for c in 0..32u16 {
                let r = PortStatusReport { status, change: PortChange::from_bits(c) };
                let mut b = [0u8; 4];
                r.emit(&mut b);
                assert_eq!(PortStatusReport::parse(&b), Ok(r));
                assert_eq!(r.change.bits(), c);
            }
        }
    }

    #[test]
    fn short_answer_is_refused() {
        assert_eq!(PortStatusReport::parse(&[1, 1, 0]), Err(TruncatedPortStatus));
    }
}
