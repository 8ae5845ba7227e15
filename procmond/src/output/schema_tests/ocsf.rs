//! A validator for OCSF events against the definitions vendored in
//! `fixtures/ocsf/` (OCSF 1.8.0, trimmed to what procmond emits): it
//! resolves the class and each object through `extends` and `$include` as
//! the schema compiler does, then checks every attribute exists where it
//! appears, has its dictionary type (scalars through their base types,
//! objects recursively, arrays only where `is_array`), takes enumerated
//! values only from the enum, and that every required attribute is there.
//! `unmapped` is OCSF's own place for data without an attribute: its type is
//! `object` and its contents are not checked.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::EntityId;

/// The vendored files, by their path in the OCSF repository.
const FILES: [(&str, &str); 20] = [
    (
        "dictionary.json",
        include_str!("../fixtures/ocsf/dictionary.json"),
    ),
    (
        "categories.json",
        include_str!("../fixtures/ocsf/categories.json"),
    ),
    (
        "version.json",
        include_str!("../fixtures/ocsf/version.json"),
    ),
    (
        "events/base_event.json",
        include_str!("../fixtures/ocsf/events/base_event.json"),
    ),
    (
        "events/system/system.json",
        include_str!("../fixtures/ocsf/events/system/system.json"),
    ),
    (
        "events/system/process_activity.json",
        include_str!("../fixtures/ocsf/events/system/process_activity.json"),
    ),
    (
        "objects/_entity.json",
        include_str!("../fixtures/ocsf/objects/_entity.json"),
    ),
    (
        "objects/actor.json",
        include_str!("../fixtures/ocsf/objects/actor.json"),
    ),
    (
        "objects/container.json",
        include_str!("../fixtures/ocsf/objects/container.json"),
    ),
    (
        "objects/device.json",
        include_str!("../fixtures/ocsf/objects/device.json"),
    ),
    (
        "objects/endpoint.json",
        include_str!("../fixtures/ocsf/objects/endpoint.json"),
    ),
    (
        "objects/file.json",
        include_str!("../fixtures/ocsf/objects/file.json"),
    ),
    (
        "objects/fingerprint.json",
        include_str!("../fixtures/ocsf/objects/fingerprint.json"),
    ),
    (
        "objects/metadata.json",
        include_str!("../fixtures/ocsf/objects/metadata.json"),
    ),
    (
        "objects/process.json",
        include_str!("../fixtures/ocsf/objects/process.json"),
    ),
    (
        "objects/process_entity.json",
        include_str!("../fixtures/ocsf/objects/process_entity.json"),
    ),
    (
        "objects/product.json",
        include_str!("../fixtures/ocsf/objects/product.json"),
    ),
    (
        "objects/session.json",
        include_str!("../fixtures/ocsf/objects/session.json"),
    ),
    (
        "objects/user.json",
        include_str!("../fixtures/ocsf/objects/user.json"),
    ),
    (
        "profiles/container.json",
        include_str!("../fixtures/ocsf/profiles/container.json"),
    ),
];

/// One attribute as it applies in a class or object: the dictionary's entry
/// with the class's or object's own settings over it.
#[derive(Debug, Clone, Default)]
pub struct Attr {
    pub kind: String,
    pub is_array: bool,
    pub required: bool,
    pub enum_values: Vec<String>,
}

pub struct Schema {
    files: BTreeMap<&'static str, Value>,
    pub version: String,
    pub category_uid: i64,
}

