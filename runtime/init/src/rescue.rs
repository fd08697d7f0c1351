//! The rescue path: a clear message on the console and a shell, forever.
//! PID 1 never returns from here.

use std::process::Command;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::time::Duration;

use crate::console;
use crate::Stage;

/// The shell for each stage (busybox in the initrd, bash in the real root).
fn shell(stage: Stage) -> Command {
    match stage {
        // setsid + cttyhack give the shell a controlling tty (job control, ^C).
        Stage::Initrd => {
            let mut c = crate::command("/usr/bin/busybox");
            c.args(["setsid", "cttyhack", "sh", "-l"]);
            c
        }
        Stage::Root => {
            let mut c = crate::command("/bin/bash");
            c.arg("-l");
            c
        }
    }
}

/// Reports `reason`, then runs a rescue shell on the console again and again.
pub fn forever(stage: Stage, reason: &str) -> ! {
    console::event("rescue", false, serde_json::json!({ "reason": reason, "stage": format!("{stage:?}") }));
    console::line("");
    console::line("*** Triton boot stopped ***");
    for l in reason.lines() {
        console::line(&format!("*** {l}"));
    }
    console::line("*** Starting a rescue shell on the console. Fix the cause (booter");
    console::line("*** configuration, network, platform image) and reboot with 'reboot -f'.");
    loop {
        match shell(stage).env("PS1", "triton-rescue# ").spawn() {
            Ok(child) => {
                let status = wait_reaping(Pid::from_raw(child.id() as i32));
                console::line(&format!("rescue shell exited ({status}); starting another"));
            }
            Err(e) => console::line(&format!("cannot start the rescue shell: {e}")),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits for `pid` while reaping every other child that exits meanwhile
/// (PID 1 inherits orphans: they must not pile up as zombies).
fn wait_reaping(pid: Pid) -> String {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return format!("exit {code}"),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return format!("signal {sig}"),
            Ok(_) => {}
            Err(Errno::ECHILD) => return "gone".into(),
            Err(Errno::EINTR) => {}
            Err(e) => {
                console::line(&format!("waitpid: {e}"));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
