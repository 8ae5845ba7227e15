//! End-to-end: the agent's NATS JetStream sink against a real `nats-server -js`
//! (every marker exec and exit exactly once in the stream, also across a
//! NATS outage with a collector crash in it; over mutual TLS after the
//! privilege drop, when the key files are gone and NATS restarts), and its
//! Prometheus `/metrics` read by a strict text-format parser while events flow.
//!
//! Linux only: it drives the Linux build (eBPF, procfs, Unix sockets and
//! modes); on other targets this test crate is empty but still type-checks.
#![cfg(target_os = "linux")]

mod common;
#[path = "common/nats_server.rs"]
mod nats_server;
#[path = "common/prom.rs"]
mod prom;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::agent::{Agent, AgentDir, collector_pids, ctl};
use common::{entity_id, kill, marker, procmond, run_shell, wait_until};
use nats_server::{Msg, NatsServer, Reader};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

fn nats_sink(url: &str) -> String {
    format!("  - type: nats\n    url: {url}\n    ack_timeout_secs: 2\n")
}

/// `/bin/true <m>-<i>` for i in from..to, `pause` seconds apart (0: none).
fn spawn_markers(m: &str, from: usize, to: usize, pause: &str) {
    run_shell(&format!(
        "i={from}; while [ $i -lt {to} ]; do /bin/true {m}-$i; [ {pause} = 0 ] || sleep {pause}; i=$((i+1)); done"
    ));
}

fn marker_execs<'a>(msgs: &'a [Msg], m: &str) -> Vec<&'a Msg> {
    let prefix = format!("{m}-");
    msgs.iter()
        .filter(|x| {
            x.event["kind"] == "exec"
                && x.event["argv"][1]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&prefix))
        })
        .collect()
}

/// `i` of the marker `<m>-<i>` an exec ran with.
fn marker_index(x: &Msg, m: &str) -> Option<usize> {
    x.event["argv"][1]
        .as_str()?
        .strip_prefix(m)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// Markers `0..n` each have their exec and their exit in `msgs`.
fn all_markers_in(msgs: &[Msg], m: &str, n: usize) -> bool {
    let execs = marker_execs(msgs, m);
    let args: HashSet<&str> = execs
        .iter()
        .filter_map(|x| x.event["argv"][1].as_str())
        .collect();
    let ids: HashSet<&str> = execs.iter().map(|x| entity_id(&x.event)).collect();
    let exits = msgs
        .iter()
        .filter(|x| x.event["kind"] == "exit" && ids.contains(entity_id(&x.event)))
        .count();
    args.len() >= n && exits >= n
}

/// Which of markers `0..n` have no exec, or an exec without its exit.
fn missing_markers(msgs: &[Msg], m: &str, n: usize) -> String {
    let execs = marker_execs(msgs, m);
    let exited: HashSet<&str> = msgs
        .iter()
        .filter(|x| x.event["kind"] == "exit")
        .map(|x| entity_id(&x.event))
        .collect();
    let mut no_exec = Vec::new();
    let mut no_exit = Vec::new();
    for i in 0..n {
        match execs.iter().find(|x| marker_index(x, m) == Some(i)) {
            None => no_exec.push(i),
            Some(x) if !exited.contains(entity_id(&x.event)) => no_exit.push(i),
            Some(_) => {}
        }
    }
    format!("markers without exec: {no_exec:?}; with an exec but no exit: {no_exit:?}")
}

fn host() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    procmond::agent::nats::host_token(raw.trim())
}

