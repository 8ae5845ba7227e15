//! A validator for ECS documents against the field definitions vendored in
//! `fixtures/ecs/` (ECS 8.17.0, trimmed to what procmond emits): every leaf
//! must be a defined field of the right type, arrays only where ECS allows
//! them, values from a closed list only from that list, and the required
//! fields present. `procmond.*` is the one extension root it lets through.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

const DEFINITIONS: &str = include_str!("../fixtures/ecs/ecs_flat_trimmed.json");
/// The custom namespace docs/reference.md §2.6 documents.
const EXTENSION_ROOT: &str = "procmond";

#[derive(Debug, Deserialize)]
pub struct Field {
    #[serde(rename = "type")]
    pub kind: String,
    pub array: bool,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub allowed_values: Vec<String>,
    #[serde(default)]
    pub expected_event_types: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct Definitions {
    pub version: String,
    pub fields: BTreeMap<String, Field>,
}

pub fn definitions() -> Definitions {
    serde_json::from_str(DEFINITIONS).expect("the vendored ECS definitions parse")
}

/// Every problem with `doc`, each naming the field; empty when it is valid.
pub fn validate(defs: &Definitions, doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(root) = doc.as_object() else {
        return vec!["the document is not a JSON object".into()];
    };
    let mut seen = Vec::new();
    for (key, value) in root {
        walk(defs, key, value, &mut seen, &mut errors);
    }
    for (name, field) in &defs.fields {
        if field.required && !seen.contains(name) {
            errors.push(format!("{name}: required and missing"));
        }
    }
    check_event_types(defs, doc, &mut errors);
    errors
}

fn walk(
    defs: &Definitions,
    path: &str,
    value: &Value,
    seen: &mut Vec<String>,
    errors: &mut Vec<String>,
) {
    if path == EXTENSION_ROOT {
        if !value.is_object() {
            errors.push(format!("{path}: the extension root must be an object"));
        }
        return;
    }
    if let (Value::Object(members), None) = (value, defs.fields.get(path)) {
        if members.is_empty() {
            errors.push(format!("{path}: empty object"));
        }
        for (key, v) in members {
            walk(defs, &format!("{path}.{key}"), v, seen, errors);
        }
        return;
    }
    let Some(field) = defs.fields.get(path) else {
        errors.push(format!("{path}: not an ECS field"));
        return;
    };
    seen.push(path.to_owned());
    match value {
        Value::Array(items) if field.array => {
            if items.is_empty() {
                errors.push(format!("{path}: empty array"));
            }
            for item in items {
                check_value(path, field, item, errors);
            }
        }
        Value::Array(_) => errors.push(format!("{path}: an array where ECS has one value")),
        v => check_value(path, field, v, errors),
    }
}

fn check_value(path: &str, field: &Field, v: &Value, errors: &mut Vec<String>) {
    let ok = match field.kind.as_str() {
        "keyword" | "wildcard" | "constant_keyword" | "match_only_text" | "text" => v.is_string(),
        "long" => v.is_i64() || v.as_u64().is_some_and(|n| i64::try_from(n).is_ok()),
        "integer" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "boolean" => v.is_boolean(),
        "date" => v.as_str().is_some_and(is_rfc3339),
        other => {
            errors.push(format!(
                "{path}: type {other} is not known to this validator"
            ));
            return;
        }
    };
    if !ok {
        errors.push(format!("{path}: {v} is not of ECS type {}", field.kind));
    }
    if !field.allowed_values.is_empty()
        && !v
            .as_str()
            .is_some_and(|s| field.allowed_values.iter().any(|a| a == s))
    {
        errors.push(format!("{path}: {v} is not one of ECS's allowed values"));
    }
}

/// `event.type` must be one ECS expects with each `event.category`.
fn check_event_types(defs: &Definitions, doc: &Value, errors: &mut Vec<String>) {
    let Some(expected) = defs
        .fields
        .get("event.category")
        .map(|f| &f.expected_event_types)
    else {
        return;
    };
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    for category in list(&doc["event"]["category"]) {
        let Some(types) = expected.get(&category) else {
            continue;
        };
        for t in list(&doc["event"]["type"]) {
            if !types.contains(&t) {
                errors.push(format!(
                    "event.type: {t} is not expected with category {category}"
                ));
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the shape ECS dates take here.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b.last() == Some(&b'Z');
    if !shape {
        return false;
    }
    let fraction = &b[19..b.len() - 1];
    fraction.is_empty()
        || (fraction[0] == b'.'
            && fraction.len() > 1
            && fraction[1..].iter().all(u8::is_ascii_digit))
}
