//! Logging: upstream's scoped log-level grammar on top of `tracing`.
//!
//! Upstream (`pkg/logger`) keeps one level per *scope* plus a default, configured with specs
//! like `all:INFO,turn:DEBUG` from `-l`, `-v` and every config's `admin.loglevel`. Here a
//! scope is a `tracing` *target*: code logs with `target: "turn"`, `target: "cds-client"` and so
//! on (see [`KNOWN_SCOPES`]); events with any other target (e.g. a module path) follow the
//! default level.
//!
//! Filtering is done by [`ScopeFilter`], which looks the target up *exactly*, wrapped in a
//! `tracing_subscriber::reload` layer so specs can change at runtime. `EnvFilter` is not used
//! for this because its targets match by prefix: a `stunner=debug` directive would also
//! enable the `stunnerd` scope and every `stunnerd::…` module path, which upstream's exact
//! scope match does not. [`LevelSpec::to_directives`] still renders an `EnvFilter` directive
//! string for anyone who wants one.
//!
//! Output goes to stdout, one line per event, in upstream's text layout
//! (`HH:MM:SS.micro file:line: scope LEVEL: message`) or as one JSON object per line with the
//! keys `time`, `level`, `msg`, `scope` (see [`LogFormat`]). Times are UTC: containers run in UTC
//! and resolving the local zone would need another crate.
// The shell: log lines carry wall-clock timestamps. (clippy.toml)
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// The spec stunnerd applies at start-up unless `-l`/`-v` gives one (upstream
/// `DefaultLogLevel`).
pub const DEFAULT_SPEC: &str = "all:INFO";

/// Scope names upstream uses, kept so user specs written for upstream keep working; our code
/// logs with these as `tracing` targets. Per-object upstream scopes (`listener-<name>`,
/// `cluster-<name>`, `relay-<name>`) cannot be targets (targets are static strings), so those
/// objects log under `listener`, `cluster` and `relay` with the name as a field.
pub const KNOWN_SCOPES: &[&str] = &[
    "stunnerd",
    "stunner",
    "reconciler",
    "admin",
    "auth",
    "health",
    "metrics",
    "offload",
    "offload-stats",
    "license",
    "router",
    "stunner-root",
    "listener",
    "cluster",
    "relay",
    "dns-resolver",
    "cds-client",
    "config-file-client",
    "cds-fwd",
    "turn",
];

/// Output format selected by `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `HH:MM:SS.micro file:line: scope LEVEL: message`.
    #[default]
    Text,
    /// One JSON object per line: `time`, `level`, `msg`, `scope`, plus any event fields.
    Json,
}

