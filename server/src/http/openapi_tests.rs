use super::*;

/// Every `.route("path", method(handler)...)` in the router source, as (method, path).
fn routes_in_source() -> Vec<(String, String)> {
    let src = include_str!("mod.rs");
    let mut out = Vec::new();
    for chunk in src.split(".route(").skip(1) {
        let Some(rest) = chunk.trim_start().strip_prefix('"') else {
            continue;
        };
        let Some((path, tail)) = rest.split_once('"') else {
            continue;
        };
        // The chunk runs to the next `.route(`, so it holds this route's method chain.
        for m in ["get", "post", "put", "delete", "patch"] {
            // `get(module::handler)` or `.post(module::handler)`, from any handler module.
            let pattern = format!("{m}(");
            let found = tail.match_indices(&pattern).any(|(i, _)| {
                let before = tail[..i].chars().next_back();
                let after = &tail[i + pattern.len()..];
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && after.split_once("::").is_some_and(|(module, _)| {
                        !module.is_empty()
                            && module.chars().all(|c| c.is_alphanumeric() || c == '_')
                    })
            });
            if found {
                out.push((m.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

fn all_operations() -> impl Iterator<Item = &'static Operation> {
    OPERATIONS.iter().chain(super::super::secagg::OPERATIONS)
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let routes = routes_in_source();
    assert!(routes.len() >= 15, "parsed only {routes:?}");
    let documented: Vec<(String, String)> = all_operations()
        .map(|o| (o.method.as_str().to_owned(), o.path.to_owned()))
        .collect();
    for r in &routes {
        assert!(
            documented.contains(r),
            "route {r:?} is not in the OpenAPI document"
        );
    }
    for d in &documented {
        assert!(routes.contains(d), "documented {d:?} has no route");
    }
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_operation_has_schemas_and_every_reference_resolves() {
    let doc = document().unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for o in all_operations() {
        let op = &doc["paths"][o.path][o.method.as_str()];
        let ok = &op["responses"][o.status.to_string()];
        assert!(
            ok["content"]
                .as_object()
                .is_some_and(|c| c.values().all(|m| m["schema"].is_object())),
            "{} {}: no success schema: {ok}",
            o.method.as_str(),
            o.path
        );
        if o.request.is_some() {
            let body = &op["requestBody"]["content"];
            assert!(
                body.as_object()
                    .is_some_and(|c| !c.is_empty() && c.values().all(|m| m["schema"].is_object())),
                "{} {}: no request schema",
                o.method.as_str(),
                o.path
            );
        }
        for p in op["parameters"].as_array().unwrap() {
            let schema = &p["schema"];
            let constrained = schema.get("$ref").is_some()
                || schema.get("pattern").is_some()
                || schema.get("maximum").is_some();
            assert!(constrained, "{}: parameter {p} has no rule", o.path);
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 40, "{all:?}");
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas.contains_key(name), "dangling {r}");
    }
}

#[test]
fn ids_carry_the_rules_their_parsers_enforce() {
    let doc = document().unwrap();
    let fed = &doc["components"]["schemas"]["FederationId"];
    assert_eq!(fed["pattern"], cohort_protocol::schema::NAME_PATTERN);
    assert_eq!(fed["maxLength"], 64);
    let round = &doc["components"]["schemas"]["RoundId"];
    assert_eq!(round["minimum"], 1);
    let budget = &doc["components"]["schemas"]["Budget"];
    assert_eq!(budget["properties"]["epsilon"]["maximum"], 1_000_000.0);
    assert_eq!(budget["properties"]["delta"]["exclusiveMinimum"], 0.0);
}
