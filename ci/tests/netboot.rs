//! Netboot end to end (root + built PI): compute nodes boot from a dev
//! booter (`booter-config`: private netns, dnsmasq DHCP/TFTP, HTTP) exactly
//! the way a Triton CN boots from sdc-booter: SeaBIOS → Debian's iPXE ROM →
//! DHCP with option 175 → booter's `boot.ipxe.01<MAC>` over TFTP → kernel
//! over TFTP, initrd + hash/node.config/networking.json modules over HTTP →
//! our stage 1 fetches the squashfs over HTTP → stage 2 → `ready`.
//!
//! Each test is one scenario with its own dev booter (netns `tnb-<id>-<pid>`,
//! so two tests run side by side). Tests run in name order; with
//! `--test-threads=2` the long pool scenario (b) starts second, next to the
//! quick smoke test (a), and the rest run on the other thread, so the suite
//! takes about as long as b (~10-12 min under TCG):
//!
//! - `a_*`: a blank CN (booter's default serial `ttyb`) → unsetup, ready, ping.
//! - `b_*`: pool created from the console in boot 1, imported in boots 2-4
//!   (setup mode), a /var file kept across three boots, clean `triton-ctl
//!   reboot`s exporting the pool and netbooting again through iPXE; boot 5
//!   without the pool disk → absent, unsetup, reachable.
//! - `c_*`: two CNs at once with their own networking.json (one with an
//!   external tag + vnic), consoles on ttyS0 (`ttya`) and ttyS1 (`ttyb`):
//!   also scenario e (serial console on either port).
//! - `d1_*`..`d4_*`: bad inputs: squashfs 404, squashfs hash mismatch
//!   (booter's hash wrong; squashfs replaced), `BOOTIF` naming no NIC, and
//!   in one boot a corrupt networking.json hash + malformed node.config +
//!   no disk.
//!
//! Every VM's console is kept, with timestamps, under
//! `target/netboot-artifacts/<test>/` (with dnsmasq.log and http.log); each
//! scenario fails on `Kernel panic`, `BUG:`, `Oops` or `Call Trace` on any
//! console and prints per-phase timings per CN (from the `TRITON-EVENT`
//! `ms` fields). Without root or a built PI a test prints `SKIPPED netboot:
//! <why>` and passes. `TRITON_CI_ECHO=1` echoes the consoles.
//!
//! The tftp root holds the PI as hard links to `out/latest`: a test that
//! breaks a platform file unlinks it first, never writes through the link.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use booter_config::config::{self, Cn, Config};
use booter_config::console::event_json;
use booter_config::{Console, DevBooter, DevBooterOpts};
use ci::cn::{PASSWORD, SHADOW};
use ci::qemu::strip_ansi;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long any one boot event may take under TCG (generous on purpose).
const EVENT: Duration = Duration::from_secs(300);
/// A console command.
const CMD: Duration = Duration::from_secs(90);
/// Console lines that fail every scenario.
const BAD_LINES: [&str; 4] = ["Kernel panic", "BUG:", "Oops", "Call Trace"];

/// Test output that libtest does not capture (the test command counts the
/// `SKIPPED` lines; the artifacts path and timings are wanted on success too).
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Why this machine cannot run the suite, if it cannot.
fn skip_reason(pi: &Path) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespace, taps, dnsmasq)".into());
    }
    if !pi.join("x86_64/vmlinuz").is_file() {
        return Some(format!(
            "no built PI at {} (./target/release/triton-pi build --standalone, or set TRITON_PI_DIR)",
            pi.display()
        ));
    }
    for tool in ["dnsmasq", "qemu-system-x86_64", "ip"] {
        if !on_path(tool) {
            return Some(format!("{tool} is not installed (bash ci/setup.sh)"));
        }
    }
    if !Path::new(booter_config::devbooter::VIRTIO_ROM).is_file() {
        return Some("Debian's ipxe-qemu ROMs are not installed (bash ci/setup.sh)".into());
    }
    None
}

/// The headnode side of every scenario; CNs are appended as `[[cn]]` tables.
fn description(cns: &str) -> String {
    format!(
        "server_ip = \"10.99.99.9\"\nresolvers = [\"10.99.99.9\"]\ndns_domain = \"dev.example\"\n\
         datacenter_name = \"dev-1\"\n{cns}\n[node_config]\nroot_shadow = '{SHADOW}'\n"
    )
}

