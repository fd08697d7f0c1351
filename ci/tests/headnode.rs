//! The headnode double against a real RabbitMQ on loopback, with a fake CN
//! played here with lapin the way ur-agent behaves (contracts §5.2): it
//! publishes `ur.sysinfo.<uuid>.<id>`, consumes `ur.execute.<uuid>.*` and
//! `ur.broadcast.*.*` on `ur.request.<uuid>.<mac>` and pings on
//! `ur.ping.<uuid>`, and answers on `ur.execute-reply.<uuid>.<reqid>` /
//! `ur.ack<client_id>.<uuid>`. Scripts run locally with `/var/tmp` moved to
//! a temp dir, except the setup steps that would set up this machine
//! (joysetup, agentsetup, `exit 113`), which it answers as a CN would.
//!
//! Without rabbitmq-server the tests print `SKIPPED headnode: ...` and pass.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ci::headnode::sntp::{self, Sntp};
use ci::headnode::{
    ExecError, Headnode, HeadnodeOpts, SetupOpts, AGENTSETUP_SH, JOYSETUP_SH, NET_AGENT_WAIT_ENV, SETUP_PATH,
};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};

const RABBITMQ: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const PLATFORM: &str = "20260101T000000Z";
const UUID: &str = "00000000-0000-4000-8000-525400990001";
const MAC: &str = "52:54:00:99:00:01";

fn say(msg: &str) {
    eprintln!("{msg}");
}

