//! QEMU (TCG) VMs with the serial console on a pipe: every line is kept,
//! tests wait for patterns and type commands.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::platform::Platform;

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub mac: String,
    /// QEMU NIC model, e.g. `virtio-net-pci` or `e1000`.
    pub nic_model: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// SMBIOS system UUID (`-uuid`), as firmware reports it.
    pub uuid: Option<String>,
    /// Raw disk images, attached as virtio-blk disks with serials
    /// `triton-d0`, `triton-d1`, ... (`/dev/disk/by-id/virtio-triton-d0`).
    pub disks: Vec<PathBuf>,
    /// More NICs (MAC, QEMU model), each on its own isolated user network.
    pub extra_nics: Vec<(String, String)>,
    /// Directory QEMU's user network serves over TFTP at 10.0.2.2.
    pub tftp_root: Option<PathBuf>,
}

impl VmSpec {
    /// A CN booted the way booter's kernel line does it (`BOOTIF=`, `ip=`,
    /// `fetch=`), on QEMU's user network (the guest is 10.0.2.15/24, the
    /// host 10.0.2.2), with 2 GiB and one vCPU.
    pub fn netboot(p: &Platform, mac: &str, nic_model: &str, fetch_url: &str) -> VmSpec {
        VmSpec {
            kernel: p.x86("vmlinuz"),
            initrd: p.x86("initrd"),
            append: format!(
                "console=ttyS0,115200n8 panic=0 BOOTIF=01-{} ip=10.0.2.15:::255.255.255.0:: fetch={fetch_url}",
                mac.replace(':', "-")
            ),
            mac: mac.into(),
            nic_model: nic_model.into(),
            memory_mib: 2048,
            cpus: 1,
            uuid: None,
            disks: Vec::new(),
            extra_nics: Vec::new(),
            tftp_root: None,
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["-m".into(), self.memory_mib.to_string(), "-smp".into(), self.cpus.to_string()]);
        a.extend([
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
        ]);
        a.extend(["-append".into(), self.append.clone()]);
        if let Some(u) = &self.uuid {
            a.extend(["-uuid".into(), u.clone()]);
        }
        let tftp = self.tftp_root.as_ref().map(|d| format!(",tftp={}", d.display())).unwrap_or_default();
        a.extend(["-netdev".into(), format!("user,id=n0{tftp}")]);
        a.extend(["-device".into(), format!("{},netdev=n0,mac={}", self.nic_model, self.mac)]);
        for (i, (mac, model)) in self.extra_nics.iter().enumerate() {
            let id = format!("n{}", i + 1);
            a.extend(["-netdev".into(), format!("user,id={id},restrict=on")]);
            a.extend(["-device".into(), format!("{model},netdev={id},mac={mac}")]);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            a.extend(["-drive".into(), format!("file={},if=none,id=d{i},format=raw,cache=unsafe", disk.display())]);
            a.extend(["-device".into(), format!("virtio-blk-pci,drive=d{i},serial=triton-d{i}")]);
        }
        a
    }
}

#[derive(Debug, Default)]
struct Console {
    lines: Vec<String>,
    closed: bool,
}

/// A running VM; killed when dropped.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<(Mutex<Console>, Condvar)>,
    pub name: String,
}

