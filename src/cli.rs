//! Command line of `stunnerd`.
//!
//! The flag set mirrors upstream `cmd/stunnerd/main.go` (spf13/pflag), including the kubectl
//! connection flags that only the `k8s` origin uses, so that any argument list an operator
//! `Dataplane` resource already carries parses unchanged. pflag conventions reproduced here:
//!
//! * `--flag=value`, `--flag value`, `-f value`, `-fvalue` and `-f=value` all work;
//! * boolean flags never consume the next argument (`-w foo` is `-w` plus a positional), but take
//!   an attached value (`--watch=false`, `-w=false`), and can be clustered (`-wd`);
//! * a flag may be repeated, the last occurrence wins (`--as-group` accumulates instead);
//! * flags and positionals may be interspersed, `--` ends flag parsing;
//! * a value may start with `-` (`-u -1`), as pflag takes the next argument unconditionally.
//!
//! Unknown flags and malformed values exit with status 2 (clap's usage-error code, which is
//! also what pflag uses); `-h/--help` prints usage and exits 0.
//!
//! Environment variables are read through caller-supplied lookups in the helpers below, rather
//! than through clap, wherever a flag must override the variable or the value needs checking;
//! that keeps the precedence rules in one place and lets tests run without mutating the process
//! environment.
// The shell: a fresh random UUID for the dataplane id. (clippy.toml)
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, CommandFactory, Parser};

use crate::log::LogFormat;

/// Env var holding the default config origin (overridden by `-c`).
pub const ENV_CONFIG_ORIGIN: &str = "STUNNER_CONFIG_ORIGIN";
/// Env var holding the instance name (with [`ENV_NAMESPACE`] forms the default id).
pub const ENV_NAME: &str = "STUNNER_NAME";
/// Env var holding the instance namespace (with [`ENV_NAME`] forms the default id).
pub const ENV_NAMESPACE: &str = "STUNNER_NAMESPACE";
/// Env var holding the CDS server port for the `k8s` origin.
pub const ENV_CDS_SERVER_PORT: &str = "CDS_SERVER_PORT";
/// Origin used when neither `-c` nor `STUNNER_CONFIG_ORIGIN` is given.
pub const DEFAULT_ORIGIN: &str = ":13478";
/// Default CDS server port (`--cds-server-port`).
pub const DEFAULT_CDS_SERVER_PORT: u16 = 13478;
/// Log spec implied by `-v`.
pub const VERBOSE_LOG_SPEC: &str = "all:DEBUG";

/// Parses `--log-format`. Never fails: upstream treats anything but `json` as text.
fn parse_log_format(s: &str) -> Result<LogFormat, std::convert::Infallible> {
    Ok(LogFormat::from_flag(s))
}