pub fn schema() -> Schema {
    let files: BTreeMap<&str, Value> = FILES
        .iter()
        .map(|(path, text)| {
            (
                *path,
                serde_json::from_str(text).expect("vendored OCSF file parses"),
            )
        })
        .collect();
    let version = files["version.json"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let category_uid = files["categories.json"]["attributes"]["system"]["uid"]
        .as_i64()
        .unwrap_or(-1);
    Schema {
        files,
        version,
        category_uid,
    }
}

impl Schema {
    fn file(&self, path: &str) -> Option<&Value> {
        self.files.get(path)
    }

    /// The vendored file under `dir` that defines `name`.
    fn path_of(&self, dir: &str, name: &str) -> Option<String> {
        self.files
            .iter()
            .find(|(p, def)| p.starts_with(dir) && def["name"] == name)
            .map(|(p, _)| (*p).to_owned())
    }

    /// The class's uid as OCSF computes it: category * 1000 + the class's own.
    pub fn class_uid(&self) -> i64 {
        let own = self.files["events/system/process_activity.json"]["uid"]
            .as_i64()
            .unwrap_or(-1);
        self.category_uid * 1000 + own
    }

    /// Attribute definitions of a file, its `extends` chain (root first) and
    /// its `$include`d profiles, merged.
    fn resolve(&self, path: &str, dir: &str, errors: &mut Vec<String>) -> BTreeMap<String, Attr> {
        let mut chain = Vec::new();
        let mut at = Some(path.to_owned());
        while let Some(p) = at.take() {
            let Some(def) = self.file(&p) else {
                errors.push(format!("{p}: not among the vendored definitions"));
                break;
            };
            chain.push(def);
            at = match def["extends"].as_str() {
                Some("object") | None => None,
                Some(parent) => self.path_of(dir, parent),
            };
            if at.is_none() && !matches!(def["extends"].as_str(), Some("object") | None) {
                errors.push(format!(
                    "{p}: extends {} which is not vendored",
                    def["extends"]
                ));
            }
        }
        let mut attrs = BTreeMap::new();
        for def in chain.into_iter().rev() {
            let Some(members) = def["attributes"].as_object() else {
                continue;
            };
            for include in members
                .get("$include")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(profile) = include.as_str().and_then(|p| self.file(p)) {
                    self.merge(&mut attrs, &profile["attributes"]);
                }
            }
            self.merge(&mut attrs, &def["attributes"]);
        }
        attrs
    }

    fn merge(&self, attrs: &mut BTreeMap<String, Attr>, members: &Value) {
        let dictionary = &self.files["dictionary.json"]["attributes"];
        for (name, own) in members.as_object().into_iter().flatten() {
            if name == "$include" {
                continue;
            }
            let entry = attrs.entry(name.clone()).or_insert_with(|| {
                let d = &dictionary[name];
                let mut a = Attr {
                    kind: d["type"].as_str().unwrap_or_default().to_owned(),
                    is_array: d["is_array"].as_bool().unwrap_or(false),
                    ..Attr::default()
                };
                add_enum(&mut a, d);
                a
            });
            if let Some(kind) = own["type"].as_str() {
                entry.kind = kind.to_owned();
            }
            if let Some(req) = own["requirement"].as_str() {
                entry.required = req == "required";
            }
            add_enum(entry, own);
        }
    }

    /// The base scalar type of a dictionary type (`timestamp_t` → `long_t`).
    fn base_type<'a>(&'a self, mut t: &'a str) -> &'a str {
        let types = &self.files["dictionary.json"]["types"]["attributes"];
        for _ in 0..8 {
            match types[t]["type"].as_str() {
                Some(base) if base != t => t = base,
                _ => break,
            }
        }
        t
    }
}

fn add_enum(a: &mut Attr, def: &Value) {
    for key in def["enum"].as_object().into_iter().flat_map(|m| m.keys()) {
        if !a.enum_values.contains(key) {
            a.enum_values.push(key.clone());
        }
    }
}

/// Every problem with `event`, each naming the attribute; empty when valid.
pub fn validate(schema: &Schema, event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let attrs = schema.resolve(
        "events/system/process_activity.json",
        "events/",
        &mut errors,
    );
    // The class's own ids are computed, not enumerated in its file.
    let mut class_attrs = attrs.clone();
    for computed in ["class_uid", "category_uid"] {
        if let Some(a) = class_attrs.get_mut(computed) {
            a.enum_values.clear();
        }
    }
    check_object(schema, "", &class_attrs, event, &mut errors);
    check_class(schema, &attrs, event, &mut errors);
    errors
}

