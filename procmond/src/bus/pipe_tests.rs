//! The named-pipe transport against the real (or wine's) pipes: the first
//! instance owns the name, the allow-list admits and refuses by the
//! client's token SID (read through GetNamedPipeClientProcessId), frames
//! flow as on Unix. Run under wine by `cargo xtask test`. Wine gives every
//! process the same user SID, so a refused client is made by leaving that
//! SID out of the allow-list.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::bus::authz::Operators;
use crate::bus::broker::Broker;
use crate::bus::client;
use crate::bus::limits::BrokerLimits;
use crate::bus::protocol::FrameKind;

fn name(tag: &str) -> std::path::PathBuf {
    format!(r"{PIPE_PREFIX}procmond-test-{tag}-{}", std::process::id()).into()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves a broker admitting `allowed` on a fresh pipe; returns it.
fn serve(
    tag: &str,
    allowed: Vec<String>,
    stop: &CancellationToken,
) -> (Broker, std::path::PathBuf) {
    let path = name(tag);
    let broker =
        Broker::with_registration_sids(allowed, BrokerLimits::default(), Operators::default());
    let listener = bind(&path, &[]).expect("bind");
    tokio::spawn({
        let (broker, stop) = (broker.clone(), stop.clone());
        async move { broker.serve(listener, stop).await }
    });
    (broker, path)
}

#[test]
fn the_first_instance_owns_the_name() {
    runtime().block_on(async {
        let path = name("owner");
        let first = bind(&path, &[]).expect("first");
        let second = bind(&path, &[]);
        if crate::sys::windows::under_wine() {
            // wine 8.0 does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE.
            eprintln!(
                "wine: a second first instance was {}",
                if second.is_ok() { "allowed" } else { "refused" }
            );
        } else {
            let e = second.expect_err("a second owner");
            assert!(e.to_string().contains("another agent"), "{e}");
        }
        drop(first);
        assert!(bind(std::path::Path::new(r"C:\not-a-pipe"), &[]).is_err());
    });
}

#[test]
fn an_allowed_sid_talks_and_others_are_refused() {
    runtime().block_on(async {
        let stop = CancellationToken::new();
        let own = crate::sys::windows::own_user_sid().expect("own SID");
        let (broker, path) = serve("allowed", vec![own], &stop);
        let (mut w, mut r) = client::connect(&path).await.expect("connect");
        w.subscribe("app.test", 7).await.expect("subscribe");
        let ack = tokio::time::timeout(Duration::from_secs(5), r.next())
            .await
            .expect("answer in time")
            .expect("a frame")
            .expect("valid");
        assert_eq!((ack.kind, ack.correlation_id), (FrameKind::Ack, 7));
        assert_eq!(
            broker
                .stats()
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );

        let (refusing, path) = serve("refused", vec!["S-1-5-21-1-2-3-4".into()], &stop);
        let (mut w, mut r) = client::connect(&path).await.expect("the pipe opens");
        let _ = w.subscribe("app.test", 8).await;
        let next = tokio::time::timeout(Duration::from_secs(5), r.next())
            .await
            .expect("closed in time");
        assert!(!matches!(next, Some(Ok(_))), "refused peer got {next:?}");
        let refused = refusing
            .stats()
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(refused, 1);
        assert_eq!(
            refusing
                .stats()
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        stop.cancel();
    });
}