/// The `stunnerd` command line.
///
/// Boolean flags all share one attribute set (`num_args = 0..=1`, `require_equals`,
/// `default_missing_value = "true"`): that is what makes them behave like pflag booleans,
/// i.e. `-w` alone means true, `--watch=false` is accepted, and `-w foo` does not eat `foo`.
#[derive(Parser, Clone)]
#[command(
    name = "stunnerd",
    about = "STUNner dataplane daemon: a STUN/TURN server driven by a STUNner config",
    // Keep the doc comment above (which is about the code) out of `--help`.
    long_about = None,
    version,
    // `--version` also says whether this build carries the kernel offload (build.rs).
    long_version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STUNNERD_OFFLOAD_BUILD"), ")"),
    override_usage = "stunnerd [OPTIONS] [TURN-URI]\n       stunnerd COMMAND [ARGS]...",
    args_override_self = true
)]
pub struct Cli {
    /// Config origin: `IP:port` or an HTTP/WS URL of the CDS server, the literal `k8s` to
    /// discover the CDS server in Kubernetes, or `file://<path>` (a bare path also works:
    /// an existing file or directory, or anything starting with `/`, `./`, `../` or ending
    /// in .yaml/.yml/.json/.conf). Overrides STUNNER_CONFIG_ORIGIN; default `:13478`.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "ORIGIN",
        allow_hyphen_values = true
    )]
    pub config: Option<String>,

    /// Log level spec, `<scope>:<level>[,...]` (default: all:INFO). Overrides the
    /// `admin.loglevel` of every config received.
    #[arg(
        short = 'l',
        long = "log",
        value_name = "SPEC",
        allow_hyphen_values = true
    )]
    pub log: Option<String>,

    /// Log output format: `text` or `json` (anything else means text).
    #[arg(
        long = "log-format",
        value_name = "FORMAT",
        default_value = "text",
        value_parser = parse_log_format,
        allow_hyphen_values = true
    )]
    pub log_format: LogFormat,

    /// Instance id for the CDS server, `<namespace>/<name>` (default:
    /// $STUNNER_NAMESPACE/$STUNNER_NAME, else default/stunnerd-<hostname>).
    #[arg(
        short = 'i',
        long = "id",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    pub id: Option<String>,

    /// Watch the config origin for updates.
    #[arg(
        short = 'w',
        long = "watch",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true,
        action = ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub watch: bool,

    /// Number of SO_REUSEPORT sockets (read loops) per TURN-UDP listener; 0 or less means one.
    #[arg(
        short = 'u',
        long = "udp-thread-num",
        value_name = "N",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub udp_thread_num: i32,

    /// Suppress side effects (no sockets, no health or metrics servers); for testing.
    #[arg(
        short = 'd',
        long = "dry-run",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true,
        action = ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dry_run: bool,

    /// Make /ready always answer 200, even before the first config and while terminating
    /// (workaround for kube-proxy dropping UDP to not-ready pods).
    #[arg(
        long = "force-ready-status",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true,
        action = ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub force_ready_status: bool,

    /// Receive and send buffer size in bytes asked for on every UDP socket (listeners and
    /// relays); the kernel caps it at net.core.rmem_max/wmem_max. Datagrams dropped for want
    /// of buffer space are counted (stunnerd_listener_kernel_drops_total). Our extension.
    #[arg(long = "socket-buffer-size", value_name = "BYTES", default_value_t = 4 << 20)]
    pub socket_buffer_size: usize,

    /// Bytes per second of UDP answers larger than their request sent to one source prefix
    /// (/32, /64) that has not shown it receives them (no valid nonce yet: Binding
    /// responses, 401 challenges), for the whole daemon; the excess is dropped and counted
    /// (stunnerd_listener_unverified_drops_total), so a spoofed victim gets at most this
    /// much from us. 0: no limit. Our extension.
    #[arg(
        long = "preauth-budget",
        value_name = "BYTES_PER_SEC",
        env = "STUNNERD_PREAUTH_BUDGET",
        default_value_t = crate::transport::preauth::DEFAULT_BYTES_PER_SEC
    )]
    pub preauth_budget: u32,

    /// Unauthenticated TCP/TLS connections (accepted, no allocation yet) from one source
    /// address; beyond it new ones are closed at once (counted). Generous by default for
    /// clients behind one NAT or a load balancer that rewrites addresses. Our extension.
    #[arg(
        long = "max-unauth-per-ip",
        value_name = "N",
        env = "STUNNERD_MAX_UNAUTH_PER_IP",
        default_value_t = crate::transport::budget::DEFAULT_PER_IP
    )]
    pub max_unauth_per_ip: usize,

    /// Allocations one TURN REST credential may hold when `admin.user_quota` is unset
    /// (static users stay unlimited; 486 beyond it). 0: no cap. Our extension.
    #[arg(
        long = "ephemeral-quota",
        value_name = "N",
        env = "STUNNERD_EPHEMERAL_QUOTA",
        default_value_t = crate::transport::budget::DEFAULT_EPHEMERAL_QUOTA
    )]
    pub ephemeral_quota: u32,

    /// Bytes per second each allocation may send to its peers (ChannelData and Send), with
    /// a second's worth of burst; datagrams over it are dropped and counted
    /// (stunnerd_dropped_packets_total{reason="rate_limited"}). 0: no limit (default). Our
    /// extension.
    #[arg(
        long = "allocation-rate",
        value_name = "BYTES_PER_SEC",
        env = "STUNNERD_ALLOCATION_RATE",
        default_value_t = 0
    )]
    pub allocation_rate: u32,

    /// Verbose logging, same as `-l all:DEBUG` (an explicit `-l` wins).
    #[arg(
        short = 'v',
        long = "verbose",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true,
        action = ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub verbose: bool,

    /// `k8s` origin only: CDS server address; disables CDS service discovery.
    #[arg(
        long = "cds-server-address",
        value_name = "ADDR",
        env = "CDS_SERVER_ADDR",
        allow_hyphen_values = true
    )]
    pub cds_server_address: Option<String>,

    /// `k8s` origin only: namespace of the CDS server pod.
    #[arg(
        long = "cds-server-namespace",
        value_name = "NAMESPACE",
        env = "CDS_SERVER_NAMESPACE",
        allow_hyphen_values = true
    )]
    pub cds_server_namespace: Option<String>,

    /// `k8s` origin only: CDS server port [default: 13478] [env: CDS_SERVER_PORT]
    // Not `default_value`/`env` in clap: `Cli::cds_server_port()` applies both, so that a
    // malformed env value is ignored instead of failing the whole command line.
    #[arg(
        long = "cds-server-port",
        value_name = "PORT",
        allow_hyphen_values = true
    )]
    pub cds_server_port: Option<u16>,

    /// kubectl connection flags; accepted for compatibility, used by the `k8s` origin only.
    #[command(flatten)]
    pub kube: KubeFlags,

    /// TURN URI (`turn://user:pass@host:port?transport=udp`): serve a default config built
    /// from it. Only honoured when it is the single positional argument, as upstream.
    #[arg(value_name = "TURN-URI")]
    pub positional: Vec<String>,
}

