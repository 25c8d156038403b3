//! `stunnerd render -f PATH [-f PATH ...] [--mode managed|legacy] [-o json|yaml]`.
//!
//! Exit status: 0 when everything rendered, 1 when some object (or file) was rejected (the
//! output still shows everything else, and stderr says why), 2 on a usage error.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use super::load::Severity;
use super::{DEFAULT_CDS_ADDRESS, Mode, Options, load_objects, output, parse_str, render_with};

/// Render STUNner Gateway API manifests into stunnerd configs, Services, Deployments and
/// statuses, as the STUNner gateway operator would.
#[derive(Debug, Parser)]
#[command(name = "stunnerd render")]
struct RenderArgs {
    /// Manifest file or directory (YAML or JSON, multi-document), `-` for stdin; repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    files: Vec<PathBuf>,
    /// managed: one config per Gateway; legacy: one per GatewayClass.
    #[arg(long, default_value = "managed", value_parser = ["managed", "legacy"])]
    mode: String,
    /// Output format.
    #[arg(short = 'o', long = "output", default_value = "json", value_parser = ["json", "yaml"])]
    output: String,
    /// Config discovery address the rendered Deployments point stunnerd at.
    #[arg(long, default_value = DEFAULT_CDS_ADDRESS, value_name = "ADDR")]
    cds_server: String,
    /// Do not print notes (skipped objects, missing public addresses) on stderr.
    #[arg(short, long)]
    quiet: bool,
}

/// Entry point for `stunnerd render ...`. `args` is the whole command line (as from
/// `std::env::args()`); everything after the `render` word is parsed.
pub fn render_main(args: Vec<String>) -> ExitCode {
    let start = args
        .iter()
        .take(2)
        .position(|a| a == "render")
        .map_or(1, |i| i + 1);
    let argv = std::iter::once("stunnerd render".to_string()).chain(args.into_iter().skip(start));
    let parsed = match RenderArgs::try_parse_from(argv) {
        Ok(p) => p,
        Err(e) => {
            // --help and --version exit 0; real usage errors 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let mut opts = Options::new(Mode::parse(&parsed.mode).unwrap_or_default());
    opts.cds_address = parsed.cds_server.clone();

    let (objects, load_errors) = load(&parsed.files);
    let out = render_with(&objects, &opts);
    let text = match parsed.output.as_str() {
        "yaml" => output::to_yaml(&out),
        _ => output::to_json(&out),
    };

    let mut failed = false;
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for e in &load_errors {
        failed |= e.is_error();
        let _ = report(&mut err, e.severity, &e.to_string(), parsed.quiet);
    }
    for f in &out.findings {
        failed |= f.is_error();
        let _ = report(&mut err, f.severity, &f.to_string(), parsed.quiet);
    }
    // A closed stdout (`| head`) is not worth a panic or a different exit status.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Like [`load_objects`], with `-` meaning standard input (as for `kubectl apply -f -`).
fn load(paths: &[PathBuf]) -> (Vec<super::Object>, Vec<super::LoadError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let (o, e) = if p.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => parse_str(&text, "<stdin>"),
                Err(e) => (Vec::new(), vec![stdin_error(e)]),
            }
        } else {
            load_objects(std::slice::from_ref(p))
        };
        objects.extend(o);
        errors.extend(e);
    }
    (objects, errors)
}

fn stdin_error(e: std::io::Error) -> super::LoadError {
    super::LoadError {
        severity: Severity::Error,
        file: "<stdin>".into(),
        document: 0,
        line: 0,
        object: String::new(),
        path: String::new(),
        message: format!("cannot read: {e}"),
    }
}

fn report(w: &mut impl Write, severity: Severity, msg: &str, quiet: bool) -> std::io::Result<()> {
    match severity {
        Severity::Error => writeln!(w, "error: {msg}"),
        Severity::Note if !quiet => writeln!(w, "note: {msg}"),
        Severity::Note => Ok(()),
    }
}
