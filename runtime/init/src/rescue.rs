//! The rescue path: a clear message on the console and a shell, forever.
//! PID 1 never returns from here.

use std::process::Command;
use std::time::Duration;

use crate::console;
use crate::Stage;

/// The shell for each stage (busybox in the initrd, bash in the real root).
fn shell(stage: Stage) -> Command {
    match stage {
        // setsid + cttyhack give the shell a controlling tty (job control, ^C).
        Stage::Initrd => {
            let mut c = Command::new("/usr/bin/busybox");
            c.args(["setsid", "cttyhack", "sh", "-l"]);
            c
        }
        Stage::Root => {
            let mut c = Command::new("/bin/bash");
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
        let status = shell(stage).env("PS1", "triton-rescue# ").status();
        match status {
            Ok(s) => console::line(&format!("rescue shell exited ({s}); starting another")),
            Err(e) => console::line(&format!("cannot start the rescue shell: {e}")),
        }
        reap_all();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reaps any exited children without blocking.
pub fn reap_all() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}
