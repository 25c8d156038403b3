//! Reading manifests: files or directories of multi-document YAML or JSON.
//!
//! Every problem is reported with the file, the document number and the field path, and
//! never stops the other documents from loading: one typo must not hide a whole directory.
//! Kinds the adapter does not use are skipped with a note, like `kubectl` would apply them
//! without the operator caring.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::objects::{Object, RouteVersion, UdpRoute, is_cluster_scoped, json_type};

/// How bad a load finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The document (or file) was rejected.
    Error,
    /// The document was skipped on purpose (unknown kind or version); not a failure.
    Note,
}

/// A problem with one document (or a whole file when `document` is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub severity: Severity,
    /// The path as given (file, or file inside a given directory).
    pub file: String,
    /// 1-based document number in the file; 0 when the problem is with the file itself.
    pub document: usize,
    /// 1-based line where the document starts (0 when unknown).
    pub line: usize,
    /// `Kind ns/name` when known.
    pub object: String,
    /// Field path inside the document, e.g. `spec.listeners[0].port`; empty for the whole.
    pub path: String,
    pub message: String,
}

impl LoadError {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
            if self.line > 0 {
                write!(f, " (line {})", self.line)?;
            }
        }
        if !self.object.is_empty() {
            write!(f, ": {}", self.object)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Load every object from the given files and directories. Directories are read one level
/// deep (like `kubectl apply -f DIR`), files ending in `.yaml`, `.yml` or `.json`, in name
/// order, so the result does not depend on the file system's listing order.
pub fn load_objects(paths: &[PathBuf]) -> (Vec<Object>, Vec<LoadError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        for file in expand_path(path, &mut errors) {
            let shown = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let (o, e) = parse_str(&text, &shown);
                    objects.extend(o);
                    errors.extend(e);
                }
                Err(e) => errors.push(file_error(&shown, format!("cannot read: {e}"))),
            }
        }
    }
    (objects, errors)
}

fn expand_path(path: &Path, errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(file_error(&shown, format!("cannot read: {e}")));
            return Vec::new();
        }
    };
    if !meta.is_dir() {
        return vec![path.to_path_buf()];
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            errors.push(file_error(&shown, format!("cannot list directory: {e}")));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_manifest(p))
        .collect();
    files.sort();
    if files.is_empty() {
        errors.push(LoadError {
            severity: Severity::Note,
            ..file_error(
                &shown,
                "no .yaml, .yml or .json files in this directory".into(),
            )
        });
    }
    files
}

fn is_manifest(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

fn file_error(file: &str, message: String) -> LoadError {
    LoadError {
        severity: Severity::Error,
        file: file.to_string(),
        document: 0,
        line: 0,
        object: String::new(),
        path: String::new(),
        message,
    }
}

/// Parse one manifest text. `origin` names it in messages (usually the file path).
pub fn parse_str(text: &str, origin: &str) -> (Vec<Object>, Vec<LoadError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in split_documents(text).into_iter().enumerate() {
        let mut ctx = DocCtx {
            file: origin,
            document: index + 1,
            line: doc.line,
            errors: &mut errors,
        };
        match doc.value {
            Ok(None) => {}
            Ok(Some(v)) => decode_value(v, "", &mut ctx, &mut objects),
            Err(msg) => ctx.push(Severity::Error, "", "", msg),
        }
    }
    (objects, errors)
}

struct RawDoc {
    line: usize,
    /// `Ok(None)` for an empty document.
    value: Result<Option<Value>, String>,
}

/// Split a text into documents. A JSON text (one value, or several concatenated) is parsed
/// as JSON; anything else as a YAML stream, split at `---` lines *before* parsing so that a
/// syntax error in one document does not lose the documents after it.
fn split_documents(text: &str) -> Vec<RawDoc> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        if let Ok(values) = stream.collect::<Result<Vec<Value>, _>>() {
            return values
                .into_iter()
                .map(|v| RawDoc {
                    line: 0,
                    value: Ok(Some(v)),
                })
                .collect();
        }
        // Not valid JSON: YAML may still read it, and reports better positions.
    }
    let mut docs = Vec::new();
    let mut start_line = 1;
    let mut current = String::new();
    let mut flush = |current: &mut String, line: usize| {
        docs.push(RawDoc {
            line,
            value: parse_yaml_doc(current, line),
        });
        current.clear();
    };
    for (i, l) in text.lines().enumerate() {
        // A `---` at column 0 always starts a document in YAML (block scalars are indented),
        // so splitting on it cannot cut a document in half.
        let is_marker = l == "---" || l.starts_with("--- ") || l.starts_with("---\t");
        if is_marker {
            if !current.trim().is_empty() || i > 0 {
                flush(&mut current, start_line);
            }
            start_line = i + 1;
            // `--- {inline: doc}` carries content after the marker.
            current.push_str(l.get(3..).unwrap_or(""));
            current.push('\n');
        } else if l == "..." {
            flush(&mut current, start_line);
            start_line = i + 2;
        } else {
            current.push_str(l);
            current.push('\n');
        }
    }
    flush(&mut current, start_line);
    // Empty chunks before a leading `---` or after a trailing one are not documents.
    docs.retain(|d| !matches!(d.value, Ok(None)));
    docs
}