fn seq() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(100);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Removes `path` (a hard link into the built PI, maybe) and writes a new file.
fn replace_file(path: &Path, data: &[u8]) {
    let _ = fs::remove_file(path);
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `ip/prefix` for an IPv4 netmask.
fn cidr(ip: &str, netmask: &str) -> String {
    let m: Ipv4Addr = netmask.parse().expect("netmask");
    format!("{ip}/{}", u32::from(m).leading_ones())
}

/// One scenario: a dev booter with its CNs, artifacts kept.
struct Scenario {
    id: String,
    b: DevBooter,
    cfg: Config,
    artifacts: PathBuf,
    /// Console line index where the current boot of each CN began.
    from: BTreeMap<String, usize>,
    t0: Instant,
    finished: bool,
    _work: tempfile::TempDir,
}

impl Scenario {
    /// Starts a dev booter for `test` with the `[[cn]]` tables in `cns`
    /// (all added); `tweak` adjusts the options (QEMU disks...). `None`
    /// (after printing `SKIPPED netboot: ...`) when the machine cannot run it.
    fn start(test: &str, id: &str, cns: &str, tweak: impl FnOnce(&mut DevBooterOpts)) -> Option<Scenario> {
        let pi = booter_config::cmd::default_pi();
        if let Some(why) = skip_reason(&pi) {
            // On a line of its own even when libtest's output interleaves.
            say(&format!("\nSKIPPED netboot: {why} ({test})"));
            return None;
        }
        let pi = pi.canonicalize().expect("PI path");
        let cfg = config::parse(&description(cns), false, test).expect("description").validate().expect("valid");
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/netboot-artifacts").join(test);
        let _ = fs::remove_dir_all(&artifacts);
        fs::create_dir_all(&artifacts).expect("artifacts dir");
        let artifacts = artifacts.canonicalize().expect("artifacts path");
        let work = tempfile::Builder::new().prefix(&format!("netboot-{id}-")).tempdir_in("/var/tmp").expect("work dir");
        let mut opts = DevBooterOpts::new(work.path());
        opts.netns = format!("tnb-{id}-{}", std::process::id());
        opts.artifacts = artifacts.clone();
        opts.echo = std::env::var_os("TRITON_CI_ECHO").is_some();
        tweak(&mut opts);
        say(&format!("netboot {test}: PI {}, artifacts {}", pi.display(), artifacts.display()));
        let mut b = DevBooter::start(opts, cfg.dc.clone(), &pi).expect("start the dev booter");
        for cn in &cfg.cns {
            b.add_cn(cn.clone()).unwrap_or_else(|e| panic!("adding {}: {e}", cn.hostname));
        }
        Some(Scenario {
            id: test.into(),
            b,
            cfg,
            artifacts,
            from: BTreeMap::new(),
            t0: Instant::now(),
            finished: false,
            _work: work,
        })
    }

    fn cn(&self, name: &str) -> Cn {
        self.cfg.cns.iter().find(|c| c.hostname == name).cloned().unwrap_or_else(|| panic!("no CN {name}"))
    }

    /// `<tftp root>/os/<stamp>/platform/x86_64/<file>` of the installed PI.
    fn platform_file(&self, stamp: &str, file: &str) -> PathBuf {
        self.b.root.dir.join("os").join(stamp).join("platform/x86_64").join(file)
    }

    fn console(&self, name: &str) -> Console {
        self.b.vm(name).expect("vm").console.clone()
    }

    /// Marks where the next boot's console output begins (before a reboot).
    fn mark(&mut self, name: &str) {
        let n = self.console(name).lines().len();
        self.from.insert(name.into(), n);
    }

    /// Starts the CN's QEMU.
    fn boot(&mut self, name: &str) {
        self.mark(name);
        self.b.boot(name).unwrap_or_else(|e| panic!("booting {name}: {e}"));
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{}: {msg}\nconsoles and logs: {}", self.id, self.artifacts.display())
    }

    /// Waits (this boot) for the `phase` event satisfying `pred`. Stops
    /// early on a kernel panic/oops line, and on a `rescue` event unless
    /// `rescue_ok`.
    fn event_where(&self, name: &str, phase: &str, rescue_ok: bool, pred: impl Fn(&Value) -> bool) -> Value {
        let from = self.from.get(name).copied().unwrap_or(0);
        let c = self.console(name);
        let got = c.wait_line_from(from, &format!("TRITON-EVENT {phase}"), EVENT, |l| {
            BAD_LINES.iter().any(|b| l.contains(b))
                || event_json(l).is_some_and(|v| {
                    (v["phase"] == phase && pred(&v)) || (!rescue_ok && phase != "rescue" && v["phase"] == "rescue")
                })
        });
        match got {
            Err(e) => self.fail(&e.to_string()),
            Ok((_, line)) => match event_json(&line) {
                Some(v) if v["phase"] == phase => v,
                _ => self.fail(&format!(
                    "{name}: waiting for the {phase} event, got instead:\n{line}\nlast lines:\n{}",
                    c.tail(40)
                )),
            },
        }
    }

    fn event(&self, name: &str, phase: &str) -> Value {
        self.event_where(name, phase, false, |_| true)
    }

    /// Waits (this boot) for a console line.
    fn line(&self, name: &str, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let from = self.from.get(name).copied().unwrap_or(0);
        self.console(name).wait_line_from(from, what, timeout, pred).unwrap_or_else(|e| self.fail(&e.to_string())).1
    }

    /// The lines of this boot so far.
    fn boot_lines(&self, name: &str) -> Vec<String> {
        let from = self.from.get(name).copied().unwrap_or(0);
        self.console(name).lines().split_off(from)
    }

    fn type_line(&mut self, name: &str, text: &str) {
        self.b.vm_mut(name).expect("vm").type_line(text).unwrap_or_else(|e| panic!("typing on {name}: {e}"));
    }

    /// Logs in as root on the console (password from node.config's
    /// `root_shadow`), retrying while the getty may not be up yet.
    fn login(&mut self, name: &str) {
        let c = self.console(name);
        for _ in 0..5 {
            std::thread::sleep(Duration::from_secs(4));
            self.type_line(name, "root");
            std::thread::sleep(Duration::from_secs(3));
            self.type_line(name, PASSWORD);
            std::thread::sleep(Duration::from_secs(3));
            let n = seq();
            let from = c.lines().len();
            self.type_line(name, &format!("dmesg -n 1; stty -echo; echo LOGGED$(({n}+0))IN"));
            let want = format!("LOGGED{n}IN");
            if c.wait_line_from(from, "login", Duration::from_secs(20), |l| l.contains(&want)).is_ok() {
                return;
            }
        }
        self.fail(&format!("{name}: console login failed; last lines:\n{}", c.tail(40)))
    }

    /// Runs `cmd` in the logged-in console shell; it must exit 0. Markers
    /// are computed by the shell, so the typed line never matches them.
    fn sh_ok(&mut self, name: &str, cmd: &str) -> String {
        let c = self.console(name);
        let n = seq();
        let from = c.lines().len();
        self.type_line(name, &format!("echo B$(({n}+0))B; {cmd}; echo E$(({n}+0))E=$?"));
        let (start, _) = c
            .wait_line_from(from, "command start", CMD, |l| l.trim() == format!("B{n}B"))
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        let tag = format!("E{n}E=");
        let (end, line) = c
            .wait_line_from(start, &format!("end of `{cmd}`"), CMD, |l| l.trim().starts_with(&tag))
            .unwrap_or_else(|e| self.fail(&e.to_string()));
        let out: Vec<String> = c.lines()[start + 1..end].iter().map(|l| strip_ansi(l)).collect();
        let status = line.trim().trim_start_matches(&tag).to_string();
        if status != "0" {
            self.fail(&format!("{name}: `{cmd}` exited {status}:\n{}", out.join("\n")));
        }
        out.join("\n")
    }

    /// Waits for the rescue event and banner, then checks the rescue shell
    /// answers a typed command.
    fn rescue_shell_answers(&mut self, name: &str, says: &str) {
        let r = self.event_where(name, "rescue", true, |_| true);
        assert!(
            r["reason"].as_str().unwrap_or_default().contains(says),
            "{name}: rescue reason should say {says:?}: {r}"
        );
        self.line(name, "rescue banner", Duration::from_secs(60), |l| l.contains("Starting a rescue shell"));
        let c = self.console(name);
        for attempt in 0..4 {
            std::thread::sleep(Duration::from_secs(3));
            let from = c.lines().len();
            self.type_line(name, &format!("echo RESCUE-$((40+{attempt}))"));
            let want = format!("RESCUE-{}", 40 + attempt);
            if c.wait_line_from(from, "rescue shell output", Duration::from_secs(20), |l| {
                l.contains(&want) && !l.contains("$((")
            })
            .is_ok()
            {
                assert!(
                    !self.boot_lines(name).iter().any(|l| l.contains("\"phase\":\"stage2\"")),
                    "{name}: a stage-1 failure must not reach stage 2"
                );
                return;
            }
        }
        self.fail(&format!("{name}: the rescue shell does not answer; last lines:\n{}", c.tail(30)))
    }

    /// ICMP echo from the admin network, retried for up to ~40 s.
    fn ping(&self, ip: Ipv4Addr) -> bool {
        (0..15).any(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_secs(2));
            }
            self.b.ping(ip)
        })
    }

    fn assert_pings(&self, name: &str, ip: Ipv4Addr) {
        if !self.ping(ip) {
            self.fail(&format!("{name} ({ip}) does not answer ping from the admin network"));
        }
    }

    /// Reboots through `triton-ctl reboot` (typed in the logged-in shell):
    /// the shutdown event must show the pool exported; QEMU keeps running
    /// and the CN netboots again through iPXE.
    fn reboot(&mut self, name: &str) {
        self.mark(name);
        self.type_line(name, "triton-ctl reboot");
        let ev = self.event(name, "shutdown");
        assert_eq!(ev["action"], "reboot", "{name}: {ev}");
        assert_eq!(ev["ok"], true, "{name}: the pool must be exported at shutdown: {ev}");
        assert!(exported(&ev), "{name}: the shutdown event should report the export: {ev}");
        // The next boot starts with stage 1's first event.
        self.event(name, "modules");
    }

    /// Fails on a panic/oops on any console, prints the timings and where
    /// the artifacts are, stops the booter.
    fn finish(mut self) {
        self.finished = true;
        self.report();
        for vm in self.b.vms() {
            let lines = vm.console.lines();
            if let Some(l) = lines.iter().find(|l| BAD_LINES.iter().any(|b| l.contains(b))) {
                self.fail(&format!("{}: kernel trouble on the console: {l}", vm.name()));
            }
        }
        let ns = self.b.netns().to_string();
        self.b.stop();
        assert!(!Path::new("/run/netns").join(&ns).exists(), "netns {ns} left behind");
    }

    /// Per-CN, per-boot phase timings from the `TRITON-EVENT` lines.
    fn report(&self) {
        let mut out = format!(
            "netboot {}: {:.0} s; per-phase ms per CN and boot (ready = uptime at ready)\n",
            self.id,
            self.t0.elapsed().as_secs_f64()
        );
        for vm in self.b.vms() {
            out.push_str(&timings(vm.name(), &vm.console.lines()));
        }
        out.push_str(&format!("netboot {}: consoles and logs in {}", self.id, self.artifacts.display()));
        say(&out);
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if !self.finished {
            self.report();
        }
    }
}

