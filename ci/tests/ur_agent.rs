//! ur-agent against a real RabbitMQ (Debian's rabbitmq-server through
//! `ci::rabbitmq::Broker`), with the test playing CNAPI over lapin.
//!
//! The tests run the real `ur-agent` binary, as the supervisor does. A test
//! of another package cannot use `CARGO_BIN_EXE_ur-agent`, so the first test
//! that needs it runs `cargo build -p ur-agent` into this test binary's own
//! target directory and profile (`$UR_AGENT_BIN` names a prebuilt binary
//! instead). Each agent gets a temp directory with a fake `sysinfo` (a shell
//! script printing a UUID and an admin NIC, `-u` counted), its own command
//! line / node.config files, setup-state file, startup marker, script dir
//! and reboot commands that only write files; its stderr (the log) goes to
//! a file the tests read.
//!
//! One broker per test (each start takes ~4 s), on a port derived from the
//! pid and a per-test slot so parallel test processes do not collide.
//! Without rabbitmq-server a test prints `SKIPPED ...` and passes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ci::rabbitmq::{Broker, BrokerOpts};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{json, Value};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const REPLY: Duration = Duration::from_secs(20);

fn skip(name: &str) -> bool {
    if Path::new(SERVER).exists() {
        return false;
    }
    println!("SKIPPED ur_agent::{name}: {SERVER} missing (run bash ci/setup.sh)");
    true
}

/// A loopback port for this test process: 20000 + 8 × (pid mod 1000) + slot.
fn port(slot: u16) -> u16 {
    20000 + (std::process::id() % 1000) as u16 * 8 + slot
}

fn broker(slot: u16, dir: &Path) -> Broker {
    let listen = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port(slot));
    Broker::start(BrokerOpts { listen, netns: None, dir: dir.to_path_buf() }).expect("start rabbitmq")
}

/// The ur-agent binary (built once per test process).
fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ci::workspace_bin("ur-agent", "ur-agent", "UR_AGENT_BIN"))
}

/// A fake CN: files the agent reads, and what its commands write.
struct Node {
    dir: tempfile::TempDir,
    uuid: String,
    mac: String,
}

