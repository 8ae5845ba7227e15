//! The ECS and OCSF renderings checked against the vendored definitions
//! (`fixtures/`, see its README): every event kind, with every optional
//! field filled and with none, in both formats; and the validators shown to
//! fail on a wrong name, a wrong type, a missing required member.

mod ecs;
mod ocsf;

use serde_json::Value;

use super::{EventFormat, dedupe_key};
use crate::model::{Creds, EntityId, EventKind, EventSource, Parent, ProcessEvent, Session, Tty};

const T: i64 = 1_700_000_000_123_456_789;

fn id(tag: &str) -> EntityId {
    EntityId::from_digest_input(tag.as_bytes())
}

/// Every field procmond has, set.
fn full(kind: EventKind) -> ProcessEvent {
    let mut e = ProcessEvent::new(kind, EventSource::Ebpf, T, 4242);
    e.seq = 17;
    e.epoch = 3;
    e.collector_id = "procmond".into();
    e.entity_id = Some(id("self"));
    e.exec_id = Some(id("image"));
    (e.ppid, e.tid) = (Some(100), Some(4243));
    (e.uid, e.euid, e.gid, e.egid) = (Some(1000), Some(0), Some(1001), Some(0));
    e.previous_creds = Some(Creds {
        uid: 1000,
        euid: 1000,
        gid: 1001,
        egid: 1001,
    });
    e.name = "sudo".into();
    e.exe = Some("/usr/bin/sudo".into());
    e.argv = vec!["sudo".into(), "-i".into()];
    e.argv_truncated = true;
    e.cwd = Some("/home/u".into());
    e.start_time = Some(T - 5_000_000_000);
    e.exit_code = Some(1);
    e.cgroup = Some("/system.slice/x.scope".into());
    e.container_id = Some("0123456789ab".into());
    e.container_runtime = Some("containerd".into());
    e.pod_uid = Some("9f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5".into());
    e.sha256 = Some("ab".repeat(32));
    e.sha256_pending = true;
    e.parent = Some(Parent {
        entity_id: Some(id("parent")),
        pid: 100,
        start_time: Some(T - 9_000_000_000),
        name: Some("bash".into()),
        exe: Some("/usr/bin/bash".into()),
        argv: vec!["-bash".into()],
        unknown: true,
    });
    e.ancestors = vec![id("grandparent"), id("sshd")];
    e.session = Session {
        id: Some(90),
        pgid: Some(4242),
        leader: Some(id("leader")),
        group_leader: Some(id("self")),
        entry_leader: Some(id("sshd")),
        tty: Some(Tty {
            major: 136,
            minor: 3,
        }),
        login_uid: Some(1000),
    };
    e.platform.signal = Some(9);
    e.platform.cgroup_id = Some(77);
    e
}

/// Only what every event has.
fn empty(kind: EventKind) -> ProcessEvent {
    let mut e = ProcessEvent::new(kind, EventSource::Poll, T, 7);
    e.collector_id = "c".into();
    e.seq = 1;
    e
}

/// A Windows process: a SID and no uid; a pod uid that is not a UUID.
fn windows(kind: EventKind) -> ProcessEvent {
    let mut e = empty(kind);
    e.source = EventSource::Etw;
    e.name = "cmd.exe".into();
    e.exe = Some(r"C:\Windows\System32\cmd.exe".into());
    e.platform.user_sid = Some("S-1-5-18".into());
    e.pod_uid = Some("not_a_uuid".into());
    e.container_id = Some("c1".into());
    e
}

fn render(e: &ProcessEvent, format: EventFormat) -> Value {
    let mut out = Vec::new();
    format.write_json(e, &mut out);
    serde_json::from_slice(&out).expect("one JSON object")
}

fn all_events() -> Vec<ProcessEvent> {
    EventKind::ALL
        .into_iter()
        .flat_map(|k| [full(k), empty(k), windows(k)])
        .collect()
}