/// `  <cn> boot N: modules 812 · network 20 · ... · ready@61234` lines; a
/// boot begins at each `modules` event.
fn timings(name: &str, lines: &[String]) -> String {
    let mut boots: Vec<Vec<String>> = Vec::new();
    for v in lines.iter().filter_map(|l| event_json(l)) {
        let phase = v["phase"].as_str().unwrap_or("?").to_string();
        if phase == "modules" || boots.is_empty() {
            boots.push(Vec::new());
        }
        let ok = if v["ok"] == false { "!" } else { "" };
        let cell = match (v["ms"].as_u64(), v["uptime_ms"].as_u64()) {
            (_, Some(u)) if phase == "ready" || phase == "switch-root" => format!("{phase}{ok}@{u}"),
            (Some(ms), _) => format!("{phase}{ok} {ms}"),
            _ => format!("{phase}{ok}"),
        };
        if let Some(b) = boots.last_mut() {
            b.push(cell);
        }
    }
    boots.iter().enumerate().map(|(i, b)| format!("  {name} boot {}: {}\n", i + 1, b.join(" · "))).collect()
}

/// Whether a `shutdown` event's `pool_export` (triton-pool's JSON report)
/// says the pool was exported.
fn exported(ev: &Value) -> bool {
    let report: Value = ev["pool_export"].as_str().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    report["exported"] == true && report["pool"] == "zones"
}