/// The `k8s.io/cli-runtime` `genericclioptions` flag set that upstream registers.
///
/// Upstream only uses these for the `k8s` origin; they are parsed so that no existing
/// argument list fails, and kept so a future `k8s` origin implementation can use them.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Kubernetes connection (k8s origin only)")]
pub struct KubeFlags {
    /// Path to the kubeconfig file.
    #[arg(long = "kubeconfig", value_name = "PATH", allow_hyphen_values = true)]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long = "context", value_name = "NAME", allow_hyphen_values = true)]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long = "cluster", value_name = "NAME", allow_hyphen_values = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long = "user", value_name = "NAME", allow_hyphen_values = true)]
    pub user: Option<String>,
    /// Namespace scope for the request.
    #[arg(
        short = 'n',
        long = "namespace",
        value_name = "NAMESPACE",
        allow_hyphen_values = true
    )]
    pub namespace: Option<String>,
    /// Address and port of the Kubernetes API server.
    #[arg(
        short = 's',
        long = "server",
        value_name = "URL",
        allow_hyphen_values = true
    )]
    pub server: Option<String>,
    /// Bearer token for API server authentication.
    #[arg(long = "token", value_name = "TOKEN", allow_hyphen_values = true)]
    pub token: Option<String>,
    /// Username to impersonate.
    #[arg(long = "as", value_name = "USER", allow_hyphen_values = true)]
    pub impersonate: Option<String>,
    /// Group to impersonate (repeatable).
    #[arg(
        long = "as-group",
        value_name = "GROUP",
        action = ArgAction::Append,
        allow_hyphen_values = true
    )]
    pub impersonate_group: Vec<String>,
    /// UID to impersonate.
    #[arg(long = "as-uid", value_name = "UID", allow_hyphen_values = true)]
    pub impersonate_uid: Option<String>,
    /// Path to a CA certificate file.
    #[arg(
        long = "certificate-authority",
        value_name = "PATH",
        allow_hyphen_values = true
    )]
    pub certificate_authority: Option<String>,
    /// Path to a client certificate file for TLS.
    #[arg(
        long = "client-certificate",
        value_name = "PATH",
        allow_hyphen_values = true
    )]
    pub client_certificate: Option<String>,
    /// Path to a client key file for TLS.
    #[arg(long = "client-key", value_name = "PATH", allow_hyphen_values = true)]
    pub client_key: Option<String>,
    /// Do not verify the API server's certificate.
    #[arg(
        long = "insecure-skip-tls-verify",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true,
        action = ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure_skip_tls_verify: bool,
    /// Server name for API server certificate validation.
    #[arg(
        long = "tls-server-name",
        value_name = "NAME",
        allow_hyphen_values = true
    )]
    pub tls_server_name: Option<String>,
    /// Timeout of a single API server request (e.g. `1s`, `2m`; `0` = none).
    #[arg(
        long = "request-timeout",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub request_timeout: Option<String>,
    /// Default cache directory.
    #[arg(long = "cache-dir", value_name = "PATH", allow_hyphen_values = true)]
    pub cache_dir: Option<String>,
    /// Disable response compression for API server requests.
    #[arg(
        long = "disable-compression",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true,
        action = ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub disable_compression: bool,
    /// Username for basic authentication to the API server.
    #[arg(long = "username", value_name = "USER", allow_hyphen_values = true)]
    pub username: Option<String>,
    /// Password for basic authentication to the API server.
    #[arg(long = "password", value_name = "PASSWORD", allow_hyphen_values = true)]
    pub password: Option<String>,
}

/// Where configs come from (spec 1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A config file (`file://<path>`, or a bare path naming an existing file).
    File(PathBuf),
    /// A CDS server; always a full `http://`, `https://`, `ws://` or `wss://` URL.
    Cds(String),
    /// Discover the CDS server in Kubernetes (the literal origin `k8s`).
    K8s,
}

/// Case-insensitive `starts_with` that hands back the rest of the string.
///
/// Upstream matches schemes case-sensitively and then silently mangles e.g. `HTTP://x` into
/// `http://HTTP://x`; accepting any case is a harmless deviation.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

impl Origin {
    /// Classifies an origin string following upstream's grammar, with one deviation: a bare
    /// string (no scheme) that names an existing file or directory (of Kubernetes
    /// manifests), or that looks like a path ([`looks_like_path`]), is a file origin.
    /// Upstream turns it into `http://<path>`, which breaks its own documented
    /// `stunnerd -c stunnerd.conf` and answers a mistyped path with a connection error.
    pub fn parse(s: &str) -> Origin {
        Self::parse_with(s, |p| p.is_file() || p.is_dir())
    }

    /// [`Origin::parse`] with the file-existence check injected (for tests).
    fn parse_with(s: &str, is_file: impl Fn(&Path) -> bool) -> Origin {
        if s == "k8s" {
            return Origin::K8s;
        }
        if let Some(path) = strip_prefix_ci(s, "file://") {
            return Origin::File(PathBuf::from(path));
        }
        if ["http://", "https://", "ws://", "wss://"]
            .iter()
            .any(|p| strip_prefix_ci(s, p).is_some())
        {
            return Origin::Cds(s.to_owned());
        }
        if !s.is_empty() && (is_file(Path::new(s)) || looks_like_path(s)) {
            return Origin::File(PathBuf::from(s));
        }
        Origin::Cds(format!("http://{s}"))
    }
}

/// Whether a bare origin (no scheme) is meant as a file even if it does not exist: an
/// absolute or `./`/`../` path, or a name ending in a config file extension that has no
/// `:` (so `host:port` CDS addresses never qualify).
pub fn looks_like_path(s: &str) -> bool {
    let ext = Path::new(s)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| {
            ["yaml", "yml", "json", "conf"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        });
    s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || (ext && !s.contains(':'))
}

/// A TURN URI without its user and password, for logs.
pub fn uri_without_credentials(uri: &str) -> String {
    let (scheme, rest) = match uri.split_once(':') {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, uri),
    };
    let slashes = if rest.starts_with("//") { "//" } else { "" };
    let rest = &rest[slashes.len()..];
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let rest = match rest[..host_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match scheme {
        Some(scheme) => format!("{scheme}:{slashes}{rest}"),
        None => rest.to_string(),
    }
}

/// A `stunnerd` subcommand: dispatched on the first argument, before the daemon's own
/// parser sees the arguments (each has its own flags).
pub struct Subcommand {
    pub name: &'static str,
    pub about: &'static str,
    /// Entry point; gets the whole argument list, program name first.
    pub run: fn(Vec<String>) -> ExitCode,
}

