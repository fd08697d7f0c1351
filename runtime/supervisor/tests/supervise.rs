//! End-to-end test of the real supervisor loop, not as PID 1: this binary
//! re-executes itself as a child subreaper running `Supervisor` with real
//! `sh -c` services and a recording host, then drives it through the real
//! control socket with the real `triton-ctl` and finally with SIGTERM.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use supervisor::host::fake::FakeHost;
use supervisor::{
    Config, HookError, Manifest, Mode, PowerAction, Response, RestartPolicy, Rotation, ServiceSpec, Supervisor,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--supervisor-child") {
        supervisor_child(Path::new(&args[2]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("end_to_end: test");
        return;
    }
    let t0 = Instant::now();
    end_to_end();
    let secs = t0.elapsed().as_secs_f64();
    println!("test end_to_end ... ok ({secs:.1}s)");
    // The same summary line libtest prints, so the test command counts it.
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s");
}

fn manifest(name: &str, script: &str) -> Manifest {
    Manifest {
        name: name.into(),
        exec: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: Default::default(),
        user: None,
        needs: vec![],
        modes: vec![Mode::Setup],
        order: 0,
        restart: RestartPolicy::Always,
        stop_timeout_s: 10,
        log: true,
    }
}

fn write_manifest(dir: &Path, m: &Manifest) {
    let text = toml::to_string(m).expect("serialize manifest");
    fs::write(dir.join(format!("{}.toml", m.name)), text).expect("write manifest");
}

fn setup(root: &Path) {
    let a = root.join("services-a");
    let b = root.join("services-b");
    fs::create_dir_all(&a).expect("mkdir");
    fs::create_dir_all(&b).expect("mkdir");
    let r = root.display();
    let stopper = |name: &str, order: i32| {
        let mut m = manifest(
            name,
            &format!("trap 'echo stopped {name} >> {r}/events; exit 0' TERM; echo up; while :; do sleep 0.1; done"),
        );
        m.order = order;
        m
    };
    write_manifest(&a, &stopper("a-first", 1));
    write_manifest(&a, &stopper("b-second", 2));
    let mut flaky = manifest("flaky", &format!("date +%s%N >> {r}/flaky.starts; echo boom; exit 1"));
    flaky.restart = RestartPolicy::OnFailure;
    flaky.order = 5;
    write_manifest(&a, &flaky);
    let mut chatty = manifest(
        "chatty",
        "i=0; while [ $i -lt 1000 ]; do echo \"line $i of chatty output padding padding\"; i=$((i+1)); done; exec sleep 1000",
    );
    chatty.order = 1;
    write_manifest(&a, &chatty);
    let mut stubborn = manifest("stubborn", "trap '' TERM; while :; do sleep 0.1; done");
    stubborn.stop_timeout_s = 1;
    stubborn.order = 3;
    write_manifest(&a, &stubborn);
    let mut pooly = manifest("pooly", "exec sleep 1000");
    pooly.needs = vec!["pool".into()];
    write_manifest(&a, &pooly);
    let mut unsetup = manifest("unsetup-only", "exec sleep 1000");
    unsetup.modes = vec![Mode::Unsetup];
    write_manifest(&a, &unsetup);
    let mut orphaner = manifest("orphaner", "(sleep 0.3; exit 7) & exit 0");
    orphaner.restart = RestartPolicy::Never;
    write_manifest(&a, &orphaner);
    fs::write(a.join("bad.toml"), "name = \"bad\"\nexec = [\"sh\"]\n").expect("write");
    write_manifest(&b, &manifest("chatty", "exit 0")); // duplicate name: skipped
    write_manifest(&b, &manifest("late", "exec sleep 1000"));
}

/// The supervisor process (not PID 1: a child subreaper).
fn supervisor_child(root: &Path) {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let mut cfg = Config::new(
        root.join("log"),
        root.join("run/init.sock"),
        vec![root.join("services-a"), root.join("services-b")],
        Mode::Setup,
    );
    cfg.conditions.insert("network".into());
    cfg.rotation = Rotation { max_bytes: 4096, keep: 2 };
    cfg.kill_grace = Duration::from_millis(300);
    cfg.hook_timeout = Duration::from_secs(5);
    let host = FakeHost::default();
    let recorder = host.clone();
    let mut sup = Supervisor::with_host(cfg, host).expect("supervisor");
    let mut internal = ServiceSpec::new("internal", ["/bin/sh", "-c", "exec sleep 1000"]);
    internal.order = -10;
    sup.add_service(internal).expect("add internal");
    let errors: Vec<String> = sup.load_manifests().iter().map(|e| e.to_string()).collect();
    fs::write(root.join("manifest-errors"), errors.join("\n")).expect("write");
    let orphans = root.join("orphans");
    sup.on_orphan_exit(move |pid, st| {
        let _ = fs::write(&orphans, format!("{}{pid} {st}\n", fs::read_to_string(&orphans).unwrap_or_default()));
    });
    let handle = sup.handle();
    let helper_file = root.join("helper");
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "sleep 0.2; exit 3"]);
        let st = handle.run_helper(c).expect("run_helper");
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "echo hi; echo err >&2"]);
        let out = handle.helper_output(c).expect("helper_output");
        let text = format!(
            "{:?}|{}|{}|{}",
            st.code(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status.success()
        );
        fs::write(helper_file, text).expect("write");
    });
    let events = root.join("events");
    let hook = move |action: PowerAction| -> Result<(), HookError> {
        let prev = fs::read_to_string(&events).unwrap_or_default();
        fs::write(&events, format!("{prev}hook {action:?}\n"))?;
        Ok(())
    };
    let r = sup.run_to_shutdown(hook);
    fs::write(root.join("result"), format!("{r:?}\n{:?}", recorder.ops())).expect("write");
}

struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            for _ in 0..50 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triton-ctl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .env_remove("TRITON_INIT_SOCKET")
        .output()
        .expect("run triton-ctl")
}

fn status(sock: &Path) -> Response {
    let out = ctl(sock, &["status", "--json"]);
    assert!(out.status.success(), "status failed: {out:?}");
    Response::parse(&String::from_utf8_lossy(&out.stdout)).expect("status json")
}

fn svc<'a>(r: &'a Response, name: &str) -> &'a supervisor::ServiceStatus {
    r.services.as_ref().and_then(|s| s.iter().find(|s| s.name == name)).unwrap_or_else(|| panic!("{name} in {r:?}"))
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn read(p: PathBuf) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

fn end_to_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    setup(root);
    let sock = root.join("run/init.sock");

    // triton-ctl without init: a clear message and exit 2.
    let out = ctl(&sock, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach init"), "{out:?}");

    let child = Command::new(std::env::current_exe().expect("current_exe"))
        .arg("--supervisor-child")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(fs::File::create(root.join("child.stderr")).expect("create"))
        .spawn()
        .expect("spawn supervisor child");
    let child_pid = Pid::from_raw(child.id() as i32);
    let mut guard = ChildGuard(Some(child));
    let started = Instant::now();
    wait_for("the control socket", Duration::from_secs(5), || sock.exists());
    let mode = fs::metadata(&sock).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600));

    // Manifest problems are reported, not fatal.
    let errs = read(root.join("manifest-errors"));
    assert!(errs.contains("bad.toml") && errs.contains("absolute path"), "{errs}");
    assert!(errs.contains("services-b/chatty.toml") && errs.contains("already defined"), "{errs}");

    // Flaky: started at ~0 s, ~1 s, ~3 s (1 s then 2 s of backoff).
    wait_for("three starts of flaky", Duration::from_secs(8), || read(root.join("flaky.starts")).lines().count() >= 3);
    let starts: Vec<u128> = read(root.join("flaky.starts")).lines().filter_map(|l| l.trim().parse().ok()).collect();
    let gap = |i: usize| (starts[i + 1] - starts[i]) as f64 / 1e9;
    assert!(gap(0) >= 0.8 && gap(0) < 2.5, "first backoff {}", gap(0));
    assert!(gap(1) >= 1.7 && gap(1) > gap(0), "second backoff {} after {}", gap(1), gap(0));
    let st = status(&sock);
    assert_eq!(st.mode.as_deref(), Some("setup"));
    let flaky = svc(&st, "flaky");
    assert!(flaky.restarts >= 2, "{flaky:?}");
    assert_eq!(flaky.last_exit.as_deref(), Some("exit 1"));
    assert!(read(root.join("log/flaky.log")).contains("boom"));
    assert!(read(root.join("log/flaky.log")).contains("triton-init] flaky: pid"));

    assert_eq!(svc(&st, "pooly").state, "waiting");
    assert_eq!(svc(&st, "pooly").waiting_for, ["pool"]);
    assert_eq!(svc(&st, "unsetup-only").state, "disabled");
    assert_eq!(svc(&st, "internal").state, "running");
    assert_eq!(svc(&st, "late").state, "running");
    assert_eq!(svc(&st, "a-first").state, "running");
    assert!(svc(&st, "a-first").pid.is_some());
    let orphaner = svc(&st, "orphaner");
    assert_eq!((orphaner.state.as_str(), orphaner.last_exit.as_deref()), ("stopped", Some("exit 0")));
    assert!(read(root.join("orphans")).contains("exit 7"), "orphan not reaped: {:?}", read(root.join("orphans")));
    wait_for("the helpers", Duration::from_secs(3), || root.join("helper").exists());
    assert_eq!(read(root.join("helper")), "Some(3)|hi|err|true");

    // Output lands in the log file and rotates (4 KiB, keep 2).
    assert!(root.join("log/chatty.log.1").exists() && root.join("log/chatty.log.2").exists());
    assert!(!root.join("log/chatty.log.3").exists());
    let all =
        read(root.join("log/chatty.log.2")) + &read(root.join("log/chatty.log.1")) + &read(root.join("log/chatty.log"));
    assert!(all.contains("line 999 of chatty"), "last line missing");

    // The table.
    let out = ctl(&sock, &["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.contains("SERVICE") && table.contains("waiting (pool)"), "{table}");

    // Errors come back as messages with exit 1.
    let out = ctl(&sock, &["start", "pooly"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs pool"), "{out:?}");
    let out = ctl(&sock, &["stop", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such service"), "{out:?}");

    // A stop escalates to SIGKILL after stop_timeout_s and answers once done.
    let t = Instant::now();
    let out = ctl(&sock, &["stop", "stubborn"]);
    let took = t.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "stop took {took:?}");
    let st = status(&sock);
    let stubborn = svc(&st, "stubborn");
    assert_eq!((stubborn.state.as_str(), stubborn.last_exit.as_deref()), ("stopped", Some("signal SIGKILL")));

    // Restart gives a new pid.
    let old = svc(&st, "chatty").pid;
    let out = ctl(&sock, &["restart", "chatty"]);
    assert!(out.status.success(), "{out:?}");
    let st = status(&sock);
    assert!(svc(&st, "chatty").pid.is_some() && svc(&st, "chatty").pid != old);
    let out = ctl(&sock, &["start", "stubborn"]);
    assert!(out.status.success(), "{out:?}");

    // SIGTERM: reverse order stop, then the hook, then sync + reboot on the fake host.
    kill(child_pid, Signal::SIGTERM).expect("SIGTERM");
    let mut child = guard.0.take().expect("child");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "shutdown did not finish: {}", read(root.join("child.stderr")));
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "child failed: {}", read(root.join("child.stderr")));
    let events: Vec<String> = read(root.join("events")).lines().map(String::from).collect();
    assert_eq!(events, ["stopped b-second", "stopped a-first", "hook Reboot"]);
    let result = read(root.join("result"));
    assert_eq!(
        result,
        "Ok(Reboot)\n[KillAll(SIGTERM), KillAll(SIGKILL), Sync, Reboot(Reboot)]",
        "{}",
        read(root.join("child.stderr"))
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}
