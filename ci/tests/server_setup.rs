//! Server setup end to end (root + built PI): CNs netboot from the dev
//! booter (iPXE, booter's boot.ipxe), their ur-agent reports to a real
//! RabbitMQ in the booter's namespace, and the headnode double
//! (`ci::headnode`, CNAPI's part) sets them up with the server-setup
//! workflow over `ur.execute`: fetch the setup files from the assets HTTP
//! server, run joysetup.sh and agentsetup.sh (ours, following the
//! headnode's Linux steps and calling the same commands), `exit 113` →
//! reply, orderly reboot through init (pool exported), netboot again, come
//! back with the pool imported and `Setup: "true"`.
//!
//! - `a_*`: a blank CN is set up end to end; every sysinfo CNAPI receives is
//!   checked field by field; the CN's state after setup is checked on its
//!   console.
//! - `b_*`: faults around one CN: the broker down when the CN boots (ur
//!   retries and connects once it is up), an execute whose output is over
//!   the 5 MiB limit, malformed and oversized messages (ur logs each and
//!   keeps serving), the broker restarted in the middle of joysetup (ur
//!   reconnects, the reply arrives, setup finishes).
//! - `c_*`: the CN powered off in the middle of setup (during joysetup,
//!   after the pool exists, and during agentsetup), booted again, setup run
//!   again: it finishes and no pool or data is lost.
//!
//! Consoles, the double's log (every sysinfo and execute with its output)
//! and the broker log are kept under `target/netboot-artifacts/<test>/`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ci::headnode::{Headnode, HeadnodeOpts, ServerRecord, SetupOpts};
use ci::scenario::{exported, Scenario};
use serde_json::Value;

/// A sysinfo after boot (netboot + stage 2 + ur connecting, TCG).
const SYSINFO: Duration = Duration::from_secs(420);
const EXEC: Duration = Duration::from_secs(120);

fn setup_opts() -> SetupOpts {
    SetupOpts { timeout_factor: 1, net_agent_wait: 2, ..SetupOpts::default() }
}

fn start(test: &str, id: &str, cns: &str) -> Option<(Scenario, Headnode)> {
    let s = Scenario::start(test, id, cns, |_| {})?;
    let work = s.artifacts.join("headnode");
    let hn = Headnode::start(HeadnodeOpts::for_booter(&s.b, work))
        .unwrap_or_else(|e| s.fail(&format!("headnode double: {e:#}")));
    Some((s, hn))
}

fn assert_no_violations(s: &Scenario, hn: &Headnode) {
    let v = hn.violations();
    if !v.is_empty() {
        let list: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        s.fail(&format!("sysinfo fields CNAPI relies on are wrong:\n{}", list.join("\n")));
    }
}

/// The first sysinfo of a CN (by its MAC) after it booted.
fn first_sysinfo(s: &Scenario, hn: &Headnode, mac: &str) -> ServerRecord {
    hn.wait_sysinfo(mac, SYSINFO).unwrap_or_else(|e| s.fail(&format!("{e:#}")))
}