/// Every subcommand. `stunnerd --help` and `stunnerd help` list them from here, and `main`
/// dispatches through it: a new subcommand is one entry.
pub const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "render",
        about: "Render stunnerd configs (and Services, Deployments, statuses) from Gateway API manifests, as the STUNner operator would",
        run: crate::k8s::cli::render_main,
    },
    Subcommand {
        name: "cds-server",
        about: "Serve stunnerd configs from files or manifests over the STUNner CDS API",
        run: crate::cds::main,
    },
    Subcommand {
        name: "sessions",
        about: "List the live allocations of a running stunnerd (`sessions kill ID|--user NAME` ends them)",
        run: crate::admin::client::main,
    },
    Subcommand {
        name: "help",
        about: "Print this help, or a subcommand's (`stunnerd help render`)",
        run: help_main,
    },
];

/// The subcommand named `name`, if any.
pub fn subcommand(name: &str) -> Option<&'static Subcommand> {
    SUBCOMMANDS.iter().find(|c| c.name == name)
}

/// The daemon's command with the subcommand list in its help.
pub fn command() -> clap::Command {
    let width = SUBCOMMANDS.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut text = String::from("Commands:\n");
    for c in SUBCOMMANDS {
        text.push_str(&format!("  {:width$}  {}\n", c.name, c.about));
    }
    text.push_str(
        "\nWithout a command, stunnerd runs the TURN server. `stunnerd COMMAND --help` shows a command's flags.\n\
         Signals: SIGTERM/SIGINT drain (a second one exits at once), SIGHUP re-reads the config and certificate files.",
    );
    Cli::command().after_help(text)
}

/// Parse the process's arguments for the daemon (exits on `--help`, `--version` or a usage
/// error, as clap does).
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `stunnerd help [COMMAND]`.
fn help_main(args: Vec<String>) -> ExitCode {
    let program = args.first().cloned().unwrap_or_else(|| "stunnerd".into());
    match args.get(2).map(|a| (a, subcommand(a))) {
        Some((_, Some(c))) if c.name != "help" => {
            (c.run)(vec![program, c.name.to_string(), "--help".to_string()])
        }
        Some((name, _)) if name != "help" => {
            eprintln!("stunnerd help: unknown command {name:?}");
            let _ = command().print_help();
            ExitCode::from(2)
        }
        _ => {
            let _ = command().print_help();
            ExitCode::SUCCESS
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file://{}", p.display()),
            Origin::Cds(url) => f.write_str(url),
            Origin::K8s => f.write_str("k8s"),
        }
    }
}

/// Returns a non-empty env value.
///
/// Upstream uses `os.LookupEnv`, so a variable set to the empty string counts as set and yields
/// an unusable origin (`http://`) or id (`/`); treating empty as unset is a harmless deviation.
fn env_nonempty(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    env(key).filter(|v| !v.is_empty())
}

/// A pflag string flag counts as "given" only when non-empty (upstream tests `!= ""`).
fn flag_nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|v| !v.is_empty())
}

impl Cli {
    /// The config origin: `-c`, else `$STUNNER_CONFIG_ORIGIN`, else `:13478`, classified by
    /// [`Origin::parse`].
    pub fn origin(&self, env: &dyn Fn(&str) -> Option<String>) -> Origin {
        let raw = match flag_nonempty(&self.config) {
            Some(c) => c.to_owned(),
            None => env_nonempty(env, ENV_CONFIG_ORIGIN).unwrap_or_else(|| DEFAULT_ORIGIN.into()),
        };
        Origin::parse(&raw)
    }

    /// The instance id: `-i`, else `$STUNNER_NAMESPACE/$STUNNER_NAME` when both are set, else
    /// `default/stunnerd-<hostname>` (`/proc/sys/kernel/hostname`, then `$HOSTNAME`, then a
    /// random UUID, as upstream falls back to one when the hostname is unavailable).
    pub fn instance_id(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        if let Some(id) = flag_nonempty(&self.id) {
            return id.to_owned();
        }
        if let (Some(ns), Some(name)) = (
            env_nonempty(env, ENV_NAMESPACE),
            env_nonempty(env, ENV_NAME),
        ) {
            return format!("{ns}/{name}");
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| env_nonempty(env, "HOSTNAME"));
        default_instance_id(host.as_deref())
    }

    /// Number of UDP sockets per TURN-UDP listener; `-u 0` or negative means a single one.
    pub fn udp_threads(&self) -> usize {
        usize::try_from(self.udp_thread_num).map_or(1, |n| n.max(1))
    }

    /// The CLI log spec that overrides every config's `admin.loglevel`: `-l` if given, else
    /// `all:DEBUG` for `-v`, else `None` (then the config decides, starting from `all:INFO`).
    pub fn log_spec(&self) -> Option<String> {
        match flag_nonempty(&self.log) {
            Some(l) => Some(l.to_owned()),
            None if self.verbose => Some(VERBOSE_LOG_SPEC.to_owned()),
            None => None,
        }
    }

    /// The CDS server port for the `k8s` origin: `--cds-server-port`, else a valid
    /// `$CDS_SERVER_PORT`, else 13478.
    ///
    /// Upstream inverts its error check, so a numeric env value is ignored and a non-numeric
    /// one yields port 0; we parse it properly and ignore values that are not a port.
    pub fn cds_server_port(&self, env: &dyn Fn(&str) -> Option<String>) -> u16 {
        self.cds_server_port
            .or_else(|| env(ENV_CDS_SERVER_PORT).and_then(|p| p.trim().parse().ok()))
            .unwrap_or(DEFAULT_CDS_SERVER_PORT)
    }