fn skip(test: &str) -> bool {
    if !Path::new(RABBITMQ).exists() {
        say(&format!("\nSKIPPED headnode: {RABBITMQ} is missing (bash ci/setup.sh) ({test})"));
        return true;
    }
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// A linux-live-like sysinfo with the SmartOS key names CNAPI reads.
fn sysinfo(uuid: &str, mac: &str, boot_time: u64, setup: bool) -> Value {
    json!({
        "Live Image": PLATFORM, "System Type": "Linux", "Boot Time": boot_time, "SDC Version": "7.0",
        "Manufacturer": "QEMU", "Product": "Standard PC", "Setup": setup,
        "UUID": uuid, "Hostname": mac.replace(':', "-"), "MiB of Memory": 2048, "Admin NIC Tag": "admin",
        "Admin IP": "10.99.99.101",
        "Network Interfaces": {"eth0": {"MAC Address": mac, "Link Status": "up", "ip4addr": "10.99.99.101",
            "NIC Names": ["admin"]}},
        "Virtual Network Interfaces": {}, "Link Aggregations": {},
        "Boot Parameters": {"boot": "live", "rabbitmq": "guest:guest:127.0.0.1:5672", "admin_mac": mac.replace(':', "-")},
        "Disks": {"vda": {"Size in GB": 8}}
    })
}

/// What the fake CN was asked to do.
#[derive(Debug, Clone)]
struct Received {
    routing_key: String,
    body: Value,
}

#[derive(Debug)]
struct FakeState {
    uuid: String,
    mac: String,
    var_tmp: PathBuf,
    received: Mutex<Vec<Received>>,
    /// joysetup's exit status.
    joysetup_exit: AtomicI32,
    /// agentsetup ran (the setup-state file would say complete).
    setup_done: AtomicBool,
    boot_time: AtomicU64,
}

/// ur-agent, played with lapin.
struct FakeCn {
    st: Arc<FakeState>,
    ch: Channel,
    _conn: Arc<Connection>,
    rt: tokio::runtime::Runtime,
}

async fn publish(ch: &Channel, key: &str, body: &Value) {
    let payload = serde_json::to_vec(body).expect("json");
    ch.basic_publish(
        "amq.topic".into(),
        key.into(),
        BasicPublishOptions::default(),
        &payload,
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await
    .expect("publish");
}

impl FakeCn {
    fn start(uri: &str, st: Arc<FakeState>) -> FakeCn {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let uri = uri.to_string();
        let st2 = st.clone();
        let (conn, ch) = rt.block_on(async move {
            let conn = Arc::new(Connection::connect(&uri, ConnectionProperties::default()).await.expect("connect"));
            let ch = conn.create_channel().await.expect("channel");
            let (uuid, mac) = (st2.uuid.clone(), st2.mac.clone());
            let req = format!("ur.request.{uuid}.{mac}");
            ch.queue_declare(
                req.as_str().into(),
                QueueDeclareOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("request queue");
            for key in [format!("ur.execute.{uuid}-{mac}.*"), format!("ur.execute.{uuid}.*"), "ur.broadcast.*.*".into()]
            {
                ch.queue_bind(
                    req.as_str().into(),
                    "amq.topic".into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind");
            }
            let ping = format!("ur.ping.{uuid}");
            ch.queue_declare(ping.as_str().into(), QueueDeclareOptions::default(), FieldTable::default())
                .await
                .expect("ping queue");
            ch.queue_bind(
                ping.as_str().into(),
                "amq.topic".into(),
                ping.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind ping");
            for q in [req, ping] {
                let mut consumer = ch
                    .basic_consume(
                        q.as_str().into(),
                        format!("fake-{q}").into(),
                        BasicConsumeOptions { no_ack: true, ..Default::default() },
                        FieldTable::default(),
                    )
                    .await
                    .expect("consume");
                let (ch, st) = (ch.clone(), st2.clone());
                tokio::spawn(async move {
                    while let Some(Ok(d)) = consumer.next().await {
                        let key = d.routing_key.as_str().to_string();
                        let body: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                        let (ch, st) = (ch.clone(), st.clone());
                        tokio::spawn(async move { handle(&ch, &st, &key, body).await });
                    }
                });
            }
            (conn, ch)
        });
        let cn = FakeCn { st, ch, _conn: conn, rt };
        cn.publish_sysinfo();
        cn
    }

    fn publish_sysinfo(&self) {
        let st = &self.st;
        let v = sysinfo(&st.uuid, &st.mac, st.boot_time.load(Ordering::SeqCst), st.setup_done.load(Ordering::SeqCst));
        let key = format!("ur.sysinfo.{}.{:08x}", st.uuid, now_secs() as u32);
        self.rt.block_on(publish(&self.ch, &key, &v));
    }

    /// Publishes a raw message (for malformed sysinfo).
    fn publish_raw(&self, key: &str, body: &Value) {
        self.rt.block_on(publish(&self.ch, key, body));
    }

    fn received(&self) -> Vec<Received> {
        self.st.received.lock().expect("lock").clone()
    }
}

/// What ur does with one message.
async fn handle(ch: &Channel, st: &Arc<FakeState>, key: &str, body: Value) {
    st.received.lock().expect("lock").push(Received { routing_key: key.to_string(), body: body.clone() });
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["ur", "ping", _] => {
            let client_id = body["client_id"].as_str().unwrap_or_default();
            let reply = json!({"req_id": body["id"], "timestamp": "2026-01-01T00:00:00.000Z"});
            publish(ch, &format!("ur.ack{client_id}.{}", st.uuid), &reply).await;
        }
        ["ur", "broadcast", "sysinfo", reqid] => {
            let v =
                sysinfo(&st.uuid, &st.mac, st.boot_time.load(Ordering::SeqCst), st.setup_done.load(Ordering::SeqCst));
            publish(ch, &format!("ur.execute-reply.{}.{reqid}", st.uuid), &v).await;
        }
        ["ur", "execute", _, reqid] => {
            let script = body["script"].as_str().unwrap_or_default().to_string();
            let reply_key = format!("ur.execute-reply.{}.{reqid}", st.uuid);
            let (code, stdout, stderr) = if script.contains("./joysetup.sh") {
                let code = st.joysetup_exit.load(Ordering::SeqCst);
                if code == 0 {
                    (0, "zones\t1\t8589934592\t8000000000\tONLINE\t/zones\n".to_string(), String::new())
                } else {
                    (
                        code,
                        "+ disklayout\n".to_string(),
                        "joysetup failed: disklayout found no pool layout\n".to_string(),
                    )
                }
            } else if script.contains("NO-ANSWER") {
                return;
            } else if script.contains("./agentsetup.sh") {
                st.setup_done.store(true, Ordering::SeqCst);
                (0, "agentsetup: done\n".to_string(), String::new())
            } else if script.trim_end().ends_with("exit 113") {
                // ur answers 0, then reboots; the new boot sends sysinfo.
                publish(ch, &reply_key, &json!({"exit_status": 0, "stdout": "", "stderr": ""})).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                st.boot_time.store(now_secs(), Ordering::SeqCst);
                let v = sysinfo(&st.uuid, &st.mac, now_secs(), st.setup_done.load(Ordering::SeqCst));
                publish(ch, &format!("ur.sysinfo.{}.{:08x}", st.uuid, now_secs() as u32), &v).await;
                return;
            } else {
                let (st, body) = (st.clone(), body.clone());
                tokio::task::spawn_blocking(move || run_script(&st, &body)).await.expect("script thread")
            };
            publish(ch, &reply_key, &json!({"exit_status": code, "stdout": stdout, "stderr": stderr})).await;
        }
        _ => {}
    }
}

/// Runs a script as ur does (`/tmp/ur-<id>`, args, env replacing the
/// environment), with `/var/tmp` moved into the fake CN's temp dir.
fn run_script(st: &FakeState, body: &Value) -> (i32, String, String) {
    let script = body["script"].as_str().unwrap_or_default().replace("/var/tmp", &st.var_tmp.display().to_string());
    let file = st.var_tmp.join(format!("ur-{}", ci::headnode::gen_uuid()));
    std::fs::write(&file, script).expect("script file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let args: Vec<String> = body["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let mut cmd = std::process::Command::new(&file);
    cmd.args(&args).env_clear();
    if let Some(env) = body["env"].as_object() {
        for (k, v) in env {
            cmd.env(k, v.as_str().unwrap_or_default());
        }
    }
    let out = cmd.output().expect("running the script");
    let _ = std::fs::remove_file(&file);
    (
        out.status.code().unwrap_or(1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Bed {
    hn: Headnode,
    _http: ci::http::HttpServer,
    root: PathBuf,
    var_tmp: PathBuf,
    _dir: tempfile::TempDir,
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tftpboot");
    std::fs::create_dir_all(root.join("extra/joysetup")).expect("mkdir");
    std::fs::write(
        root.join("extra/joysetup/node.config"),
        "datacenter_name='dev-1'\ndns_domain='dev.example'\nrabbitmq='guest:guest:127.0.0.1:5672'\n",
    )
    .expect("node.config");
    let var_tmp = dir.path().join("var-tmp");
    std::fs::create_dir_all(&var_tmp).expect("mkdir");
    let http = ci::http::HttpServer::serve_dir(&root).expect("http");
    let mut o = HeadnodeOpts::new(None, Ipv4Addr::LOCALHOST, &root, PLATFORM, dir.path().join("hn"));
    o.amqp_port = free_port();
    o.ntp_port = 0;
    o.assets_url = format!("http://{}", http.addr);
    let hn = Headnode::start(o).expect("the headnode double starts");
    Bed { hn, _http: http, root, var_tmp, _dir: dir }
}

fn fake(bed: &Bed) -> FakeCn {
    let st = Arc::new(FakeState {
        uuid: UUID.into(),
        mac: MAC.into(),
        var_tmp: bed.var_tmp.clone(),
        received: Mutex::new(Vec::new()),
        joysetup_exit: AtomicI32::new(0),
        setup_done: AtomicBool::new(false),
        boot_time: AtomicU64::new(now_secs() - 600),
    });
    FakeCn::start(&uri(&bed.hn), st)
}

fn uri(hn: &Headnode) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", hn.opts().amqp_port)
}

fn log_of(hn: &Headnode) -> String {
    hn.opts().log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
}

const T: Duration = Duration::from_secs(20);

/// Sysinfo, ping, broadcast, execute (args, env, exit status, timeout),
/// a failing setup, the same setup again to the end, a broker restart.
#[test]
fn setup_through_a_real_broker() {
    if skip("setup_through_a_real_broker") {
        return;
    }
    let mut b = bed();
    let node_config = std::fs::read_to_string(b.root.join("extra/joysetup/node.config")).expect("node.config");
    assert!(node_config.contains("ntp_hosts='127.0.0.1'\n"), "{node_config}");
    assert!(node_config.contains("imgapi_domain='imgapi.dev.example'\n"), "{node_config}");
    assert!(node_config.contains("rabbitmq='guest:guest:127.0.0.1:5672'\n"), "kept: {node_config}");

    let cn = fake(&b);
    let hn = &b.hn;
    let rec = hn.wait_sysinfo(MAC, T).expect("the CN's sysinfo");
    assert_eq!(rec.uuid, UUID);
    assert_eq!(hn.server("52-54-00-99-00-01").map(|s| s.uuid), Some(UUID.to_string()));
    assert!(rec.running() && !rec.setup && !rec.sysinfo_setup());
    assert_eq!(rec.boot_times.len(), 1);

    // Ping and broadcast.
    let p = hn.ping(UUID, T).expect("ping");
    assert!(!p.req_id.is_empty() && !p.timestamp.is_empty(), "{p:?}");
    let all = hn.broadcast_sysinfo(Duration::from_secs(2)).expect("broadcast");
    assert_eq!(all.keys().collect::<Vec<_>>(), [UUID], "{all:?}");
    let pings: Vec<Received> = cn.received().into_iter().filter(|r| r.routing_key.starts_with("ur.ping.")).collect();
    assert_eq!(pings.len(), 1);
    assert!(pings[0].body["client_id"].is_string() && pings[0].body["id"].is_string(), "{:?}", pings[0].body);

    // Execute, the CNAPI way.
    let env = BTreeMap::from([("FOO".to_string(), "bar".to_string())]);
    let r =
        hn.execute(UUID, "#!/bin/bash\necho \"$1 $FOO\"; echo oops >&2; exit 3", &["arg1"], &env, T).expect("execute");
    assert_eq!((r.exit_status, r.stdout.as_str(), r.stderr.as_str()), (3, "arg1 bar\n", "oops\n"));
    let last = cn.received().pop().expect("an execute");
    assert!(last.routing_key.starts_with(&format!("ur.execute.{UUID}.")), "{}", last.routing_key);
    let reqid = last.routing_key.rsplit('.').next().expect("reqid");
    assert!(ci::headnode::sysinfo_check::is_uuid(reqid), "CNAPI's reqids are UUIDs: {reqid}");
    assert_eq!(last.body["type"], "script");
    assert_eq!(last.body["args"], json!(["arg1"]));
    assert_eq!(last.body["env"], json!({"FOO": "bar"}));
    let t = std::time::Instant::now();
    let e = hn
        .execute(
            "11111111-1111-4111-8111-111111111111",
            "#!/bin/bash\ntrue",
            &[],
            &BTreeMap::new(),
            Duration::from_secs(1),
        )
        .expect_err("nobody answers");
    assert_eq!(e, ExecError::Timeout(Duration::from_secs(1)));
    assert!(t.elapsed() < Duration::from_secs(5));

    // A setup whose joysetup fails stops there, naming the step.
    cn.st.joysetup_exit.store(1, Ordering::SeqCst);
    let opts = SetupOpts { disk_layout: Some("mirror".into()), net_agent_wait: 1, ..Default::default() };
    let err = hn.setup(UUID, &opts).expect_err("joysetup fails");
    assert_eq!(err.step, "cnapi.execute_joysetup_script", "{err}");
    let msg = err.to_string();
    assert!(msg.contains("exit status 1") && msg.contains("joysetup failed: disklayout found no pool layout"), "{msg}");
    assert_eq!(
        err.report.names(),
        ["cnapi.mark_as_setting_up", "cnapi.fetch_setup_files", "cnapi.execute_joysetup_script"]
    );
    assert!(!hn.server(UUID).expect("server").setting_up, "onerror clears setting_up");

    // fetch_setup_files really fetched the assets (run here by bash, with CNAPI's env {}).
    let fetched = |p: &str| std::fs::read_to_string(b.var_tmp.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let nc = fetched("node.config/node.config");
    assert!(nc.starts_with("layout='mirror'\n") && nc.contains("ntp_hosts='127.0.0.1'"), "{nc}");
    assert_eq!(fetched(&format!("config-{UUID}/node.config")), nc);
    assert_eq!(fetched("joysetup.sh"), JOYSETUP_SH);
    assert_eq!(fetched("agentsetup.sh"), AGENTSETUP_SH);
    let mode = std::fs::metadata(b.var_tmp.join("joysetup.sh")).expect("joysetup.sh").permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "chmod +x");

    // The same setup again, to the end.
    cn.st.joysetup_exit.store(0, Ordering::SeqCst);
    let before = cn.received().len();
    let report = hn.setup(UUID, &opts).unwrap_or_else(|e| panic!("{e}\nlog:\n{}", log_of(hn)));
    say(&format!("setup:\n{}", report.summary()));
    assert_eq!(
        report.names(),
        [
            "cnapi.mark_as_setting_up",
            "cnapi.fetch_setup_files",
            "cnapi.execute_joysetup_script",
            "cnapi.execute_agentsetup_script",
            "cnapi.update_nics",
            "cnapi.poll_tasks",
            "cnapi.touch_setup_complete",
            "cnapi.reboot_server",
            "cnapi.wait_for_reboot",
            "cnapi.run_postsetup_script",
            "cnapi.restart_ur",
            "cnapi.mark_server_as_setup",
        ]
    );
    assert!(report.steps.iter().all(|s| s.ok));
    assert!(report.steps.windows(2).all(|w| w[0].started <= w[1].started), "steps in time order");
    let joy = report.step("cnapi.execute_joysetup_script").expect("joysetup step");
    assert_eq!(joy.exit_status, Some(0));
    assert!(joy.stdout_tail().contains("ONLINE"));
    let asked: Vec<Received> =
        cn.received()[before..].iter().filter(|r| r.routing_key.starts_with("ur.execute.")).cloned().collect();
    let scripts: Vec<String> =
        asked.iter().map(|r| r.body["script"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(scripts.len(), 4, "{scripts:?}");
    assert!(scripts[0].contains("curl -fsS -O \"$1/extra/joysetup/joysetup.sh\""), "{}", scripts[0]);
    assert_eq!(asked[0].body["args"], json!([b.hn.opts().assets_url]));
    assert_eq!(asked[0].body["env"], json!({}));
    assert!(scripts[1].ends_with("cd /var/tmp\n./joysetup.sh"), "{}", scripts[1]);
    assert_eq!(asked[1].body["env"], json!({"PATH": SETUP_PATH}));
    assert!(scripts[2].contains("echo ASSETS_URL = $ASSETS_URL\n./agentsetup.sh"), "{}", scripts[2]);
    assert_eq!(asked[2].body["env"], json!({"ASSETS_URL": b.hn.opts().assets_url, NET_AGENT_WAIT_ENV: "1"}));
    assert_eq!(scripts[3], "#!/bin/bash\nexit 113");
    let rec = hn.server(UUID).expect("server");
    assert!(rec.setup && !rec.setting_up && rec.sysinfo_setup(), "{rec:?}");
    assert_eq!(rec.boot_times.len(), 2, "one Boot Time per boot: {:?}", rec.boot_times);
    let wait = report.step("cnapi.wait_for_reboot").expect("wait step");
    assert!(wait.note.contains("> job start"), "{}", wait.note);

    // The broker restarts while a script runs: the double reconnects, keeps
    // waiting for that reply (ur sends it once it is connected again), and
    // hears the CN's sysinfo again.
    let n = hn.server(UUID).expect("server").arrivals.len();
    let connections = hn.connections();
    let slow = "#!/bin/bash\n# NO-ANSWER: the fake CN leaves this one to the test\nsleep 1";
    let cn = std::thread::scope(|scope| {
        let job = scope.spawn(|| hn.execute(UUID, slow, &[], &BTreeMap::new(), Duration::from_secs(60)));
        let deadline = std::time::Instant::now() + T;
        let reqid = loop {
            let got = cn.received().into_iter().find(|r| r.body["script"].as_str() == Some(slow));
            if let Some(r) = got {
                break r.routing_key.rsplit('.').next().expect("reqid").to_string();
            }
            assert!(std::time::Instant::now() < deadline, "the slow script never reached the CN");
            std::thread::sleep(Duration::from_millis(100));
        };
        drop(cn);
        hn.restart_broker().expect("broker restart");
        assert!(hn.wait_connected(Duration::from_secs(30)), "reconnected");
        let cn = fake(&b);
        // Ur answers after reconnecting (again until the double takes it).
        let reply = json!({"exit_status": 0, "stdout": "late\n", "stderr": ""});
        while !job.is_finished() {
            cn.publish_raw(&format!("ur.execute-reply.{UUID}.{reqid}"), &reply);
            std::thread::sleep(Duration::from_millis(500));
        }
        let r = job.join().expect("execute thread").unwrap_or_else(|e| panic!("{e}\nlog:\n{}", log_of(hn)));
        assert_eq!((r.exit_status, r.stdout.as_str()), (0, "late\n"));
        assert!(log_of(hn).contains(&format!("execute {reqid} on {UUID}: reconnected, waiting for the reply")));
        cn
    });
    assert!(hn.connections() > connections);
    hn.wait_sysinfo_where(UUID, T, |s| s.arrivals.len() > n).expect("a sysinfo after the restart");
    let r = hn.execute(UUID, "#!/bin/bash\necho again", &[], &BTreeMap::new(), T).expect("execute after restart");
    assert_eq!(r.stdout, "again\n");
    // The &mut access works too.
    b.hn.broker().stop();
    assert!(!b.hn.broker().is_running());
    b.hn.broker().start_again().expect("broker start");
    let hn = &b.hn;
    assert!(hn.wait_connected(Duration::from_secs(30)), "reconnected");
    drop(cn);
    let cn = fake(&b);

    assert!(hn.violations().is_empty(), "violations: {:?}", hn.violations());

    // A bad sysinfo is recorded, once per problem, with a count.
    let mut bad = sysinfo(UUID, MAC, now_secs(), false);
    bad["UUID"] = json!("22222222-2222-4222-8222-222222222222");
    bad["Live Image"] = json!("20200101T000000Z");
    for _ in 0..2 {
        cn.publish_raw(&format!("ur.sysinfo.{UUID}.abcdef01"), &bad);
    }
    let hn = &b.hn;
    let deadline = std::time::Instant::now() + T;
    while hn.violations().iter().map(|v| v.count).sum::<u32>() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = hn.violations();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|x| x.count == 2 && x.uuid.as_deref() == Some(UUID)), "{v:?}");
    assert!(v.iter().any(|x| x.problem.contains("differs from the routing key")), "{v:?}");
    assert!(v.iter().any(|x| x.problem.contains("not the platform served")), "{v:?}");
    hn.clear_violations();
    assert!(hn.violations().is_empty());
    let log = log_of(hn);
    assert!(log.contains("server-setup of") && log.contains("--- stdout ---"), "{log}");
}

/// The setup of a server never heard of fails at validation; the
/// double's SNTP answers.
#[test]
fn unknown_servers_and_sntp() {
    if skip("unknown_servers_and_sntp") {
        return;
    }
    let b = bed();
    let err = b.hn.setup(UUID, &SetupOpts::default()).expect_err("no such server");
    assert_eq!(err.step, "cnapi.validate_params");
    assert!(err.report.steps.is_empty());

    let c = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let req = sntp::NtpPacket::client_request(SystemTime::now());
    c.send_to(&req.to_bytes(), b.hn.ntp_addr()).expect("send");
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).expect("an NTP answer");
    let r = sntp::NtpPacket::parse(&buf[..n]).expect("parses");
    assert_eq!((r.mode, r.stratum, r.origin), (4, sntp::STRATUM, req.transmit));
    assert_eq!(b.hn.ntp_requests(), 1);
}

/// ntpsec's `ntpdig` (what joysetup's clock check runs) accepts the SNTP
/// server: in a private network namespace, on 127.0.0.1:123. Needs root
/// and ntpdig (package ntpsec-ntpdig); skipped otherwise.
#[test]
fn ntpdig_accepts_the_sntp_server() {
    let have = |p: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    if !nix::unistd::geteuid().is_root() || !have("ntpdig") || !have("ip") {
        say("\nSKIPPED headnode: ntpdig_accepts_the_sntp_server needs root, ip and ntpdig (ntpsec-ntpdig)");
        return;
    }
    let ns = format!("thn-ntp-{}", std::process::id());
    let run = |args: &[&str]| std::process::Command::new("ip").args(args).output().expect("ip");
    let _ = run(&["netns", "del", &ns]);
    assert!(run(&["netns", "add", &ns]).status.success());
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _del = Del(ns.clone());
    assert!(run(&["-n", &ns, "link", "set", "lo", "up"]).status.success());
    let s = Sntp::start(Some(&ns), std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 123)).expect("sntp in the netns");
    let out = run(&["netns", "exec", &ns, "ntpdig", "-j", "-t", "3", "127.0.0.1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ntpdig: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("ntpdig -j output {stdout:?}: {e}"));
    let offset = v["offset"].as_f64().unwrap_or(f64::MAX);
    assert!(offset.abs() < 1.0, "offset {offset}: {v}");
    assert_eq!(v["stratum"], 2, "{v}");
    assert!(s.requests() >= 1);
}

/// The dev booter's way: broker, SNTP and AMQP client inside a network
/// namespace (here a private one with a bridge as the admin link, as the dev booter makes), the CN on the
/// namespace's admin address. Needs root; skipped otherwise.
#[test]
fn inside_a_network_namespace() {
    if skip("inside_a_network_namespace") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        say("\nSKIPPED headnode: inside_a_network_namespace needs root (network namespace)");
        return;
    }
    let ns = format!("thn-ns-{}", std::process::id());
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let _ = std::process::Command::new("ip").args(["netns", "del", &ns]).output();
    ip(&["netns", "add", &ns]);
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _del = Del(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &ns, "addr", "add", "10.99.99.9/24", "dev", "br0"]);
    ip(&["-n", &ns, "link", "set", "br0", "up"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tftpboot");
    let server = Ipv4Addr::new(10, 99, 99, 9);
    let mut o = HeadnodeOpts::new(Some(ns.clone()), server, &root, PLATFORM, dir.path().join("hn"));
    o.amqp_port = 5672;
    let hn = Headnode::start(o).expect("the double starts in the namespace");
    assert_eq!(hn.ntp_addr(), std::net::SocketAddrV4::new(server, 123));
    let nc = std::fs::read_to_string(root.join("extra/joysetup/node.config")).expect("node.config");
    assert!(nc.contains("ntp_hosts='10.99.99.9'") && nc.contains("rabbitmq='guest:guest:10.99.99.9:5672'"), "{nc}");
    // The broker listens inside the namespace.
    let ss = std::process::Command::new("ip").args(["netns", "exec", &ns, "ss", "-Hltn"]).output().expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(ss.contains("10.99.99.9:5672"), "listening sockets in {ns}:\n{ss}");

    // The CN's side, with its sockets in the namespace too.
    let var_tmp = dir.path().join("var-tmp");
    std::fs::create_dir_all(&var_tmp).expect("mkdir");
    let st = Arc::new(FakeState {
        uuid: UUID.into(),
        mac: MAC.into(),
        var_tmp,
        received: Mutex::new(Vec::new()),
        joysetup_exit: AtomicI32::new(0),
        setup_done: AtomicBool::new(false),
        boot_time: AtomicU64::new(now_secs() - 60),
    });
    let ns2 = ns.clone();
    let (cn, ntp) = std::thread::spawn(move || {
        sntp::enter_netns(&ns2).expect("setns");
        let cn = FakeCn::start("amqp://guest:guest@10.99.99.9:5672/%2f", st);
        let c = std::net::UdpSocket::bind("10.99.99.9:0").expect("udp");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let req = sntp::NtpPacket::client_request(SystemTime::now());
        c.send_to(&req.to_bytes(), "10.99.99.9:123").expect("send");
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).expect("an NTP answer in the namespace");
        (cn, sntp::NtpPacket::parse(&buf[..n]).expect("parses"))
    })
    .join()
    .expect("the CN thread");
    assert_eq!(ntp.stratum, sntp::STRATUM);
    hn.wait_sysinfo(UUID, T).expect("sysinfo through the namespace's broker");
    hn.ping(UUID, T).expect("ping");
    let r = hn.execute(UUID, "#!/bin/bash\necho in-ns", &[], &BTreeMap::new(), T).expect("execute");
    assert_eq!(r.stdout, "in-ns\n");
    assert!(hn.violations().is_empty(), "{:?}", hn.violations());
    drop(cn);
}

/// Stub commands for [`scripts_run_against_stub_commands`]: each logs its
/// command line to /stub/calls.log and keeps just enough state.
const STUB_HEAD: &str = "#!/bin/bash\necho \"$(basename \"$0\") $*\" >> /stub/calls.log\n";

const STUBS: &[(&str, &str)] = &[
    (
        "usr/sbin/zpool",
        r#"case "$1" in
list)
    if [[ ! -e /stub/pool ]]; then
        if [[ $# -eq 1 ]]; then echo "no pools available"; exit 0; fi
        echo "cannot open '${*: -1}': no such pool" >&2; exit 1
    fi
    case "$*" in
    list) printf 'NAME SIZE ALLOC FREE HEALTH\nzones 15.5G 1M 15.5G ONLINE\n' ;;
    "list -H -o guid zones") echo 1234567890 ;;
    *) echo zones ;;
    esac ;;
get) printf 'NAME   PROPERTY  VALUE   SOURCE\nzones  health    ONLINE  -\n' ;;
*) exit 1 ;;
esac
"#,
    ),
    ("usr/sbin/mkzpool", "[[ -e /stub/pool ]] && exit 1\ntouch /stub/pool\nmkdir -p /zones\n"),
    (
        "usr/sbin/zfs",
        r#"ds=/stub/datasets
touch $ds
case "$1" in
create)
    shift; vol=; mp=
    while [[ $# -gt 1 ]]; do
        case "$1" in
        -V) vol=$2; shift 2 ;;
        -b) shift 2 ;;
        -o) [[ $2 == mountpoint=* ]] && mp=${2#mountpoint=}; shift 2 ;;
        *) shift ;;
        esac
    done
    if grep -qx -- "$1" $ds; then echo "cannot create '$1': dataset already exists" >&2; exit 1; fi
    echo "$1" >> $ds
    if [[ -z $vol && $mp != none ]]; then mkdir -p "${mp:-/$1}"; fi ;;
list)
    if [[ $# -ge 5 ]]; then
        grep -qx -- "${*: -1}" $ds || { echo "cannot open '${*: -1}': dataset does not exist" >&2; exit 1; }
        echo "${*: -1}"; exit 0
    fi
    echo zones; cat $ds ;;
set) ;;
get) case "$5" in used) echo 1048576 ;; available) echo 16000000000 ;; mountpoint) echo /zones ;; esac ;;
*) exit 1 ;;
esac
"#,
    ),
    ("usr/sbin/disklayout", "echo '{\"layout\": \"mirror\", \"capacity\": 17179869184}'\n"),
    (
        "usr/bin/sysinfo",
        "[[ $1 == -u ]] && exit 0\necho '{\"UUID\": \"00000000-0000-4000-8000-525400990001\", \"MiB of Memory\": 2048}'\n",
    ),
    ("usr/sbin/ntpdate", "echo \"ntpdate: step time server $2 offset +0.000100 sec\"\n"),
    (
        "usr/bin/ntpdig",
        "echo \"{\\\"time\\\": 1.0, \\\"offset\\\": -0.25, \\\"host\\\": \\\"$2\\\", \\\"stratum\\\": 2}\"\n",
    ),
    (
        "usr/bin/imgadm",
        r#"src=/stub/sources
[[ -e $src ]] || echo https://images.smartos.org > $src
conf=/usr/triton/config/imgadm/imgadm.conf
case "$*" in
"list -H") [[ -f $conf ]] || echo '{"sources": []}' > $conf ;;
sources) cat $src ;;
"sources -f -d "*) grep -vx -- "$4" $src > $src.new || true; mv $src.new $src ;;
"sources -f -a "*) echo "$4" >> $src ;;
*) exit 1 ;;
esac
"#,
    ),
    ("usr/bin/systemctl", "if [[ -e /stub/fail-systemctl ]]; then rm /stub/fail-systemctl; exit 1; fi\n"),
    ("usr/triton/bin/install-default-agents", "echo installing agents\n"),
    ("usr/bin/bootparams", "tr ' ' '\\n' < /proc/cmdline\n"),
];