/// Every event exactly once, each with its id header (host and boot first:
/// clones of one image must not look like each other) and subject; markers
/// `0..n` with exactly one exec and one exit each.
fn assert_exactly_once(msgs: &[Msg], m: &str, n: usize) {
    let host = host();
    let boot = procmond::agent::nats::boot_token();
    let mut keys = HashSet::new();
    for x in msgs {
        let e = &x.event;
        let id = format!(
            "{host}.{boot}.{}-{}-{}",
            e["collector_id"].as_str().unwrap_or("?"),
            e["epoch"].as_u64().unwrap_or(0),
            e["seq"].as_u64().unwrap_or(0)
        );
        assert_eq!(x.msg_id.as_deref(), Some(id.as_str()), "Nats-Msg-Id of {e}");
        let kind = e["kind"].as_str().unwrap_or("?");
        assert_eq!(
            x.subject,
            format!("procmond.{host}.process.{kind}"),
            "subject of {e}"
        );
        assert!(keys.insert(id.clone()), "{id} twice in the stream");
    }
    let execs = marker_execs(msgs, m);
    let args: HashSet<&str> = execs
        .iter()
        .filter_map(|x| x.event["argv"][1].as_str())
        .collect();
    let want: HashSet<String> = (0..n).map(|i| format!("{m}-{i}")).collect();
    assert_eq!(args.len(), n, "every marker");
    assert!(args.iter().all(|a| want.contains(*a)), "only our markers");
    assert_eq!(execs.len(), n, "each marker exec once");
    // Exits paired with their execs by entity_id, never by pid.
    let ids: HashSet<&str> = execs.iter().map(|x| entity_id(&x.event)).collect();
    assert_eq!(ids.len(), n, "one entity_id per marker exec");
    let mut exits: HashMap<&str, usize> = HashMap::new();
    for x in msgs
        .iter()
        .filter(|x| x.event["kind"] == "exit" && ids.contains(entity_id(&x.event)))
    {
        *exits.entry(entity_id(&x.event)).or_default() += 1;
        assert_eq!(x.event["exit_code"], 0, "{}", x.event);
    }
    assert_eq!(exits.len(), n, "an exit for every marker");
    assert!(exits.values().all(|c| *c == 1), "each exit once: {exits:?}");
}

/// `ctl health` answered by the collector and the agent.
fn health(dir: &AgentDir) -> Option<Value> {
    let (out, json) = ctl(dir, &["health"]);
    (out.status.success() && json["agent"].is_object()).then_some(json)
}

#[test]
fn nats_stream_gets_every_marker_exec_and_exit_once() {
    let dir = AgentDir::new("nats500");
    let server = NatsServer::start(&dir.dir.join("js"));
    let config = dir.write_config_with_sinks(&nats_sink(&server.url()), "");
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let m = marker("n500");
    spawn_markers(&m, 0, 500, "0");
    let mut reader = Reader::new(&server.url(), "PROCMOND", "procmond-test");
    reader.wait_for(WAIT, "500 marker execs and exits", |msgs| {
        all_markers_in(msgs, &m, 500)
    });
    assert_exactly_once(&reader.all(), &m, 500);
    let json = wait_until("the sink to confirm everything", WAIT, || {
        health(&dir).filter(|j| j["agent"]["sinks"][0]["counters"]["lag"] == 0)
    });
    let sink = &json["agent"]["sinks"][0];
    assert_eq!(sink["type"], "nats", "{sink}");
    assert!(sink["counters"]["written"].as_u64() >= Some(1000), "{sink}");
    let (ok, log) = agent.stop();
    assert!(ok, "agent exit status; log:\n{log}");
    assert!(log.contains("nats sink connected"), "{log}");
}