/// Dotted paths of every leaf (arrays count as leaves).
fn leaves(v: &Value, path: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(v, &p, out);
            }
        }
        None => out.push(path.to_owned()),
    }
}

#[test]
fn every_kind_renders_valid_ecs() {
    let defs = ecs::definitions();
    assert_eq!(defs.version, super::ecs::ECS_VERSION);
    for e in all_events() {
        let doc = render(&e, EventFormat::Ecs);
        let errors = ecs::validate(&defs, &doc);
        assert!(
            errors.is_empty(),
            "{:?} {}: {errors:#?}\n{doc:#}",
            e.kind,
            e.source.as_str()
        );
        assert_eq!(doc["event"]["action"], e.kind.as_str());
        assert_eq!(doc["event"]["sequence"], e.seq);
        assert_eq!(doc["process"]["pid"], e.pid);
        assert_eq!(doc["procmond"]["collector_id"], e.collector_id.as_str());
    }
}

#[test]
fn ecs_event_types_and_fields_follow_the_mapping() {
    let expect = [
        (EventKind::Exec, "start"),
        (EventKind::Fork, "start"),
        (EventKind::Start, "start"),
        (EventKind::Snapshot, "info"),
        (EventKind::Exit, "end"),
        (EventKind::Stop, "end"),
        (EventKind::Modify, "change"),
        (EventKind::SetUid, "change"),
    ];
    for (kind, t) in expect {
        assert_eq!(
            render(&full(kind), EventFormat::Ecs)["event"]["type"],
            serde_json::json!([t])
        );
    }
    let e = full(EventKind::SetUid);
    let d = render(&e, EventFormat::Ecs);
    let p = &d["process"];
    assert_eq!(d["@timestamp"], "2023-11-14T22:13:20.123456789Z");
    assert_eq!(p["entity_id"], id("self").to_string());
    assert_eq!(
        (&p["user"]["id"], &p["real_user"]["id"]),
        (&"0".into(), &"1000".into())
    );
    assert_eq!(
        (&p["group"]["id"], &p["real_group"]["id"]),
        (&"0".into(), &"1001".into())
    );
    assert_eq!(p["command_line"], "sudo -i");
    assert_eq!(p["args_count"], 2);
    assert_eq!(p["parent"]["entity_id"], id("parent").to_string());
    assert_eq!(p["session_leader"]["pid"], 90);
    assert_eq!(p["group_leader"]["entity_id"], id("self").to_string());
    assert_eq!(p["entry_leader"]["entity_id"], id("sshd").to_string());
    assert_eq!(p["tty"]["char_device"]["major"], 136);
    assert_eq!(p["interactive"], true);
    assert!(p.get("end").is_none(), "only an exit or stop ends");
    assert_eq!(d["procmond"]["exec_id"], id("image").to_string());
    assert_eq!(d["procmond"]["previous_creds"]["euid"], 1000);
    assert_eq!(d["procmond"]["ancestors"][1], id("sshd").to_string());
    assert_eq!(d["procmond"]["login_uid"], 1000);
    assert_eq!(
        render(&full(EventKind::Exit), EventFormat::Ecs)["process"]["end"],
        d["@timestamp"]
    );
    let w = render(&windows(EventKind::Start), EventFormat::Ecs);
    assert_eq!(w["process"]["user"]["id"], "S-1-5-18");
}

/// The vendored ECS list holds exactly the fields procmond can emit.
#[test]
fn ecs_fixture_matches_what_is_emitted() {
    let defs = ecs::definitions();
    let mut seen = Vec::new();
    for e in all_events() {
        leaves(&render(&e, EventFormat::Ecs), "", &mut seen);
    }
    let unused: Vec<_> = defs.fields.keys().filter(|f| !seen.contains(f)).collect();
    assert!(unused.is_empty(), "vendored but never emitted: {unused:?}");
}

