//! The commands behind the CLI (composition: files, processes, signals).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cli::{BootArgs, Cli, Cmd, LayoutArgs};
use crate::config::{self, ConfigFile};
use crate::console::event_json;
use crate::devbooter::{DevBooter, DevBooterOpts};
use crate::layout::{InstallError, TftpRoot};

/// `$TRITON_PI_DIR`, else the workspace's `out/latest`.
pub fn default_pi() -> PathBuf {
    match std::env::var_os("TRITON_PI_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../out/latest"),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Layout(a) => layout(a),
        Cmd::ExampleConfig { cns } => {
            if cns == 1 {
                print!("{}", config::DEFAULT_TOML);
            } else {
                print!("{}", toml::to_string_pretty(&config::dev_default(cns)).context("serialising")?);
            }
            Ok(())
        }
        Cmd::Boot(a) => boot(a),
    }
}

fn layout(a: LayoutArgs) -> anyhow::Result<()> {
    let cfg = config::load(&a.config)?.validate()?;
    let root = TftpRoot::new(&a.out);
    for pi in &a.pi {
        match root.install_platform(pi) {
            Ok(s) => eprintln!("installed platform {s} from {}", pi.display()),
            Err(InstallError::Exists { stamp, .. }) => eprintln!("platform {stamp} already installed"),
            Err(e) => return Err(e.into()),
        }
    }
    let files = root.write_all(&cfg)?;
    if a.json {
        let v: Vec<_> = files.iter().map(|f| serde_json::json!({"path": f.path, "bytes": f.contents.len()})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for f in &files {
            println!("{}", a.out.join(&f.path).display());
        }
    }
    Ok(())
}

fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        f.store(true, Ordering::SeqCst);
    });
    flag
}

fn boot(a: BootArgs) -> anyhow::Result<()> {
    let file: ConfigFile = match &a.config {
        Some(p) => config::load(p)?,
        None => config::dev_default(a.cns.unwrap_or(1)),
    };
    let cfg = file.validate()?;
    if cfg.cns.is_empty() {
        bail!("the description has no [[cn]]");
    }
    let pi = a.pi.clone().unwrap_or_else(default_pi);
    if !pi.exists() {
        bail!("no PI at {}: build one with `cargo run --release -p image -- build` or pass --pi", pi.display());
    }
    let mut opts = DevBooterOpts::new(&a.work_dir);
    if let Some(d) = &a.artifacts {
        opts.artifacts = d.clone();
    }
    if let Some(n) = &a.netns {
        opts.netns = n.clone();
    }
    opts.echo = !a.quiet;
    opts.qemu.memory_mib = a.memory;
    opts.qemu.no_reboot = a.no_reboot;
    if a.fresh_disks {
        let _ = std::fs::remove_dir_all(a.work_dir.join("disks"));
    }
    let stop = stop_flag();
    let t0 = Instant::now();
    let mut b = DevBooter::start(opts, cfg.dc.clone(), &pi)?;
    eprintln!(
        "dev booter: netns {}, server {}, platform {}, tftp root {}, artifacts {}",
        b.netns(),
        cfg.dc.server_ip,
        b.platform,
        b.root.dir.display(),
        b.opts.artifacts.display()
    );
    for cn in &cfg.cns {
        b.add_cn(cn.clone())?;
    }
    for cn in &cfg.cns {
        b.boot(&cn.hostname)?;
        eprintln!(
            "booting {} ({} {}) — console in {}/{}.console.log",
            cn.hostname,
            cn.mac,
            cn.ip,
            b.opts.artifacts.display(),
            cn.hostname
        );
    }
    let mut ready: Vec<Option<f64>> = vec![None; cfg.cns.len()];
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            eprintln!("stopping (signal)");
            break Ok(());
        }
        for (i, vm) in b.vms().iter().enumerate() {
            if ready[i].is_none()
                && vm.console.lines().iter().any(|l| event_json(l).is_some_and(|v| v["phase"] == "ready"))
            {
                ready[i] = Some(t0.elapsed().as_secs_f64());
                eprintln!("{} is ready after {:.1}s", vm.name(), t0.elapsed().as_secs_f64());
            }
        }
        if a.until_ready && ready.iter().all(Option::is_some) {
            break Ok(());
        }
        if b.vms_mut().iter_mut().all(|v| !v.is_running()) {
            break if a.until_ready { Err(anyhow::anyhow!("every VM exited before ready")) } else { Ok(()) };
        }
        if a.timeout > 0 && t0.elapsed() > Duration::from_secs(a.timeout) {
            break Err(anyhow::anyhow!("timed out after {}s", a.timeout));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    b.stop();
    for (vm, r) in b.vms().iter().zip(&ready) {
        match r {
            Some(t) => eprintln!("{}: ready at {t:.1}s", vm.name()),
            None => eprintln!("{}: not ready", vm.name()),
        }
    }
    result
}