#[test]
fn nats_outage_and_collector_crash_lose_nothing_and_ack_nothing_early() {
    let dir = AgentDir::new("natsout");
    let mut server = NatsServer::start(&dir.dir.join("js"));
    let config = dir.write_config_with_sinks(&nats_sink(&server.url()), "");
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let m = marker("nout");
    let mut reader = Reader::new(&server.url(), "PROCMOND", "procmond-test");

    // A: stored while NATS is up.
    spawn_markers(&m, 0, 100, "0");
    reader.wait_for(WAIT, "the first 100 markers", |msgs| {
        all_markers_in(msgs, &m, 100)
    });

    // B: NATS is killed while these flow.
    let flowing = {
        let m = m.clone();
        std::thread::spawn(move || spawn_markers(&m, 100, 400, "0.03"))
    };
    reader.wait_for(WAIT, "some of the next markers", |msgs| {
        marker_execs(msgs, &m)
            .iter()
            .filter(|x| marker_index(x, &m).is_some_and(|i| i >= 100))
            .count()
            >= 10
    });
    if flowing.is_finished() {
        eprintln!("note: the paced markers finished before NATS was killed");
    }
    server.kill9();
    flowing.join().expect("markers 100..400");

    // B2: wholly during the outage. Nothing may be acknowledged: the
    // collector's WAL keeps every one of these events, and the sink holds them.
    spawn_markers(&m, 400, 500, "0");
    let held = wait_until(
        "the WAL and the sink to hold the outage's events",
        WAIT,
        || {
            health(&dir).filter(|j| {
                j["response"]["wal_pending"].as_u64() >= Some(200)
                    && j["agent"]["sinks"][0]["counters"]["lag"].as_u64() >= Some(200)
            })
        },
    );
    eprintln!(
        "during the outage: wal_pending={} sink={}",
        held["response"]["wal_pending"], held["agent"]["sinks"][0]
    );

    // The collector dies during the outage; its replacement finds the events
    // in the WAL. A SIGKILL loses what the collector had not committed yet
    // (up to the commit pacer's 10 ms after the last exit); this test is
    // about what the WAL holds, so the last marker's exit gets a second to
    // be committed first (the wait above can pass before it is).
    std::thread::sleep(Duration::from_secs(1));
    let before = collector_pids(agent.pid());
    assert_eq!(before.len(), 1, "one collector under the agent");
    kill("KILL", before[0]);
    wait_until(
        "a restarted collector whose WAL still holds them",
        WAIT,
        || {
            let now = collector_pids(agent.pid());
            (now.len() == 1 && now != before)
                .then(|| health(&dir))
                .flatten()
                .filter(|j| j["response"]["wal_pending"].as_u64() >= Some(200))
        },
    );

    // C: captured by the new collector, NATS still down.
    spawn_markers(&m, 500, 600, "0");
    server.spawn();
    reader.wait_for_or(
        WAIT,
        "all 600 markers after NATS returned",
        |msgs| all_markers_in(msgs, &m, 600),
        |msgs| {
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "{}\nagent log (last 60 lines):\n{}",
                missing_markers(msgs, &m, 600),
                tail.join("\n")
            )
        },
    );
    assert_exactly_once(&reader.all(), &m, 600);

    let json = wait_until("the sink to confirm everything", WAIT, || {
        health(&dir).filter(|j| j["agent"]["sinks"][0]["counters"]["lag"] == 0)
    });
    let counters = &json["agent"]["sinks"][0]["counters"];
    assert!(counters["reconnects"].as_u64() >= Some(1), "{counters}");
    let log = agent.log();
    assert!(log.contains("nats sink disconnected"), "{log}");
    assert!(
        log.contains("replaying unacknowledged events from the WAL"),
        "{log}"
    );
    let (ok, log) = agent.stop();
    assert!(ok, "agent exit status; log:\n{log}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate in `dir`.
fn make_certs(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("tls dir");
    run_shell(&format!(
        "set -e; cd {d}
ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=procmond-test-ca 2>/dev/null
for who in server client; do
  openssl req $ec -keyout $who.key -out $who.csr -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=%sAuth\n' $who > $who.ext
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 2 -extfile $who.ext 2>/dev/null
done
chmod 600 *.key; chmod 644 ca.pem",
        d = dir.display()
    ));
}

fn sink_counters(dir: &AgentDir) -> Option<Value> {
    health(dir).map(|j| j["agent"]["sinks"][0]["counters"].clone())
}

#[test]
fn mtls_reconnects_after_the_privilege_drop_with_its_key_files_gone() {
    let dir = AgentDir::new("natstls");
    let tls = dir.dir.join("tls");
    make_certs(&tls);
    let t = |f: &str| tls.join(f).display().to_string();
    let args = [
        "--tls",
        "--tlscert",
        &t("server.pem"),
        "--tlskey",
        &t("server.key"),
        "--tlscacert",
        &t("ca.pem"),
        "--tlsverify",
    ]
    .map(String::from);
    let mut server = NatsServer::start_with(&dir.dir.join("js"), &args);
    // No tls.ca_file: the system's roots (here the test CA through
    // SSL_CERT_FILE), the branch that used to read the key at each connection.
    let sink = format!(
        "{}    tls:\n      cert_file: {}\n      key_file: {}\n      required: true\n",
        nats_sink(&server.url()),
        t("client.pem"),
        t("client.key")
    );
    let config = dir.write_config_with_sinks(&sink, "run_as: nobody\n");
    let mut cmd = procmond();
    cmd.env("SSL_CERT_FILE", t("ca.pem"));
    let mut agent = Agent::start_with(cmd, &config);
    agent.wait_for_log("privileges dropped", Duration::from_secs(60));
    let m = marker("ntls");
    spawn_markers(&m, 0, 20, "0");
    let before = wait_until("the first markers stored over mTLS", WAIT, || {
        sink_counters(&dir).filter(|c| c["written"].as_u64() >= Some(40) && c["lag"] == 0)
    });

    // The key and certificate become unreadable, then vanish; NATS restarts.
    use std::os::unix::fs::PermissionsExt;
    for f in ["client.key", "client.pem"] {
        std::fs::set_permissions(tls.join(f), std::fs::Permissions::from_mode(0o000))
            .expect("chmod");
        std::fs::remove_file(tls.join(f)).expect("rm");
    }
    server.kill9();
    spawn_markers(&m, 20, 40, "0");
    server.spawn();
    let written = before["written"].as_u64().unwrap_or(0);
    let after = wait_until("events to flow again after reconnecting", WAIT, || {
        sink_counters(&dir).filter(|c| {
            c["written"].as_u64() >= Some(written + 40)
                && c["lag"] == 0
                && c["reconnects"].as_u64() >= Some(1)
                && c["status"] == "ok"
        })
    });
    eprintln!("after the restart: {after}");
    let (ok, log) = agent.stop();
    assert!(ok, "agent exit status; log:\n{log}");
    assert!(log.contains("nats sink reconnected"), "{log}");
}

#[test]
fn metrics_endpoint_is_strict_prometheus_text_and_counters_move() {
    let dir = AgentDir::new("metrics");
    let server = NatsServer::start(&dir.dir.join("js"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let sinks = format!(
        "  - type: jsonl\n    path: {}\n{}",
        dir.sink().display(),
        nats_sink(&server.url())
    );
    let top = format!("heartbeat:\n  interval_secs: 1\nmetrics:\n  listen: \"{addr}\"\n");
    let config = dir.write_config_with_sinks(&sinks, &top);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    assert!(agent.log().contains("metrics listening"), "{}", agent.log());

    let scrape = || {
        let (code, headers, body) = prom::http(&addr, "GET", "/metrics");
        assert_eq!(code, 200, "{body}");
        let ct = headers.get("content-type").cloned().unwrap_or_default();
        assert!(
            ct.starts_with("text/plain; version=0.0.4"),
            "content type {ct}"
        );
        prom::parse(&body).unwrap_or_else(|e| panic!("not valid Prometheus text: {e}\n{body}"))
    };
    let exec = [("collector_id", "procmond"), ("kind", "exec")];
    let jsonl = [("type", "jsonl")];
    let nats = [("type", "nats")];
    // The first heartbeat brings the collector's figures.
    let first = wait_until("a heartbeat's figures in /metrics", WAIT, || {
        let e = scrape();
        prom::value(&e, "procmond_collector_events_by_kind_total", &exec).map(|_| e)
    });
    for family in [
        "procmond_collector_up",
        "procmond_collector_status",
        "procmond_collector_restarts_total",
        "procmond_collector_events_lost_total",
        "procmond_collector_events_by_kind_total",
        "procmond_collector_events_by_source_total",
        "procmond_collector_wal_pending_events",
        "procmond_collector_wal_pending_bytes",
        "procmond_collector_buffer_percent",
        "procmond_sink_written_total",
        "procmond_sink_lag_events",
        "procmond_sink_reconnects_total",
        "procmond_sink_errors_total",
        "procmond_broker_connections_total",
        "procmond_broker_connections_refused_total",
    ] {
        let f = first
            .get(family)
            .unwrap_or_else(|| panic!("no family {family}"));
        assert!(!f.help.is_empty() && !f.kind.is_empty(), "{family}");
        assert!(!f.samples.is_empty(), "{family} has samples");
    }
    assert_eq!(first["procmond_collector_restarts_total"].kind, "counter");
    assert_eq!(first["procmond_collector_wal_pending_events"].kind, "gauge");
    assert_eq!(
        prom::value(
            &first,
            "procmond_collector_up",
            &[("collector_id", "procmond")]
        ),
        Some(1.0)
    );
    assert!(
        prom::value(
            &first,
            "procmond_collector_events_lost_total",
            &[("counter", "kernel_lost")]
        )
        .is_some(),
        "every loss counter of the heartbeat is a series"
    );
    let get =
        |e: &prom::Exposition, f: &str, l: &[(&str, &str)]| prom::value(e, f, l).unwrap_or(-1.0);
    let execs0 = get(&first, "procmond_collector_events_by_kind_total", &exec);
    let jsonl0 = get(&first, "procmond_sink_written_total", &jsonl);
    let nats0 = get(&first, "procmond_sink_written_total", &nats);

    let m = marker("metrics");
    spawn_markers(&m, 0, 100, "0");
    let later = wait_until("the counters to move by the 100 markers", WAIT, || {
        let e = scrape();
        (get(&e, "procmond_collector_events_by_kind_total", &exec) >= execs0 + 100.0
            && get(&e, "procmond_sink_written_total", &jsonl) >= jsonl0 + 200.0
            && get(&e, "procmond_sink_written_total", &nats) >= nats0 + 200.0)
            .then_some(e)
    });
    assert!(get(&later, "procmond_broker_published_total", &[]) >= 200.0);
    assert!(
        get(
            &later,
            "procmond_collector_events_published_total",
            &[("collector_id", "procmond")]
        ) >= 200.0
    );

    let (code, _, _) = prom::http(&addr, "GET", "/");
    assert_eq!(code, 404);
    let (code, headers, _) = prom::http(&addr, "POST", "/metrics");
    assert_eq!(code, 405);
    assert_eq!(headers.get("allow").map(String::as_str), Some("GET, HEAD"));
    let (ok, log) = agent.stop();
    assert!(ok, "agent exit status; log:\n{log}");
}

#[test]
fn the_test_parser_refuses_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\n# HELP b B.\n# TYPE b gauge\nb -1.5\n";
    let e = prom::parse(good).expect("valid");
    assert_eq!(prom::value(&e, "a_total", &[("y", "q\"\\\n")]), Some(3.0));
    let bad = [
        "a 1\n",                                                           // no HELP/TYPE
        "# HELP a A.\n# TYPE a gauge\na 1",                                // no final newline
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",                         // unquoted
        "# HELP a A.\n# TYPE a gauge\na{x=\"\\t\"} 1\n",                   // bad escape
        "# HELP a A.\n# TYPE a gauge\na one\n",                            // not a number
        "# HELP a A.\n# TYPE a counter\na -1\n",                           // negative counter
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",                         // series twice
        "# HELP a A.\n# TYPE a wobble\na 1\n",                             // unknown type
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na 1\n", // not contiguous
        "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n",                           // bad name
    ];
    for text in bad {
        assert!(prom::parse(text).is_err(), "accepted:\n{text}");
    }
}