impl LogFormat {
    /// Upstream compares with `== "json"`; anything else, including `JSON`, is text.
    pub fn from_flag(s: &str) -> LogFormat {
        if s == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// An upstream log level. Ordered from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing is logged.
    Disable,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// Parses a level name case-insensitively (`DISABLE`, `ERROR`, `WARN`, `INFO`, `DEBUG`,
    /// `TRACE`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Level> {
        const NAMES: [(&str, Level); 6] = [
            ("DISABLE", Level::Disable),
            ("ERROR", Level::Error),
            ("WARN", Level::Warn),
            ("INFO", Level::Info),
            ("DEBUG", Level::Debug),
            ("TRACE", Level::Trace),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, l)| l)
    }

    /// The upstream spelling, as accepted by [`Level::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Disable => "DISABLE",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }

    /// The equivalent `tracing` filter (`Disable` is `OFF`).
    pub fn to_level_filter(self) -> LevelFilter {
        match self {
            Level::Disable => LevelFilter::OFF,
            Level::Error => LevelFilter::ERROR,
            Level::Warn => LevelFilter::WARN,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::DEBUG,
            Level::Trace => LevelFilter::TRACE,
        }
    }

    /// The `EnvFilter` directive spelling.
    fn directive(self) -> &'static str {
        match self {
            Level::Disable => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// Whether an event at `level` passes this threshold.
    pub fn allows(self, level: &tracing::Level) -> bool {
        *level <= self.to_level_filter()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-scope log levels, with upstream's cumulative spec semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelSpec {
    default: Level,
    scopes: BTreeMap<String, Level>,
}

impl Default for LevelSpec {
    fn default() -> Self {
        Self::new()
    }
}

impl LevelSpec {
    /// The state before any spec: default `ERROR`, no scope levels (as upstream).
    pub fn new() -> Self {
        LevelSpec {
            default: Level::Error,
            scopes: BTreeMap::new(),
        }
    }

    /// [`LevelSpec::new`] with `spec` applied.
    pub fn parse(spec: &str) -> Self {
        let mut s = Self::new();
        s.apply(spec);
        s
    }

    /// Applies `spec := item ("," item)*`, `item := scope ":" level`, left to right.
    ///
    /// Only what the spec mentions changes. Scope `all` (any case) sets the default and every
    /// scope level set so far, so `turn:DEBUG,all:INFO` leaves `turn` at INFO; other scopes are
    /// case-sensitive. An item is split at its first `:`; items without one, or with an
    /// unknown level, are skipped. No trimming: upstream does none, so ` turn:DEBUG` names the
    /// scope " turn".
    pub fn apply(&mut self, spec: &str) {
        for item in spec.split(',') {
            let Some((scope, level)) = item.split_once(':') else {
                continue;
            };
            let Some(level) = Level::parse(level) else {
                continue;
            };
            if scope.eq_ignore_ascii_case("all") {
                self.default = level;
                self.scopes.values_mut().for_each(|l| *l = level);
            } else {
                self.scopes.insert(scope.to_owned(), level);
            }
        }
    }

    /// The level of scopes without their own setting.
    pub fn default_level(&self) -> Level {
        self.default
    }

    /// The effective level of `scope`.
    pub fn level(&self, scope: &str) -> Level {
        self.scopes.get(scope).copied().unwrap_or(self.default)
    }

    /// Scopes with their own level, sorted by name.
    pub fn scopes(&self) -> impl Iterator<Item = (&str, Level)> {
        self.scopes.iter().map(|(s, &l)| (s.as_str(), l))
    }

    /// Whether an event of `scope` at `level` is logged.
    pub fn enabled(&self, scope: &str, level: &tracing::Level) -> bool {
        self.level(scope).allows(level)
    }

    /// The most verbose level any scope has.
    pub fn max_level(&self) -> Level {
        self.scopes.values().copied().fold(self.default, Level::max)
    }

    /// Renders the spec as a `tracing_subscriber::EnvFilter` directive string, e.g.
    /// `info,turn=debug`. Scopes are targets; `DISABLE` is `off`.
    ///
    /// Scope names EnvFilter cannot take as a target (empty, or with characters other than
    /// ASCII alphanumerics, `-`, `_`, `.`) are left out, so the string always parses. Because
    /// EnvFilter matches targets by prefix, every known scope that a shorter directive would
    /// otherwise capture (`stunnerd` under `stunner`) gets an explicit directive at its own
    /// level; prefix capture of unknown targets remains.
    pub fn to_directives(&self) -> String {
        fn usable(s: &str) -> bool {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        }
        let mut out = String::from(self.default.directive());
        let mut targets: Vec<&str> = Vec::new();
        for (scope, level) in self.scopes.iter().filter(|(s, _)| usable(s)) {
            let _ = write!(out, ",{scope}={}", level.directive());
            targets.push(scope);
        }
        for known in KNOWN_SCOPES {
            let captured = targets
                .iter()
                .any(|t| known.len() > t.len() && known.starts_with(t));
            if captured && !self.scopes.contains_key(*known) {
                let _ = write!(out, ",{known}={}", self.default.directive());
            }
        }
        out
    }
}

/// Renders in upstream's grammar (`all:<default>` first, then each scope), so that
/// `LevelSpec::parse(&s.to_string()) == s`.
impl fmt::Display for LevelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all:{}", self.default)?;
        for (scope, level) in &self.scopes {
            write!(f, ",{scope}:{level}")?;
        }
        Ok(())
    }
}