#[test]
fn empty_events_carry_nothing_unknown() {
    for kind in EventKind::ALL {
        let e = empty(kind);
        let d = render(&e, EventFormat::Ecs);
        let mut seen = Vec::new();
        leaves(&d, "", &mut seen);
        for absent in [
            "process.entity_id",
            "process.executable",
            "process.parent.pid",
            "process.user.id",
            "container.id",
            "process.name",
        ] {
            assert!(!seen.iter().any(|s| s == absent), "{absent} in {d}");
        }
        let o = render(&e, EventFormat::Ocsf);
        let mut seen = Vec::new();
        leaves(&o, "", &mut seen);
        for absent in [
            "process.cpid",
            "process.uid",
            "process.file",
            "process.user.uid",
            "process.parent_process.pid",
            "exit_code",
        ] {
            assert!(
                !seen.iter().any(|s| s.starts_with(absent)),
                "{absent} in {o}"
            );
        }
        let mut only = serde_json::json!({"pid": 7});
        if matches!(kind, EventKind::Exit | EventKind::Stop) {
            only["terminated_time"] = (T / 1_000_000).into();
        }
        assert_eq!(o["process"], only);
    }
}

#[test]
fn every_kind_renders_valid_ocsf() {
    let schema = ocsf::schema();
    assert_eq!(schema.version, super::ocsf::OCSF_VERSION);
    let required = ocsf::required_class_attributes(&schema);
    for r in [
        "activity_id",
        "category_uid",
        "class_uid",
        "type_uid",
        "severity_id",
        "time",
        "metadata",
        "process",
        "actor",
        "device",
    ] {
        assert!(
            required.iter().any(|x| x == r),
            "{r} not required by the vendored class: {required:?}"
        );
    }
    for e in all_events() {
        let ev = render(&e, EventFormat::Ocsf);
        let errors = ocsf::validate(&schema, &ev);
        assert!(
            errors.is_empty(),
            "{:?} {}: {errors:#?}\n{ev:#}",
            e.kind,
            e.source.as_str()
        );
        for r in &required {
            assert!(ev.get(r).is_some(), "{r} missing");
        }
        assert_eq!(ev["time"], T / 1_000_000);
        assert_eq!(ev["unmapped"]["procmond"]["seq"], e.seq);
    }
}

#[test]
fn ocsf_activities_and_attributes_follow_the_mapping() {
    let expect = [
        (EventKind::Exec, 1, Some(3)),
        (EventKind::Fork, 1, Some(2)),
        (EventKind::Start, 1, Some(1)),
        (EventKind::Exit, 2, None),
        (EventKind::Stop, 2, None),
        (EventKind::SetUid, 5, None),
        (EventKind::Snapshot, 99, None),
        (EventKind::Modify, 99, None),
    ];
    for (kind, activity, launch) in expect {
        let ev = render(&full(kind), EventFormat::Ocsf);
        assert_eq!(ev["activity_id"], activity, "{kind:?}");
        assert_eq!(ev["type_uid"], 100_700 + activity, "{kind:?}");
        assert_eq!(ev["launch_type_id"].as_u64(), launch, "{kind:?}");
    }
    let ev = render(&full(EventKind::SetUid), EventFormat::Ocsf);
    let p = &ev["process"];
    assert_eq!(p["cpid"], id("self").to_string());
    assert_eq!(p["uid"], id("image").to_string());
    assert_eq!(p["user"]["uid"], "0");
    assert_eq!(
        ev["actor"]["user"]["uid"], "1000",
        "the user before the setuid"
    );
    assert_eq!(ev["actor"]["process"]["cpid"], id("self").to_string());
    assert_eq!(p["file"]["hashes"][0]["value"], "ab".repeat(32));
    assert_eq!(p["file"]["name"], "sudo");
    assert_eq!(p["created_time"], (T - 5_000_000_000) / 1_000_000);
    assert_eq!(p["parent_process"]["cpid"], id("parent").to_string());
    let ancestry: Vec<_> = p["ancestry"]
        .as_array()
        .expect("ancestry")
        .iter()
        .map(|a| a["cpid"].clone())
        .collect();
    assert_eq!(
        ancestry,
        [id("parent"), id("grandparent"), id("sshd")].map(|i| Value::from(i.to_string()))
    );
    assert_eq!(p["session"]["uid"], id("sshd").to_string());
    assert_eq!(
        p["container"]["pod_uuid"],
        "9f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5"
    );
    assert_eq!(ev["unmapped"]["procmond"]["creds"]["uid"], 1000);
    let fork = render(&full(EventKind::Fork), EventFormat::Ocsf);
    assert_eq!(fork["actor"]["process"]["pid"], 100, "the parent forked it");
    let exit = render(&full(EventKind::Exit), EventFormat::Ocsf);
    assert_eq!(exit["process"]["terminated_time"], T / 1_000_000);
    assert_eq!(exit["exit_code"], 1);
    let w = render(&windows(EventKind::Start), EventFormat::Ocsf);
    assert_eq!(w["process"]["user"]["uid"], "S-1-5-18");
    assert_eq!(w["process"]["file"]["name"], "cmd.exe");
    assert_eq!(w["unmapped"]["procmond"]["pod_uid"], "not_a_uuid");
}