/// The `json` of runtime/compat, the one the CN runs (built once per test
/// process). As in tests/ur_agent.rs, a test of another package has no
/// `CARGO_BIN_EXE_json`, so this runs `cargo build -p compat --bin json`
/// into the test binary's own target directory and profile; `$JSON_BIN`
/// names a prebuilt binary instead.
fn json_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| ci::workspace_bin("compat", "json", "JSON_BIN"))
}

/// The sandbox's root has the host's /usr (through the overlay) and the
/// host's /lib* symlinks into it, nothing more of the host: every library a
/// dynamically linked `json` needs must therefore resolve to a file under
/// /usr (true on merged-/usr hosts such as Debian 12+).
fn assert_libs_under_usr(bin: &Path) {
    let Ok(out) = std::process::Command::new("ldd").arg(bin).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for lib in text.split_whitespace().filter(|w| w.starts_with('/')) {
        let real = std::fs::canonicalize(lib).unwrap_or_else(|e| panic!("{lib} (ldd {}): {e}", bin.display()));
        assert!(
            real.starts_with("/usr"),
            "{} needs {lib} ({}), which is outside /usr and so missing in the sandbox:\n{text}",
            bin.display(),
            real.display()
        );
    }
}

/// The sandbox: a new root made of the host's /usr under an overlay (the
/// stubs and the real `json` are written into its upper layer), /etc
/// read-only, /proc, a few /dev nodes and a file as /dev/console; everything
/// else in `work`. Runs joysetup (made to fail in setup_datasets), joysetup
/// again (resumes), agentsetup, and joysetup a third time (the pool is
/// there: no-op), in a private mount namespace, as ur would (`cd /var/tmp`,
/// empty environment). /usr/bin/json is the real binary; so that its calls
/// are logged like the stubs' (with whitespace runs squeezed), the scripts'
/// environment carries a bash function `json` that runs `command json` and
/// then logs the call -- after it, so that in `producer | json` the
/// producer's line (written when it starts) always comes first.
const DRIVER: &str = r#"set -o errexit -o pipefail
W=$1
R=$W/root
mkdir -p "$R"/{usr,etc,proc,dev,tmp,var/tmp,var/log,opt,stub} "$W"/upper "$W"/ovl
for l in bin sbin lib lib64 lib32 libx32; do
    if [[ -L /$l ]]; then ln -s "$(readlink /$l)" "$R/$l"; fi
