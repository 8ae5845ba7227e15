//! The archived rendering against serde_json of the decoded event: the
//! same bytes, for every kind, with every field set and with none.

use super::*;
use crate::model::batch::{Batch, BatchBuilder};
use crate::model::{EventKind, Parent, ProcessEvent, Tty};

/// Every field of the model set (a new field must be added here: the
/// comparison below would not see it otherwise).
fn full(kind: EventKind, seq: u64) -> ProcessEvent {
    let mut e = ProcessEvent::new(kind, EventSource::Ebpf, 1_700_000_000_123_456_789, 42);
    e.seq = seq;
    e.epoch = 7;
    e.collector_id = "c\"o\u{1}".into();
    e.entity_id = Some(EntityId([1; 16]));
    e.exec_id = Some(EntityId([2; 16]));
    (e.ppid, e.tid, e.uid, e.gid, e.euid, e.egid) =
        (Some(1), Some(43), Some(1000), Some(100), Some(0), Some(5));
    e.previous_creds = Some(Creds {
        uid: 1,
        euid: 2,
        gid: 3,
        egid: 4,
    });
    e.name = "na\nme".into();
    e.exe = Some("/bin/x".into());
    e.argv = vec!["x".into(), "--pw=[REDACTED]".into(), "\u{fffd}".into()];
    e.argv_truncated = true;
    e.cwd = Some("/tmp/a b".into());
    e.start_time = Some(1_699_999_999_990_000_000);
    e.exit_code = Some(-3);
    e.cgroup = Some("/system.slice".into());
    e.container_id = Some("ab".repeat(32));
    e.container_runtime = Some("docker".into());
    e.pod_uid = Some("pod".into());
    e.sha256 = Some("f".repeat(64));
    e.sha256_pending = true;
    e.parent = Some(Parent {
        entity_id: Some(EntityId([3; 16])),
        pid: 1,
        start_time: Some(1_600_000_000_000_000_000),
        name: Some("bash".into()),
        exe: Some("/bin/bash".into()),
        argv: vec!["bash".into(), "-c".into()],
        unknown: true,
    });
    e.ancestors = vec![EntityId([4; 16]), EntityId([5; 16])];
    e.session = Session {
        id: Some(9),
        pgid: Some(10),
        leader: Some(EntityId([6; 16])),
        group_leader: Some(EntityId([7; 16])),
        entry_leader: Some(EntityId([8; 16])),
        tty: Some(Tty {
            major: 136,
            minor: 2,
        }),
        login_uid: Some(1000),
    };
    e.platform = Platform {
        signal: Some(9),
        core_dumped: Some(true),
        cgroup_id: Some(77),
        exec_filename: Some("./x".into()),
        exe_inode: Some(5),
        exe_dev: Some(6),
        original_ppid: Some(7),
        team_id: Some("T".into()),
        signing_id: Some("S".into()),
        cdhash: Some("cd".into()),
        platform_binary: Some(false),
        jail_id: Some(3),
        jail_name: Some("j".into()),
        user_sid: Some("S-1-5-18".into()),
        session_id: Some(1),
        sequence_number: Some(11),
        parent_sequence_number: Some(10),
    };
    e
}

fn empty(kind: EventKind, seq: u64) -> ProcessEvent {
    let mut e = ProcessEvent::new(kind, EventSource::Poll, 0, 0);
    e.seq = seq;
    e.parent = Some(Parent::default());
    e
}

#[test]
fn the_archived_rendering_is_byte_for_byte_the_decoded_one() {
    let mut builder = BatchBuilder::new();
    let mut seq = 1;
    for kind in EventKind::ALL {
        for e in [full(kind, seq), empty(kind, seq + 1)] {
            builder.push(&e).expect("encodes");
        }
        seq += 2;
    }
    let batch = Batch::parse_slice(builder.finish().as_bytes()).expect("batch");
    let mut compared = 0;
    for entry in batch.iter() {
        let decoded = entry.decode().expect("valid");
        let archived = entry.event().expect("valid");
        let want = serde_json::to_string(&decoded).expect("json");
        let got = serde_json::to_string(&Native(archived)).expect("json");
        assert_eq!(got, want);
        compared += 1;
    }
    assert_eq!(compared, 2 * EventKind::ALL.len());
}
