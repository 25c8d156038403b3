//! Manifest loading: document splitting, JSON and lists, defaults, error positions.

use crate::k8s::load::Severity;
use crate::k8s::objects::{Object, RouteVersion};
use crate::k8s::{Mode, parse_str, render};

fn names(objs: &[Object]) -> Vec<String> {
    objs.iter().map(Object::describe).collect()
}

#[test]
fn yaml_stream_with_markers_comments_and_end_markers() {
    let text = "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n...\n\
                --- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n---\n---\n\
                apiVersion: v1\nkind: Namespace\nmetadata:\n  name: c\n";
    let (objs, errs) = parse_str(text, "t");
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(names(&objs), ["Namespace a", "Namespace b", "Namespace c"]);
}

#[test]
fn json_single_stream_array_and_list() {
    let one = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#;
    let stream = format!("{one}\n{}", one.replace("\"a\"", "\"b\""));
    let (objs, errs) = parse_str(&stream, "t.json");
    assert!(errs.is_empty());
    assert_eq!(names(&objs), ["Namespace a", "Namespace b"]);
    let array = format!("[{one}, {}]", one.replace("\"a\"", "\"c\""));
    assert_eq!(
        names(&parse_str(&array, "t").0),
        ["Namespace a", "Namespace c"]
    );
    let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{one}, 5]}}"#);
    let (objs, errs) = parse_str(&list, "t");
    assert_eq!(names(&objs), ["Namespace a"]);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "items[1]");
}

#[test]
fn document_numbers_and_lines() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
                apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {addresses: 5}\n";
    let (_, errs) = parse_str(text, "f.yaml");
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!(
        (e.document, e.line, e.path.as_str()),
        (2, 4, "status.addresses")
    );
    assert_eq!(e.object, "Node n");
    assert!(
        e.to_string()
            .starts_with("f.yaml: document 2 (line 4): Node n: status.addresses: "),
        "{e}"
    );
}

#[test]
fn namespaces_default_and_cluster_scope() {
    let text = "apiVersion: stunner.l7mp.io/v1\nkind: StaticService\nmetadata: {name: s}\n---\n\
                apiVersion: stunner.l7mp.io/v1\nkind: Dataplane\nmetadata: {name: d, namespace: x}\n";
    let (objs, _) = parse_str(text, "t");
    assert_eq!(objs[0].meta().namespace, "default");
    assert_eq!(
        objs[1].meta().namespace,
        "",
        "Dataplanes are cluster-scoped"
    );
}

#[test]
fn nulls_are_unset_and_scalars_are_strings() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                metadata: {name: g, namespace: ~, annotations: {a: true, b: 5, c: null}}\n\
                spec: {gatewayClassName: c, addresses: null, listeners: [{name: l, port: 1, protocol: UDP, tls: null}]}\n";
    let (objs, errs) = parse_str(text, "t");
    assert!(errs.is_empty(), "{errs:?}");
    let Some(Object::Gateway(g)) = objs.first() else {
        panic!("{objs:?}")
    };
    assert_eq!(g.metadata.namespace, "default");
    assert_eq!(g.metadata.annotations["a"], "true");
    assert_eq!(g.metadata.annotations["b"], "5");
    assert!(!g.metadata.annotations.contains_key("c"));
    assert!(g.spec.listeners[0].tls.is_none());
    // A map where a string belongs is an error with its path.
    let bad = text.replace("a: true", "a: {x: 1}");
    let (_, errs) = parse_str(&bad, "t");
    assert_eq!(errs[0].path, "metadata.annotations.a");
}

#[test]
fn secrets_string_data_wins_and_base64_may_wrap() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n\
                data: {a: \"YWFh\\nYQ==\", b: YmJi}\nstringData: {b: override}\n";
    let (objs, errs) = parse_str(text, "t");
    assert!(errs.is_empty(), "{errs:?}");
    let Some(Object::Secret(s)) = objs.first() else {
        panic!()
    };
    assert_eq!(s.get_str("a").as_deref(), Some("aaaa"));
    assert_eq!(s.get_str("b").as_deref(), Some("override"));
    assert!(s.get("c").is_none());
}

#[test]
fn v1alpha2_routes_lose_backend_ports() {
    let text = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: r}\n\
                spec: {parentRefs: [{name: g}], rules: [{backendRefs: [{name: s, port: 1}]}]}\n";
    let (objs, _) = parse_str(text, "t");
    let Some(Object::UdpRoute(r)) = objs.first() else {
        panic!()
    };
    assert_eq!(r.version, RouteVersion::V1Alpha2);
    assert_eq!(r.spec.rules[0].backend_refs[0].port, None);
    assert_eq!(objs[0].describe(), "UDPRoute (v1alpha2) default/r");
}

#[test]
fn skipped_kinds_are_notes() {
    let (objs, errs) = parse_str("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "t");
    assert!(objs.is_empty());
    assert_eq!(errs[0].severity, Severity::Note);
}

/// Every prefix of the example manifests, and byte-level corruptions of them, load and
/// render without panicking.
#[test]
fn truncated_and_corrupted_manifests_never_panic() {
    let text = [
        include_str!("../../../config/k8s/01-gatewayclass.yaml"),
        include_str!("../../../config/k8s/02-gatewayconfig.yaml"),
        include_str!("../../../config/k8s/03-dataplane-default.yaml"),
        include_str!("../../../config/k8s/11-complex-gateway.yaml"),
        include_str!("../../../config/k8s/20-media-plane-route.yaml"),
        include_str!("../../../config/k8s/22-media-server-pool.yaml"),
    ]
    .join("\n---\n");
    let bytes = text.as_bytes();
    for cut in (0..bytes.len()).step_by(13) {
        let prefix = String::from_utf8_lossy(&bytes[..cut]);
        let (objs, _) = parse_str(&prefix, "t");
        let _ = render(&objs, Mode::Managed);
        let _ = render(&objs, Mode::Legacy);
    }
    for (i, junk) in (0..bytes.len())
        .step_by(29)
        .zip([":", "-", "{", "]", "\"", "\n", " ", "0"].iter().cycle())
    {
        let mut s = String::from_utf8_lossy(&bytes[..i]).into_owned();
        s.push_str(junk);
        s.push_str(&String::from_utf8_lossy(&bytes[i + 1..]));
        let (objs, _) = parse_str(&s, "t");
        let _ = render(&objs, Mode::Managed);
    }
}

#[test]
fn duplicate_keys_are_errors_with_file_lines() {
    // Two files concatenated without `---`: kubectl refuses this, and so do we.
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
                apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n\
                apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n---\n\
                apiVersion: v1\nkind: Node\nmetadata: [\n";
    let (objs, errs) = parse_str(text, "t");
    assert_eq!(names(&objs), ["Namespace a"]);
    assert_eq!(errs.len(), 2);
    assert!(
        errs[0]
            .message
            .contains("duplicate entry with key \"apiVersion\""),
        "{}",
        errs[0]
    );
    assert_eq!((errs[1].document, errs[1].line), (3, 11));
    assert!(
        errs[1].message.contains("line 15"),
        "file line, not document line: {}",
        errs[1]
    );
}