/// A per-layer filter that applies a [`LevelSpec`] to event targets by exact match.
///
/// It answers `callsite_enabled` definitively (always/never), so disabled call sites cost
/// nothing; that is sound because the reload layer rebuilds the interest cache whenever the
/// spec is replaced.
#[derive(Debug, Clone)]
pub struct ScopeFilter {
    spec: LevelSpec,
}

impl ScopeFilter {
    pub fn new(spec: LevelSpec) -> Self {
        ScopeFilter { spec }
    }

    fn allows(&self, meta: &Metadata<'_>) -> bool {
        self.spec.enabled(meta.target(), meta.level())
    }
}

impl<S: Subscriber> Filter<S> for ScopeFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        self.allows(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.allows(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.spec.max_level().to_level_filter())
    }
}

/// Runtime control of the installed logger.
#[derive(Clone)]
pub struct LogHandle {
    /// The authoritative cumulative spec. The mutex also serialises updates so concurrent
    /// `set_spec` calls install filters in the order they applied their specs.
    spec: Arc<Mutex<LevelSpec>>,
    /// Weak: dead when our subscriber was never installed (another global subscriber won),
    /// in which case reloads are no-ops but the spec is still tracked.
    reload: reload::Handle<ScopeFilter, Registry>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("spec", &self.spec().to_string())
            .field("installed", &self.is_installed())
            .finish()
    }
}

impl LogHandle {
    /// Applies `spec` on top of the current levels (cumulative, see [`LevelSpec::apply`]).
    /// Re-applying an unchanged spec, as every reconcile does, does not touch the subscriber.
    pub fn set_spec(&self, spec: &str) {
        let mut cur = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        let before = cur.clone();
        cur.apply(spec);
        if *cur == before {
            return;
        }
        // Only fails if our subscriber is not installed, in which case it logs nothing anyway.
        let _ = self.reload.reload(ScopeFilter::new(cur.clone()));
    }

    /// Whether this handle's subscriber is the global one.
    pub fn is_installed(&self) -> bool {
        self.reload.with_current(|_| ()).is_ok()
    }

    /// A snapshot of the current levels.
    pub fn spec(&self) -> LevelSpec {
        self.spec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

static INSTALLED: OnceLock<LogHandle> = OnceLock::new();

/// Installs the global subscriber (stdout, `format`) with [`LevelSpec::new`] plus
/// `initial_spec` applied; callers pass `-l`/`-v`'s spec or [`DEFAULT_SPEC`].
///
/// Only the first call installs anything; a later call applies `initial_spec` to the existing
/// logger and returns its handle (its `format` is ignored). If some other global subscriber was
/// set first, the returned handle only tracks the spec (see [`LogHandle::is_installed`]).
pub fn init(format: LogFormat, initial_spec: &str) -> LogHandle {
    let mut first = false;
    let handle = INSTALLED.get_or_init(|| {
        first = true;
        let spec = LevelSpec::parse(initial_spec);
        let (subscriber, reload) = build_subscriber(format, spec.clone(), std::io::stdout);
        // The result is not a reliable "installed" flag: `try_init` also fails when only the
        // `log`-crate bridge could not be set up, with our subscriber already global. Whether
        // the subscriber lives is what counts, and the weak reload handle tells.
        let _ = subscriber.try_init();
        LogHandle {
            spec: Arc::new(Mutex::new(spec)),
            reload,
        }
    });
    if !first {
        handle.set_spec(initial_spec);
    }
    handle.clone()
}

/// The subscriber `init` installs, with the writer injectable for tests.
fn build_subscriber<W>(
    format: LogFormat,
    spec: LevelSpec,
    writer: W,
) -> (
    impl Subscriber + Send + Sync + 'static,
    reload::Handle<ScopeFilter, Registry>,
)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    let (filter, handle) = reload::Layer::new(ScopeFilter::new(spec));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .event_format(LineFormat { format })
        .with_filter(filter);
    (tracing_subscriber::registry().with(layer), handle)
}

/// Formats one event as one line in the selected [`LogFormat`].
struct LineFormat {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = match self.format {
            LogFormat::Text => text_line(now, meta, &fields),
            LogFormat::Json => json_line(now, meta, &fields),
        };
        w.write_str(&line)
    }
}