/// Applies `change` to a copy of `doc` at a slash path (the parent must exist).
fn mutate(doc: &Value, change: impl FnOnce(&mut Value)) -> Value {
    let mut d = doc.clone();
    change(&mut d);
    d
}

fn rename(v: &mut Value, obj: &str, from: &str, to: &str) {
    let m = v
        .pointer_mut(obj)
        .and_then(Value::as_object_mut)
        .expect("object");
    let x = m.remove(from).expect("member");
    m.insert(to.into(), x);
}

#[test]
fn ecs_validator_fails_on_wrong_names_types_and_values() {
    let defs = ecs::definitions();
    let doc = render(&full(EventKind::Exec), EventFormat::Ecs);
    assert!(ecs::validate(&defs, &doc).is_empty());
    let cases: Vec<(Value, &str)> = vec![
        (
            mutate(&doc, |d| rename(d, "/process", "pid", "pidd")),
            "process.pidd",
        ),
        (
            mutate(&doc, |d| d["process"]["pid"] = "42".into()),
            "process.pid",
        ),
        (
            mutate(&doc, |d| d["process"]["start"] = 1.into()),
            "process.start",
        ),
        (
            mutate(&doc, |d| d["process"]["start"] = "yesterday".into()),
            "process.start",
        ),
        (
            mutate(&doc, |d| d["process"]["name"] = serde_json::json!(["a"])),
            "process.name",
        ),
        (
            mutate(&doc, |d| d["process"]["interactive"] = "yes".into()),
            "process.interactive",
        ),
        (
            mutate(&doc, |d| d["event"]["kind"] = "bogus".into()),
            "event.kind",
        ),
        (
            mutate(&doc, |d| d["event"]["type"] = serde_json::json!(["denied"])),
            "event.type",
        ),
        (
            mutate(&doc, |d| d["process"]["exit_code"] = Value::Null),
            "process.exit_code",
        ),
        (
            mutate(&doc, |d| rename(d, "", "@timestamp", "timestamp")),
            "@timestamp",
        ),
        (
            mutate(&doc, |d| rename(d, "", "procmond", "procmond2")),
            "procmond2",
        ),
    ];
    for (bad, field) in cases {
        let errors = ecs::validate(&defs, &bad);
        assert!(
            errors.iter().any(|e| e.starts_with(field)),
            "{field}: {errors:?}"
        );
    }
    let custom = mutate(&doc, |d| {
        d["procmond"]["anything"] = serde_json::json!({"x": [1]})
    });
    assert!(
        ecs::validate(&defs, &custom).is_empty(),
        "procmond.* is the extension root"
    );
}