impl Vm {
    pub fn start(name: &str, spec: &VmSpec) -> anyhow::Result<Vm> {
        let mut child = Command::new("qemu-system-x86_64")
            .args(spec.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (Debian package qemu-system-x86; run ci/setup.sh)")?;
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        for (stream, prefix) in [
            (child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), ""),
            (child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), "qemu: "),
        ] {
            let Some(stream) = stream else { continue };
            let c = console.clone();
            let name = name.to_string();
            let echo = std::env::var_os("TRITON_CI_ECHO").is_some();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line =
                                format!("{prefix}{}", String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']));
                            if echo {
                                eprintln!("[{name}] {line}");
                            }
                            if let Ok(mut g) = c.0.lock() {
                                g.lines.push(line);
                            }
                            c.1.notify_all();
                        }
                    }
                }
                if let Ok(mut g) = c.0.lock() {
                    g.closed = true;
                }
                c.1.notify_all();
            });
        }
        let stdin = child.stdin.take();
        Ok(Vm { child, stdin, console, name: name.to_string() })
    }

    /// All console lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.console.0.lock().map(|g| g.lines.clone()).unwrap_or_default()
    }

    fn tail(&self, n: usize) -> String {
        let l = self.lines();
        l[l.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for a console line (from line `from` on) satisfying `pred`.
    pub fn wait_line_from(
        &self,
        from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.console;
        let mut g = m.lock().map_err(|_| anyhow::anyhow!("console lock poisoned"))?;
        loop {
            if let Some((i, l)) = g.lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return Ok((i, l.clone()));
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                let why = if g.closed { "QEMU exited" } else { "timed out" };
                drop(g);
                bail!("{}: {why} waiting for {what}; last console lines:\n{}", self.name, self.tail(60));
            }
            g = cv.wait_timeout(g, deadline - now).map_err(|_| anyhow::anyhow!("console lock poisoned"))?.0;
        }
    }

    pub fn wait_line(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        self.wait_line_from(0, what, timeout, pred).map(|(_, l)| l)
    }

    /// Waits for the `TRITON-EVENT` of `phase` and returns its JSON.
    pub fn wait_event(&self, phase: &str, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let needle = format!("\"phase\":\"{phase}\"");
        let line = self.wait_line(&format!("TRITON-EVENT {phase}"), timeout, |l| {
            l.contains("TRITON-EVENT {") && l.contains(&needle)
        })?;
        let json = line.split_once("TRITON-EVENT ").map(|(_, j)| j).unwrap_or_default();
        serde_json::from_str(json).with_context(|| format!("parsing event line {line:?}"))
    }

    /// Types a line on the serial console.
    pub fn type_line(&mut self, text: &str) -> anyhow::Result<()> {
        let s = self.stdin.as_mut().context("console stdin closed")?;
        s.write_all(format!("{text}\r").as_bytes()).context("writing to the console")?;
        s.flush().context("flushing the console")
    }

    /// Logs in as root on the console (getty) with `password`, retrying
    /// while the prompt may not be there yet, and quiets kernel messages.
    pub fn login(&mut self, password: &str) -> anyhow::Result<()> {
        for attempt in 0..4 {
            std::thread::sleep(Duration::from_secs(4));
            self.type_line("root")?;
            std::thread::sleep(Duration::from_secs(3));
            self.type_line(password)?;
            std::thread::sleep(Duration::from_secs(3));
            self.type_line(&format!("dmesg -n 1; stty -echo; echo LOGGED$((40+{attempt}))IN"))?;
            let want = format!("LOGGED{}IN", 40 + attempt);
            if self.wait_line("login", Duration::from_secs(20), |l| l.contains(&want)).is_ok() {
                return Ok(());
            }
        }
        bail!("{}: console login failed; last lines:\n{}", self.name, self.tail(40))
    }

    /// Runs `cmd` in the logged-in console shell and returns its output
    /// lines and exit status. Markers are computed by the shell, so the
    /// echo of the typed line never matches them.
    pub fn sh(&mut self, cmd: &str, timeout: Duration) -> anyhow::Result<(Vec<String>, i32)> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let from = self.lines().len();
        self.type_line(&format!("echo B$(({n}+0))B; {cmd}; echo E$(({n}+0))E=$?"))?;
        let (start, _) = self.wait_line_from(from, "command start", timeout, |l| l.trim() == format!("B{n}B"))?;
        let end_tag = format!("E{n}E=");
        let (end, line) =
            self.wait_line_from(start, &format!("end of `{cmd}`"), timeout, |l| l.trim().starts_with(&end_tag))?;
        let status = line.trim().trim_start_matches(&end_tag).parse().unwrap_or(-1);
        let lines = self.lines();
        Ok((lines[start + 1..end].iter().map(|l| strip_ansi(l)).collect(), status))
    }

    /// [`Vm::sh`] that must exit 0; returns the output joined by newlines.
    pub fn sh_ok(&mut self, cmd: &str, timeout: Duration) -> anyhow::Result<String> {
        let (out, status) = self.sh(cmd, timeout)?;
        if status != 0 {
            bail!("{}: `{cmd}` exited {status}:\n{}", self.name, out.join("\n"));
        }
        Ok(out.join("\n"))
    }

    /// Waits for QEMU to exit (the guest powered off or rebooted with
    /// `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().context("waiting for qemu")? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                bail!("{}: QEMU still running after {timeout:?}; last lines:\n{}", self.name, self.tail(40));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether any console line matches.
    pub fn saw(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.lines().iter().any(|l| pred(l))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `line` without ANSI escape sequences (colours from `ip`, `ls`...).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte.
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(super::strip_ansi("2: eth0 inet \u{1b}[35m10.0.2.15\u{1b}[0m/24"), "2: eth0 inet 10.0.2.15/24");
        assert_eq!(super::strip_ansi("plain"), "plain");
    }

    use super::*;

    #[test]
    fn qemu_args_carry_the_spec() {
        let s = VmSpec {
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: "console=ttyS0 a=b".into(),
            mac: "52:54:00:00:00:01".into(),
            nic_model: "e1000".into(),
            memory_mib: 2048,
            cpus: 2,
            uuid: None,
            disks: vec!["/d/zones.img".into()],
            extra_nics: vec![("52:54:00:00:00:02".into(), "e1000".into())],
            tftp_root: None,
        };
        let a = s.args();
        let pos = |x: &str| a.iter().position(|v| v == x).expect(x);
        assert_eq!(a[pos("-append") + 1], "console=ttyS0 a=b");
        assert_eq!(a[pos("-accel") + 1], "tcg");
        assert_eq!(a[pos("-device") + 1], "e1000,netdev=n0,mac=52:54:00:00:00:01");
        assert_eq!(a[pos("-m") + 1], "2048");
        assert!(a.contains(&"virtio-blk-pci,drive=d0,serial=triton-d0".to_string()), "{a:?}");
        assert!(a.iter().any(|v| v.starts_with("file=/d/zones.img,")), "{a:?}");
        assert!(a.contains(&"e1000,netdev=n1,mac=52:54:00:00:00:02".to_string()), "{a:?}");
    }
}
