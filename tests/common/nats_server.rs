//! A real `nats-server -js` for the NATS sink tests (Debian package
//! `nats-server`, installed by `cargo xtask test`), and a reader that drains
//! the stream through a durable pull consumer, as docs/operations.md shows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use serde_json::Value;

/// A `nats-server` on a loopback port with JetStream in `store`.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub store: PathBuf,
    log: Arc<Mutex<String>>,
    /// More command-line arguments (TLS), on every start.
    extra: Vec<String>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl NatsServer {
    pub fn start(store: &Path) -> NatsServer {
        Self::start_with(store, &[])
    }

    /// Started with `extra` arguments too (e.g. `--tls ...`).
    pub fn start_with(store: &Path, extra: &[String]) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            store: store.to_path_buf(),
            log: Arc::new(Mutex::new(String::new())),
            extra: extra.to_vec(),
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again: same port, same store) and waits until ready.
    pub fn spawn(&mut self) {
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server ({e}): apt-get install nats-server, or run cargo xtask test")
            });
        let (log, _) = crate::common::collect_lines(child.stderr.take().expect("stderr"));
        self.log = log;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains("Server is ready") {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not ready within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One message read from the stream.
#[derive(Debug, Clone)]
pub struct Msg {
    pub stream_seq: u64,
    pub subject: String,
    pub msg_id: Option<String>,
    pub event: Value,
}

/// Reads a stream through a durable pull consumer with explicit acks:
/// each `poll` returns what arrived since the last one.
pub struct Reader {
    rt: tokio::runtime::Runtime,
    consumer: Option<(async_nats::Client, jetstream::consumer::PullConsumer)>,
    url: String,
    stream: String,
    durable: String,
    /// Every message, by stream sequence (a redelivery replaces itself).
    pub msgs: HashMap<u64, Msg>,
}

impl Reader {
    pub fn new(url: &str, stream: &str, durable: &str) -> Reader {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Reader {
            rt,
            consumer: None,
            url: url.into(),
            stream: stream.into(),
            durable: durable.into(),
            msgs: HashMap::new(),
        }
    }

    /// Fetches whatever is new; a failure (server away, stream not made
    /// yet) is returned so callers can poll again. Messages are kept as
    /// they arrive, before they are acknowledged.
    pub fn poll(&mut self) -> Result<usize, String> {
        let Reader {
            rt,
            consumer,
            url,
            stream,
            durable,
            msgs,
        } = self;
        let mut got = 0;
        let work = async {
            if consumer.is_none() {
                let client = async_nats::connect(url.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let js = jetstream::new(client.clone());
                let s = js.get_stream(&*stream).await.map_err(|e| e.to_string())?;
                let c: jetstream::consumer::PullConsumer = s
                    .get_or_create_consumer(
                        durable,
                        pull::Config {
                            durable_name: Some(durable.clone()),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                *consumer = Some((client, c));
            }
            let (client, c) = consumer.as_ref().ok_or("no consumer")?;
            loop {
                let mut batch = c
                    .fetch()
                    .max_messages(1000)
                    .expires(Duration::from_millis(250))
                    .messages()
                    .await
                    .map_err(|e| e.to_string())?;
                let before = got;
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| e.to_string())?;
                    let stream_seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
                    let msg_id = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_string());
                    let event: Value = serde_json::from_slice(&m.payload)
                        .map_err(|e| format!("payload is not JSON: {e}"))?;
                    let subject = m.subject.to_string();
                    msgs.insert(
                        stream_seq,
                        Msg {
                            stream_seq,
                            subject,
                            msg_id,
                            event,
                        },
                    );
                    got += 1;
                    m.ack().await.map_err(|e| e.to_string())?;
                }
                // Acks are plain publishes: make sure the server has them
                // before asking for more (max_ack_pending).
                client.flush().await.map_err(|e| e.to_string())?;
                if got == before {
                    return Ok::<_, String>(());
                }
            }
        };
        // Bounded: a pull request lost in a reconnection would wait forever.
        let result = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(15), work).await })
            .unwrap_or_else(|_| Err("timed out reading the stream".into()));
        match result {
            Ok(()) => Ok(got),
            Err(e) => {
                *consumer = None;
                Err(e)
            }
        }
    }

    /// Polls until `pred` holds for every message read so far.
    pub fn wait_for(&mut self, timeout: Duration, what: &str, pred: impl Fn(&[Msg]) -> bool) {
        self.wait_for_or(timeout, what, pred, |_| String::new());
    }

    /// `wait_for`, with `explain` saying what is missing when it times out.
    pub fn wait_for_or(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Msg]) -> bool,
        explain: impl Fn(&[Msg]) -> String,
    ) {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::new();
        loop {
            if let Err(e) = self.poll() {
                last_error = e;
            }
            if pred(&self.all()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; read {} messages; last error: {last_error}; {}",
                self.msgs.len(),
                explain(&self.all())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every message, in stream order.
    pub fn all(&self) -> Vec<Msg> {
        let mut v: Vec<Msg> = self.msgs.values().cloned().collect();
        v.sort_by_key(|m| m.stream_seq);
        v
    }
}
