//! Gateway listeners: protocol names, port conflicts and TLS certificates (spec 2.7).

use base64::Engine;

use crate::config::ListenerProtocol;

use super::objects::{Gateway, Listener};
use super::status::ListenerOutcome;
use super::store::{Store, key};

/// A listener's protocol: `TURN-UDP`, `TURN-TCP`, `TURN-TLS`, `TURN-DTLS` or the short `UDP`,
/// `TCP`, `TLS`, `DTLS`, in any case. Upstream treats lower-case short names as different,
/// cert-less protocols that never conflict; users expect `udp` to mean TURN-UDP.
pub(super) fn parse_protocol(s: &str) -> Option<ListenerProtocol> {
    ListenerProtocol::parse(s)
}

/// The Service protocol carrying a listener: UDP for TURN-UDP/DTLS, TCP for TURN-TCP/TLS.
pub(super) fn service_protocol(p: ListenerProtocol) -> &'static str {
    if p.is_datagram() { "UDP" } else { "TCP" }
}

/// For each listener in spec order: whether an earlier listener already holds its port in the
/// same transport family (UDP: TURN-UDP/DTLS, TCP: TURN-TCP/TLS). The first one wins even if
/// it later fails to render; unknown protocols neither hold nor conflict.
pub(super) fn conflicts(listeners: &[Listener]) -> Vec<bool> {
    let mut held: Vec<(&'static str, i64)> = Vec::new();
    listeners
        .iter()
        .map(|l| match parse_protocol(&l.protocol) {
            None => false,
            Some(p) => {
                let slot = (service_protocol(p), l.port);
                if held.contains(&slot) {
                    true
                } else {
                    held.push(slot);
                    false
                }
            }
        })
        .collect()
}

/// The base64-encoded PEM cert and key of a TLS/DTLS listener (spec 2.7.4). `Ok(None)` for
/// listeners that need none; `Err` with the listener's outcome when no usable certificate
/// is found. Unlike upstream, a TLS listener without `tls`, with no certificateRefs or in
/// Passthrough mode is refused here: rendering it cert-less would make stunnerd reject the
/// whole config, taking the Gateway's other listeners down with it.
pub(super) fn resolve_tls(
    store: &Store<'_>,
    gw: &Gateway,
    l: &Listener,
    p: ListenerProtocol,
) -> Result<Option<(String, String)>, ListenerOutcome> {
    if !p.needs_cert() {
        return Ok(None);
    }
    let bad_ref = |message: String| Err(ListenerOutcome::InvalidCertificateRef { message });
    let Some(tls) = &l.tls else {
        return bad_ref(format!(
            "a {p} listener needs tls.certificateRefs naming a Secret with tls.crt and tls.key"
        ));
    };
    if let Some(mode) = tls.mode.as_deref().filter(|m| *m != "Terminate") {
        return Err(ListenerOutcome::UnsupportedTlsMode {
            message: format!(
                "tls.mode {mode} is not supported for TURN listeners: TURN terminates TLS, \
                 set tls.mode to Terminate or omit it"
            ),
        });
    }
    if tls.certificate_refs.is_empty() {
        return bad_ref("tls.certificateRefs is empty".into());
    }
    let mut why = Vec::new();
    for (i, r) in tls.certificate_refs.iter().enumerate() {
        let group_ok = r.group.as_deref().is_none_or(|g| g.is_empty() || g == "v1");
        let kind_ok = r.kind.as_deref().is_none_or(|k| k == "Secret");
        if !group_ok || !kind_ok {
            why.push(format!("certificateRefs[{i}] does not name a core Secret"));
            continue;
        }
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&gw.metadata.namespace);
        let id = format!("{ns}/{}", r.name);
        let Some(secret) = store.secrets.get(&key(ns, &r.name)) else {
            why.push(store.why_missing("Secret", &id));
            continue;
        };
        if !is_certificate_secret_type(&secret.secret_type) {
            why.push(format!(
                "Secret {id} has type {:?}: a certificate Secret must be of type \
                 kubernetes.io/tls or Opaque",
                secret.secret_type
            ));
            continue;
        }
        let cert = ["tls.crt", "crt", "cert"]
            .iter()
            .find_map(|k| secret.get(k));
        let pkey = ["tls.key", "key"].iter().find_map(|k| secret.get(k));
        match (cert, pkey) {
            (Some(c), Some(k)) => {
                // stunnerd expects base64 of the PEM, so the (already decoded) Secret bytes
                // are encoded again.
                let b64 = base64::engine::general_purpose::STANDARD;
                return Ok(Some((b64.encode(c), b64.encode(k))));
            }
            _ => why.push(format!("Secret {id} lacks tls.crt and/or tls.key")),
        }
    }
    bad_ref(why.join("; "))
}

/// The seed: certificateRefs must name "a Kubernetes Secret of type tls or opaque". Types are
/// compared as Kubernetes spells them (`kubernetes.io/tls`, `Opaque`); a Secret written
/// without `type` is `Opaque` once created. Extra keys (cert-manager's `ca.crt`) are fine:
/// only `tls.crt` and `tls.key` are read. The operator does not check the type.
fn is_certificate_secret_type(t: &str) -> bool {
    matches!(t, "" | "Opaque" | "kubernetes.io/tls")
}