/// A field value, kept typed so JSON output can emit numbers and booleans as such.
#[derive(Debug)]
enum FieldValue {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl FieldValue {
    fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Str(s) => s.as_str().into(),
            FieldValue::I64(v) => (*v).into(),
            FieldValue::U64(v) => (*v).into(),
            FieldValue::F64(v) => (*v).into(),
            FieldValue::Bool(v) => (*v).into(),
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::I64(v) => write!(f, "{v}"),
            FieldValue::U64(v) => write!(f, "{v}"),
            FieldValue::F64(v) => write!(f, "{v}"),
            FieldValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// Collects an event's `message` and other fields.
#[derive(Debug, Default)]
struct EventFields {
    msg: String,
    extra: Vec<(&'static str, FieldValue)>,
}

impl EventFields {
    fn push(&mut self, field: &Field, value: FieldValue) {
        match field.name() {
            "message" => self.msg = value.to_string(),
            // Bookkeeping fields of events bridged from the `log` crate; the target already
            // says where they come from.
            name if name.starts_with("log.") => {}
            name => self.extra.push((name, value)),
        }
    }
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, FieldValue::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, FieldValue::Str(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, FieldValue::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, FieldValue::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, FieldValue::Bool(value));
    }
}

/// Text-format level names; upstream's text logger spells warn as `WARNING`.
fn text_level(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::TRACE => "TRACE",
        tracing::Level::DEBUG => "DEBUG",
        tracing::Level::INFO => "INFO",
        tracing::Level::WARN => "WARNING",
        tracing::Level::ERROR => "ERROR",
    }
}

/// JSON-format level names (upstream's JSON logger says `WARN`).
fn json_level(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::WARN => "WARN",
        ref l => text_level(l),
    }
}

/// Appends `s` with CR and LF escaped: log lines may carry peer-controlled text (usernames,
/// addresses in errors), which must not be able to forge extra lines.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// `HH:MM:SS.micro file:line: scope LEVEL: message key=value…\n`.
fn text_line(now: std::time::Duration, meta: &Metadata<'_>, fields: &EventFields) -> String {
    let secs = now.as_secs() % 86_400;
    let mut out = format!(
        "{:02}:{:02}:{:02}.{:06} ",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_micros()
    );
    if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
        // Short file name, as Go's Lshortfile.
        let short = file.rsplit(['/', '\\']).next().unwrap_or(file);
        let _ = write!(out, "{short}:{line}: ");
    }
    let _ = write!(out, "{} {}: ", meta.target(), text_level(meta.level()));
    push_escaped(&mut out, &fields.msg);
    for (name, value) in &fields.extra {
        let _ = write!(out, " {name}=");
        push_escaped(&mut out, &value.to_string());
    }
    out.push('\n');
    out
}

/// `{"time":…,"level":…,"msg":…,"scope":…,<fields>}\n`. Written by hand to keep the key
/// order stable and the four upstream keys first; event fields that would clash with them
/// get a `field.` prefix.
fn json_line(now: std::time::Duration, meta: &Metadata<'_>, fields: &EventFields) -> String {
    let json = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = format!(
        "{{\"time\":\"{}\",\"level\":\"{}\",\"msg\":{},\"scope\":{}",
        rfc3339(now),
        json_level(meta.level()),
        json(&fields.msg),
        json(meta.target())
    );
    for (name, value) in &fields.extra {
        let key = match *name {
            "time" | "level" | "msg" | "scope" => format!("field.{name}"),
            n => n.to_owned(),
        };
        let _ = write!(out, ",{}:{}", json(&key), value.to_json());
    }
    out.push_str("}\n");
    out
}

