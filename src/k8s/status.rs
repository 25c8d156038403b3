//! Status objects: GatewayClass, Gateway (with listener statuses) and UDPRoute parent
//! statuses, with the condition types, reasons and messages of spec section 3.
//!
//! `lastTransitionTime` is left out: a pure render has no clock, and the statuses are for
//! reading (or for a controller to merge), not for `kubectl apply`.

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::CONTROLLER_NAME;

/// An object's status as the renderer computed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: StatusMeta,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusMeta {
    /// Absent for the cluster-scoped GatewayClass.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Status {
    GatewayClass(ClassStatus),
    Gateway(GatewayStatus),
    Route(RouteStatus),
}

impl StatusObject {
    /// The conditions of a GatewayClass or Gateway status (empty for routes).
    pub fn conditions(&self) -> &[Condition] {
        match &self.status {
            Status::GatewayClass(s) => &s.conditions,
            Status::Gateway(s) => &s.conditions,
            Status::Route(_) => &[],
        }
    }

    pub fn condition(&self, ctype: &str) -> Option<&Condition> {
        find(self.conditions(), ctype)
    }

    pub fn gateway(&self) -> Option<&GatewayStatus> {
        match &self.status {
            Status::Gateway(s) => Some(s),
            _ => None,
        }
    }

    pub fn route(&self) -> Option<&RouteStatus> {
        match &self.status {
            Status::Route(s) => Some(s),
            _ => None,
        }
    }
}

