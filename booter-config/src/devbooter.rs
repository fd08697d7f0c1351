//! A dev booter: booter's DHCP/TFTP/HTTP for Linux CNs, inside a private
//! network namespace, with QEMU CNs netbooting through iPXE.
//!
//! Inside namespace `<netns>`: bridge `<bridge>` with the server IP;
//! dnsmasq (DHCP for the configured MACs only, TFTP of the tftp root; iPXE
//! clients, DHCP option 175, get `boot.ipxe.01<MAC>`); an HTTP file server
//! on port 80 for the same root; one tap per CN enslaved to the bridge,
//! opened by `qemu-system-x86_64` started with `ip netns exec`. Nothing is
//! addressed outside the namespace. Everything is stopped and the namespace
//! deleted by [`DevBooter::stop`] or on drop.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{mac_plain, Cn, Datacenter};
use crate::console::{Console, WaitError};
use crate::layout::{plan_dc, InstallError, LayoutError, TftpRoot};

/// Debian's iPXE option ROM for virtio-net (package ipxe-qemu).
pub const VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/pxe-virtio.rom";

#[derive(Debug, thiserror::Error)]
pub enum DevBooterError {
    #[error("the dev booter needs root (network namespaces, taps): run it with sudo")]
    NotRoot,
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    #[error("starting `{cmd}`: {source} (is it installed? ci/setup.sh installs dnsmasq, qemu-system-x86, ipxe-qemu)")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("HTTP server on {addr} in netns {netns}: {reason}")]
    Http { addr: SocketAddrV4, netns: String, reason: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("no CN named {0:?} was added")]
    UnknownCn(String),
    #[error("CN {cn}: IP {ip} is not in the admin network {net}/{prefix} of the dev booter")]
    OffNetwork { cn: String, ip: Ipv4Addr, net: Ipv4Addr, prefix: u32 },
    #[error("CN {0} is already running")]
    AlreadyRunning(String),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error("the iPXE ROM {0} is missing: install Debian's ipxe-qemu")]
    NoRom(PathBuf),
}

type Result<T, E = DevBooterError> = std::result::Result<T, E>;

/// QEMU settings for every CN.
#[derive(Debug, Clone)]
pub struct QemuOpts {
    pub memory_mib: u32,
    pub cpus: u32,
    /// Size of each CN's persistent raw disk (`<work>/disks/<cn>-d0.img`, serial `triton-d0`).
    pub disk_gib: u64,
    /// Number of disks per CN.
    pub disks: usize,
    pub romfile: PathBuf,
    /// Exit QEMU when the guest reboots (otherwise it netboots again).
    pub no_reboot: bool,
    /// Appended to the QEMU command line.
    pub extra_args: Vec<String>,
}

impl Default for QemuOpts {
    fn default() -> Self {
        QemuOpts {
            memory_mib: 2048,
            cpus: 1,
            disk_gib: 8,
            disks: 1,
            romfile: VIRTIO_ROM.into(),
            no_reboot: false,
            extra_args: Vec::new(),
        }
    }
}

/// Where and how the dev booter runs.
#[derive(Debug, Clone)]
pub struct DevBooterOpts {
    /// Network namespace name (created; deleted at stop; an old one of the same name is replaced).
    pub netns: String,
    pub bridge: String,
    /// Holds `tftpboot/` (the tftp root), `disks/`, dnsmasq's lease file.
    pub work_dir: PathBuf,
    /// Console logs (`<cn>.console.log`), `dnsmasq.log`, `http.log`.
    pub artifacts: PathBuf,
    /// Echo console lines to stderr as `[cn] line`.
    pub echo: bool,
    pub qemu: QemuOpts,
}