    /// The TURN URI for default-configuration mode: the positional argument if there is
    /// exactly one. Upstream checks `flag.NArg() == 1`, so two or more positionals are all
    /// ignored and the origin is used instead.
    pub fn turn_uri(&self) -> Option<&str> {
        match self.positional.as_slice() {
            [uri] => Some(uri.as_str()),
            _ => None,
        }
    }
}

/// `default/stunnerd-<host>`, or `default/stunnerd-<random uuid>` without a hostname.
fn default_instance_id(host: Option<&str>) -> String {
    match host {
        Some(h) if !h.is_empty() => format!("default/stunnerd-{h}"),
        _ => format!("default/stunnerd-{}", random_uuid()),
    }
}

/// A random RFC 4122 version-4 UUID string, the shape upstream's fallback id uses.
fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Placeholder for secret values in `Debug` output.
const REDACTED: &str = "<redacted>";

fn redact(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

/// Hand-written so that a `{:?}` of the command line (e.g. in a startup log) cannot leak the
/// TURN URI's password.
impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cli")
            .field("config", &self.config)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("id", &self.id)
            .field("watch", &self.watch)
            .field("udp_thread_num", &self.udp_thread_num)
            .field("dry_run", &self.dry_run)
            .field("force_ready_status", &self.force_ready_status)
            .field("socket_buffer_size", &self.socket_buffer_size)
            .field("preauth_budget", &self.preauth_budget)
            .field("max_unauth_per_ip", &self.max_unauth_per_ip)
            .field("ephemeral_quota", &self.ephemeral_quota)
            .field("allocation_rate", &self.allocation_rate)
            .field("verbose", &self.verbose)
            .field("cds_server_address", &self.cds_server_address)
            .field("cds_server_namespace", &self.cds_server_namespace)
            .field("cds_server_port", &self.cds_server_port)
            .field("kube", &self.kube)
            .field(
                "positional",
                &format_args!("<{} {REDACTED}>", self.positional.len()),
            )
            .finish()
    }
}

