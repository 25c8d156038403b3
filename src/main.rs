//! `stunnerd`: parse flags, hand over to the runtime.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `stunnerd render ...` is the Kubernetes adapter's CLI, not a daemon invocation; it
    // has its own flags, so it is dispatched before the daemon's parser sees them.
    if std::env::args_os().nth(1).is_some_and(|a| a == "render") {
        let args = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return stunnerd::k8s::cli::render_main(args);
    }
    // `stunnerd cds-server ...` serves configs to other stunnerd (spec 4.3); like `render`
    // it has its own flags.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "cds-server")
    {
        let args = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return stunnerd::cds::main(args);
    }
    let cli = stunnerd::cli::Cli::parse();
    stunnerd::transport::sockopt::set_socket_buffer(cli.socket_buffer_size);
    stunnerd::runtime::run(cli)
}