/// Parse one YAML document whose first line is line `first_line` of the file.
fn parse_yaml_doc(text: &str, first_line: usize) -> Result<Option<Value>, String> {
    if text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    }) {
        return Ok(None);
    }
    // Through serde_norway's own Value first: it refuses duplicate keys (as kubectl does),
    // where decoding straight into a JSON map would silently keep the last one, e.g. when
    // two files are concatenated without a `---` between them.
    let yaml = serde_norway::from_str::<serde_norway::Value>(text)
        .map_err(|e| format!("invalid YAML: {}", shift_lines(&e.to_string(), first_line)))?;
    match serde_json::to_value(&yaml) {
        Ok(Value::Null) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(format!("unsupported YAML: {e}")),
    }
}

/// serde_norway counts lines from the start of the document; rewrite every `line N` in its
/// message to a line of the file.
fn shift_lines(msg: &str, first_line: usize) -> String {
    const KEY: &str = "line ";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(KEY) {
        let (head, tail) = rest.split_at(i + KEY.len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let (num, after) = tail.split_at(digits);
        match num.parse::<usize>() {
            Ok(n) => out.push_str(&(first_line + n.saturating_sub(1)).to_string()),
            Err(_) => out.push_str(num),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

struct DocCtx<'a> {
    file: &'a str,
    document: usize,
    line: usize,
    errors: &'a mut Vec<LoadError>,
}

impl DocCtx<'_> {
    fn push(&mut self, severity: Severity, object: &str, path: &str, message: String) {
        self.errors.push(LoadError {
            severity,
            file: self.file.to_string(),
            document: self.document,
            line: self.line,
            object: object.to_string(),
            path: path.to_string(),
            message,
        });
    }
}

/// Decode one value: an object, a `List` of objects, or a JSON array of objects. `prefix` is
/// the path of the value inside its document (`items[2]` for list members).
fn decode_value(value: Value, prefix: &str, ctx: &mut DocCtx<'_>, out: &mut Vec<Object>) {
    let mut value = value;
    strip_nulls(&mut value);
    let items = match &mut value {
        Value::Array(items) => Some((std::mem::take(items), prefix.to_string())),
        Value::Object(map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array) =>
        {
            let items = match map.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            Some((items, join(prefix, "items")))
        }
        _ => None,
    };
    if let Some((items, base)) = items {
        for (i, item) in items.into_iter().enumerate() {
            decode_value(item, &format!("{base}[{i}]"), ctx, out);
        }
        return;
    }
    let Value::Object(map) = &value else {
        let msg = format!("expected a Kubernetes object, found {}", json_type(&value));
        ctx.push(Severity::Error, "", prefix, msg);
        return;
    };
    let str_field = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (api_version, kind) = (str_field("apiVersion"), str_field("kind"));
    let meta = map.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let label = if name.is_empty() {
        kind.clone()
    } else {
        format!("{kind} {name}")
    };
    if kind.is_empty() {
        ctx.push(
            Severity::Error,
            "",
            &join(prefix, "kind"),
            "missing kind".into(),
        );
        return;
    }
    if api_version.is_empty() {
        let path = join(prefix, "apiVersion");
        ctx.push(Severity::Error, &label, &path, "missing apiVersion".into());
        return;
    }
    let result = match (api_version.as_str(), kind.as_str()) {
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "GatewayClass") => {
            typed(value, prefix).map(Object::GatewayClass)
        }
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "Gateway") => {
            typed(value, prefix).map(Object::Gateway)
        }
        ("stunner.l7mp.io/v1", "GatewayConfig") => typed(value, prefix).map(Object::GatewayConfig),
        ("stunner.l7mp.io/v1", "UDPRoute") => typed(value, prefix).map(Object::UdpRoute),
        ("gateway.networking.k8s.io/v1alpha2", "UDPRoute") => {
            typed::<UdpRoute>(value, prefix).map(|mut r| {
                // The operator's conversion drops the backend port the official API requires
                // (spec 1; the seed: "the port will be omitted").
                r.version = RouteVersion::V1Alpha2;
                for rule in &mut r.spec.rules {
                    for b in &mut rule.backend_refs {
                        b.port = None;
                        b.end_port = None;
                    }
                }
                Object::UdpRoute(r)
            })
        }
        ("stunner.l7mp.io/v1", "StaticService") => typed(value, prefix).map(Object::StaticService),
        ("stunner.l7mp.io/v1", "Dataplane") => typed(value, prefix).map(Object::Dataplane),
        ("v1", "Secret") => typed(value, prefix).map(Object::Secret),
        ("v1", "Service") => typed(value, prefix).map(Object::Service),
        ("v1", "Namespace") => typed(value, prefix).map(Object::Namespace),
        ("v1", "Node") => typed(value, prefix).map(Object::Node),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(value, prefix).map(Object::EndpointSlice),
        ("v1", "Endpoints") => typed(value, prefix).map(Object::Endpoints),
        (_, k) if KNOWN_KINDS.contains(&k) => {
            let msg = format!("skipped: apiVersion {api_version:?} is not supported for {kind}");
            ctx.push(Severity::Note, &label, &join(prefix, "apiVersion"), msg);
            return;
        }
        _ => {
            let msg = format!("skipped: kind {kind} ({api_version}) is not used by the adapter");
            ctx.push(Severity::Note, &label, prefix, msg);
            return;
        }
    };
    match result {
        Ok(mut obj) => {
            if let Some((path, msg)) = fix_meta(&mut obj, prefix) {
                ctx.push(Severity::Error, &label, &path, msg);
            } else {
                out.push(obj);
            }
        }
        Err((path, msg)) => ctx.push(Severity::Error, &label, &path, msg),
    }
}

