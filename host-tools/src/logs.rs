//! Decoding the firmware's defmt log: `pitrain logs --elf FIRMWARE.elf`, and the live log of
//! `pitrain qemu run`.
//!
//! The firmware sends rzCOBS-framed defmt frames over its UART (see `firmware/src/log.rs`); the
//! format strings stay in the ELF's `.defmt` section, so the ELF that was flashed or booted is needed
//! to read them. A frame that does not decode (line noise, a frame cut by a reset) is skipped and
//! counted; decoding resumes at the next frame.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use defmt_decoder::{DecodeError, StreamDecoder, Table};

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The ELF could not be read.
    #[error("cannot read the firmware ELF {path}: {source}")]
    ReadElf {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The ELF has no defmt table.
    #[error("{0} is not an ELF with a defmt table: give the firmware ELF (`firmware` beside kernel8.img), not the raw image")]
    NoTable(PathBuf),
    /// The ELF's defmt table is unusable.
    #[error("cannot read the defmt table of {path}: {message}")]
    BadTable {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        message: String,
    },
    /// The log source could not be opened or read.
    #[error("cannot read the log from {source_name}: {message}")]
    Input {
        /// Serial device, file or standard input.
        source_name: String,
        /// Why.
        message: String,
    },
}

/// The format strings of one firmware build.
pub struct LogTable {
    table: Table,
}

impl LogTable {
    /// Reads the defmt table from a firmware ELF.
    pub fn load(elf: &Path) -> Result<LogTable, LogError> {
        let bytes =
            std::fs::read(elf).map_err(|source| LogError::ReadElf { path: elf.to_path_buf(), source })?;
        if !bytes.starts_with(b"\x7fELF") {
            return Err(LogError::NoTable(elf.to_path_buf()));
        }
        match Table::parse(&bytes) {
            Ok(Some(table)) => Ok(LogTable { table }),
            Ok(None) => Err(LogError::NoTable(elf.to_path_buf())),
            Err(e) => Err(LogError::BadTable { path: elf.to_path_buf(), message: format!("{e:#}") }),
        }
    }

    /// A decoder for one byte stream.
    pub fn stream(&self) -> LogStream<'_> {
        LogStream { decoder: self.table.new_stream_decoder(), malformed: 0 }
    }

    /// Decodes a complete capture.
    pub fn decode_all(&self, bytes: &[u8]) -> (Vec<LogLine>, usize) {
        let mut stream = self.stream();
        let lines = stream.feed(bytes);
        (lines, stream.malformed)
    }
}

/// One decoded log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`, or empty for `println`-style frames.
    pub level: String,
    /// The firmware's timestamp (seconds since boot), if it sent one.
    pub timestamp: Option<String>,
    /// The formatted message.
    pub message: String,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(t) = &self.timestamp {
            write!(f, "{t:>12} ")?;
        }
        write!(f, "{:<5} {}", self.level, self.message)
    }
}

/// A decoder fed with bytes as they arrive.
pub struct LogStream<'t> {
    decoder: Box<dyn StreamDecoder + Send + Sync + 't>,
    /// Frames skipped because they did not decode.
    pub malformed: usize,
}

impl LogStream<'_> {
    /// Adds received bytes and returns the lines they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogLine> {
        self.decoder.received(bytes);
        let mut lines = Vec::new();
        loop {
            match self.decoder.decode() {
                Ok(frame) => lines.push(LogLine {
                    level: frame.level().map(|l| l.as_str().to_uppercase()).unwrap_or_default(),
                    timestamp: frame.display_timestamp().map(|t| t.to_string()),
                    message: frame.display_message().to_string(),
                }),
                Err(DecodeError::UnexpectedEof) => return lines,
                Err(DecodeError::Malformed) => self.malformed += 1,
            }
        }
    }
}

/// Where `pitrain logs` reads from.
pub enum LogSource {
    /// A serial device, e.g. a USB-UART adapter on the Pi's GPIO14/15.
    Serial {
        /// The device.
        device: String,
        /// Its speed.
        baud: u32,
    },
    /// A capture file (e.g. QEMU's `-serial file:...`), or standard input for `-`.
    File(PathBuf),
}

/// Decodes `source` with `table`, printing each line as it arrives, until the source ends (a file)
/// or forever (a serial device; stop it with Ctrl-C).
pub fn follow(
    table: &LogTable,
    source: &LogSource,
    mut on_line: impl FnMut(&LogLine),
) -> Result<usize, LogError> {
    let (name, mut reader): (String, Box<dyn Read>) = match source {
        LogSource::Serial { device, baud } => {
            let port = serialport::new(device, *baud)
                .timeout(Duration::from_secs(3600))
                .open()
                .map_err(|e| LogError::Input { source_name: device.clone(), message: e.to_string() })?;
            (device.clone(), Box::new(port))
        }
        LogSource::File(path) if path.as_os_str() == "-" => {
            ("standard input".into(), Box::new(std::io::stdin()))
        }
        LogSource::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| LogError::Input {
                source_name: path.display().to_string(),
                message: e.to_string(),
            })?;
            (path.display().to_string(), Box::new(file))
        }
    };
    let mut stream = table.stream();
    let mut buffer = [0u8; 4096];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(stream.malformed),
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::Interrupted
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => return Err(LogError::Input { source_name: name, message: e.to_string() }),
        };
        for line in stream.feed(&buffer[..n]) {
            on_line(&line);
        }
    }
}
