//! `stunnerd`: parse flags, hand over to the runtime.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = stunnerd::cli::Cli::parse();
    stunnerd::runtime::run(cli)
}
