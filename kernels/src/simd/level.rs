//! Which vector instructions the kernels use: detected once at run time on x86-64 (SSE2 is the
//! baseline; AVX2; AVX-512 with BW and VNNI), fixed on aarch64 (NEON is part of every target this
//! crate builds for).
//!
//! A lower level can be forced, so that tests and benchmarks cover every path on one machine:
//! [`force`] in code, or the environment variable `PITRAIN_SIMD` (`scalar`, `sse2`, `avx2`,
//! `avx512`; read once, with the `std` feature). Every level computes the same integers; the
//! scalar code is the definition the others are tested against.

use core::sync::atomic::{AtomicU8, Ordering};

/// A set of vector instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Plain integer code: the definition.
    Scalar = 1,
    /// x86-64 baseline: `pmaddwd` on 128 bits.
    Sse2 = 2,
    /// x86-64 AVX2: `vpmaddwd` on 256 bits.
    Avx2 = 3,
    /// x86-64 AVX-512 F/BW/VNNI: `vpdpwssd` on 512 bits.
    Avx512 = 4,
    /// aarch64 Advanced SIMD: `smlal`/`smlal2`.
    Neon = 5,
}

impl Level {
    /// Its name, as `PITRAIN_SIMD` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Sse2 => "sse2",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }

    /// The level a name stands for.
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Every level, lowest first.
    pub const ALL: [Level; 5] = [Level::Scalar, Level::Sse2, Level::Avx2, Level::Avx512, Level::Neon];

    fn from_u8(v: u8) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as u8 == v)
    }
}

/// The environment variable that forces a lower level.
pub const ENV_VAR: &str = "PITRAIN_SIMD";

/// 0 until the first use; then the level in use.
static CURRENT: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "aarch64")]
    {
        Level::Neon
    }
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
        {
            Level::Avx512
        } else if std::is_x86_feature_detected!("avx2") {
            Level::Avx2
        } else {
            Level::Sse2
        }
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
    {
        Level::Sse2
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Level::Scalar
    }
}

/// Whether this CPU can run `level`.
pub fn supported(level: Level) -> bool {
    match level {
        Level::Scalar => true,
        Level::Neon => detected() == Level::Neon,
        x86 => detected() != Level::Neon && x86 <= detected(),
    }
}

/// Why a level cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported(pub Level);

impl core::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "this CPU cannot run the {} kernels (best: {})", self.0.name(), detected().name())
    }
}

impl core::error::Error for Unsupported {}

/// Uses `level` from now on (for every thread).
pub fn force(level: Level) -> Result<(), Unsupported> {
    if !supported(level) {
        return Err(Unsupported(level));
    }
    CURRENT.store(level as u8, Ordering::Relaxed);
    Ok(())
}

/// The level in use: forced, or from `PITRAIN_SIMD`, or the detected one.
#[inline]
pub fn current() -> Level {
    match Level::from_u8(CURRENT.load(Ordering::Relaxed)) {
        Some(level) => level,
        None => {
            let level = from_environment().unwrap_or_else(detected);
            CURRENT.store(level as u8, Ordering::Relaxed);
            level
        }
    }
}

/// `PITRAIN_SIMD`, if it names a level this CPU supports. An unknown or unsupported name is
/// reported once on standard error and ignored.
fn from_environment() -> Option<Level> {
    #[cfg(feature = "std")]
    {
        let value = std::env::var(ENV_VAR).ok()?;
        match Level::parse(&value) {
            Some(level) if supported(level) => Some(level),
            Some(level) => {
                std::eprintln!("{ENV_VAR}={value}: {}; using {}", Unsupported(level), detected().name());
                None
            }
            None => {
                std::eprintln!("{ENV_VAR}={value}: not one of scalar, sse2, avx2, avx512, neon; ignored");
                None
            }
        }
    }
    #[cfg(not(feature = "std"))]
    {
        None
    }
}