impl Node {
    fn new(uuid: &str, mac: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir_all(d.join("tmp")).expect("tmp dir");
        // Like our sysinfo: "Setup" from the setup-state file; -u refreshes
        // (here: counted) and prints nothing. The external NIC comes first
        // so the admin one has to be looked up by its tag.
        let script = format!(
            r#"#!/bin/sh
if [ "$1" = -u ]; then echo u >> {d}/sysinfo-refreshes; exit 0; fi
if [ -e {d}/no-admin-nic ]; then echo '{{"UUID":"{uuid}","Network Interfaces":{{}}}}'; exit 0; fi
setup=false
grep -q '"complete": *true' {d}/setup-state.json 2>/dev/null && setup=true
printf '{{"UUID":"{uuid}","System Type":"Linux","Setup":"%s","Admin NIC Tag":"admin","Network Interfaces":{{"ens4":{{"MAC Address":"52:54:00:00:00:99","ip4addr":"","Link Status":"up","NIC Names":["external"]}},"ens3":{{"MAC Address":"{mac}","ip4addr":"10.99.99.40","Link Status":"up","NIC Names":["admin"]}}}}}}\n' "$setup"
"#,
            d = d.display()
        );
        fs::write(d.join("sysinfo"), script).expect("sysinfo script");
        for (name, file) in [("reboot", "reboot.log"), ("force-reboot", "force.log")] {
            fs::write(d.join(name), format!("#!/bin/sh\necho \"$@\" >> {}/{file}\n", d.display())).expect("script");
        }
        for name in ["sysinfo", "reboot", "force-reboot"] {
            fs::set_permissions(d.join(name), fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        fs::write(d.join("cmdline"), "console=ttyS0\n").expect("cmdline");
        Node { dir, uuid: uuid.into(), mac: mac.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.path(name), text).expect("write");
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Starts ur-agent with every path in this node's directory.
    fn start(&self, extra: &[&str]) -> Agent {
        let log = self.path("ur-agent.log");
        let f = fs::File::create(&log).expect("log file");
        let p = |n: &str| self.path(n).display().to_string();
        let child = Command::new(agent_bin())
            .args(["--cmdline", &p("cmdline"), "--node-config", &p("node.config"), "--sysinfo", &p("sysinfo")])
            .args(["--setup-state", &p("setup-state.json"), "--startup-marker", &p("run/ur-startup")])
            .args(["--tmp-dir", &p("tmp"), "--reboot-cmd", &format!("{} orderly", p("reboot"))])
            .args(["--force-reboot-cmd", &format!("{} forced", p("force-reboot"))])
            .args(if extra.contains(&"--retry-max") { &[][..] } else { &["--retry-max", "2s"][..] })
            .args(extra)
            .env_remove("UR_AGENT_BROKER")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("start ur-agent");
        Agent { child, log }
    }
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until the log has `needle` at least `n` times.
    fn wait_log_n(&mut self, needle: &str, n: usize, limit: Duration) {
        let t0 = Instant::now();
        while self.count(needle) < n {
            self.assert_running();
            assert!(t0.elapsed() < limit, "ur-agent log lacks {needle:?} (x{n}) after {limit:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_log(&mut self, needle: &str, limit: Duration) {
        self.wait_log_n(needle, 1, limit);
    }

    fn assert_running(&mut self) {
        assert!(matches!(self.child.try_wait(), Ok(None)), "ur-agent exited:\n{}", self.log());
    }
}

impl Drop for Agent {
    /// Stops the agent (SIGTERM, then SIGKILL); shows its log when the test
    /// failed or `UR_AGENT_SHOW_LOG` is set.
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("UR_AGENT_SHOW_LOG").is_some() {
            println!("--- ur-agent log {} ---\n{}--- end ---", self.log.display(), self.log());
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A request id (ur's form: hex).
fn reqid() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{:08x}", rand_u32().wrapping_add(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish() as u32
}

/// CNAPI's side of the bus.
struct Cnapi {
    _conn: Connection,
    ch: Channel,
}

impl Cnapi {
    async fn connect(uri: &str) -> Cnapi {
        let t0 = Instant::now();
        loop {
            match Connection::connect(uri, ConnectionProperties::default()).await {
                Ok(conn) => {
                    let ch = conn.create_channel().await.expect("channel");
                    return Cnapi { _conn: conn, ch };
                }
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(30), "cannot connect to {uri}: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }

    /// A queue bound to `keys` (exclusive, or durable and named), consumed.
    async fn queue(&self, name: &str, keys: &[String]) -> Consumer {
        let opts = if name.is_empty() {
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() }
        } else {
            QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
        };
        let q = self.ch.queue_declare(name.into(), opts, FieldTable::default()).await.expect("declare");
        for k in keys {
            self.ch
                .queue_bind(
                    q.name().clone(),
                    "amq.topic".into(),
                    k.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind");
        }
        let opts = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        self.ch.basic_consume(q.name().clone(), "".into(), opts, FieldTable::default()).await.expect("consume")
    }

    async fn publish(&self, key: &str, body: &[u8]) {
        self.ch
            .basic_publish(
                "amq.topic".into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
    }

    /// Publishes an execute request and waits for its reply.
    async fn execute_on(&self, key_node: &str, uuid: &str, body: &[u8]) -> Value {
        let id = reqid();
        let mut c = self.queue("", &[format!("ur.execute-reply.{uuid}.{id}")]).await;
        self.publish(&format!("ur.execute.{key_node}.{id}"), body).await;
        next_json(&mut c, REPLY).await.1
    }

    async fn execute(&self, uuid: &str, body: Value) -> Value {
        self.execute_on(uuid, uuid, body.to_string().as_bytes()).await
    }
}

/// The next message: (routing key, JSON body).
async fn next_json(c: &mut Consumer, limit: Duration) -> (String, Value) {
    let d = tokio::time::timeout(limit, c.next())
        .await
        .unwrap_or_else(|_| panic!("no message within {limit:?}"))
        .expect("consumer open")
        .expect("delivery");
    let v = serde_json::from_slice(&d.data).expect("JSON body");
    (d.routing_key.to_string(), v)
}

/// Everything that arrives within `d`.
async fn drain(c: &mut Consumer, d: Duration) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, c.next()).await {
        out.push((m.routing_key.to_string(), serde_json::from_slice(&m.data).unwrap_or(Value::Null)));
    }
    out
}

fn stdout(v: &Value) -> &str {
    v["stdout"].as_str().unwrap_or_default()
}

fn stderr(v: &Value) -> &str {
    v["stderr"].as_str().unwrap_or_default()
}

/// One broker, one agent: every request CNAPI makes, the limits, malformed
/// input, sysinfo until setup completes, and 113 → reboot.
#[test]
fn serves_cnapi() {
    if skip("serves_cnapi") {
        return;
    }
    let bdir = tempfile::tempdir().expect("tempdir");
    let b = broker(0, bdir.path());
    let uri = b.uri();
    let node = Node::new("564d5535-1f2e-4c5b-9f5e-0123456789ab", "52:54:00:12:34:56");
    let uuid = node.uuid.clone();
    let rt = runtime();
    let cnapi = rt.block_on(Cnapi::connect(&uri));
    // Bound before the agent starts, so the first messages are seen.
    let mut sysinfo_q = rt.block_on(cnapi.queue("", &["ur.sysinfo.#".into()]));
    let mut startup_q = rt.block_on(cnapi.queue("", &["ur.startup.#".into()]));
    let mut agent = node.start(&["--broker", &uri, "--sysinfo-interval", "1s", "--force-reboot-after", "2s"]);
    let t_start = Instant::now();

    // sysinfo: routing key UUID == body UUID (CNAPI asserts it), Setup present.
    let (key, body) = rt.block_on(next_json(&mut sysinfo_q, REPLY));
    println!("first sysinfo after {:?}", t_start.elapsed());
    let id = key.strip_prefix(&format!("ur.sysinfo.{uuid}.")).unwrap_or_else(|| panic!("sysinfo key {key}"));
    assert!(id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    assert_eq!(body["UUID"], uuid.as_str());
    assert_eq!(body["Setup"], "false");
    let (key, body) = rt.block_on(next_json(&mut startup_q, REPLY));
    assert_eq!(key, format!("ur.startup.{uuid}"));
    assert_eq!(body["UUID"], uuid.as_str());
    agent.wait_log("ur.startup confirmed", REPLY);
    assert!(node.path("run/ur-startup").exists(), "startup marker written");
    agent.wait_log("queues declared and bound; serving", REPLY);
    assert!(agent.log().contains(&format!("request_queue=ur.request.{uuid}.52:54:00:12:34:56")), "{}", agent.log());

    rt.block_on(async {
        // Ping → ack on ur.ack<client_id>.<uuid> with {req_id, timestamp}.
        let mut acks = cnapi.queue("", &[format!("ur.ackcnapi-test.{uuid}")]).await;
        cnapi.publish(&format!("ur.ping.{uuid}"), br#"{"client_id":"cnapi-test","id":"ping-1"}"#).await;
        let (key, ack) = next_json(&mut acks, REPLY).await;
        assert_eq!(key, format!("ur.ackcnapi-test.{uuid}"));
        assert_eq!(ack["req_id"], "ping-1");
        let ts = ack["timestamp"].as_str().expect("timestamp");
        assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");

        // Script: args, env replaced (only what CNAPI sent, plus the shell's PWD), cwd /.
        let r = cnapi
            .execute(
                &uuid,
                json!({"type":"script","script":"#!/bin/sh\necho \"1=$1 2=$2\"\npwd\nenv | sort\necho warn >&2\nexit 7\n",
                       "args":["one","two words"],"env":{"PATH":"/usr/bin:/bin","FOO":"bar baz"}}),
            )
            .await;
        assert_eq!(r["exit_status"], 7, "{r}");
        assert_eq!(stdout(&r), "1=one 2=two words\n/\nFOO=bar baz\nPATH=/usr/bin:/bin\nPWD=/\n", "{r}");
        assert_eq!(stderr(&r), "warn\n");

        // File, addressed as <uuid>-<adminMac> (the other binding).
        let body = json!({"type":"file","file":"/bin/echo","args":["hello", 42],"env":{}});
        let r = cnapi.execute_on(&format!("{uuid}-{}", node.mac), &uuid, body.to_string().as_bytes()).await;
        assert_eq!((r["exit_status"].as_i64(), stdout(&r)), (Some(0), "hello 42\n"), "{r}");

        // Two at once run concurrently.
        let t0 = Instant::now();
        let slow = json!({"type":"script","script":"#!/bin/sh\nsleep 3\necho slow\n","env":{}});
        let (a, b) = tokio::join!(cnapi.execute(&uuid, slow.clone()), cnapi.execute(&uuid, slow));
        assert_eq!((stdout(&a), stdout(&b)), ("slow\n", "slow\n"));
        // One after the other would take at least 6 s.
        assert!(t0.elapsed() < Duration::from_millis(5500), "not concurrent: {:?}", t0.elapsed());

        // Output over the 5 MiB limit: killed, clear reply.
        let r = cnapi
            .execute(
                &uuid,
                json!({"type":"script","script":"#!/bin/sh\nhead -c 6000000 /dev/zero | tr '\\0' x\nsleep 20\n",
                       "env":{"PATH":"/usr/bin:/bin"}}),
            )
            .await;
        assert_ne!(r["exit_status"], 0);
        assert_eq!(stdout(&r).len(), 5 * 1024 * 1024);
        assert!(
            stderr(&r).ends_with("ur-agent: stdout exceeded the 5242880-byte limit; output truncated and the process group killed\n"),
            "{}",
            stderr(&r)
        );

        // Timeout ("timeout" in ms): the group is killed.
        let t0 = Instant::now();
        let r = cnapi
            .execute(&uuid, json!({"type":"script","script":"#!/bin/sh\necho begun\nexec sleep 30\n","env":{},"timeout":1000}))
            .await;
        assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
        assert_eq!((r["exit_status"].as_i64(), stdout(&r)), (Some(137), "begun\n"), "{r}");
        assert!(stderr(&r).ends_with("ur-agent: timed out after 1 s; the process group was killed\n"), "{r}");

        // Malformed requests: an error reply each, the agent keeps serving.
        let cases: [(&[u8], &str); 5] = [
            (b"{this is not json", "request rejected: body is not JSON"),
            (br##"{"type":"script","script":"#!/bin/sh\n","args":"a b"}"##, "field \"args\" must be an array (got a string)"),
            (br#"{"type":"shell","script":"x"}"#, "unknown type \"shell\""),
            (br#"{"type":"file"}"#, "missing field \"file\""),
            (b"[1,2,3]", "body is not a JSON object (got an array)"),
        ];
        for (body, says) in cases {
            let r = cnapi.execute_on(&uuid, &uuid, body).await;
            assert_eq!(r["exit_status"], 2, "{r}");
            assert!(stderr(&r).contains(says), "{says:?} in {r}");
        }
        // Oversized (16 MiB + 1): dropped with a reply.
        let big = vec![b' '; 16 * 1024 * 1024 + 1];
        let r = cnapi.execute_on(&uuid, &uuid, &big).await;
        assert_eq!(r["exit_status"], 2, "{r}");
        assert!(stderr(&r).contains("body is 16777217 bytes, over the 16777216-byte limit"), "{r}");
        // A ping without client_id has no reply address: logged, dropped.
        cnapi.publish(&format!("ur.ping.{uuid}"), br#"{"id":"x"}"#).await;

        // Broadcast sysinfo → the sysinfo object on execute-reply.
        let id = reqid();
        let mut c = cnapi.queue("", &[format!("ur.execute-reply.{uuid}.{id}")]).await;
        cnapi.publish(&format!("ur.broadcast.sysinfo.{id}"), b"{}").await;
        let (_, s) = next_json(&mut c, REPLY).await;
        assert_eq!(s["UUID"], uuid.as_str());

        // Still serving after all that.
        let r = cnapi.execute(&uuid, json!({"type":"script","script":"#!/bin/sh\necho alive\n","env":{}})).await;
        assert_eq!(stdout(&r), "alive\n");
    });
    let log = agent.log();
    for line in [
        "rejected execute request: body is not JSON",
        "rejected execute request: field \"args\" must be an array",
        "rejected execute request: unknown type \"shell\"",
        "dropping request: body is 16777217 bytes, over the 16777216-byte limit",
        "dropping ping (no reply address): missing field \"client_id\"",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
    assert!(log.contains(&format!("routing_key=ur.execute.{uuid}.")) && log.contains("bytes=16777217"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(fs::read_dir(node.path("tmp")).expect("tmp").count(), 0, "script files removed");
    agent.assert_running();

    // Sysinfo every interval (after `sysinfo -u`) while not set up; once
    // more when setup completes, then no more.
    rt.block_on(async {
        let seen = drain(&mut sysinfo_q, Duration::from_millis(2500)).await;
        assert!(seen.len() >= 2, "periodic sysinfo: {seen:?}");
        assert!(seen.iter().all(|(k, v)| k.starts_with(&format!("ur.sysinfo.{uuid}.")) && v["UUID"] == uuid.as_str()));
        let refreshes = node.read("sysinfo-refreshes").lines().count();
        assert!(refreshes >= 3, "sysinfo -u before each publish ({refreshes})");
        node.write("setup-state.json", r#"{"node_type":"computenode","complete": true}"#);
        let last = loop {
            let (_, v) = next_json(&mut sysinfo_q, REPLY).await;
            if v["Setup"] == "true" {
                break v;
            }
        };
        assert_eq!(last["UUID"], uuid.as_str());
        let after = drain(&mut sysinfo_q, Duration::from_millis(3000)).await;
        assert!(after.is_empty(), "sysinfo after setup completed: {after:?}");
    });
    agent.wait_log("the node is set up: sysinfo sent once more, periodic sysinfo stops", REPLY);

    // 113: reply with 0, then the orderly reboot command, then (node still
    // up after --force-reboot-after) the forced one.
    rt.block_on(async {
        let r = cnapi
            .execute(&uuid, json!({"type":"script","script":"#!/bin/sh\necho rebooting\nexit 113\n","env":{}}))
            .await;
        assert_eq!((r["exit_status"].as_i64(), stdout(&r)), (Some(0), "rebooting\n"), "{r}");
    });
    agent.wait_log("reply confirmed; asking init for an orderly reboot", REPLY);
    let t0 = Instant::now();
    while node.read("reboot.log").is_empty() {
        assert!(t0.elapsed() < REPLY, "reboot command not run:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node.read("reboot.log"), "orderly\n");
    assert!(node.read("force.log").is_empty(), "forced reboot waits --force-reboot-after");
    agent.wait_log("forced reboot command done", Duration::from_secs(10));
    assert_eq!(node.read("force.log"), "forced\n");
    assert_eq!(agent.count("ur.startup confirmed"), 1);
    agent.assert_running();
    drop(agent);
    println!("serves_cnapi: {:?} after the agent started", t_start.elapsed());
}

/// The broker goes away while a script runs: the script is not disturbed,
/// its reply waits in memory and goes out after the agent reconnects and
/// redeclares its queues; the script is not run again.
#[test]
fn reply_survives_broker_restart() {
    if skip("reply_survives_broker_restart") {
        return;
    }
    let bdir = tempfile::tempdir().expect("tempdir");
    let mut b = broker(1, bdir.path());
    let uri = b.uri();
    let node = Node::new("7c5d4bd0-0b9e-11ee-be56-0242ac120002", "52:54:00:aa:bb:cc");
    let uuid = node.uuid.clone();
    let rt = runtime();
    let mut agent = node.start(&["--broker", &uri]);
    agent.wait_log("queues declared and bound; serving", REPLY);

    let id = reqid();
    let runs = node.path("runs");
    let script = format!("#!/bin/sh\necho run >> {}\nsleep 4\necho finished\n", runs.display());
    let queue = format!("test-replies-{}-{id}", std::process::id());
    rt.block_on(async {
        let cnapi = Cnapi::connect(&uri).await;
        // Durable, so the binding outlives the broker restart.
        let _c = cnapi.queue(&queue, &[format!("ur.execute-reply.{uuid}.{id}")]).await;
        cnapi
            .publish(
                &format!("ur.execute.{uuid}.{id}"),
                json!({"type":"script","script":script,"env":{}}).to_string().as_bytes(),
            )
            .await;
    });
    agent.wait_log("executing script", REPLY);
    let t0 = Instant::now();
    b.stop();
    println!("broker stopped after {:?}", t0.elapsed());
    agent.wait_log("connection to broker", REPLY);
    agent.wait_log("execute finished", REPLY);
    // The reply is ready while the broker is down; the agent keeps trying.
    agent.wait_log("cannot connect to broker", REPLY);
    agent.assert_running();
    b.start_again().expect("start the broker again");
    println!("broker back after {:?}", t0.elapsed());
    agent.wait_log_n("queues declared and bound; serving", 2, Duration::from_secs(30));
    let reply = rt.block_on(async {
        let cnapi = Cnapi::connect(&uri).await;
        let mut c = cnapi.queue(&queue, &[]).await;
        let (key, v) = next_json(&mut c, REPLY).await;
        assert_eq!(key, format!("ur.execute-reply.{uuid}.{id}"));
        // Serving again on redeclared queues.
        let r = cnapi.execute(&uuid, json!({"type":"script","script":"#!/bin/sh\necho again\n","env":{}})).await;
        assert_eq!(stdout(&r), "again\n");
        let mut acks = cnapi.queue("", &[format!("ur.ackc2.{uuid}")]).await;
        cnapi.publish(&format!("ur.ping.{uuid}"), br#"{"client_id":"c2","id":7}"#).await;
        assert_eq!(next_json(&mut acks, REPLY).await.1["req_id"], 7);
        v
    });
    println!("reply after {:?}", t0.elapsed());
    assert_eq!((reply["exit_status"].as_i64(), stdout(&reply)), (Some(0), "finished\n"), "{reply}");
    assert_eq!(fs::read_to_string(&runs).unwrap_or_default(), "run\n", "the script ran once");
    // Finished while disconnected, published after the queues were back.
    let log = agent.log();
    let at = |needle: &str| log.find(needle).unwrap_or_else(|| panic!("log lacks {needle:?}:\n{log}"));
    let finished = at("execute finished: exit status 0 (replied 0), stdout 9 bytes");
    let lost = at("connection to broker");
    let serving_again = log.rfind("queues declared and bound; serving").expect("serving");
    let published = at(&format!("published (confirmed) routing_key=ur.execute-reply.{uuid}.{id}"));
    assert!(lost < finished && finished < serving_again && serving_again < published, "{log}");
    agent.assert_running();
    drop(agent);
}

/// sysinfo without an admin NIC is an error that is retried. A malformed
/// rabbitmq= is reported once and the agent keeps running;
/// once node.config has a usable address it retries (each failure logged)
/// until the broker appears, then connects through rabbitmq_dns= when the
/// IP form is unreachable. The password never reaches the log.
#[test]
fn waits_for_config_and_broker() {
    if skip("waits_for_config_and_broker") {
        return;
    }
    let node = Node::new("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "52:54:00:01:02:03");
    node.write("cmdline", "console=ttyS0 rabbitmq=guest:s3cr3t:127.0.0.1\n");
    // No admin NIC in sysinfo yet: a clear error, retried.
    node.write("no-admin-nic", "");
    let mut agent = node.start(&["--sysinfo-interval", "1s"]);
    agent.wait_log("cannot identify this node", REPLY);
    assert!(agent.log().contains("No admin NIC detected"), "{}", agent.log());
    fs::remove_file(node.path("no-admin-nic")).expect("rm");
    agent.wait_log("node identified uuid=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d admin_mac=52:54:00:01:02:03", REPLY);
    agent.wait_log("kernel command line rabbitmq=\"guest:***:127.0.0.1\" is malformed", REPLY);
    agent.wait_log("no usable broker address", REPLY);
    std::thread::sleep(Duration::from_secs(5));
    agent.assert_running();
    assert_eq!(agent.count("is malformed"), 1, "reported once:\n{}", agent.log());

    // Usable addresses, no broker yet: the IP one on a dead port, the DNS one
    // where the broker will be.
    let (dead, live) = (port(3), port(2));
    node.write(
        "node.config",
        &format!("datacenter_name='dc1'\nrabbitmq='guest:guest:127.0.0.1:{dead}'\nrabbitmq_dns='guest:guest:localhost:{live}'\n"),
    );
    agent.wait_log_n(
        &format!("cannot connect to broker guest:***@localhost:{live} (node.config rabbitmq_dns=)"),
        2,
        REPLY,
    );
    assert!(agent
        .log()
        .contains(&format!("cannot connect to broker guest:***@127.0.0.1:{dead} (node.config rabbitmq=)")));
    agent.assert_running();

    let bdir = tempfile::tempdir().expect("tempdir");
    let b = broker(2, bdir.path());
    agent.wait_log(
        &format!("connected to broker guest:***@localhost:{live} (node.config rabbitmq_dns=)"),
        Duration::from_secs(30),
    );
    let rt = runtime();
    rt.block_on(async {
        let cnapi = Cnapi::connect(&b.uri()).await;
        let mut q = cnapi.queue("", &[format!("ur.sysinfo.{}.*", node.uuid)]).await;
        let (_, v) = next_json(&mut q, REPLY).await;
        assert_eq!(v["UUID"], node.uuid.as_str());
        let r = cnapi.execute(&node.uuid, json!({"type":"script","script":"#!/bin/sh\necho ok\n","env":{}})).await;
        assert_eq!(stdout(&r), "ok\n");
    });
    agent.assert_running();
    let log = agent.log();
    drop(agent);
    for secret in ["s3cr3t", "guest:guest:127", "guest:guest:localhost", "guest:guest@"] {
        assert!(!log.contains(secret), "password in the log ({secret}):\n{log}");
    }
    assert_eq!(log.matches("is malformed").count(), 1, "{log}");
}

/// A broker address that accepts TCP but never speaks AMQP: each attempt
/// times out (logged), and the agent does not pile up a thread per attempt.
#[test]
fn silent_broker_times_out_without_leaking() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("listen");
    let silent = listener.local_addr().expect("addr").port();
    let node = Node::new("11111111-2222-4333-8444-555555555555", "52:54:00:00:00:01");
    node.write("cmdline", &format!("rabbitmq=guest:guest:127.0.0.1:{silent}\n"));
    let mut agent = node.start(&["--connect-timeout", "300ms", "--retry-max", "200ms"]);
    let threads = |a: &Agent| -> usize {
        let status = fs::read_to_string(format!("/proc/{}/status", a.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    };
    let needle = format!("cannot connect to broker guest:***@127.0.0.1:{silent} (kernel command line rabbitmq=): no answer within 300 ms");
    agent.wait_log_n(&needle, 3, REPLY);
    let before = threads(&agent);
    agent.wait_log_n(&needle, 15, Duration::from_secs(30));
    let after = threads(&agent);
    assert!(after <= before + 2, "threads grew from {before} to {after} over 12 attempts");
    agent.assert_running();
    drop(listener);
}