impl DevBooterOpts {
    /// Defaults under `work_dir` (artifacts in `work_dir/artifacts`), netns `tbooter-<pid>`.
    pub fn new(work_dir: impl Into<PathBuf>) -> DevBooterOpts {
        let work_dir = work_dir.into();
        DevBooterOpts {
            netns: format!("tbooter-{}", std::process::id()),
            bridge: "br0".into(),
            artifacts: work_dir.join("artifacts"),
            work_dir,
            echo: false,
            qemu: QemuOpts::default(),
        }
    }
}

fn cmd_string(c: &Command) -> String {
    std::iter::once(c.get_program()).chain(c.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// Runs a command to completion; non-zero exit is an error with its stderr.
fn run(c: &mut Command) -> Result<String> {
    let cmd = cmd_string(c);
    let out = c.stdin(Stdio::null()).output().map_err(|source| DevBooterError::Spawn { cmd: cmd.clone(), source })?;
    if !out.status.success() {
        return Err(DevBooterError::Command {
            cmd,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace we created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    deleted: bool,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        if Path::new("/run/netns").join(name).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns { name: name.into(), deleted: false };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip netns exec <ns> program` (to add args and spawn).
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn delete(&mut self) {
        if !self.deleted {
            self.deleted = true;
            let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The HTTP file server (axum + ServeDir) with its socket in the namespace.
#[derive(Debug)]
struct HttpServer {
    rt: Option<tokio::runtime::Runtime>,
}

impl HttpServer {
    fn start(netns: &str, addr: SocketAddrV4, root: &Path, log: File) -> Result<HttpServer> {
        let err = |reason: String| DevBooterError::Http { addr, netns: netns.into(), reason };
        let path = PathBuf::from("/run/netns").join(netns);
        // A socket belongs to the namespace of the thread that creates it:
        // create it on a thread that has joined the namespace.
        let listener = std::thread::spawn(move || -> io::Result<std::net::TcpListener> {
            let f = File::open(&path)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .map_err(|_| err("the binding thread panicked".into()))?
        .map_err(|e| err(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("devbooter-http")
            .enable_all()
            .build()
            .map_err(|e| err(format!("tokio runtime: {e}")))?;
        let log = Arc::new(Mutex::new(log));
        let t0 = Instant::now();
        let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(root)).layer(
            axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    let line = format!("{} {}", req.method(), req.uri());
                    let resp = next.run(req).await;
                    if let Ok(mut f) = log.lock() {
                        let _ = writeln!(f, "[{:9.3}] {line} {}", t0.elapsed().as_secs_f64(), resp.status().as_u16());
                    }
                    resp
                }
            }),
        );
        let listener = {
            let _g = rt.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| err(e.to_string()))?
        };
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HttpServer { rt: Some(rt) })
    }

    fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A CN added to the booter, and its VM when booted.
#[derive(Debug)]
pub struct CnVm {
    pub cn: Cn,
    pub tap: String,
    pub disks: Vec<PathBuf>,
    pub console: Console,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pub boots: u32,
}

impl CnVm {
    pub fn name(&self) -> &str {
        &self.cn.hostname
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Types a line on the serial console.
    pub fn type_line(&mut self, text: &str) -> io::Result<()> {
        let s = self.stdin.as_mut().ok_or_else(|| io::Error::other("the VM is not running"))?;
        s.write_all(format!("{text}\r").as_bytes())?;
        s.flush()
    }

    /// Kills QEMU (the disks stay).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stdin = None;
    }

    /// Waits for QEMU to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(s))) => return Some(s),
                None | Some(Err(_)) => return None,
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        None
    }
}

/// The running dev booter.
#[derive(Debug)]
pub struct DevBooter {
    pub opts: DevBooterOpts,
    pub dc: Datacenter,
    pub root: TftpRoot,
    /// The platform installed from the given PI.
    pub platform: String,
    netns: Netns,
    http: HttpServer,
    dnsmasq: Option<Child>,
    cns: Vec<CnVm>,
    t0: Instant,
}

fn prefix_len(m: Ipv4Addr) -> u32 {
    u32::from(m).leading_ones()
}

fn network(ip: Ipv4Addr, m: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) & u32::from(m))
}

impl DevBooter {
    /// Installs `pi` (tarball or `platform-<STAMP>/` directory) into
    /// `<work>/tftpboot` (kept if already there), writes node.config, creates
    /// the namespace and bridge, and starts the HTTP server and dnsmasq.
    pub fn start(opts: DevBooterOpts, dc: Datacenter, pi: &Path) -> Result<DevBooter> {
        if !nix::unistd::geteuid().is_root() {
            return Err(DevBooterError::NotRoot);
        }
        if !opts.qemu.romfile.is_file() {
            return Err(DevBooterError::NoRom(opts.qemu.romfile.clone()));
        }
        for d in [&opts.work_dir, &opts.artifacts] {
            fs::create_dir_all(d).map_err(|source| DevBooterError::Io { what: "creating", path: d.clone(), source })?;
        }
        let root = TftpRoot::new(opts.work_dir.join("tftpboot"));
        let platform = match root.install_platform(pi) {
            Ok(s) => s,
            Err(InstallError::Exists { stamp, .. }) => stamp,
            Err(e) => return Err(e.into()),
        };
        root.apply(&plan_dc(&dc))?;
        let netns = Netns::create(&opts.netns)?;
        let br = opts.bridge.as_str();
        netns.ip(&["link", "add", br, "type", "bridge"])?;
        let cidr = format!("{}/{}", dc.server_ip, prefix_len(dc.admin_netmask));
        netns.ip(&["addr", "add", &cidr, "dev", br])?;
        netns.ip(&["link", "set", br, "up"])?;
        let http_log = open_log(&opts.artifacts.join("http.log"))?;
        let http = HttpServer::start(&netns.name, SocketAddrV4::new(dc.server_ip, 80), &root.dir, http_log)?;
        let mut b =
            DevBooter { opts, dc, root, platform, netns, http, dnsmasq: None, cns: Vec::new(), t0: Instant::now() };
        b.restart_dnsmasq()?;
        Ok(b)
    }

    pub fn netns(&self) -> &str {
        &self.netns.name
    }

    /// `ip netns exec <ns> <program>`, for tests that poke the admin network.
    pub fn exec(&self, program: &str) -> Command {
        self.netns.exec(program)
    }

    /// The dnsmasq command line for the CNs added so far.
    pub fn dnsmasq_args(&self) -> Vec<String> {
        dnsmasq_args(&self.dc, &self.opts.bridge, &self.root.dir, &self.opts.work_dir, self.cns.iter().map(|c| &c.cn))
    }

    fn restart_dnsmasq(&mut self) -> Result<()> {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        let log = open_log(&self.opts.artifacts.join("dnsmasq.log"))?;
        let mut cmd = self.netns.exec("dnsmasq");
        cmd.args(self.dnsmasq_args()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).process_group(0);
        let s = cmd_string(&cmd);
        let child = cmd.spawn().map_err(|source| DevBooterError::Spawn { cmd: s.clone(), source })?;
        self.dnsmasq = Some(child);
        // dnsmasq fails fast on a bad option or a busy port.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(Ok(Some(st))) = self.dnsmasq.as_mut().map(|c| c.try_wait()) {
            let tail = fs::read_to_string(self.opts.artifacts.join("dnsmasq.log")).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(DevBooterError::Command { cmd: s, status: st.to_string(), stderr: tail.join(" | ") });
        }
        Ok(())
    }

    /// Adds a CN: writes its booter files, creates its tap on the bridge,
    /// creates its disks (kept if present) and restarts dnsmasq with its
    /// DHCP host entry. Boot it with [`DevBooter::boot`].
    pub fn add_cn(&mut self, cn: Cn) -> Result<()> {
        let (net, prefix) = (network(self.dc.server_ip, self.dc.admin_netmask), prefix_len(self.dc.admin_netmask));
        if network(cn.ip, self.dc.admin_netmask) != net {
            return Err(DevBooterError::OffNetwork { cn: cn.hostname.clone(), ip: cn.ip, net, prefix });
        }
        self.root.write_cn(&self.dc, &cn)?;
        let tap = format!("tap{}", self.cns.len());
        self.netns.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.netns.ip(&["link", "set", &tap, "master", &self.opts.bridge, "up"])?;
        let disk_dir = self.opts.work_dir.join("disks");
        fs::create_dir_all(&disk_dir).map_err(|source| DevBooterError::Io {
            what: "creating",
            path: disk_dir.clone(),
            source,
        })?;
        let mut disks = Vec::new();
        for i in 0..self.opts.qemu.disks {
            let p = disk_dir.join(format!("{}-d{i}.img", cn.hostname));
            if !p.exists() {
                let f = File::create(&p).map_err(|source| DevBooterError::Io {
                    what: "creating",
                    path: p.clone(),
                    source,
                })?;
                f.set_len(self.opts.qemu.disk_gib << 30).map_err(|source| DevBooterError::Io {
                    what: "sizing",
                    path: p.clone(),
                    source,
                })?;
            }
            disks.push(p);
        }
        let console = Console::new(&cn.hostname);
        self.cns.push(CnVm { cn, tap, disks, console, child: None, stdin: None, boots: 0 });
        self.restart_dnsmasq()
    }

    /// Rewrites a CN's booter files (e.g. after changing its platform or kernel_args).
    pub fn update_cn(&mut self, cn: Cn) -> Result<()> {
        self.root.write_cn(&self.dc, &cn)?;
        let slot =
            self.cns.iter_mut().find(|c| c.cn.mac == cn.mac).ok_or(DevBooterError::UnknownCn(cn.hostname.clone()))?;
        slot.cn = cn;
        Ok(())
    }

    /// Installs another PI (tarball or directory); returns its stamp.
    pub fn install_platform(&self, pi: &Path) -> Result<String> {
        match self.root.install_platform(pi) {
            Ok(s) | Err(InstallError::Exists { stamp: s, .. }) => Ok(s),
            Err(e) => Err(e.into()),
        }
    }

    /// The QEMU command line of a CN (after `ip netns exec <ns>`).
    pub fn qemu_args(&self, name: &str) -> Result<Vec<String>> {
        let vm = self.cns.iter().find(|c| c.name() == name).ok_or_else(|| DevBooterError::UnknownCn(name.into()))?;
        Ok(qemu_args(&self.opts.qemu, &vm.cn, &vm.tap, &vm.disks, Some(&self.opts.artifacts)))
    }

    /// Starts the CN's QEMU; its console goes to `<artifacts>/<cn>.console.log`
    /// (appended, one header per boot) and to [`CnVm::console`].
    pub fn boot(&mut self, name: &str) -> Result<&mut CnVm> {
        let args = self.qemu_args(name)?;
        let (echo, t0, artifacts) = (self.opts.echo, self.t0, self.opts.artifacts.clone());
        let mut cmd = self.netns.exec("qemu-system-x86_64");
        cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let s = cmd_string(&cmd);
        let vm = self.vm_mut(name)?;
        if vm.is_running() {
            return Err(DevBooterError::AlreadyRunning(name.into()));
        }
        vm.boots += 1;
        let log_path = artifacts.join(format!("{name}.console.log"));
        let mut log = open_log(&log_path)?;
        let _ = writeln!(log, "[{:9.3}] ==== boot {} of {name}: {s}", t0.elapsed().as_secs_f64(), vm.boots);
        let mut child = cmd.spawn().map_err(|source| DevBooterError::Spawn { cmd: s, source })?;
        let log2 = log.try_clone().map_err(|source| DevBooterError::Io { what: "opening", path: log_path, source })?;
        if let Some(out) = child.stdout.take() {
            vm.console.attach(out, "", Some(log), t0, echo);
        }
        if let Some(err) = child.stderr.take() {
            vm.console.attach(err, "qemu: ", Some(log2), t0, echo);
        }
        vm.stdin = child.stdin.take();
        vm.child = Some(child);
        Ok(vm)
    }

    pub fn vm(&self, name: &str) -> Result<&CnVm> {
        self.cns.iter().find(|c| c.name() == name).ok_or_else(|| DevBooterError::UnknownCn(name.into()))
    }

    pub fn vm_mut(&mut self, name: &str) -> Result<&mut CnVm> {
        self.cns.iter_mut().find(|c| c.name() == name).ok_or_else(|| DevBooterError::UnknownCn(name.into()))
    }

    pub fn vms(&self) -> &[CnVm] {
        &self.cns
    }

    pub fn vms_mut(&mut self) -> &mut [CnVm] {
        &mut self.cns
    }

    /// One ICMP echo from inside the namespace (like `ping -c1 -W2`, without
    /// needing ping installed): true when `ip` answers within 2 s.
    pub fn ping(&self, ip: Ipv4Addr) -> bool {
        let path = PathBuf::from("/run/netns").join(&self.netns.name);
        std::thread::spawn(move || icmp_echo(&path, ip, Duration::from_secs(2)).unwrap_or(false))
            .join()
            .unwrap_or(false)
    }

    /// Stops the VMs, dnsmasq and the HTTP server, and deletes the namespace.
    pub fn stop(&mut self) {
        for vm in &mut self.cns {
            vm.kill();
        }
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.http.stop();
        self.netns.delete();
    }
}

impl Drop for DevBooter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Internet checksum (RFC 1071).
fn inet_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ICMP echo request from the namespace at `netns` (this thread
/// joins it) and waits for the matching reply.
fn icmp_echo(netns: &Path, ip: Ipv4Addr, timeout: Duration) -> io::Result<bool> {
    use nix::sys::socket::{recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag};
    use nix::sys::socket::{SockProtocol, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let f = File::open(netns)?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let fd = socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(0, 200_000))?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend(id.to_be_bytes());
    pkt.extend(1u16.to_be_bytes());
    pkt.extend(b"booter-config ping");
    let ck = inet_checksum(&pkt);
    pkt[2..4].copy_from_slice(&ck.to_be_bytes());
    sendto(fd.as_raw_fd(), &pkt, &SockaddrIn::from(SocketAddrV4::new(ip, 0)), MsgFlags::empty())?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        // Raw IPv4 sockets deliver the IP header too.
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if n < ihl + 8 {
            continue;
        }
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        let icmp = &buf[ihl..n];
        if src == ip && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn open_log(p: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(p).map_err(|source| DevBooterError::Io {
        what: "opening",
        path: p.into(),
        source,
    })
}

/// dnsmasq in the namespace: no DNS, DHCP only for the listed MACs
/// (static range), TFTP of `root`; iPXE (option 175) gets the CN's
/// `boot.ipxe.01<MAC>`, anything else `undionly.kpxe` (as booter; not
/// served here: QEMU's NIC ROM already is iPXE).
pub fn dnsmasq_args<'a>(
    dc: &Datacenter,
    bridge: &str,
    root: &Path,
    work: &Path,
    cns: impl Iterator<Item = &'a Cn>,
) -> Vec<String> {
    let net = network(dc.server_ip, dc.admin_netmask);
    let mut a: Vec<String> = vec![
        "--no-daemon".into(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        "--bind-interfaces".into(),
        format!("--interface={bridge}"),
        "--except-interface=lo".into(),
        "--user=root".into(),
        "--pid-file".into(),
        "--log-dhcp".into(),
        "--log-facility=-".into(),
        format!("--dhcp-leasefile={}", work.join("dnsmasq.leases").display()),
        format!("--dhcp-range={net},static,{},12h", dc.admin_netmask),
        "--dhcp-match=set:ipxe,175".into(),
        // No default route from DHCP (dnsmasq would offer itself).
        "--dhcp-option=option:router".into(),
        "--enable-tftp".into(),
        format!("--tftp-root={}", root.display()),
    ];
    for r in dc.resolvers.iter().take(3).collect::<Vec<_>>().chunks(3) {
        let list: Vec<String> = r.iter().map(|x| x.to_string()).collect();
        a.push(format!("--dhcp-option=option:dns-server,{}", list.join(",")));
    }
    for (i, cn) in cns.enumerate() {
        let tag = format!("cn{i}");
        a.push(format!("--dhcp-host={},set:{tag},{},{}", cn.mac, cn.ip, cn.hostname));
        a.push(format!(
            "--dhcp-boot=tag:{tag},tag:ipxe,boot.ipxe.01{},,{}",
            mac_plain(cn.mac).to_ascii_uppercase(),
            dc.server_ip
        ));
    }
    a.push(format!("--dhcp-boot=tag:!ipxe,undionly.kpxe,,{}", dc.server_ip));
    a
}

/// The serial ports a CN's QEMU gets: at least COM1 and COM2 (ttyS0 and
/// ttyS1, like a server), more when its console is ttyc/ttyd. The port its
/// CNAPI `serial` names (booter's `console=ttyS<unit>`) is on stdio: that is
/// the console the dev booter captures and types into. The other ports are
/// written raw to `<other_ports_dir>/<cn>.ttyS<k>.log` when a directory is
/// given, else discarded. `serial = "none"` (booter's `ttyS-1`) leaves COM1
/// on stdio, where nothing but firmware output is expected.
pub fn serial_args(cn: &Cn, other_ports_dir: Option<&Path>) -> Vec<String> {
    let console = usize::try_from(cn.serial.unit()).unwrap_or(0);
    let mut a = Vec::new();
    for k in 0..(console + 1).max(2) {
        let backend = if k == console {
            "stdio".to_string()
        } else {
            match other_ports_dir {
                Some(d) => format!("file:{}", d.join(format!("{}.ttyS{k}.log", cn.hostname)).display()),
                None => "null".to_string(),
            }
        };
        a.extend(["-serial".to_string(), backend]);
    }
    a
}

/// QEMU (TCG) for one CN: iPXE ROM on the admin NIC (tap on the bridge),
/// netboot first, serial ports as [`serial_args`] (the console port on
/// stdio), persistent virtio disks with serials `triton-d<N>`; the CN's
/// other NICs (tag targets, aggregation members, vnics) on isolated user
/// networks without a ROM.
pub fn qemu_args(q: &QemuOpts, cn: &Cn, tap: &str, disks: &[PathBuf], other_ports_dir: Option<&Path>) -> Vec<String> {
    let mut a: Vec<String> = ["-accel", "tcg", "-cpu", "max", "-nodefaults", "-display", "none", "-monitor", "none"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(serial_args(cn, other_ports_dir));
    if q.no_reboot {
        a.push("-no-reboot".into());
    }
    a.extend(["-m".into(), q.memory_mib.to_string(), "-smp".into(), q.cpus.to_string(), "-boot".into(), "n".into()]);
    // A stable SMBIOS UUID per CN (the server UUID), derived from its MAC.
    a.extend(["-uuid".into(), format!("00000000-0000-4000-8000-{}", mac_plain(cn.mac))]);
    a.extend(["-netdev".into(), format!("tap,id=n0,ifname={tap},script=no,downscript=no")]);
    // Debian's pxe-virtio.rom declares 1af4:1041 (modern virtio-net);
    // SeaBIOS only runs a ROM whose PCI IDs match the device, so the admin
    // NIC is a modern-only one (the transitional default is 1af4:1000).
    a.extend([
        "-device".into(),
        format!("virtio-net-pci,disable-legacy=on,netdev=n0,mac={},romfile={}", cn.mac, q.romfile.display()),
    ]);
    for (i, m) in cn.nic_macs().into_iter().skip(1).enumerate() {
        let id = format!("n{}", i + 1);
        a.extend(["-netdev".into(), format!("user,id={id},restrict=on")]);
        a.extend(["-device".into(), format!("virtio-net-pci,netdev={id},mac={m},romfile=")]);
    }
    for (i, d) in disks.iter().enumerate() {
        a.extend(["-drive".into(), format!("file={},if=none,id=d{i},format=raw,cache=unsafe", d.display())]);
        a.extend(["-device".into(), format!("virtio-blk-pci,drive=d{i},serial=triton-d{i}")]);
    }
    a.extend(q.extra_args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dev_default;

    #[test]
    fn dnsmasq_and_qemu_command_lines() {
        let c = dev_default(2).validate().expect("valid");
        let a = dnsmasq_args(&c.dc, "br0", Path::new("/w/tftpboot"), Path::new("/w"), c.cns.iter());
        assert!(a.contains(&"--dhcp-host=52:54:00:99:00:02,set:cn1,10.99.99.102,cn2".to_string()), "{a:?}");
        assert!(a.contains(&"--dhcp-boot=tag:cn0,tag:ipxe,boot.ipxe.01525400990001,,10.99.99.9".to_string()), "{a:?}");
        assert!(a.contains(&"--dhcp-range=10.99.99.0,static,255.255.255.0,12h".to_string()), "{a:?}");
        assert!(a.contains(&"--port=0".to_string()));
        let q = qemu_args(&QemuOpts::default(), &c.cns[0], "tap0", &["/w/disks/cn1-d0.img".into()], None);
        let pos = |x: &str| q.iter().position(|v| v == x).expect(x);
        assert_eq!(q[pos("-boot") + 1], "n");
        assert_eq!(q[pos("-netdev") + 1], "tap,id=n0,ifname=tap0,script=no,downscript=no");
        assert_eq!(
            q[pos("-device") + 1],
            format!("virtio-net-pci,disable-legacy=on,netdev=n0,mac=52:54:00:99:00:01,romfile={VIRTIO_ROM}")
        );
        assert!(q.contains(&"virtio-blk-pci,drive=d0,serial=triton-d0".to_string()));
        // dev_default's CN is ttya: COM1 on stdio, COM2 present too.
        assert_eq!(serial_args(&c.cns[0], None), ["-serial", "stdio", "-serial", "null"]);
    }

    #[test]
    fn the_console_port_is_the_one_on_stdio() {
        let mut cn = dev_default(1).validate().expect("valid").cns.remove(0);
        cn.serial = crate::config::Serial::Ttyb;
        assert_eq!(
            serial_args(&cn, Some(Path::new("/a"))),
            ["-serial", "file:/a/cn1.ttyS0.log", "-serial", "stdio"],
            "booter's default ttyb is COM2"
        );
        cn.serial = crate::config::Serial::Ttyd;
        assert_eq!(
            serial_args(&cn, None),
            ["-serial", "null", "-serial", "null", "-serial", "null", "-serial", "stdio"]
        );
        cn.serial = crate::config::Serial::None;
        assert_eq!(serial_args(&cn, None), ["-serial", "stdio", "-serial", "null"]);
    }

    #[test]
    fn checksum() {
        // An echo request with id 1, seq 1 and no payload.
        assert_eq!(inet_checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }

    #[test]
    fn networks() {
        let m = Ipv4Addr::new(255, 255, 255, 0);
        assert_eq!(prefix_len(m), 24);
        assert_eq!(network(Ipv4Addr::new(10, 99, 99, 9), m), Ipv4Addr::new(10, 99, 99, 0));
    }
}