done
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$W/upper,workdir=$W/ovl" "$R/usr"
mount --bind /etc "$R/etc"
mount -o remount,bind,ro "$R/etc"
mount --rbind /proc "$R/proc"
for d in null zero random urandom; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
: > "$R/dev/console"
ln -s /proc/self/fd "$R/dev/fd"
cp -a "$W"/stage/. "$R"/
if ! out=$(echo '{"a": 1}' | chroot "$R" /usr/bin/json a 2>&1) || [[ $out != 1 ]]; then
    echo "/usr/bin/json does not work in the sandbox: $out" >&2
    exit 1
fi
touch "$R/stub/fail-systemctl"
json_logger='() { local rc=0; command json "$@" || rc=$?; (set -f; echo json $*) >> /stub/calls.log; return $rc; }'
run() {
    local name=$1; shift
    set +o errexit
    chroot "$R" /usr/bin/env -i "BASH_FUNC_json%%=$json_logger" "$@" /bin/bash -c "cd /var/tmp && ./$name.sh" \
        > "$W/$name.$n.out" 2>&1
    echo $? > "$W/$name.$n.rc"
    cp "$R/dev/console" "$W/console.$n"
    set -o errexit
    echo "@@ run done: $name ($n)" >> "$R/stub/calls.log"
    n=$((n + 1))
}
n=1
run joysetup
run joysetup
run agentsetup ASSETS_URL=http://10.99.99.9 TRITON_AGENTSETUP_NET_AGENT_WAIT=0
run joysetup
"#;

