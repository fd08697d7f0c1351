//! The netboot scenario harness shared by the end-to-end suites
//! (`tests/netboot.rs`, `tests/server_setup.rs`): a dev booter with its CNs,
//! console event waits, console login and commands, timings, artifacts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use booter_config::config::{self, Cn, Config};
use booter_config::console::event_json;
use booter_config::{Console, DevBooter, DevBooterOpts};
use serde_json::Value;

use crate::cn::{PASSWORD, SHADOW};
use crate::qemu::strip_ansi;

/// How long any one boot event may take under TCG (generous on purpose).
pub const EVENT: Duration = Duration::from_secs(300);
/// A console command.
pub const CMD: Duration = Duration::from_secs(90);
/// Console lines that fail every scenario.
pub const BAD_LINES: [&str; 4] = ["Kernel panic", "BUG:", "Oops", "Call Trace"];

/// Test output that libtest does not capture (the test command counts the
/// `SKIPPED` lines; the artifacts path and timings are wanted on success too).
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Why this machine cannot run the suite, if it cannot.
pub fn skip_reason(pi: &Path) -> Option<String> {
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
pub fn description(cns: &str) -> String {
    format!(
        "server_ip = \"10.99.99.9\"\nresolvers = [\"10.99.99.9\"]\ndns_domain = \"dev.example\"\n\
         datacenter_name = \"dev-1\"\n{cns}\n[node_config]\nroot_shadow = '{SHADOW}'\n"
    )
}

pub fn seq() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(100);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Removes `path` (a hard link into the built PI, maybe) and writes a new file.
pub fn replace_file(path: &Path, data: &[u8]) {
    let _ = fs::remove_file(path);
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `ip/prefix` for an IPv4 netmask.
pub fn cidr(ip: &str, netmask: &str) -> String {
    let m: Ipv4Addr = netmask.parse().expect("netmask");
    format!("{ip}/{}", u32::from(m).leading_ones())
}

/// One scenario: a dev booter with its CNs, artifacts kept.
pub struct Scenario {
    pub id: String,
    pub b: DevBooter,
    pub cfg: Config,
    pub artifacts: PathBuf,
    /// Console line index where the current boot of each CN began.
    pub from: BTreeMap<String, usize>,
    pub t0: Instant,
    pub finished: bool,
    pub _work: tempfile::TempDir,
}

impl Scenario {
    /// Starts a dev booter for `test` with the `[[cn]]` tables in `cns`
    /// (all added); `tweak` adjusts the options (QEMU disks...). `None`
    /// (after printing `SKIPPED netboot: ...`) when the machine cannot run it.
    pub fn start(test: &str, id: &str, cns: &str, tweak: impl FnOnce(&mut DevBooterOpts)) -> Option<Scenario> {
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

    pub fn cn(&self, name: &str) -> Cn {
        self.cfg.cns.iter().find(|c| c.hostname == name).cloned().unwrap_or_else(|| panic!("no CN {name}"))
    }

    /// `<tftp root>/os/<stamp>/platform/x86_64/<file>` of the installed PI.
    pub fn platform_file(&self, stamp: &str, file: &str) -> PathBuf {
        self.b.root.dir.join("os").join(stamp).join("platform/x86_64").join(file)
    }

    pub fn console(&self, name: &str) -> Console {
        self.b.vm(name).expect("vm").console.clone()
    }

    /// Marks where the next boot's console output begins (before a reboot).
    pub fn mark(&mut self, name: &str) {
        let n = self.console(name).lines().len();
        self.from.insert(name.into(), n);
    }

    /// Starts the CN's QEMU.
    pub fn boot(&mut self, name: &str) {
        self.mark(name);
        self.b.boot(name).unwrap_or_else(|e| panic!("booting {name}: {e}"));
    }

    pub fn fail(&self, msg: &str) -> ! {
        panic!("{}: {msg}\nconsoles and logs: {}", self.id, self.artifacts.display())
    }

    /// Waits (this boot) for the `phase` event satisfying `pred`. Stops
    /// early on a kernel panic/oops line, and on a `rescue` event unless
    /// `rescue_ok`.
    pub fn event_where(&self, name: &str, phase: &str, rescue_ok: bool, pred: impl Fn(&Value) -> bool) -> Value {
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

    pub fn event(&self, name: &str, phase: &str) -> Value {
        self.event_where(name, phase, false, |_| true)
    }

    /// Waits (this boot) for a console line.
    pub fn line(&self, name: &str, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let from = self.from.get(name).copied().unwrap_or(0);
        self.console(name).wait_line_from(from, what, timeout, pred).unwrap_or_else(|e| self.fail(&e.to_string())).1
    }

    /// The lines of this boot so far.
    pub fn boot_lines(&self, name: &str) -> Vec<String> {
        let from = self.from.get(name).copied().unwrap_or(0);
        self.console(name).lines().split_off(from)
    }

    pub fn type_line(&mut self, name: &str, text: &str) {
        self.b.vm_mut(name).expect("vm").type_line(text).unwrap_or_else(|e| panic!("typing on {name}: {e}"));
    }

    /// Logs in as root on the console (password from node.config's
    /// `root_shadow`), retrying while the getty may not be up yet.
    pub fn login(&mut self, name: &str) {
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
    pub fn sh_ok(&mut self, name: &str, cmd: &str) -> String {
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
    pub fn rescue_shell_answers(&mut self, name: &str, says: &str) {
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
    pub fn ping(&self, ip: Ipv4Addr) -> bool {
        (0..15).any(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_secs(2));
            }
            self.b.ping(ip)
        })
    }

    pub fn assert_pings(&self, name: &str, ip: Ipv4Addr) {
        if !self.ping(ip) {
            self.fail(&format!("{name} ({ip}) does not answer ping from the admin network"));
        }
    }

    /// Reboots through `triton-ctl reboot` (typed in the logged-in shell):
    /// the shutdown event must show the pool exported; QEMU keeps running
    /// and the CN netboots again through iPXE.
    pub fn reboot(&mut self, name: &str) {
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
    pub fn finish(mut self) {
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
    pub fn report(&self) {
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
pub fn timings(name: &str, lines: &[String]) -> String {
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
pub fn exported(ev: &Value) -> bool {
    let report: Value = ev["pool_export"].as_str().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    report["exported"] == true && report["pool"] == "zones"
}