/// The zones pool as server setup lays it out (legacy mounts for
/// var/opt/config, cores, a swap zvol), with setup marked complete.
fn create_triton_pool(s: &mut Scenario, name: &str) {
    let script = ci::cn::create_pool_commands(&[]);
    for line in &script {
        s.sh_ok(name, line);
    }
}

/// a. A blank CN (one blank disk, no hostname: booter's un-setup form, and
/// booter's default serial ttyb) netboots through iPXE to unsetup and ready,
/// fetched the squashfs over HTTP from booter, answers ping; the namespace
/// is gone afterwards.
#[test]
fn a_blank_cn_netboots_unsetup_and_answers_ping() {
    let cns = "[[cn]]\nmac = \"52:54:00:99:0a:01\"\nip = \"10.99.99.110\"\n";
    let Some(mut s) = Scenario::start("a_blank_cn", "a", cns, |_| {}) else { return };
    let cn = s.cfg.cns[0].clone();
    let name = cn.hostname.clone();
    assert_eq!(name, "52-54-00-99-0a-01");
    s.boot(&name);
    let fetch = s.event(&name, "fetch");
    assert_eq!(fetch["ok"], true, "{fetch}");
    assert_eq!(fetch["proto"], "http", "{fetch}");
    assert!(fetch["url"].as_str().is_some_and(|u| u.starts_with("http://10.99.99.9/os/")), "{fetch}");
    let verify = s.event(&name, "verify");
    assert_eq!(verify["checked"], serde_json::json!(["initrd", "booter"]), "booter's hash module: {verify}");
    let net = s.event(&name, "networking");
    assert_eq!(net["ok"], true, "{net}");
    let pool = s.event(&name, "pool");
    assert_eq!(pool["outcome"], "absent", "{pool}");
    let mode = s.event(&name, "mode");
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    let ready = s.event(&name, "ready");
    assert_eq!(ready["ok"], true, "{ready}");
    s.assert_pings(&name, cn.ip);
    let http = fs::read_to_string(s.artifacts.join("http.log")).expect("http.log");
    for want in ["/bootfs/525400990a01/networking.json 200", "/extra/joysetup/node.config 200", "/initrd 200"] {
        assert!(http.contains(want), "http.log should show {want}:\n{http}");
    }
    let console_log = fs::read_to_string(s.artifacts.join(format!("{name}.console.log"))).expect("console log");
    assert!(console_log.contains("console=ttyS1,115200n8"), "booter's default ttyb → ttyS1");
    s.finish();
}

