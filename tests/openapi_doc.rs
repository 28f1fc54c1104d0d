//! `docs/openapi.yaml` against the code, without a peer or Python: the document is YAML that
//! parses, has no accidental nulls (an unquoted `{description: a, b}` in YAML's flow style
//! silently becomes the key `b` with a null value), and lists every route the HTTP router
//! serves with the method it serves there, and no route the router does not serve. The full
//! check (valid OpenAPI 3.0, a real peer meeting it) is `tests/api_conformance/run.sh`.

use std::collections::BTreeSet;
use yaml_rust2::{Yaml, YamlLoader};

fn document() -> Yaml {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
        .expect("docs/openapi.yaml");
    let mut docs = YamlLoader::load_from_str(&text).expect("docs/openapi.yaml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

/// Every `.route("PATH", METHOD(handler))` of `src/api/http.rs`, as (OpenAPI path, method);
/// `any` stands for the key routes' several methods. `{*key}` is written `{key}` in OpenAPI.
fn router_routes() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/http.rs"))
        .expect("src/api/http.rs");
    let mut routes = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        let call = call.trim_start();
        let Some(rest) = call.strip_prefix('"') else {
            continue;
        };
        let (path, rest) = rest.split_once('"').expect("closing quote of the path");
        let rest = rest
            .trim_start()
            .strip_prefix(',')
            .expect("a method router follows");
        let method: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        routes.insert((path.replace("{*key}", "{key}"), method));
    }
    routes
}

fn find_nulls(node: &Yaml, at: &str, found: &mut Vec<String>) {
    match node {
        Yaml::Hash(map) => {
            for (k, v) in map {
                let here = format!("{at}/{}", k.as_str().unwrap_or("?"));
                if matches!(v, Yaml::Null) {
                    found.push(here.clone());
                }
                find_nulls(v, &here, found);
            }
        }
        Yaml::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| find_nulls(v, &format!("{at}[{i}]"), found)),
        _ => {}
    }
}

#[test]
fn the_document_parses_without_accidental_nulls() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str(), Some("3.0.3"));
    let mut nulls = Vec::new();
    find_nulls(&doc, "", &mut nulls);
    assert!(
        nulls.is_empty(),
        "null values (quote text with commas): {nulls:?}"
    );
}

#[test]
fn the_document_lists_every_route_the_router_serves() {
    let doc = document();
    let paths = doc["paths"].as_hash().expect("paths");
    let documented: BTreeSet<String> = paths
        .keys()
        .map(|k| k.as_str().expect("path").to_string())
        .collect();
    let routes = router_routes();
    assert!(
        routes.len() >= 15,
        "the router's routes were found: {routes:?}"
    );
    for (path, method) in &routes {
        let item = &doc["paths"][path.as_str()];
        assert!(
            !item.is_badvalue(),
            "the router serves {path} but docs/openapi.yaml does not list it"
        );
        let methods: Vec<&str> = match method.as_str() {
            // The key routes: every method but POST, which is /incr's.
            "any" => vec!["get", "head", "put", "patch", "delete"],
            m => vec![m],
        };
        for m in methods {
            assert!(
                !item[m].is_badvalue(),
                "the router serves {} {path} but docs/openapi.yaml does not document it",
                m.to_uppercase()
            );
        }
    }
    // And nothing the router does not serve: each documented path is a route, or lies under
    // the key wildcard (`/v1/kv/{key}/incr`).
    let served: BTreeSet<&str> = routes.iter().map(|(p, _)| p.as_str()).collect();
    for path in &documented {
        assert!(
            served.contains(path.as_str()) || path.starts_with("/v1/kv/{key}/"),
            "docs/openapi.yaml lists {path}, which the router does not serve"
        );
    }
}