const KNOWN_KINDS: [&str; 12] = [
    "GatewayClass",
    "GatewayConfig",
    "Gateway",
    "UDPRoute",
    "StaticService",
    "Dataplane",
    "Secret",
    "Service",
    "EndpointSlice",
    "Endpoints",
    "Namespace",
    "Node",
];

/// Decode into a typed struct, keeping the path of the first type error.
fn typed<T: serde::de::DeserializeOwned>(
    value: Value,
    prefix: &str,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // serde_path_to_error prints `.` for the root.
        let path = if path == "." { String::new() } else { path };
        (join(prefix, &path), e.into_inner().to_string())
    })
}

/// Names are required; namespaces default to `default` for namespaced kinds (what `kubectl`
/// does) and are cleared for cluster-scoped ones (what the API server does).
fn fix_meta(obj: &mut Object, prefix: &str) -> Option<(String, String)> {
    let kind = obj.kind();
    let meta = match obj {
        Object::GatewayClass(o) => &mut o.metadata,
        Object::GatewayConfig(o) => &mut o.metadata,
        Object::Gateway(o) => &mut o.metadata,
        Object::UdpRoute(o) => &mut o.metadata,
        Object::StaticService(o) => &mut o.metadata,
        Object::Dataplane(o) => &mut o.metadata,
        Object::Secret(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::Endpoints(o) => &mut o.metadata,
        Object::Namespace(o) => &mut o.metadata,
        Object::Node(o) => &mut o.metadata,
    };
    if meta.name.is_empty() {
        return Some((join(prefix, "metadata.name"), "required".into()));
    }
    if is_cluster_scoped(kind) {
        meta.namespace.clear();
    } else if meta.namespace.is_empty() {
        meta.namespace = "default".into();
    }
    None
}

/// Kubernetes reads `field: null` as "field not set"; removing nulls up front lets the typed
/// structs use plain defaults instead of `Option` everywhere.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}