/// b. A pool created from the console in boot 1 is imported in boots 2-4
/// (setup mode); a file written to /var in boot 2 is still there in boots 3
/// and 4; each reboot is a clean `triton-ctl reboot` that exports the pool
/// and netboots again through iPXE. Boot 5 without the pool's disk:
/// outcome absent, unsetup, reachable.
#[test]
fn b_pool_created_imported_and_var_kept_across_netboots() {
    let cns = "[[cn]]\nhostname = \"cnb\"\nmac = \"52:54:00:99:0b:01\"\nip = \"10.99.99.111\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("b_pool_across_boots", "b", cns, |_| {}) else { return };
    let (n, ip) = ("cnb", s.cn("cnb").ip);

    // Boot 1: blank disk; create the pool as server setup would.
    s.boot(n);
    let pool = s.event(n, "pool");
    assert_eq!(pool["outcome"], "absent", "boot 1: {pool}");
    assert_eq!(s.event(n, "mode")["mode"], "unsetup");
    s.event(n, "ready");
    s.login(n);
    create_triton_pool(&mut s, n);
    s.reboot(n);

    // Boot 2: imported, setup; write a file into /var.
    let pool = s.event(n, "pool");
    assert_eq!(pool["outcome"], "imported", "boot 2: {pool}");
    let mode = s.event(n, "mode");
    assert_eq!(mode["mode"], "setup", "boot 2: {mode}");
    s.event(n, "ready");
    s.assert_pings(n, ip);
    s.login(n);
    let mounts = s.sh_ok(n, "findmnt -rno SOURCE,TARGET -t zfs");
    assert!(mounts.lines().any(|l| l.trim() == "zones/var /var"), "zones/var on /var:\n{mounts}");
    s.sh_ok(n, "echo kept-$((6*7)) > /var/tmp/netboot-kept && sync");

    // Boots 3 and 4: still there.
    for boot in [3, 4] {
        s.reboot(n);
        let pool = s.event(n, "pool");
        assert_eq!(pool["outcome"], "imported", "boot {boot}: {pool}");
        assert_eq!(s.event(n, "mode")["mode"], "setup", "boot {boot}");
        s.event(n, "ready");
        s.login(n);
        let kept = s.sh_ok(n, "cat /var/tmp/netboot-kept");
        assert_eq!(kept.trim(), "kept-42", "boot {boot}: /var content");
    }

    // Boot 5: the pool's disk is gone.
    s.mark(n);
    s.type_line(n, "triton-ctl poweroff");
    let ev = s.event(n, "shutdown");
    assert_eq!((ev["action"].clone(), ev["ok"].clone()), ("poweroff".into(), true.into()), "{ev}");
    assert!(exported(&ev), "poweroff should export the pool: {ev}");
    if s.b.vm_mut(n).expect("vm").wait_exit(Duration::from_secs(180)).is_none() {
        s.fail("QEMU did not exit after poweroff");
    }
    s.b.vm_mut(n).expect("vm").disks.clear();
    s.boot(n);
    let pool = s.event(n, "pool");
    assert_eq!(pool["outcome"], "absent", "boot 5 (no disk): {pool}");
    let mode = s.event(n, "mode");
    assert_eq!(mode["mode"], "unsetup", "boot 5: {mode}");
    s.event(n, "ready");
    s.assert_pings(n, ip);
    s.finish();
}

