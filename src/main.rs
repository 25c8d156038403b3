//! `stunnerd`: dispatch a subcommand, or parse the daemon's flags and hand over to the
//! runtime.
// A driver, not the core: clocks, threads and locks are its own (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // Subcommands (`render`, `cds-server`, `help`, ...) have their own flags, so they are
    // dispatched before the daemon's parser sees the arguments.
    let first = std::env::args_os().nth(1);
    if let Some(cmd) = first.and_then(|a| a.to_str().and_then(stunnerd::cli::subcommand)) {
        let args = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return (cmd.run)(args);
    }
    let cli = stunnerd::cli::parse();
    stunnerd::transport::sockopt::set_socket_buffer(cli.socket_buffer_size);
    stunnerd::runtime::run(cli)
}