/// Find a condition by type.
pub(super) fn find<'a>(conds: &'a [Condition], ctype: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.condition_type == ctype)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub observed_generation: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Condition {
    pub fn new(
        ctype: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
        generation: i64,
    ) -> Self {
        Condition {
            condition_type: ctype.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: generation,
        }
    }

    fn unknown(ctype: &str, reason: &str, message: &str, generation: i64) -> Self {
        Condition {
            status: "Unknown".into(),
            ..Condition::new(ctype, false, reason, message, generation)
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// `type/status/reason`, handy in tests and messages.
    pub fn summary(&self) -> String {
        format!("{}/{}/{}", self.condition_type, self.status, self.reason)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassStatus {
    pub conditions: Vec<Condition>,
}

pub(super) fn class_accepted(generation: i64) -> ClassStatus {
    ClassStatus {
        conditions: vec![Condition::new(
            "Accepted",
            true,
            "Accepted",
            format!("GatewayClass is now managed by controller {CONTROLLER_NAME:?}"),
            generation,
        )],
    }
}

pub(super) fn class_invalid(err: &str, generation: i64) -> ClassStatus {
    ClassStatus {
        conditions: vec![Condition::new(
            "Accepted",
            false,
            "InvalidParameters",
            format!("controller {CONTROLLER_NAME:?} failed to process GatewayClass: {err}"),
            generation,
        )],
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub addresses: Vec<GatewayStatusAddress>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

impl GatewayStatus {
    pub fn listener(&self, name: &str) -> Option<&ListenerStatus> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayStatusAddress {
    #[serde(rename = "type")]
    pub address_type: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: usize,
    pub conditions: Vec<Condition>,
}

impl ListenerStatus {
    pub fn condition(&self, ctype: &str) -> Option<&Condition> {
        find(&self.conditions, ctype)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteGroupKind {
    pub group: String,
    pub kind: String,
}

/// What happened to one listener, which decides its status (spec 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ListenerOutcome {
    Rendered {
        routes: usize,
    },
    Conflicted {
        routes: usize,
    },
    UnsupportedProtocol {
        message: String,
    },
    /// `tls.mode` other than Terminate: Passthrough makes no sense for TURN (seed).
    UnsupportedTlsMode {
        message: String,
    },
    InvalidCertificateRef {
        message: String,
    },
    /// The whole Gateway was invalidated.
    Pending,
}

pub(super) fn listener_status(
    name: &str,
    outcome: &ListenerOutcome,
    generation: i64,
) -> ListenerStatus {
    let c = |t: &str, s: bool, r: &str, m: &str| Condition::new(t, s, r, m, generation);
    let accepted = c("Accepted", true, "Accepted", "listener accepted");
    let no_conflict = c(
        "Conflicted",
        false,
        "NoConflicts",
        "listener protocol-port available",
    );
    // "sucessfully" is upstream's spelling; kept so that status watchers keep matching.
    let resolved = c(
        "ResolvedRefs",
        true,
        "ResolvedRefs",
        "listener object references sucessfully resolved",
    );
    let (attached, conditions) = match outcome {
        ListenerOutcome::Rendered { routes } => (*routes, vec![accepted, no_conflict, resolved]),
        ListenerOutcome::Conflicted { routes } => (
            *routes,
            vec![
                c("Accepted", false, "PortUnavailable", "port unavailable"),
                c(
                    "Conflicted",
                    true,
                    "ProtocolConflict",
                    "multiple listeners specified with the same Listener port and protocol",
                ),
                resolved,
            ],
        ),
        ListenerOutcome::UnsupportedProtocol { message } => (
            0,
            vec![
                c(
                    "Accepted",
                    false,
                    "UnsupportedProtocol",
                    &format!("unsupported protocol: {message}"),
                ),
                no_conflict,
                resolved,
            ],
        ),
        ListenerOutcome::UnsupportedTlsMode { message } => (
            0,
            vec![
                c("Accepted", false, "UnsupportedValue", message),
                no_conflict,
                resolved,
            ],
        ),
        ListenerOutcome::InvalidCertificateRef { message } => (
            0,
            vec![
                accepted,
                no_conflict,
                c(
                    "ResolvedRefs",
                    false,
                    "InvalidCertificateRef",
                    &format!(
                        "at least one certificate reference failed to be successfully resolved: {message}"
                    ),
                ),
            ],
        ),
        ListenerOutcome::Pending => (
            0,
            vec![
                Condition::unknown("Accepted", "Pending", "pending", generation),
                no_conflict,
                resolved,
            ],
        ),
    };
    ListenerStatus {
        name: name.to_string(),
        supported_kinds: vec![
            RouteGroupKind {
                group: "gateway.networking.k8s.io".into(),
                kind: "UDPRoute".into(),
            },
            RouteGroupKind {
                group: "stunner.l7mp.io".into(),
                kind: "UDPRoute".into(),
            },
        ],
        attached_routes: attached,
        conditions,
    }
}

/// Gateway conditions after a successful render (spec 3.2).
pub(super) fn gateway_conditions(all_have_address: bool, generation: i64) -> Vec<Condition> {
    let accepted = Condition::new(
        "Accepted",
        true,
        "Accepted",
        format!("gateway accepted by controller {CONTROLLER_NAME}"),
        generation,
    );
    let programmed = if all_have_address {
        Condition::new(
            "Programmed",
            true,
            "Programmed",
            "dataplane configuration successfully rendered",
            generation,
        )
    } else {
        Condition::new(
            "Programmed",
            false,
            "AddressNotAssigned",
            "no public address found for at least one listener",
            generation,
        )
    };
    vec![accepted, programmed]
}

/// Gateway conditions when the Gateway (or its class) was invalidated with `err`.
pub(super) fn gateway_invalid_conditions(err: &str, generation: i64) -> Vec<Condition> {
    vec![
        Condition::new("Accepted", false, "Pending", err, generation),
        Condition::new(
            "Programmed",
            false,
            "Invalid",
            format!("error processing gateway by controller {CONTROLLER_NAME}: {err}"),
            generation,
        ),
    ]
}

/// A UDPRoute's status: our parent entries, then entries other controllers wrote, which we
/// keep (upstream replaces the whole list, erasing them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteStatus {
    pub parents: Vec<RouteParentStatus>,
    pub foreign: Vec<Value>,
}

impl Serialize for RouteStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Entry<'a> {
            Ours(&'a RouteParentStatus),
            Foreign(&'a Value),
        }
        let parents: Vec<Entry<'_>> = self
            .parents
            .iter()
            .map(Entry::Ours)
            .chain(self.foreign.iter().map(Entry::Foreign))
            .collect();
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("parents", &parents)?;
        m.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentRefOut,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

impl RouteParentStatus {
    pub fn condition(&self, ctype: &str) -> Option<&Condition> {
        find(&self.conditions, ctype)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRefOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// How a parentRef fared (spec 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParentOutcome {
    Masked,
    Accepted,
    NotAllowed,
    NoParent,
}

/// How the route's backends fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BackendOutcome {
    Resolved,
    InvalidKind,
    NotFound,
}

pub(super) fn route_parent_condition(
    outcome: ParentOutcome,
    id: &str,
    generation: i64,
) -> Condition {
    let c = |s: bool, r: &str, m: String| Condition::new("Accepted", s, r, m, generation);
    match outcome {
        ParentOutcome::Masked => c(
            false,
            "Pending",
            "GwAPI.v1 UDPRoute masked by a STUNnerV1 UDPRoute".into(),
        ),
        ParentOutcome::Accepted => c(true, "Accepted", format!("parent {id} accepted the route")),
        ParentOutcome::NotAllowed => c(
            false,
            "NotAllowedByListeners",
            format!("parent {id} rejects the route"),
        ),
        ParentOutcome::NoParent => c(
            false,
            "NoMatchingParent",
            format!("parent {id} does not exist"),
        ),
    }
}

pub(super) fn route_resolved_condition(
    outcome: BackendOutcome,
    detail: &str,
    generation: i64,
) -> Condition {
    let failed = "at least one backend reference failed to be successfully resolved";
    let msg = |m: &str| {
        if detail.is_empty() {
            m.to_string()
        } else {
            format!("{m}: {detail}")
        }
    };
    match outcome {
        BackendOutcome::Resolved => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all backend references successfully resolved",
            generation,
        ),
        BackendOutcome::InvalidKind => Condition::new(
            "ResolvedRefs",
            false,
            "InvalidKind",
            msg(failed),
            generation,
        ),
        BackendOutcome::NotFound => Condition::new(
            "ResolvedRefs",
            false,
            "BackendNotFound",
            msg(failed),
            generation,
        ),
    }
}