/// The `ip/prefix` of every vnic in the networking.json booter serves `cn`.
fn served_addresses(s: &Scenario, cn: &Cn) -> BTreeSet<String> {
    let p = s.b.root.dir.join("bootfs").join(cn.mac_plain()).join("networking.json");
    let v: Value = serde_json::from_str(&fs::read_to_string(&p).expect("networking.json")).expect("JSON");
    v["vnics"]
        .as_array()
        .expect("vnics")
        .iter()
        .map(|n| cidr(n["ip"].as_str().expect("ip"), n["netmask"].as_str().expect("netmask")))
        .collect()
}

/// c + e. Two CNs on one admin network boot at the same time with their own
/// networking.json (different admin IPs; one also has an external nic tag
/// on a second NIC and a vnic on it); both reach ready, each networking
/// event has exactly its own file's addresses, both answer ping. Their
/// consoles are on different serial ports (`ttya` → ttyS0, `ttyb` → ttyS1):
/// each capture shows the whole boot, and the CN's other port does not.
#[test]
fn c_two_cns_at_once_own_networking_serial_ttya_and_ttyb() {
    let cns = "[[cn]]\nhostname = \"cna\"\nmac = \"52:54:00:99:0c:01\"\nip = \"10.99.99.121\"\nserial = \"ttya\"\n\
               [[cn]]\nhostname = \"cnb\"\nmac = \"52:54:00:99:0c:02\"\nip = \"10.99.99.122\"\nserial = \"ttyb\"\n\
               nic_tags = { admin = \"52:54:00:99:0c:02\", external = \"52:54:00:99:0c:12\" }\n\
               [[cn.vnics]]\nmac = \"52:54:00:99:0c:22\"\nnic_tag = \"external\"\nip = \"10.88.88.22\"\n\
               netmask = \"255.255.255.0\"\n";
    let Some(mut s) = Scenario::start("c_two_cns_serial_ports", "c", cns, |_| {}) else { return };
    s.boot("cna");
    s.boot("cnb");
    for n in ["cna", "cnb"] {
        let cn = s.cn(n);
        let want = served_addresses(&s, &cn);
        let ev = s.event(n, "networking");
        assert_eq!(ev["ok"], true, "{n}: {ev}");
        let got: BTreeSet<String> = ev["addresses"]
            .as_object()
            .expect("addresses")
            .values()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(got, want, "{n}: networking event addresses vs its own networking.json: {ev}");
        assert!(got.contains(&format!("{}/24", cn.ip)), "{n}: admin address {}: {ev}", cn.ip);
    }
    assert!(served_addresses(&s, &s.cn("cnb")).contains("10.88.88.22/24"));
    for n in ["cna", "cnb"] {
        assert_eq!(s.event(n, "mode")["mode"], "unsetup", "{n}");
        s.event(n, "ready");
    }
    for n in ["cna", "cnb"] {
        s.assert_pings(n, s.cn(n).ip);
    }
    // e: the console each CN's `serial` names carries the boot; the other does not.
    for (n, port, other) in [("cna", "ttyS0", "ttyS1"), ("cnb", "ttyS1", "ttyS0")] {
        let log = fs::read_to_string(s.artifacts.join(format!("{n}.console.log"))).expect("console log");
        assert!(log.contains(&format!("console={port},115200n8")), "{n}: booter's console={port}");
        for phase in ["modules", "fetch", "stage2", "ready"] {
            assert!(
                log.lines().any(|l| l.starts_with('[') && l.contains(&format!("\"phase\":\"{phase}\""))),
                "{n}: the timestamped {port} capture lacks the {phase} event"
            );
        }
        let raw = fs::read_to_string(s.artifacts.join(format!("{n}.{other}.log"))).unwrap_or_default();
        assert!(!raw.contains("TRITON-EVENT"), "{n}: the boot went to {other}, not the console booter named");
    }
    s.finish();
}