/// Hand-written to redact the bearer token and the basic-auth password.
impl fmt::Debug for KubeFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeFlags")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("cluster", &self.cluster)
            .field("user", &self.user)
            .field("namespace", &self.namespace)
            .field("server", &self.server)
            .field("token", &redact(&self.token))
            .field("impersonate", &self.impersonate)
            .field("impersonate_group", &self.impersonate_group)
            .field("impersonate_uid", &self.impersonate_uid)
            .field("certificate_authority", &self.certificate_authority)
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("tls_server_name", &self.tls_server_name)
            .field("request_timeout", &self.request_timeout)
            .field("cache_dir", &self.cache_dir)
            .field("disable_compression", &self.disable_compression)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use std::collections::HashMap;

    fn parse(args: &[&str]) -> Cli {
        let mut v = vec!["stunnerd"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        let mut v = vec!["stunnerd"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v) {
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
            Err(e) => e,
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = parse(&[]);
        assert_eq!(c.config, None);
        assert_eq!(c.log, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.id, None);
        assert!(!c.watch && !c.dry_run && !c.force_ready_status && !c.verbose);
        assert_eq!(c.udp_thread_num, 0);
        assert_eq!(c.udp_threads(), 1);
        assert_eq!(c.cds_server_port, None);
        assert!(c.positional.is_empty());
        assert_eq!(c.turn_uri(), None);
        assert_eq!(c.log_spec(), None);
        assert!(!c.kube.insecure_skip_tls_verify && !c.kube.disable_compression);
    }

    #[test]
    fn operator_default_args() {
        let c = parse(&["-w", "--udp-thread-num=16"]);
        assert!(c.watch);
        assert_eq!(c.udp_threads(), 16);
        let c = parse(&["-w", "--udp-thread-num", "16"]);
        assert!(c.watch);
        assert_eq!(c.udp_threads(), 16);
        let c = parse(&["--udp-thread-num=1"]);
        assert_eq!(c.udp_threads(), 1);
    }

    #[test]
    fn udp_thread_forms() {
        assert_eq!(parse(&["-u", "4"]).udp_threads(), 4);
        assert_eq!(parse(&["-u4"]).udp_threads(), 4);
        assert_eq!(parse(&["-u=4"]).udp_threads(), 4);
        assert_eq!(parse(&["-wu8"]).udp_threads(), 8);
        assert_eq!(parse(&["-u", "-1"]).udp_thread_num, -1);
        assert_eq!(parse(&["-u", "-1"]).udp_threads(), 1);
        assert_eq!(parse(&["--udp-thread-num=-7"]).udp_threads(), 1);
        assert_eq!(parse(&["-u", "0"]).udp_threads(), 1);
        assert_eq!(
            parse_err(&["-u", "many"]).kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn string_flags_both_forms() {
        for args in [
            &["-c", "file:///x", "-l", "all:DEBUG", "-i", "ns/n"][..],
            &["--config=file:///x", "--log=all:DEBUG", "--id=ns/n"][..],
            &[
                "--config",
                "file:///x",
                "--log",
                "all:DEBUG",
                "--id",
                "ns/n",
            ][..],
            &["-cfile:///x", "-lall:DEBUG", "-ins/n"][..],
        ] {
            let c = parse(args);
            assert_eq!(c.config.as_deref(), Some("file:///x"), "{args:?}");
            assert_eq!(c.log.as_deref(), Some("all:DEBUG"), "{args:?}");
            assert_eq!(c.id.as_deref(), Some("ns/n"), "{args:?}");
        }
    }

    #[test]
    fn bool_flags_are_pflag_like() {
        let c = parse(&["-w", "-d", "-v", "--force-ready-status"]);
        assert!(c.watch && c.dry_run && c.verbose && c.force_ready_status);
        let c = parse(&["-wdv"]);
        assert!(c.watch && c.dry_run && c.verbose);
        let c = parse(&["--watch", "--dry-run", "--verbose"]);
        assert!(c.watch && c.dry_run && c.verbose);
        // Explicit values need `=`.
        let c = parse(&["--watch=false", "-d=true", "--force-ready-status=1"]);
        assert!(!c.watch && c.dry_run && c.force_ready_status);
        // A bool flag never consumes the next word.
        let c = parse(&["--watch", "false"]);
        assert!(c.watch);
        assert_eq!(c.positional, ["false"]);
        // Repeats: last wins.
        assert!(parse(&["-w", "-w"]).watch);
        assert!(!parse(&["-w", "--watch=false"]).watch);
        assert!(parse(&["--watch=false", "-w"]).watch);
    }

    #[test]
    fn repeated_string_flag_last_wins() {
        let c = parse(&["-c", "a", "-c", "b", "--log=x:INFO", "-l", "y:DEBUG"]);
        assert_eq!(c.config.as_deref(), Some("b"));
        assert_eq!(c.log.as_deref(), Some("y:DEBUG"));
    }

    #[test]
    fn log_format() {
        assert_eq!(parse(&["--log-format=json"]).log_format, LogFormat::Json);
        assert_eq!(parse(&["--log-format", "json"]).log_format, LogFormat::Json);
        assert_eq!(parse(&["--log-format=text"]).log_format, LogFormat::Text);
        assert_eq!(parse(&["--log-format=yaml"]).log_format, LogFormat::Text);
        assert_eq!(parse(&["--log-format="]).log_format, LogFormat::Text);
    }

    #[test]
    fn log_spec_precedence() {
        assert_eq!(parse(&[]).log_spec(), None);
        assert_eq!(parse(&["-v"]).log_spec().as_deref(), Some("all:DEBUG"));
        assert_eq!(
            parse(&["-v", "-l", "turn:TRACE"]).log_spec().as_deref(),
            Some("turn:TRACE")
        );
        assert_eq!(
            parse(&["-l", "all:WARN", "-v"]).log_spec().as_deref(),
            Some("all:WARN")
        );
        assert_eq!(
            parse(&["-l", "x:INFO"]).log_spec().as_deref(),
            Some("x:INFO")
        );
        // An empty -l is "not given", as upstream.
        assert_eq!(parse(&["--log="]).log_spec(), None);
        assert_eq!(
            parse(&["--log=", "-v"]).log_spec().as_deref(),
            Some("all:DEBUG")
        );
    }

    #[test]
    fn cds_flags() {
        let c = parse(&[
            "--cds-server-address=10.0.0.1",
            "--cds-server-namespace",
            "stunner-system",
            "--cds-server-port=1234",
        ]);
        assert_eq!(c.cds_server_address.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.cds_server_namespace.as_deref(), Some("stunner-system"));
        assert_eq!(c.cds_server_port(&no_env), 1234);
        // The flag wins over the env var.
        assert_eq!(
            c.cds_server_port(&env_of(&[("CDS_SERVER_PORT", "99")])),
            1234
        );
    }

    #[test]
    fn cds_port_env_fallback() {
        let c = parse(&[]);
        assert_eq!(c.cds_server_port(&no_env), 13478);
        assert_eq!(
            c.cds_server_port(&env_of(&[("CDS_SERVER_PORT", "4000")])),
            4000
        );
        assert_eq!(
            c.cds_server_port(&env_of(&[("CDS_SERVER_PORT", " 4001 ")])),
            4001
        );
        // Garbage is ignored rather than turned into port 0 (upstream quirk).
        assert_eq!(
            c.cds_server_port(&env_of(&[("CDS_SERVER_PORT", "abc")])),
            13478
        );
        assert_eq!(
            c.cds_server_port(&env_of(&[("CDS_SERVER_PORT", "70000")])),
            13478
        );
        assert_eq!(
            c.cds_server_port(&env_of(&[("CDS_SERVER_PORT", "")])),
            13478
        );
    }

    #[test]
    fn kubectl_flags_are_accepted() {
        let c = parse(&[
            "--kubeconfig=/root/.kube/config",
            "--context",
            "ctx",
            "--cluster=cl",
            "--user",
            "u",
            "-n",
            "stunner",
            "-s=https://k8s:6443",
            "--token",
            "tok",
            "--as=admin",
            "--as-group",
            "g1",
            "--as-group=g2",
            "--as-uid=42",
            "--certificate-authority=/ca.pem",
            "--client-certificate",
            "/c.pem",
            "--client-key=/k.pem",
            "--insecure-skip-tls-verify",
            "--tls-server-name=k8s.local",
            "--request-timeout=5s",
            "--cache-dir",
            "/tmp/cache",
            "--disable-compression=true",
            "--username=bob",
            "--password",
            "hunter2",
            "-w",
        ]);
        let k = &c.kube;
        assert_eq!(k.kubeconfig.as_deref(), Some("/root/.kube/config"));
        assert_eq!(k.context.as_deref(), Some("ctx"));
        assert_eq!(k.cluster.as_deref(), Some("cl"));
        assert_eq!(k.user.as_deref(), Some("u"));
        assert_eq!(k.namespace.as_deref(), Some("stunner"));
        assert_eq!(k.server.as_deref(), Some("https://k8s:6443"));
        assert_eq!(k.token.as_deref(), Some("tok"));
        assert_eq!(k.impersonate.as_deref(), Some("admin"));
        assert_eq!(k.impersonate_group, ["g1", "g2"]);
        assert_eq!(k.impersonate_uid.as_deref(), Some("42"));
        assert_eq!(k.certificate_authority.as_deref(), Some("/ca.pem"));
        assert_eq!(k.client_certificate.as_deref(), Some("/c.pem"));
        assert_eq!(k.client_key.as_deref(), Some("/k.pem"));
        assert!(k.insecure_skip_tls_verify);
        assert_eq!(k.tls_server_name.as_deref(), Some("k8s.local"));
        assert_eq!(k.request_timeout.as_deref(), Some("5s"));
        assert_eq!(k.cache_dir.as_deref(), Some("/tmp/cache"));
        assert!(k.disable_compression);
        assert_eq!(k.username.as_deref(), Some("bob"));
        assert_eq!(k.password.as_deref(), Some("hunter2"));
        assert!(c.watch);
        assert!(c.positional.is_empty());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = parse(&[
            "--token=tok-secret",
            "--password=pw-secret",
            "turn://user:uri-secret@1.2.3.4:3478",
        ]);
        let s = format!("{c:?}");
        assert!(!s.contains("tok-secret"), "{s}");
        assert!(!s.contains("pw-secret"), "{s}");
        assert!(!s.contains("uri-secret"), "{s}");
        assert!(s.contains(REDACTED));
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let e = parse_err(&["--bogus"]);
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
        let e = parse_err(&["-x"]);
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
        // A flag missing its value is a usage error as well.
        assert_eq!(parse_err(&["-c"]).exit_code(), 2);
        // Bool flags reject non-bool values.
        assert_eq!(parse_err(&["--watch=maybe"]).exit_code(), 2);
    }

    #[test]
    fn help_exits_zero() {
        for h in ["-h", "--help"] {
            let e = parse_err(&[h]);
            assert_eq!(e.kind(), ErrorKind::DisplayHelp);
            assert_eq!(e.exit_code(), 0);
            let text = e.to_string();
            assert!(text.contains("--udp-thread-num"), "{text}");
            assert!(text.contains("--kubeconfig"), "{text}");
        }
    }

    #[test]
    fn version_flag() {
        for v in ["-V", "--version"] {
            let e = command()
                .try_get_matches_from(["stunnerd", v])
                .expect_err("version exits");
            assert_eq!(e.kind(), ErrorKind::DisplayVersion);
            assert_eq!(e.exit_code(), 0);
            assert!(e.to_string().contains(env!("CARGO_PKG_VERSION")));
        }
        let long = command()
            .try_get_matches_from(["stunnerd", "--version"])
            .expect_err("version exits")
            .to_string();
        assert!(long.contains("offload"), "{long}");
    }

    #[test]
    fn help_lists_every_subcommand() {
        let help = command().render_help().to_string();
        for c in SUBCOMMANDS {
            assert!(help.contains(&format!("  {}", c.name)), "{help}");
            assert!(help.contains(c.about), "{}: {help}", c.name);
            assert_eq!(subcommand(c.name).map(|s| s.name), Some(c.name));
        }
        assert!(subcommand("turn://x").is_none());
    }

    #[test]
    fn uri_credentials_are_dropped() {
        assert_eq!(
            uri_without_credentials("turn://user:secret@127.0.0.1:3478?transport=udp"),
            "turn://127.0.0.1:3478?transport=udp"
        );
        assert_eq!(uri_without_credentials("turns:u:p@h:5349"), "turns:h:5349");
        assert_eq!(uri_without_credentials("turn:1.2.3.4"), "turn:1.2.3.4");
        assert_eq!(uri_without_credentials("x@y"), "y");
        assert_eq!(uri_without_credentials(""), "");
    }

    #[test]
    fn positionals() {
        let c = parse(&["turn://u:p@1.2.3.4:3478"]);
        assert_eq!(c.turn_uri(), Some("turn://u:p@1.2.3.4:3478"));
        // Flags may follow the positional (pflag intersperses).
        let c = parse(&["turn://u:p@1.2.3.4", "-w", "-u", "2"]);
        assert_eq!(c.turn_uri(), Some("turn://u:p@1.2.3.4"));
        assert!(c.watch);
        assert_eq!(c.udp_threads(), 2);
        // More than one positional: all ignored, as upstream's `NArg() == 1`.
        let c = parse(&["a", "b"]);
        assert_eq!(c.positional, ["a", "b"]);
        assert_eq!(c.turn_uri(), None);
        // `--` ends flag parsing.
        let c = parse(&["--", "-w"]);
        assert!(!c.watch);
        assert_eq!(c.turn_uri(), Some("-w"));
    }

    #[test]
    fn origin_grammar() {
        let never = |_: &Path| false;
        let p = |s: &str| Origin::parse_with(s, never);
        assert_eq!(p("k8s"), Origin::K8s);
        assert_eq!(p("K8S"), Origin::Cds("http://K8S".into()));
        assert_eq!(p(":13478"), Origin::Cds("http://:13478".into()));
        assert_eq!(
            p("10.0.0.1:13478"),
            Origin::Cds("http://10.0.0.1:13478".into())
        );
        assert_eq!(
            p("[fd00::1]:13478"),
            Origin::Cds("http://[fd00::1]:13478".into())
        );
        for url in [
            "http://10.0.0.1:13478",
            "https://cds.example:443",
            "ws://1.2.3.4:13478",
            "wss://cds.example",
            "HTTP://upper:1",
        ] {
            assert_eq!(p(url), Origin::Cds(url.into()), "{url}");
        }
        assert_eq!(
            p("file:///etc/stunnerd/stunnerd.conf"),
            Origin::File("/etc/stunnerd/stunnerd.conf".into())
        );
        assert_eq!(p("file://rel.conf"), Origin::File("rel.conf".into()));
        assert_eq!(p("FILE:///x"), Origin::File("/x".into()));
        // Our deviation: a bare string that looks like a path is a file even when missing
        // (upstream makes it `http:///etc/...`), so the error names the file.
        for path in [
            "/etc/stunnerd/stunnerd.conf",
            "./stunnerd.yaml",
            "../x",
            "stunnerd.YAML",
            "c.json",
        ] {
            assert_eq!(p(path), Origin::File(path.into()), "{path}");
        }
        // Host names and host:port stay CDS addresses.
        for cds in [
            "cds.example",
            "cds:13478",
            "stunnerd.conf:13478",
            "localhost",
        ] {
            assert_eq!(p(cds), Origin::Cds(format!("http://{cds}")), "{cds}");
        }
        assert_eq!(p(""), Origin::Cds("http://".into()));
        // Our deviation: a bare path naming an existing file is a file origin.
        let always = |_: &Path| true;
        assert_eq!(
            Origin::parse_with("stunnerd.conf", always),
            Origin::File("stunnerd.conf".into())
        );
        // ... but `k8s` and schemes are decided before the file check.
        assert_eq!(Origin::parse_with("k8s", always), Origin::K8s);
        assert_eq!(
            Origin::parse_with("http://x", always),
            Origin::Cds("http://x".into())
        );
    }

    #[test]
    fn origin_existing_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stunnerd.conf");
        std::fs::write(&file, "{}").unwrap();
        let s = file.to_str().unwrap();
        assert_eq!(Origin::parse(s), Origin::File(file.clone()));
        // A directory (of Kubernetes manifests) is a file origin too.
        let d = dir.path().to_str().unwrap();
        assert_eq!(Origin::parse(d), Origin::File(dir.path().to_path_buf()));
        let missing = dir.path().join("missing.conf");
        let m = missing.to_str().unwrap();
        assert_eq!(Origin::parse(m), Origin::File(missing.clone()));
    }

    #[test]
    fn origin_precedence() {
        let env = env_of(&[("STUNNER_CONFIG_ORIGIN", "http://10.1.2.3:13478")]);
        assert_eq!(
            parse(&[]).origin(&no_env),
            Origin::Cds("http://:13478".into())
        );
        assert_eq!(
            parse(&[]).origin(&env),
            Origin::Cds("http://10.1.2.3:13478".into())
        );
        assert_eq!(
            parse(&["-c", "file:///c.yaml"]).origin(&env),
            Origin::File("/c.yaml".into())
        );
        assert_eq!(parse(&["-c", "k8s"]).origin(&env), Origin::K8s);
        // Empty values count as unset.
        assert_eq!(
            parse(&["--config="]).origin(&env),
            Origin::Cds("http://10.1.2.3:13478".into())
        );
        let empty = env_of(&[("STUNNER_CONFIG_ORIGIN", "")]);
        assert_eq!(
            parse(&[]).origin(&empty),
            Origin::Cds("http://:13478".into())
        );
    }

    #[test]
    fn origin_display() {
        assert_eq!(Origin::File("/a/b".into()).to_string(), "file:///a/b");
        assert_eq!(
            Origin::Cds("http://:13478".into()).to_string(),
            "http://:13478"
        );
        assert_eq!(Origin::K8s.to_string(), "k8s");
    }

    #[test]
    fn instance_id_precedence() {
        let both = env_of(&[("STUNNER_NAMESPACE", "ns"), ("STUNNER_NAME", "gw")]);
        assert_eq!(parse(&["-i", "a/b"]).instance_id(&both), "a/b");
        assert_eq!(parse(&["--id=a/b"]).instance_id(&no_env), "a/b");
        assert_eq!(parse(&[]).instance_id(&both), "ns/gw");
        // Only one of the two set: fall back to the hostname form.
        let one = env_of(&[("STUNNER_NAME", "gw"), ("HOSTNAME", "h")]);
        let id = parse(&[]).instance_id(&one);
        assert!(id.starts_with("default/stunnerd-"), "{id}");
        assert!(id.len() > "default/stunnerd-".len(), "{id}");
        let empty = env_of(&[("STUNNER_NAMESPACE", ""), ("STUNNER_NAME", "gw")]);
        assert!(
            parse(&[])
                .instance_id(&empty)
                .starts_with("default/stunnerd-")
        );
    }

    #[test]
    fn default_id_forms() {
        assert_eq!(default_instance_id(Some("pod-1")), "default/stunnerd-pod-1");
        for host in [None, Some("")] {
            let id = default_instance_id(host);
            let uuid = id.strip_prefix("default/stunnerd-").unwrap();
            assert_eq!(uuid.len(), 36, "{id}");
            let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
            assert_eq!(&uuid[14..15], "4", "{id}");
            assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
        assert_ne!(default_instance_id(None), default_instance_id(None));
    }
}