#[test]
fn ocsf_validator_fails_on_wrong_names_types_and_missing_members() {
    let schema = ocsf::schema();
    let ev = render(&full(EventKind::Exec), EventFormat::Ocsf);
    assert!(ocsf::validate(&schema, &ev).is_empty());
    let cases: Vec<(Value, &str)> = vec![
        (
            mutate(&ev, |d| rename(d, "/process", "cpid", "cpidd")),
            "process.cpidd",
        ),
        (
            mutate(&ev, |d| rename(d, "/process/parent_process", "path", "exe")),
            "process.parent_process.exe",
        ),
        (mutate(&ev, |d| d["time"] = "2023-11-14".into()), "time"),
        (
            mutate(&ev, |d| d["process"]["pid"] = 5_000_000_000_i64.into()),
            "process.pid",
        ),
        (
            mutate(&ev, |d| d["process"]["cpid"] = "4242".into()),
            "process.cpid",
        ),
        (
            mutate(&ev, |d| {
                d["process"]["file"]["hashes"] =
                    serde_json::json!({"algorithm_id": 3, "value": "x"})
            }),
            "process.file.hashes",
        ),
        (
            mutate(&ev, |d| d["process"]["name"] = serde_json::json!(["a"])),
            "process.name",
        ),
        (mutate(&ev, |d| d["activity_id"] = 7.into()), "activity_id"),
        (mutate(&ev, |d| d["type_uid"] = 100_702.into()), "type_uid"),
        (
            mutate(&ev, |d| d["activity_name"] = "Terminate".into()),
            "activity_name",
        ),
        (
            mutate(&ev, |d| d["metadata"]["version"] = "1.0.0".into()),
            "metadata.version",
        ),
        (
            mutate(&ev, |d| {
                d.as_object_mut().map(|m| m.remove("metadata"));
            }),
            "metadata: required",
        ),
        (
            mutate(&ev, |d| {
                d["process"]["file"]
                    .as_object_mut()
                    .map(|m| m.remove("type_id"));
            }),
            "process.file.type_id: required",
        ),
        (
            mutate(&ev, |d| {
                d["device"].as_object_mut().map(|m| m.remove("type_id"));
            }),
            "device.type_id: required",
        ),
        (mutate(&ev, |d| d["unmapped"] = "text".into()), "unmapped"),
    ];
    for (bad, what) in cases {
        let errors = ocsf::validate(&schema, &bad);
        assert!(
            errors.iter().any(|e| e.starts_with(what)),
            "{what}: {errors:?}"
        );
    }
    let custom = mutate(&ev, |d| {
        d["unmapped"]["procmond"]["anything"] = serde_json::json!([1, "x"])
    });
    assert!(
        ocsf::validate(&schema, &custom).is_empty(),
        "unmapped is not checked"
    );
}

#[test]
fn every_format_keeps_the_dedupe_key() {
    let e = full(EventKind::Exec);
    for format in EventFormat::ALL {
        let v = render(&e, format);
        assert_eq!(
            dedupe_key(&v),
            Some(("procmond", 3, 17)),
            "{}",
            format.as_str()
        );
    }
    let mut e = empty(EventKind::Exit);
    e.epoch = 0;
    for format in EventFormat::ALL {
        assert_eq!(
            dedupe_key(&render(&e, format)),
            Some(("c", 0, 1)),
            "{}",
            format.as_str()
        );
    }
    assert_eq!(dedupe_key(&serde_json::json!({"seq": 1})), None);
}

#[test]
fn rfc3339_check_accepts_what_procmond_writes_only() {
    assert!(ecs::is_rfc3339("2023-11-14T22:13:20.123456789Z"));
    assert!(ecs::is_rfc3339("2023-11-14T22:13:20Z"));
    for bad in [
        "2023-11-14",
        "2023-11-14T22:13:20.Z",
        "2023-11-14 22:13:20Z",
        "x023-11-14T22:13:20Z",
    ] {
        assert!(!ecs::is_rfc3339(bad), "{bad}");
    }
}