/// d1. The squashfs is missing from booter's tftp root (HTTP 404): the
/// fetch fails saying so, stage 1 stops in a rescue shell that answers.
#[test]
fn d1_squashfs_404_rescue_shell() {
    let cns = "[[cn]]\nhostname = \"cn404\"\nmac = \"52:54:00:99:0d:01\"\nip = \"10.99.99.131\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("d1_squashfs_404", "d1", cns, |o| o.qemu.disks = 0) else { return };
    let stamp = s.b.platform.clone();
    fs::remove_file(s.platform_file(&stamp, "filesystem.squashfs")).expect("remove the squashfs");
    s.boot("cn404");
    let ev = s.event_where("cn404", "fetch", true, |_| true);
    assert_eq!(ev["ok"], false, "{ev}");
    assert!(ev["error"].as_str().unwrap_or_default().contains("404"), "the fetch error should say 404: {ev}");
    s.rescue_shell_answers("cn404", "404");
    let http = fs::read_to_string(s.artifacts.join("http.log")).expect("http.log");
    assert!(http.contains("/platform/x86_64/filesystem.squashfs 404"), "{http}");
    s.finish();
}

/// d2. Squashfs hash mismatches, two CNs at once on two installed platforms:
/// booter's `filesystem.squashfs.hash` is wrong (→ "differs from booter's"),
/// and a squashfs replaced by another file whose booter hash agrees (→ the
/// hash pinned in the initrd catches it). Both stop in a rescue shell.
#[test]
fn d2_squashfs_hash_mismatch_rescue_shell() {
    let other = "20000101T000000Z";
    let cns = format!(
        "[[cn]]\nhostname = \"cnhash\"\nmac = \"52:54:00:99:0d:21\"\nip = \"10.99.99.132\"\nserial = \"ttya\"\n\
         [[cn]]\nhostname = \"cnswap\"\nmac = \"52:54:00:99:0d:22\"\nip = \"10.99.99.133\"\nplatform = \"{other}\"\n"
    );
    // The second platform must be installed before the CN using it is added.
    let Some(mut s) = Scenario::start("d2_squashfs_hash_mismatch", "d2", "", |o| o.qemu.disks = 0) else { return };
    let pi = booter_config::cmd::default_pi();
    let copy = tempfile::Builder::new().prefix("netboot-d2-pi-").tempdir_in("/var/tmp").expect("tmp");
    let dir = copy.path().join(format!("platform-{other}"));
    let st = std::process::Command::new("cp")
        .arg("-al")
        .arg(pi.canonicalize().expect("PI"))
        .arg(&dir)
        .status()
        .expect("cp -al");
    assert!(st.success(), "cp -al of the PI");
    assert_eq!(s.b.install_platform(&dir).expect("install the second platform"), other);
    s.cfg = config::parse(&description(&cns), false, "d2").expect("description").validate().expect("valid");
    for cn in s.cfg.cns.clone() {
        s.b.add_cn(cn).expect("add cn");
    }
    let main = s.b.platform.clone();
    replace_file(&s.platform_file(&main, "filesystem.squashfs.hash"), format!("{}\n", "0".repeat(64)).as_bytes());
    // Another file as the squashfs (the kernel: small), with a matching booter hash.
    let vmlinuz = fs::read(s.platform_file(other, "vmlinuz")).expect("vmlinuz");
    replace_file(&s.platform_file(other, "filesystem.squashfs"), &vmlinuz);
    let sha = hex::encode(Sha256::digest(&vmlinuz));
    replace_file(&s.platform_file(other, "filesystem.squashfs.hash"), format!("{sha}\n").as_bytes());
    assert_ne!(
        fs::read(pi.join("x86_64/filesystem.squashfs.hash")).expect("PI hash"),
        format!("{sha}\n").into_bytes(),
        "the built PI must be untouched"
    );
    s.boot("cnhash");
    s.boot("cnswap");
    for (n, says) in [("cnhash", "differs from booter's"), ("cnswap", "sha256 mismatch")] {
        let ev = s.event_where(n, "verify", true, |_| true);
        assert_eq!(ev["ok"], false, "{n}: {ev}");
        assert!(ev["error"].as_str().unwrap_or_default().contains(says), "{n}: verify error should say {says:?}: {ev}");
    }
    for (n, says) in [("cnhash", "differs from booter's"), ("cnswap", "sha256 mismatch")] {
        s.rescue_shell_answers(n, says);
    }
    s.finish();
}