#[test]
fn scripts_run_against_stub_commands() {
    let have = |p: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    let missing: Vec<&str> = ["unshare", "chroot", "cpio"].into_iter().filter(|t| !have(t)).collect();
    if !nix::unistd::geteuid().is_root() || !missing.is_empty() {
        say(&format!("\nSKIPPED headnode: scripts_run_against_stub_commands needs root and {missing:?}"));
        return;
    }
    let json = json_bin();
    assert_libs_under_usr(json);
    let dir = tempfile::Builder::new().prefix("hn-scripts-").tempdir_in("/var/tmp").expect("tempdir");
    let w = dir.path();
    let stage = w.join("stage");
    let write = |rel: &str, text: &str, mode: u32| {
        let p = stage.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    // Stubs go into the overlay through the stage copy (cp -a into $R).
    for (path, body) in STUBS {
        write(path, &format!("{STUB_HEAD}{body}"), 0o755);
    }
    let json_exe = std::fs::read(json).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    let json_path = stage.join("usr/bin/json");
    std::fs::create_dir_all(json_path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&json_path, json_exe).expect("write json");
    std::fs::set_permissions(&json_path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs-overlay/usr/triton/bin/config.sh");
    let config_sh = std::fs::read_to_string(&config_sh).unwrap_or_else(|e| panic!("{}: {e}", config_sh.display()));
    write("usr/triton/bin/config.sh", &config_sh, 0o644);
    let boot_config = "datacenter_name='dev-1'\ndns_domain='dev.example'\nrabbitmq='guest:guest:10.99.99.9:5672'\n";
    write("usr/triton/config/node.config", boot_config, 0o644);
    // What fetch_setup_files leaves in /var/tmp.
    let fetched =
        format!("layout='mirror'\nspares=1\n{boot_config}ntp_hosts='10.99.99.9'\nimgapi_domain='imgapi.dev.example'\n");
    write("var/tmp/node.config/node.config", &fetched, 0o644);
    write("var/tmp/joysetup.sh", JOYSETUP_SH, 0o755);
    write("var/tmp/agentsetup.sh", AGENTSETUP_SH, 0o755);
    write("driver.sh", DRIVER, 0o755);

    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash"])
        .arg(stage.join("driver.sh"))
        .arg(w)
        .output()
        .expect("unshare");
    let r = w.join("root");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let outputs = || {
        let mut s = String::new();
        for f in ["joysetup.1", "joysetup.2", "agentsetup.3", "joysetup.4"] {
            s.push_str(&format!(
                "--- {f} (exit {}) ---\n{}\n",
                read(&w.join(format!("{f}.rc"))).trim(),
                read(&w.join(format!("{f}.out")))
            ));
        }
        s
    };
    assert!(out.status.success(), "driver: {}\n{}", String::from_utf8_lossy(&out.stderr), outputs());
    let rc = |f: &str| read(&w.join(format!("{f}.rc"))).trim().to_string();
    assert_eq!(rc("joysetup.1"), "1", "the first joysetup fails at systemctl\n{}", outputs());
    assert!(read(&w.join("joysetup.1.out")).contains("systemctl restart triton-lxd.service"), "{}", outputs());
    assert_eq!([rc("joysetup.2"), rc("agentsetup.3"), rc("joysetup.4")], ["0", "0", "0"], "{}", outputs());
    assert!(read(&w.join("joysetup.2.out")).contains("carrying on with the setup recorded in"), "{}", outputs());

    let calls = read(&r.join("stub/calls.log"));
    let runs: Vec<&str> = calls.split("@@ run done: ").collect();
    // The first run, in order.
    let mut at = 0;
    for want in [
        "zpool list\n",
        "bootparams \n",
        "ntpdate -b 10.99.99.9\n",
        "ntpdig -j 10.99.99.9\n",
        "json -e this.offset=Math.floor(Math.abs(this.offset)) offset\n",
        "disklayout -s 1 mirror\n",
        "sysinfo \n",
        "json MiB of Memory\n",
        "json capacity\n",
        "zpool list -H -o name zones\n",
        "mkzpool -B -f zones /tmp/pool.json\n",
        "zfs set atime=off zones\n",
        "json -e this.current_state = 'zpool_created';",
        "zfs create -V 1024mb -o checksum=noparity -b 4096 -o logbias=throughput -o sync=always \
         -o primarycache=metadata -o secondarycache=none zones/dump\n",
        "zfs create zones/config\n",
        "zfs create -o compression=lz4 -o mountpoint=none zones/cores\n",
        "zfs create -o quota=10g -o mountpoint=/zones/global/cores zones/cores/global\n",
        "zfs create zones/opt\n",
        "zfs set mountpoint=/opt zones/opt\n",
        "zfs create zones/var\n",
        "zfs set mountpoint=/var zones/var\n",
        "systemctl restart triton-lxd.service\n",
    ] {
        match runs[0][at..].find(want) {
            Some(i) => at += i + want.len(),
            None => panic!("first joysetup: {want:?} missing or out of order after byte {at}:\n{}", runs[0]),
        }
    }
    // The resumed run: no NTP, layout or pool creation again; the rest in order.
    assert!(!runs[1].contains("ntpdate") && !runs[1].contains("mkzpool"), "{}", runs[1]);
    let mut at = 0;
    for want in [
        "zfs set atime=off zones\n",
        "json -e this.current_state = 'datasets_setup';",
        "json -e this.current_state = 'pkgsrc_tools';",
        "json -e this.current_state = 'configs_installed';",
        "zfs list -H -o name zones/swap\n",
        "zfs create -V 2g -b 4096 -o logbias=throughput -o sync=always -o primarycache=metadata \
         -o secondarycache=none zones/swap\n",
        "json -e this.current_state = 'swap_created';",
        "json -e this.current_state = 'filesystems_setup';",
        "imgadm list -H\n",
        "json -f /usr/triton/config/imgadm/imgadm.conf -e this.userAgentExtra = \
         'server/00000000-0000-4000-8000-525400990001'\n",
        "imgadm sources\n",
        "imgadm sources -f -d https://images.smartos.org\n",
        "imgadm sources -f -a http://imgapi.dev.example\n",
        "json -e this.current_state = 'imgadm_setup';",
    ] {
        match runs[1][at..].find(want) {
            Some(i) => at += i + want.len(),
            None => panic!(
                "resumed joysetup: {want:?} missing or out of order after byte {at}:\n{}\n--- its output ---\n{}",
                runs[1],
                std::fs::read_to_string(w.join("joysetup.2.out")).unwrap_or_default()
            ),
        }
    }
    assert!(!runs[1].contains("refreservation"), "2 GiB of RAM: swap = RAM, no refreservation");
    for want in ["install-default-agents \n", "json -e this.complete = true;", "sysinfo -u\n"] {
        assert!(runs[2].contains(want), "agentsetup: {want:?}:\n{}", runs[2]);
    }
    // A set-up node: joysetup only prints the pool.
    assert!(!runs[3].contains("zfs create") && !runs[3].contains("json -e"), "{}", runs[3]);
    let last = read(&w.join("joysetup.4.out"));
    assert!(last.contains("zones\t1234567890\t16001048576\t16000000000\tONLINE\t/zones"), "{last}");

    // The files a set-up node has.
    let state: Value =
        serde_json::from_str(&read(&r.join("opt/triton/config/triton-setup-state.json"))).expect("setup state");
    assert_eq!(state["complete"], true, "{state}");
    assert_eq!(state["node_type"], "computenode");
    assert_eq!(
        state["seen_states"],
        json!([
            "zpool_created",
            "datasets_setup",
            "pkgsrc_tools",
            "configs_installed",
            "swap_created",
            "filesystems_setup",
            "imgadm_setup",
            "agents_installed",
            "setup_complete"
        ]),
        "{state}"
    );
    let mode =
        std::fs::metadata(r.join("opt/triton/config/triton-setup-state.json")).expect("state").permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
    assert_eq!(
        std::fs::read_link(w.join("upper/triton/config")).expect("/usr/triton/config is a symlink"),
        Path::new("/opt/triton/config")
    );
    assert!(r.join("opt/triton/config/node.config").is_file());
    let imgadm: Value =
        serde_json::from_str(&read(&r.join("opt/triton/config/imgadm/imgadm.conf"))).expect("imgadm.conf");
    assert_eq!(imgadm["userAgentExtra"], "server/00000000-0000-4000-8000-525400990001");
    assert_eq!(read(&r.join("stub/sources")), "http://imgapi.dev.example\n");
    assert!(r.join("zones/.system_pool").is_file());
    assert!(r.join("zones/var/tmp").is_dir(), "the live /var was copied onto zones/var");
    assert!(r.join("var/log/joysetup.log").is_file());
    assert!(r.join("var/log/agent-setup.log").is_file());
    assert!(read(&w.join("console.1")).contains("joysetup: creating pool zones\n"), "{}", read(&w.join("console.1")));
    assert!(read(&w.join("console.2")).contains("joysetup: creating zones/swap\n"), "{}", read(&w.join("console.2")));
}