/// Checks the CN after setup, on its console.
fn check_set_up_cn(s: &mut Scenario, name: &str) {
    s.login(name);
    let state: Value = serde_json::from_str(&s.sh_ok(name, "cat /opt/triton/config/triton-setup-state.json"))
        .expect("setup state JSON");
    assert_eq!(state["complete"], true, "{state}");
    let seen: Vec<&str> = state["seen_states"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for want in [
        "zpool_created",
        "datasets_setup",
        "configs_installed",
        "swap_created",
        "imgadm_setup",
        "agents_installed",
        "setup_complete",
    ] {
        assert!(seen.contains(&want), "seen_states lacks {want}: {state}");
    }
    let link = s.sh_ok(
        name,
        "readlink /usr/triton/config; ls /usr/triton/config/node.config; test -e /zones/.system_pool && echo marker",
    );
    assert!(link.contains("/opt/triton/config") && link.contains("marker"), "{link}");
    let ds = s.sh_ok(name, "zfs list -H -o name");
    for want in ["zones/config", "zones/cores/global", "zones/opt", "zones/var", "zones/swap", "zones/dump"] {
        assert!(ds.lines().any(|l| l.trim() == want), "dataset {want} missing:\n{ds}");
    }
    let swaps = s.sh_ok(name, "cat /proc/swaps");
    assert!(swaps.contains("/dev/zd"), "swap zvol active: {swaps}");
    let sources = s.sh_ok(name, "imgadm sources");
    assert!(sources.trim().starts_with("http://"), "imgadm source set by setup: {sources}");
    let ur = s.sh_ok(name, "triton-ctl status");
    assert!(ur.contains("ur-agent"), "{ur}");
}

/// The full workflow on a blank CN, then the CN's state.
fn set_up(s: &mut Scenario, hn: &Headnode, name: &str, uuid: &str) {
    s.mark(name);
    let report = hn.setup(uuid, &setup_opts()).unwrap_or_else(|e| s.fail(&format!("server setup failed: {e}")));
    eprintln!("setup of {name}:\n{}", report.summary());
    let sd = s.event(name, "shutdown");
    assert_eq!(sd["action"], "reboot", "exit 113 → an orderly reboot through init: {sd}");
    assert!(exported(&sd), "the reboot after setup must export the pool: {sd}");
    let pool = s.event(name, "pool");
    assert_eq!(pool["outcome"], "imported", "after setup's reboot: {pool}");
    let mode = s.event(name, "mode");
    assert_eq!(mode["mode"], "setup", "{mode}");
    let rec = hn
        .wait_sysinfo_where(uuid, SYSINFO, |r| r.sysinfo_setup() && r.setup)
        .unwrap_or_else(|e| s.fail(&format!("no Setup:true sysinfo after setup: {e:#}")));
    assert_eq!(rec.sysinfo["Zpool"], "zones", "{}", rec.sysinfo);
    assert!(rec.sysinfo["Zpool Creation"].as_u64().is_some(), "{}", rec.sysinfo);
}

/// a. A blank CN netboots, appears in the double through sysinfo (every
/// field CNAPI relies on checked), answers ping, is set up over ur, reboots
/// on 113 through init (pool exported), and comes back with the pool
/// imported, setup mode and `Setup: "true"`.
#[test]
fn a_blank_cn_is_set_up_through_ur() {
    let mac = "52:54:00:99:5a:01";
    let cns = format!("[[cn]]\nmac = \"{mac}\"\nip = \"10.99.99.120\"\n");
    let Some((mut s, hn)) = start("setup_a_blank_cn", "sa", &cns) else { return };
    let name = s.cfg.cns[0].hostname.clone();
    s.boot(&name);
    let rec = first_sysinfo(&s, &hn, mac);
    assert_eq!(rec.sysinfo["Setup"].to_string().trim_matches('"'), "false", "{}", rec.sysinfo);
    assert_eq!(rec.sysinfo["Hostname"], name.as_str(), "booter finds unsetup CNs by the dashed MAC");
    assert_eq!(rec.admin_mac().as_deref(), Some(mac));
    let uuid = rec.uuid.clone();
    hn.ping(&uuid, EXEC).unwrap_or_else(|e| s.fail(&format!("ping: {e}")));
    let r = hn
        .execute(
            &uuid,
            "#!/bin/bash\necho \"$1-$FOO\"; echo err >&2; exit 3\n",
            &["arg"],
            &BTreeMap::from([("FOO".to_string(), "bar".to_string())]),
            EXEC,
        )
        .unwrap_or_else(|e| s.fail(&format!("execute: {e}")));
    assert_eq!((r.exit_status, r.stdout.trim(), r.stderr.trim()), (3, "arg-bar", "err"), "{r:?}");
    set_up(&mut s, &hn, &name, &uuid);
    check_set_up_cn(&mut s, &name);
    assert_no_violations(&s, &hn);
    // The broker and its epmd run in the booter's netns: stop them first.
    drop(hn);
    s.finish();
}

/// Sends `n`-th garbage message kinds to ur and checks it keeps serving.
fn bad_messages(s: &Scenario, hn: &Headnode, uuid: &str) {
    let t = Instant::now();
    hn.publish_raw(&format!("ur.execute.{uuid}.garbage1"), b"{not json")
        .unwrap_or_else(|e| s.fail(&format!("publish: {e}")));
    hn.publish_raw(&format!("ur.execute.{uuid}.garbage2"), br#"{"type":"rocket","script":42}"#)
        .unwrap_or_else(|e| s.fail(&format!("publish: {e}")));
    let big = vec![b'x'; 17 << 20];
    hn.publish_raw(&format!("ur.execute.{uuid}.garbage3"), &big).unwrap_or_else(|e| s.fail(&format!("publish: {e}")));
    hn.ping(uuid, EXEC).unwrap_or_else(|e| s.fail(&format!("ur stopped serving after bad messages: {e}")));
    eprintln!("bad messages handled in {:?}", t.elapsed());
}

/// b. Faults around one CN: broker down at boot, output over the limit,
/// malformed and oversized messages, broker restarted during joysetup.
#[test]
fn b_broker_faults_bad_messages_and_output_limit() {
    let mac = "52:54:00:99:5b:01";
    let cns = format!("[[cn]]\nmac = \"{mac}\"\nip = \"10.99.99.121\"\nserial = \"ttya\"\n");
    let Some((mut s, mut hn)) = start("setup_b_faults", "sb", &cns) else { return };
    let name = s.cfg.cns[0].hostname.clone();

    // The broker is down while the CN boots: ur retries with backoff.
    hn.broker().stop();
    s.boot(&name);
    s.event(&name, "ready");
    std::thread::sleep(Duration::from_secs(20));
    hn.broker().start_again().unwrap_or_else(|e| s.fail(&format!("broker start: {e:#}")));
    assert!(hn.wait_connected(Duration::from_secs(60)), "the double reconnects to its broker");
    let rec = first_sysinfo(&s, &hn, mac);
    let uuid = rec.uuid.clone();

    // Output over 5 MiB: a clear reply, and ur keeps serving.
    let r = hn
        .execute(&uuid, "#!/bin/bash\nhead -c 6000000 /dev/zero | tr '\\0' x\n", &[], &BTreeMap::new(), EXEC)
        .unwrap_or_else(|e| s.fail(&format!("execute: {e}")));
    assert_ne!(r.exit_status, 0, "over the limit must not look like success: {}", r.stderr);
    assert!(r.stderr.contains("exceeded") && r.stderr.contains("limit"), "the reply says why: {}", r.stderr);
    assert!(r.stdout.len() <= 5 << 20, "{}", r.stdout.len());
    bad_messages(&s, &hn, &uuid);
    s.login(&name);
    let log = s.sh_ok(&name, "grep -E 'garbage[123]' /var/log/ur-agent.log");
    for want in ["garbage1", "garbage2", "garbage3"] {
        assert!(log.contains(want), "ur-agent.log should name the bad message {want}:\n{log}");
    }

    // Broker restarted while joysetup runs: the setup finishes.
    s.mark(&name);
    let restarted = std::thread::scope(|scope| {
        let job = scope.spawn(|| hn.setup(&uuid, &setup_opts()));
        // joysetup's first console output: the pool is being created.
        s.line(&name, "joysetup running", Duration::from_secs(600), |l| l.contains("creating pool"));
        let ok = hn.restart_broker().is_ok();
        (ok, job.join())
    });
    let (ok, job) = restarted;
    assert!(ok, "broker restart");
    match job {
        Ok(Ok(report)) => eprintln!("setup across a broker restart:\n{}", report.summary()),
        Ok(Err(e)) => s.fail(&format!("setup did not survive the broker restart: {e}")),
        Err(_) => s.fail("setup thread panicked"),
    }
    let sd = s.event(&name, "shutdown");
    assert!(exported(&sd), "the reboot after setup must export the pool: {sd}");
    let pool = s.event(&name, "pool");
    assert_eq!(pool["outcome"], "imported", "{pool}");
    check_set_up_cn(&mut s, &name);
    assert_no_violations(&s, &hn);
    // The broker and its epmd run in the booter's netns: stop them first.
    drop(hn);
    s.finish();
}

/// Powers the CN off (QEMU killed: no shutdown, no pool export) and boots
/// it again; returns its next sysinfo record.
fn power_cycle(s: &mut Scenario, hn: &Headnode, name: &str, uuid: &str) -> ServerRecord {
    s.b.vm_mut(name).expect("vm").kill();
    let before = hn.server(uuid).and_then(|r| r.last_boot()).unwrap_or(0.0);
    s.boot(name);
    let pool = s.event(name, "pool");
    assert!(
        matches!(pool["outcome"].as_str(), Some("imported") | Some("absent")),
        "after a power-off the pool is imported (or was never created): {pool}"
    );
    hn.wait_sysinfo_where(uuid, SYSINFO, |r| r.last_boot().is_some_and(|b| b > before))
        .unwrap_or_else(|e| s.fail(&format!("no sysinfo after the power cycle: {e:#}")))
}

/// c. The CN is powered off in the middle of joysetup (after the pool was
/// created), between joysetup and agentsetup (a file written to /opt in
/// between), and after agentsetup but before the 113 reboot; each time it
/// boots again and setup is run again. The last run finishes, the pool is
/// the one created first and the file on /opt is still there.
#[test]
fn c_power_off_at_each_setup_step_then_setup_finishes() {
    let mac = "52:54:00:99:5c:01";
    let cns = format!("[[cn]]\nmac = \"{mac}\"\nip = \"10.99.99.122\"\n");
    let Some((mut s, hn)) = start("setup_c_power_off", "sc", &cns) else { return };
    let hn = std::sync::Arc::new(hn);
    // The interrupted workflow below keeps a reference to the double, so it
    // is never dropped: stop its broker (a process of its own) when the test
    // ends, passed or not.
    struct StopBroker(std::sync::Arc<Headnode>);
    impl Drop for StopBroker {
        fn drop(&mut self) {
            self.0.stop_broker();
        }
    }
    let _stop = StopBroker(hn.clone());
    let name = s.cfg.cns[0].hostname.clone();
    s.boot(&name);
    let uuid = first_sysinfo(&s, &hn, mac).uuid;

    // 1. Off while joysetup runs, a few seconds after the pool exists. The
    // interrupted workflow is left waiting for a reply that never comes.
    {
        let (hn2, uuid2) = (hn.clone(), uuid.clone());
        std::thread::spawn(move || hn2.setup(&uuid2, &setup_opts()));
    }
    s.line(&name, "joysetup creating the pool", Duration::from_secs(600), |l| l.contains("creating pool"));
    std::thread::sleep(Duration::from_secs(6));
    power_cycle(&mut s, &hn, &name, &uuid);
    s.login(&name);
    let guid = s.sh_ok(&name, "zpool list -H -o guid zones");

    // 2. Off between joysetup and agentsetup, with data on /opt.
    let o = SetupOpts { stop_after: Some("cnapi.execute_joysetup_script".into()), ..setup_opts() };
    hn.setup(&uuid, &o).unwrap_or_else(|e| s.fail(&format!("joysetup after a power-off: {e}")));
    s.sh_ok(&name, "mkdir -p /opt/ci && echo kept-$((40+2)) > /opt/ci/file && sync");
    power_cycle(&mut s, &hn, &name, &uuid);

    // 3. Off after agentsetup, before the 113 reboot.
    let o = SetupOpts { stop_after: Some("cnapi.execute_agentsetup_script".into()), ..setup_opts() };
    hn.setup(&uuid, &o).unwrap_or_else(|e| s.fail(&format!("agentsetup after a power-off: {e}")));
    power_cycle(&mut s, &hn, &name, &uuid);

    // The whole workflow once more: it finishes.
    set_up(&mut s, &hn, &name, &uuid);
    check_set_up_cn(&mut s, &name);
    assert_eq!(s.sh_ok(&name, "zpool list -H -o guid zones"), guid, "the pool is the one created first");
    assert!(s.sh_ok(&name, "cat /opt/ci/file").contains("kept-42"), "data written between the steps is kept");
    assert_no_violations(&s, &hn);
    // The broker and its epmd run in the booter's netns: stop them first.
    hn.stop_broker();
    s.finish();
}