/// d3. `BOOTIF` names a NIC the CN does not have (boot.ipxe edited in the
/// tftp root): stage 1 waits 30 s for the MAC, says which NICs it saw, and
/// stops in a rescue shell.
#[test]
fn d3_bootif_unknown_nic_rescue_shell() {
    let cns = "[[cn]]\nhostname = \"cnbif\"\nmac = \"52:54:00:99:0d:31\"\nip = \"10.99.99.134\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("d3_bootif_unknown_nic", "d3", cns, |o| o.qemu.disks = 0) else { return };
    let cn = s.cn("cnbif");
    let ipxe = s.b.root.dir.join(format!("boot.ipxe.01{}", cn.mac_upper()));
    let text = fs::read_to_string(&ipxe).expect("boot.ipxe");
    assert!(text.contains("BOOTIF=01-52-54-00-99-0d-31 "), "{text}");
    replace_file(&ipxe, text.replace("BOOTIF=01-52-54-00-99-0d-31 ", "BOOTIF=01-52-54-00-99-0d-ff ").as_bytes());
    s.boot("cnbif");
    let ev = s.event_where("cnbif", "network", true, |_| true);
    assert_eq!(ev["ok"], false, "{ev}");
    let err = ev["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("no network interface with MAC 52:54:00:99:0d:ff appeared within 30 s"),
        "network error should name the missing MAC: {ev}"
    );
    assert!(err.contains("52:54:00:99:0d:31"), "and list the NICs it saw: {ev}");
    assert!(ev["ms"].as_u64().unwrap_or(0) >= 30_000, "stage 1 waits 30 s for the NIC: {ev}");
    s.rescue_shell_answers("cnbif", "52:54:00:99:0d:ff");
    s.finish();
}

/// d4. Non-fatal bad inputs in one boot: networking.json whose hash does not
/// match (nothing applied, the boot address kept, reachable), a malformed
/// node.config (a warning per bad line, the rest used) and no disk at all
/// (pool absent, unsetup): the node still reaches ready and answers ping.
#[test]
fn d4_bad_networking_hash_malformed_node_config_no_disk_still_ready() {
    let cns = "[[cn]]\nhostname = \"cnbad\"\nmac = \"52:54:00:99:0d:41\"\nip = \"10.99.99.135\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("d4_bad_inputs_nonfatal", "d4", cns, |o| o.qemu.disks = 0) else { return };
    let cn = s.cn("cnbad");
    let hash = s.b.root.dir.join("bootfs").join(cn.mac_plain()).join("networking.json.hash");
    replace_file(&hash, "0".repeat(40).as_bytes());
    let node_config = s.b.root.dir.join("extra/joysetup/node.config");
    let good = fs::read_to_string(&node_config).expect("node.config");
    let n = good.lines().count();
    // Lines n+1.. are broken three different ways.
    let bad = format!("{good}this line has no equals sign\nbad-key='x'\ndns_domain='unbalanced\n");
    replace_file(&node_config, bad.as_bytes());
    s.boot("cnbad");
    let ev = s.event("cnbad", "networking");
    assert_eq!(ev["ok"], false, "{ev}");
    assert!(ev["error"].as_str().unwrap_or_default().contains("does not match"), "hash error: {ev}");
    let kept: Vec<&str> = ev["kept"].as_array().expect("kept").iter().filter_map(Value::as_str).collect();
    assert!(kept.iter().any(|k| k.ends_with(&format!("={}/24", cn.ip))), "boot address kept: {ev}");
    s.line("cnbad", "networking message", Duration::from_secs(5), |l| {
        l.contains("keeping the boot address") && !l.contains("TRITON-EVENT")
    });
    let lines = s.boot_lines("cnbad");
    for (no, why) in
        [(n + 1, "no '=' in line"), (n + 2, "\"bad-key\" is not a valid key"), (n + 3, "unbalanced quotes")]
    {
        let want = format!("warning: /etc/node.config line {no}: {why}");
        assert!(lines.iter().any(|l| l.contains(&want)), "console should say {want:?}");
    }
    let pool = s.event("cnbad", "pool");
    assert_eq!(pool["outcome"], "absent", "{pool}");
    let mode = s.event("cnbad", "mode");
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    let ready = s.event("cnbad", "ready");
    assert_eq!(ready["ok"], true, "{ready}");
    s.assert_pings("cnbad", cn.ip);
    s.finish();
}

#[test]
fn timings_group_events_by_boot() {
    let lines: Vec<String> = [
        r#"[  1.0] TRITON-EVENT {"phase":"modules","ok":true,"ms":800}"#,
        r#"TRITON-EVENT {"phase":"fetch","ok":false,"ms":31000,"error":"404"}"#,
        "noise",
        r#"TRITON-EVENT {"phase":"modules","ok":true,"ms":700}"#,
        r#"TRITON-EVENT {"phase":"ready","ok":true,"uptime_ms":61000}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        timings("cn1", &lines),
        "  cn1 boot 1: modules 800 · fetch! 31000\n  cn1 boot 2: modules 700 · ready@61000\n"
    );
}
