//! `pitrain`: see `pitrain --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pitrain::cli::Cli::parse();
    match pitrain::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
