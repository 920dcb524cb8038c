//! Links the firmware with the workspace's linker script (only when building for the board).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "aarch64-unknown-none" {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../linker/kernel8.ld");
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rerun-if-changed={}", script.display());
        // defmt's table of format strings, kept in the ELF (not loaded) for the host's decoder.
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
