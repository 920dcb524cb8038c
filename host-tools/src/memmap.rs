//! `pitrain firmware map`: the firmware ELF's static memory map. Everything the firmware uses is
//! placed by the linker (no heap): the image's sections, the training state in `.bss` broken down
//! into weights, optimizer state and per-core activations, the stacks, and the node blob area.

use std::path::{Path, PathBuf};

use kernels::{Fixed, Footprint, Lenet5, MxLenet};
use object::{Object, ObjectSection, ObjectSymbol};

/// Symbols whose presence means a heap allocator is linked.
const ALLOCATOR_SYMBOLS: [&str; 4] = ["__rust_alloc", "__rdl_alloc", "__rg_alloc", "__rust_alloc_zeroed"];

/// Why the map could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The ELF could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// One allocated section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// Name, e.g. `.bss`.
    pub name: String,
    /// Start address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
}

/// One static variable of the firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Static {
    /// Demangled path without the hash, e.g. `firmware::training::MXLENET_MODEL`.
    pub name: String,
    /// Section it is in.
    pub section: String,
    /// Address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
}

/// The static memory map of a firmware ELF.
#[derive(Clone, Debug)]
pub struct MemoryMap {
    /// Allocated sections in address order.
    pub sections: Vec<Section>,
    /// The firmware's own statics, largest first.
    pub statics: Vec<Static>,
    /// Allocator symbols found (empty: no heap).
    pub allocator_symbols: Vec<String>,
}

impl MemoryMap {
    /// Reads the map from an ELF.
    pub fn read(elf: &Path) -> Result<MemoryMap, MapError> {
        let failed = |message: String| MapError::Read { path: elf.to_path_buf(), message };
        let bytes = std::fs::read(elf).map_err(|e| failed(e.to_string()))?;
        let file = object::File::parse(&*bytes).map_err(|e| failed(format!("not an ELF: {e}")))?;
        let mut sections: Vec<Section> = file
            .sections()
            .filter(|s| s.address() != 0 && s.size() != 0)
            .map(|s| Section {
                name: s.name().unwrap_or("?").to_string(),
                address: s.address(),
                size: s.size(),
            })
            .collect();
        sections.sort_by_key(|s| s.address);
        let mut statics = Vec::new();
        let mut allocator_symbols = Vec::new();
        for symbol in file.symbols() {
            let Ok(raw) = symbol.name() else { continue };
            if ALLOCATOR_SYMBOLS.contains(&raw) {
                allocator_symbols.push(raw.to_string());
            }
            let name = format!("{:#}", rustc_demangle::demangle(raw));
            if symbol.kind() != object::SymbolKind::Data
                || !name.starts_with("firmware::")
                || symbol.size() == 0
            {
                continue;
            }
            let section = symbol
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .and_then(|s| s.name().ok().map(str::to_string))
                .unwrap_or_default();
            statics.push(Static { name, section, address: symbol.address(), size: symbol.size() });
        }
        statics.sort_by(|a, b| b.size.cmp(&a.size).then(a.address.cmp(&b.address)));
        Ok(MemoryMap { sections, statics, allocator_symbols })
    }

    /// The report `pitrain firmware map` prints.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "sections (the raw image holds .text, .rodata and .data; the rest is RAM):");
        for s in &self.sections {
            let _ = writeln!(
                out,
                "  {:<10} {:#010x} .. {:#010x} {:>12} bytes",
                s.name,
                s.address,
                s.address + s.size,
                s.size
            );
        }
        let _ = writeln!(out, "largest statics:");
        for s in self.statics.iter().filter(|s| s.size >= 4096) {
            let _ =
                writeln!(out, "  {:<44} {:<8} {:#010x} {:>12} bytes", s.name, s.section, s.address, s.size);
        }
        for (name, footprint, [model, rows, cores]) in [
            (
                "MxLenet",
                Footprint::of::<MxLenet, Fixed>(),
                ["MXLENET_MODEL", "MXLENET_ROWS", "MXLENET_CORES"],
            ),
            ("LeNet-5", Footprint::of::<Lenet5, Fixed>(), ["LENET5_MODEL", "LENET5_ROWS", "LENET5_CORES"]),
        ] {
            let size_of =
                |symbol: &str| self.statics.iter().find(|s| s.name.ends_with(symbol)).map_or(0, |s| s.size);
            let _ = writeln!(
                out,
                "{name} training state: weights {} + optimizer {} = {} bytes ({model}: {}); batch rows {} bytes ({rows}: {}); per core: gradients {} + activations {} bytes, x4 = {} ({cores}: {})",
                footprint.weights,
                footprint.optimizer,
                footprint.weights + footprint.optimizer,
                size_of(model),
                footprint.batch_rows,
                size_of(rows),
                footprint.gradients_per_core,
                footprint.activations_per_core,
                4 * (footprint.gradients_per_core + footprint.activations_per_core),
                size_of(cores),
            );
        }
        let _ = writeln!(
            out,
            "node blob area: {:#010x} .. {:#010x} (up to {} MiB, placed by the boot loader)",
            protocol::blob::LOAD_ADDRESS,
            protocol::blob::LOAD_ADDRESS + protocol::blob::MAX_LEN,
            protocol::blob::MAX_LEN >> 20
        );
        if self.allocator_symbols.is_empty() {
            let _ = writeln!(out, "heap allocator: none linked");
        } else {
            let _ = writeln!(out, "heap allocator: LINKED ({})", self.allocator_symbols.join(", "));
        }
        out
    }
}