fn check_class(
    schema: &Schema,
    attrs: &BTreeMap<String, Attr>,
    e: &Value,
    errors: &mut Vec<String>,
) {
    let (activity, class) = (
        e["activity_id"].as_i64().unwrap_or(-1),
        e["class_uid"].as_i64(),
    );
    if class != Some(schema.class_uid()) {
        errors.push(format!(
            "class_uid: {} is not Process Activity's {}",
            e["class_uid"],
            schema.class_uid()
        ));
    }
    if e["category_uid"].as_i64() != Some(schema.category_uid) {
        errors.push(format!(
            "category_uid: {} is not System Activity's",
            e["category_uid"]
        ));
    }
    if e["type_uid"].as_i64() != Some(schema.class_uid() * 100 + activity) {
        errors.push(format!(
            "type_uid: {} is not class_uid * 100 + activity_id",
            e["type_uid"]
        ));
    }
    if e["metadata"]["version"].as_str() != Some(schema.version.as_str()) {
        errors.push(format!(
            "metadata.version: {} is not {}",
            e["metadata"]["version"], schema.version
        ));
    }
    // Except for Other, the name is the enum's caption.
    let captions =
        &schema.files["events/system/process_activity.json"]["attributes"]["activity_id"]["enum"];
    if activity != 99
        && attrs.contains_key("activity_name")
        && e.get("activity_name").is_some()
        && e["activity_name"] != captions[activity.to_string()]["caption"]
    {
        errors.push(format!(
            "activity_name: {} is not activity {activity}'s caption",
            e["activity_name"]
        ));
    }
}

fn check_object(
    schema: &Schema,
    path: &str,
    attrs: &BTreeMap<String, Attr>,
    v: &Value,
    errors: &mut Vec<String>,
) {
    let Some(members) = v.as_object() else {
        errors.push(format!("{path}: not an object"));
        return;
    };
    for (name, value) in members {
        let at = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match attrs.get(name) {
            Some(a) => check_attr(schema, &at, a, value, errors),
            None => errors.push(format!("{at}: not an attribute here")),
        }
    }
    for (name, a) in attrs {
        if a.required && !members.contains_key(name) {
            errors.push(format!(
                "{path}{}{name}: required and missing",
                if path.is_empty() { "" } else { "." }
            ));
        }
    }
}

fn check_attr(schema: &Schema, at: &str, a: &Attr, value: &Value, errors: &mut Vec<String>) {
    match (value, a.is_array) {
        (Value::Array(items), true) => {
            for (i, item) in items.iter().enumerate() {
                check_one(schema, &format!("{at}[{i}]"), a, item, errors);
            }
        }
        (_, true) => errors.push(format!("{at}: an array attribute given {value}")),
        (Value::Array(_), false) => errors.push(format!("{at}: an array where OCSF has one value")),
        _ => check_one(schema, at, a, value, errors),
    }
}

fn check_one(schema: &Schema, at: &str, a: &Attr, v: &Value, errors: &mut Vec<String>) {
    if !a.kind.ends_with("_t") {
        if a.kind == "object" {
            if !v.is_object() {
                errors.push(format!("{at}: not an object"));
            }
            return;
        }
        let Some(path) = schema.path_of("objects/", &a.kind) else {
            errors.push(format!("{at}: object {} is not vendored", a.kind));
            return;
        };
        let attrs = schema.resolve(&path, "objects/", errors);
        check_object(schema, at, &attrs, v, errors);
        return;
    }
    let ok = match schema.base_type(&a.kind) {
        "string_t" => v.is_string(),
        "integer_t" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "long_t" => v.is_i64(),
        "boolean_t" => v.is_boolean(),
        "float_t" => v.is_number(),
        other => {
            errors.push(format!("{at}: type {other} is not known to this validator"));
            return;
        }
    };
    if !ok {
        errors.push(format!("{at}: {v} is not of OCSF type {}", a.kind));
    }
    if a.kind == "uuid_t" && v.as_str().and_then(EntityId::parse).is_none() {
        errors.push(format!("{at}: {v} is not a UUID"));
    }
    if !a.enum_values.is_empty() && !a.enum_values.contains(&v.to_string()) {
        errors.push(format!("{at}: {v} is not in its enum"));
    }
}

/// The OCSF class's required attributes, for the tests' own check.
pub fn required_class_attributes(schema: &Schema) -> Vec<String> {
    let mut errors = Vec::new();
    schema
        .resolve(
            "events/system/process_activity.json",
            "events/",
            &mut errors,
        )
        .into_iter()
        .filter(|(_, a)| a.required)
        .map(|(n, _)| n)
        .collect()
}