/// UTC RFC 3339 timestamp with microseconds, e.g. `2023-11-14T22:13:20.000000Z`.
fn rfc3339(since_epoch: std::time::Duration) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let at = time::OffsetDateTime::UNIX_EPOCH + since_epoch;
    at.format(FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tracing_subscriber::EnvFilter;

    #[test]
    fn level_names() {
        for (s, l) in [
            ("DISABLE", Level::Disable),
            ("error", Level::Error),
            ("Warn", Level::Warn),
            ("iNfO", Level::Info),
            ("DEBUG", Level::Debug),
            ("trace", Level::Trace),
        ] {
            assert_eq!(Level::parse(s), Some(l), "{s}");
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        for bad in ["", "WARNING", "off", "3", " INFO", "INFO "] {
            assert_eq!(Level::parse(bad), None, "{bad:?}");
        }
        assert!(Level::Disable < Level::Error && Level::Debug < Level::Trace);
        assert!(Level::Info.allows(&tracing::Level::WARN));
        assert!(Level::Info.allows(&tracing::Level::INFO));
        assert!(!Level::Info.allows(&tracing::Level::DEBUG));
        assert!(!Level::Disable.allows(&tracing::Level::ERROR));
        assert!(Level::Trace.allows(&tracing::Level::TRACE));
    }

    #[test]
    fn initial_state_is_error() {
        let s = LevelSpec::new();
        assert_eq!(s.default_level(), Level::Error);
        assert_eq!(s.level("turn"), Level::Error);
        assert_eq!(s, LevelSpec::default());
        assert_eq!(LevelSpec::parse(""), s);
    }

    #[test]
    fn all_then_scope() {
        let s = LevelSpec::parse("all:INFO,turn:DEBUG");
        assert_eq!(s.default_level(), Level::Info);
        assert_eq!(s.level("turn"), Level::Debug);
        assert_eq!(s.level("stunner"), Level::Info);
    }

    #[test]
    fn scope_then_all() {
        let s = LevelSpec::parse("turn:DEBUG,all:INFO");
        assert_eq!(s.level("turn"), Level::Info);
        assert_eq!(s.default_level(), Level::Info);
    }

    #[test]
    fn cumulative_across_calls() {
        let mut s = LevelSpec::parse("all:INFO");
        s.apply("turn:DEBUG");
        s.apply("auth:TRACE");
        assert_eq!(s.level("turn"), Level::Debug);
        assert_eq!(s.level("auth"), Level::Trace);
        s.apply("turn:WARN");
        assert_eq!(s.level("turn"), Level::Warn);
        assert_eq!(s.level("auth"), Level::Trace);
        s.apply("ALL:ERROR");
        assert_eq!(s.level("turn"), Level::Error);
        assert_eq!(s.level("auth"), Level::Error);
        assert_eq!(s.level("anything"), Level::Error);
        // Scopes first seen after `all` get their own level, the rest keep the default.
        s.apply("cds-client:DEBUG");
        assert_eq!(s.level("cds-client"), Level::Debug);
        assert_eq!(s.level("turn"), Level::Error);
    }

    #[test]
    fn case_rules() {
        let s = LevelSpec::parse("All:debug,Turn:trace");
        assert_eq!(s.default_level(), Level::Debug);
        // Scope names other than `all` are case-sensitive.
        assert_eq!(s.level("Turn"), Level::Trace);
        assert_eq!(s.level("turn"), Level::Debug);
    }

    #[test]
    fn malformed_items_are_skipped() {
        let s = LevelSpec::parse(
            "all:INFO,turn,turn:VERBOSE,:,auth:DEBUG:x,,stunner:WARNING, admin:DEBUG,cds-client:DEBUG",
        );
        assert_eq!(s.default_level(), Level::Info);
        assert_eq!(s.level("turn"), Level::Info);
        assert_eq!(s.level("auth"), Level::Info);
        assert_eq!(s.level("stunner"), Level::Info);
        // No trimming, as upstream: the scope is " admin".
        assert_eq!(s.level("admin"), Level::Info);
        assert_eq!(s.level(" admin"), Level::Debug);
        assert_eq!(s.level("cds-client"), Level::Debug);
        // A garbage spec changes nothing.
        let mut t = s.clone();
        t.apply("garbage");
        t.apply("a:b:c");
        assert_eq!(t, s);
    }

    #[test]
    fn disable() {
        let s = LevelSpec::parse("all:INFO,turn:DISABLE");
        assert!(!s.enabled("turn", &tracing::Level::ERROR));
        assert!(s.enabled("stunner", &tracing::Level::INFO));
        assert!(!s.enabled("stunner", &tracing::Level::DEBUG));
        assert_eq!(s.max_level(), Level::Info);
        assert_eq!(LevelSpec::parse("all:DISABLE").max_level(), Level::Disable);
        assert_eq!(
            LevelSpec::parse("all:DISABLE,turn:TRACE").max_level(),
            Level::Trace
        );
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "all:INFO",
            "all:INFO,turn:DEBUG",
            "turn:DEBUG,all:WARN,auth:TRACE",
            "all:DISABLE,listener-default/gw/udp:DEBUG",
            "",
        ] {
            let s = LevelSpec::parse(spec);
            assert_eq!(LevelSpec::parse(&s.to_string()), s, "{spec}");
        }
        assert_eq!(
            LevelSpec::parse("turn:debug,all:info,auth:Trace").to_string(),
            "all:INFO,auth:TRACE,turn:INFO"
        );
    }

    #[test]
    fn directives() {
        assert_eq!(LevelSpec::parse("all:INFO").to_directives(), "info");
        assert_eq!(LevelSpec::new().to_directives(), "error");
        assert_eq!(
            LevelSpec::parse("all:INFO,turn:DEBUG,auth:DISABLE").to_directives(),
            "info,auth=off,turn=debug"
        );
        // `stunner` would capture `stunnerd` by prefix; the known longer scope is pinned.
        assert_eq!(
            LevelSpec::parse("all:WARN,stunner:TRACE").to_directives(),
            "warn,stunner=trace,stunnerd=warn,stunner-root=warn"
        );
        // ... unless it has its own level anyway.
        assert_eq!(
            LevelSpec::parse("all:WARN,stunner:TRACE,stunnerd:INFO").to_directives(),
            "warn,stunner=trace,stunnerd=info,stunner-root=warn"
        );
        // A user scope `cds` would capture `cds-client` and `cds-fwd`; both get pinned.
        assert_eq!(
            LevelSpec::parse("all:INFO,cds:DEBUG").to_directives(),
            "info,cds=debug,cds-client=info,cds-fwd=info"
        );
        // Names EnvFilter cannot take are dropped, not passed through.
        assert_eq!(
            LevelSpec::parse("all:INFO,listener-default/gw/udp:DEBUG,:TRACE,a b:DEBUG,x[y]:TRACE")
                .to_directives(),
            "info"
        );
    }

    #[test]
    fn directives_always_parse_as_env_filter() {
        for spec in [
            "all:INFO",
            "all:DISABLE,turn:TRACE,stunner:DEBUG,listener-x.y_z:WARN",
            "info:DEBUG,off:TRACE,5:ERROR",
            "listener-default/gw/udp:DEBUG,=:INFO,a=b:INFO,é:DEBUG,[x]:INFO,{y}:INFO",
        ] {
            let d = LevelSpec::parse(spec).to_directives();
            if let Err(e) = EnvFilter::try_new(&d) {
                panic!("{spec} -> {d}: {e}");
            }
        }
    }

    #[test]
    fn log_format_flag() {
        assert_eq!(LogFormat::from_flag("json"), LogFormat::Json);
        assert_eq!(LogFormat::from_flag("text"), LogFormat::Text);
        assert_eq!(LogFormat::from_flag("JSON"), LogFormat::Text);
        assert_eq!(LogFormat::from_flag(""), LogFormat::Text);
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }

    #[test]
    fn dates() {
        assert_eq!(
            rfc3339(Duration::from_secs(11_016 * 86_400)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(Duration::new(1_700_000_000, 123_456_789)),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
    }

    /// Captures what a scoped (non-global) subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn emit_all() {
        tracing::error!(target: "turn", "turn error");
        tracing::info!(target: "turn", "turn info");
        tracing::debug!(target: "turn", "turn debug");
        tracing::info!(target: "stunner", "stunner info");
        tracing::debug!(target: "stunner", "stunner debug");
        tracing::debug!(target: "stunnerd", "stunnerd debug");
        tracing::warn!("module warn");
    }

    #[test]
    fn scope_filter_is_exact_and_reloadable() {
        let buf = Buf::default();
        let (sub, reload) = build_subscriber(
            LogFormat::Text,
            LevelSpec::parse("all:INFO,stunner:DEBUG"),
            buf.clone(),
        );
        tracing::subscriber::with_default(sub, || {
            emit_all();
            let mut spec = LevelSpec::parse("all:INFO,stunner:DEBUG");
            spec.apply("turn:DEBUG,stunner:DISABLE");
            reload.reload(ScopeFilter::new(spec)).unwrap();
            emit_all();
        });
        let msgs: Vec<String> = buf
            .lines()
            .iter()
            .map(|l| l.split(": ").last().unwrap().to_owned())
            .collect();
        assert_eq!(
            msgs,
            [
                "turn error",
                "turn info",
                "stunner info",
                "stunner debug",
                "module warn",
                "turn error",
                "turn info",
                "turn debug",
                "module warn",
            ]
        );
    }

    #[test]
    fn text_format() {
        let buf = Buf::default();
        let (sub, _reload) =
            build_subscriber(LogFormat::Text, LevelSpec::parse("all:TRACE"), buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "cds-client", peer = %"1.2.3.4:5", n = 3, "line1\nline2");
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l = &lines[0];
        // HH:MM:SS.micro
        let (time, rest) = l.split_once(' ').unwrap();
        assert_eq!(time.len(), 15, "{l}");
        assert_eq!(&time[2..3], ":");
        assert_eq!(&time[8..9], ".");
        assert!(rest.starts_with("log.rs:"), "{l}");
        assert!(
            rest.ends_with(": cds-client WARNING: line1\\nline2 peer=1.2.3.4:5 n=3"),
            "{l}"
        );
    }

    #[test]
    fn json_format() {
        let buf = Buf::default();
        let (sub, _reload) =
            build_subscriber(LogFormat::Json, LevelSpec::parse("all:TRACE"), buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "turn", n = 3, ok = true, level = "x", who = ?"q\"t", "hi \"there\"\n");
            tracing::info!(target: "stunner", "plain");
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["msg"], "hi \"there\"\n");
        assert_eq!(v["scope"], "turn");
        assert_eq!(v["n"], 3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["field.level"], "x");
        assert_eq!(v["who"], "\"q\\\"t\"");
        let t = v["time"].as_str().unwrap();
        assert_eq!(t.len(), "2023-11-14T22:13:20.123456Z".len(), "{t}");
        assert!(t.ends_with('Z') && &t[10..11] == "T", "{t}");
        assert!(lines[0].starts_with("{\"time\":"), "{}", lines[0]);
        let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["msg"], "plain");
        assert_eq!(v.as_object().unwrap().len(), 4);
    }

    #[test]
    fn handle_without_subscriber_tracks_spec() {
        let (layer, reload) = reload::Layer::<_, Registry>::new(ScopeFilter::new(LevelSpec::new()));
        drop(layer);
        let h = LogHandle {
            spec: Arc::new(Mutex::new(LevelSpec::parse(DEFAULT_SPEC))),
            reload,
        };
        assert!(!h.is_installed());
        h.set_spec("turn:DEBUG");
        h.set_spec("auth:TRACE");
        let s = h.spec();
        assert_eq!(s.level("turn"), Level::Debug);
        assert_eq!(s.level("auth"), Level::Trace);
        assert_eq!(s.default_level(), Level::Info);
        assert!(format!("{h:?}").contains("all:INFO"));
    }
}
