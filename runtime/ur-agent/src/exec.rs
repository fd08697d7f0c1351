//! Running an execute request: a script (written to a private 0700 temp
//! file, removed afterwards) or an existing file, with its arguments, the
//! environment replaced when the request has one, cwd `/`, stdin
//! `/dev/null`, in its own process group.
//!
//! Limits: stdout and stderr are each kept up to `max_output` bytes (ur's
//! 5 MiB `maxBuffer`); going over, or running past the timeout, kills the
//! whole process group (SIGKILL) and the reply says so at the end of
//! stderr, with a non-zero `exit_status`. After the process exits, output
//! is read for `pipe_grace` more (a background child may hold the pipes;
//! it is left running and the reply says its output was cut).
//!
//! `exit_status`: the exit code; `128 + n` for a process killed by signal
//! `n` (137 for our SIGKILL); 127 when the file does not exist, 126 when it
//! cannot be started; a script's 113 is replied as 0 (ur's reboot request,
//! see [`Outcome::wants_reboot`]).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::reply::ExecuteReply;
use crate::request::{ExecuteRequest, Program};
use crate::REBOOT_EXIT_STATUS;

/// How requests are run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub tmp_dir: PathBuf,
    pub max_output: usize,
    pub default_timeout: Duration,
    /// How long output is still read after the process exited.
    pub pipe_grace: Duration,
}

impl ExecOptions {
    pub fn new(tmp_dir: PathBuf) -> ExecOptions {
        ExecOptions {
            tmp_dir,
            max_output: crate::MAX_OUTPUT,
            default_timeout: crate::DEFAULT_EXEC_TIMEOUT,
            pipe_grace: Duration::from_secs(2),
        }
    }
}

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
    /// It never ran (or could not be waited for); `status` is the reply's
    /// exit status.
    NotRun {
        status: i32,
        reason: String,
    },
}

/// Everything the reply is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ended: Ended,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Streams that went over the limit ("stdout", "stderr").
    pub over_limit: Vec<&'static str>,
    /// Set when the timeout killed it.
    pub timed_out: Option<Duration>,
    /// Output was still being produced by a background process.
    pub pipes_left_open: bool,
    /// The limit in force (for the note).
    pub max_output: usize,
}

impl Outcome {
    fn not_run(status: i32, reason: String, max_output: usize) -> Outcome {
        Outcome {
            ended: Ended::NotRun { status, reason },
            stdout: Vec::new(),
            stderr: Vec::new(),
            over_limit: Vec::new(),
            timed_out: None,
            pipes_left_open: false,
            max_output,
        }
    }

    fn killed_by_us(&self) -> bool {
        !self.over_limit.is_empty() || self.timed_out.is_some()
    }

    /// The status as the process ended (before the 113 mapping).
    pub fn raw_status(&self) -> i32 {
        match &self.ended {
            Ended::Exited(c) => *c,
            Ended::Signaled(s) => 128 + s,
            Ended::NotRun { status, .. } => *status,
        }
    }

    /// The script exited 113 by itself: reboot after the reply is out.
    pub fn wants_reboot(&self) -> bool {
        self.ended == Ended::Exited(REBOOT_EXIT_STATUS) && !self.killed_by_us()
    }

    /// Notes appended to stderr, one per line.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Ended::NotRun { reason, .. } = &self.ended {
            notes.push(format!("ur-agent: {reason}"));
        }
        for s in &self.over_limit {
            notes.push(format!(
                "ur-agent: {s} exceeded the {}-byte limit; output truncated and the process group killed",
                self.max_output
            ));
        }
        if let Some(t) = self.timed_out {
            notes.push(format!("ur-agent: timed out after {}; the process group was killed", human(t)));
        }
        if self.pipes_left_open {
            notes.push(
                "ur-agent: a background process kept stdout/stderr open after the command exited; \
                 later output is not included"
                    .to_string(),
            );
        }
        notes
    }

    /// The reply: 113 → 0 (reboot follows), non-zero when we killed it,
    /// notes at the end of stderr.
    pub fn reply(&self) -> ExecuteReply {
        let mut status = self.raw_status();
        if self.wants_reboot() {
            status = 0;
        }
        if self.killed_by_us() && status == 0 {
            status = 1;
        }
        let mut stderr = String::from_utf8_lossy(&self.stderr).into_owned();
        for n in self.notes() {
            if !stderr.is_empty() && !stderr.ends_with('\n') {
                stderr.push('\n');
            }
            stderr.push_str(&n);
            stderr.push('\n');
        }
        ExecuteReply { exit_status: status, stdout: String::from_utf8_lossy(&self.stdout).into_owned(), stderr }
    }
}

/// `90 s`, `1.5 s`, `250 ms`.
pub fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[derive(Debug, Default)]
struct Capture {
    buf: Vec<u8>,
    done: bool,
}

/// Reads `r` into `cap` up to `limit` bytes; past that, reports `name` on
/// `over` once and reads on, discarding, until EOF (so the writer is killed
/// by our SIGKILL, not by a SIGPIPE racing it).
async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    cap: Arc<Mutex<Capture>>,
    limit: usize,
    name: &'static str,
    over: mpsc::UnboundedSender<&'static str>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut exceeded = false;
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if exceeded {
            continue;
        }
        let Ok(mut c) = cap.lock() else { break };
        let room = limit.saturating_sub(c.buf.len());
        if n > room {
            c.buf.extend_from_slice(&chunk[..room]);
            drop(c);
            exceeded = true;
            let _ = over.send(name);
            continue;
        }
        c.buf.extend_from_slice(&chunk[..n]);
    }
    if let Ok(mut c) = cap.lock() {
        c.done = true;
    }
}

fn take(cap: &Arc<Mutex<Capture>>) -> (Vec<u8>, bool) {
    match cap.lock() {
        Ok(mut c) => (std::mem::take(&mut c.buf), c.done),
        Err(_) => (Vec::new(), true),
    }
}

fn kill_group(pgid: Option<u32>) {
    if let Some(p) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH: the group is already gone.
        let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
    }
}

fn ended(st: io::Result<ExitStatus>) -> Ended {
    match st {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => Ended::Exited(c),
            (None, Some(s)) => Ended::Signaled(s),
            (None, None) => Ended::NotRun { status: 1, reason: format!("unknown exit status {st:?}") },
        },
        Err(e) => Ended::NotRun { status: 1, reason: format!("cannot wait for the process: {e}") },
    }
}

/// Writes a script to a new private file in `dir` (0700).
fn write_script(dir: &Path, text: &str) -> io::Result<tempfile::TempPath> {
    let mut f = tempfile::Builder::new().prefix("ur-").tempfile_in(dir)?;
    io::Write::write_all(&mut f, text.as_bytes())?;
    f.as_file().sync_all()?;
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(f.into_temp_path())
}

/// Spawns; retries a few times on ETXTBSY (another thread's fork may briefly
/// hold the script's write descriptor).
async fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// Runs the request to completion (never panics; every failure is in the
/// outcome).
pub async fn run(req: &ExecuteRequest, opts: &ExecOptions) -> Outcome {
    let (path, script) = match &req.program {
        Program::File(f) => (PathBuf::from(f), None),
        Program::Script(text) => match write_script(&opts.tmp_dir, text) {
            Ok(tp) => (tp.to_path_buf(), Some(tp)),
            Err(e) => {
                return Outcome::not_run(
                    126,
                    format!("cannot write the script to {}: {e}", opts.tmp_dir.display()),
                    opts.max_output,
                )
            }
        },
    };
    let outcome = run_path(&path, req, opts).await;
    if let Some(tp) = script {
        if let Err(e) = tp.close() {
            tracing::warn!(path = %path.display(), "cannot remove the script file: {e}");
        }
    }
    outcome
}

async fn run_path(path: &Path, req: &ExecuteRequest, opts: &ExecOptions) -> Outcome {
    let mut cmd = Command::new(path);
    cmd.args(&req.args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(env) = &req.env {
        cmd.env_clear().envs(env);
    }
    let mut child = match spawn(&mut cmd).await {
        Ok(c) => c,
        Err(e) => {
            let status = if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
            return Outcome::not_run(status, format!("cannot run {}: {e}", path.display()), opts.max_output);
        }
    };
    let pgid = child.id();
    let (over_tx, mut over_rx) = mpsc::unbounded_channel();
    let out_cap = Arc::new(Mutex::new(Capture::default()));
    let err_cap = Arc::new(Mutex::new(Capture::default()));
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(o, out_cap.clone(), opts.max_output, "stdout", over_tx.clone())));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(e, err_cap.clone(), opts.max_output, "stderr", over_tx.clone())));
    }
    drop(over_tx);

    let timeout = req.timeout.unwrap_or(opts.default_timeout);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut over_limit: Vec<&'static str> = Vec::new();
    let mut timed_out = None;
    let mut killed = false;
    let mut over_open = true;
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            which = over_rx.recv(), if over_open => match which {
                Some(which) => {
                    if !over_limit.contains(&which) {
                        over_limit.push(which);
                    }
                    if !killed {
                        kill_group(pgid);
                        killed = true;
                    }
                }
                None => over_open = false,
            },
            _ = &mut deadline, if !killed => {
                kill_group(pgid);
                killed = true;
                timed_out = Some(timeout);
            }
        }
    };
    // The pipes close when every process holding them has exited.
    let grace = tokio::time::sleep(opts.pipe_grace);
    tokio::pin!(grace);
    for p in pumps.iter_mut() {
        tokio::select! {
            _ = p => {}
            _ = &mut grace => break,
        }
    }
    for p in &pumps {
        p.abort();
    }
    while let Ok(which) = over_rx.try_recv() {
        if !over_limit.contains(&which) {
            over_limit.push(which);
        }
    }
    let (stdout, out_done) = take(&out_cap);
    let (stderr, err_done) = take(&err_cap);
    let pipes_left_open =
        !(out_done || over_limit.contains(&"stdout")) || !(err_done || over_limit.contains(&"stderr"));
    Outcome {
        ended: ended(status),
        stdout,
        stderr,
        over_limit,
        timed_out,
        pipes_left_open,
        max_output: opts.max_output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn opts(dir: &Path) -> ExecOptions {
        ExecOptions {
            tmp_dir: dir.to_path_buf(),
            max_output: 64 * 1024,
            default_timeout: Duration::from_secs(20),
            pipe_grace: Duration::from_millis(500),
        }
    }

    fn script(text: &str, args: &[&str], env: Option<&[(&str, &str)]>) -> ExecuteRequest {
        ExecuteRequest {
            program: Program::Script(text.to_string()),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.map(|e| e.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
            timeout: None,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn script_args_env_cwd_and_cleanup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = rt().block_on(run(
            &script(
                "#!/bin/sh\necho \"args=$1,$2\"; echo \"cwd=$(pwd)\"; echo \"env=$(env | sort | tr '\\n' ' ')\"; \
                 echo \"perm=$(stat -c %a \"$0\")\"; echo oops >&2; exit 3\n",
                &["a b", "c"],
                Some(&[("PATH", "/usr/bin:/bin"), ("FOO", "bar")]),
            ),
            &opts(dir.path()),
        ));
        let r = o.reply();
        assert_eq!(r.exit_status, 3);
        assert!(r.stdout.contains("args=a b,c\n"), "{}", r.stdout);
        assert!(r.stdout.contains("cwd=/\n"), "{}", r.stdout);
        assert!(r.stdout.contains("env=FOO=bar PATH=/usr/bin:/bin PWD=/ "), "env replaced: {}", r.stdout);
        assert!(r.stdout.contains("perm=700\n"), "{}", r.stdout);
        assert_eq!(r.stderr, "oops\n");
        assert_eq!(entries(dir.path()), 0, "script removed");
    }

    #[test]
    fn file_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = ExecuteRequest {
            program: Program::File("/bin/echo".into()),
            args: vec!["hello".into()],
            env: None,
            timeout: None,
        };
        let r = rt().block_on(run(&req, &opts(dir.path()))).reply();
        assert_eq!((r.exit_status, r.stdout.as_str(), r.stderr.as_str()), (0, "hello\n", ""));
        let req = ExecuteRequest { program: Program::File("/nonexistent/x".into()), ..req };
        let r = rt().block_on(run(&req, &opts(dir.path()))).reply();
        assert_eq!(r.exit_status, 127);
        assert!(r.stderr.starts_with("ur-agent: cannot run /nonexistent/x: "), "{}", r.stderr);
    }

    #[test]
    fn script_without_interpreter_line_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = rt().block_on(run(&script("echo hi\n", &[], Some(&[])), &opts(dir.path()))).reply();
        // Linux refuses to exec it (ENOEXEC): a clear 126.
        assert_eq!(r.exit_status, 126, "{r:?}");
        assert!(r.stderr.contains("cannot run"), "{}", r.stderr);
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn output_over_the_limit_kills_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = std::time::Instant::now();
        let o = rt().block_on(run(
            &script("#!/bin/sh\nsleep 60 &\nwhile :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done\n", &[], None),
            &opts(dir.path()),
        ));
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(o.over_limit, ["stdout"]);
        assert_eq!(o.stdout.len(), 64 * 1024);
        let r = o.reply();
        assert_eq!(r.exit_status, 137);
        assert!(
            r.stderr.ends_with(
                "ur-agent: stdout exceeded the 65536-byte limit; output truncated and the process group killed\n"
            ),
            "{}",
            r.stderr
        );
        assert!(!o.wants_reboot());
    }

    #[test]
    fn timeout_kills_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut req = script("#!/bin/sh\necho started\nsleep 30 &\nsleep 30\n", &[], None);
        req.timeout = Some(Duration::from_millis(700));
        let t0 = std::time::Instant::now();
        let o = rt().block_on(run(&req, &opts(dir.path())));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let r = o.reply();
        assert_eq!(r.exit_status, 137);
        assert_eq!(r.stdout, "started\n");
        assert!(r.stderr.ends_with("ur-agent: timed out after 700 ms; the process group was killed\n"), "{}", r.stderr);
        assert!(!o.pipes_left_open, "the background sleep was killed too");
    }

    #[test]
    fn exit_113_replies_zero_and_asks_for_reboot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = rt().block_on(run(&script("#!/bin/sh\necho bye\nexit 113\n", &[], None), &opts(dir.path())));
        assert!(o.wants_reboot());
        assert_eq!(o.raw_status(), 113);
        let r = o.reply();
        assert_eq!((r.exit_status, r.stdout.as_str()), (0, "bye\n"));
    }

    #[test]
    fn background_child_holding_the_pipes_does_not_hang_the_reply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = std::time::Instant::now();
        let o = rt()
            .block_on(run(&script("#!/bin/sh\necho done\nsetsid sleep 5 &\nexit 0\n", &[], None), &opts(dir.path())));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        let r = o.reply();
        assert_eq!(r.exit_status, 0);
        assert_eq!(r.stdout, "done\n");
        assert!(o.pipes_left_open);
        assert!(r.stderr.contains("a background process kept stdout/stderr open"), "{}", r.stderr);
    }

    #[test]
    fn signals_map_to_128_plus_n() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = rt().block_on(run(&script("#!/bin/sh\nkill -TERM $$\n", &[], None), &opts(dir.path()))).reply();
        assert_eq!(r.exit_status, 143);
    }

    #[test]
    fn many_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = opts(dir.path());
        let rt = rt();
        let t0 = std::time::Instant::now();
        let outs = rt.block_on(async {
            let mut hs = Vec::new();
            for i in 0..8 {
                let o = o.clone();
                hs.push(tokio::spawn(async move {
                    run(&script(&format!("#!/bin/sh\nsleep 1\necho {i}\n"), &[], None), &o).await
                }));
            }
            let mut outs = Vec::new();
            for h in hs {
                outs.push(h.await.expect("join"));
            }
            outs
        });
        assert!(t0.elapsed() < Duration::from_secs(4), "ran concurrently: {:?}", t0.elapsed());
        for (i, o) in outs.iter().enumerate() {
            assert_eq!(o.reply().stdout, format!("{i}\n"));
        }
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn missing_tmp_dir_is_reported() {
        let r = rt().block_on(run(&script("#!/bin/sh\n", &[], None), &opts(Path::new("/nonexistent/tmp")))).reply();
        assert_eq!(r.exit_status, 126);
        assert!(r.stderr.starts_with("ur-agent: cannot write the script to /nonexistent/tmp: "), "{}", r.stderr);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(3600)), "3600 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
    }
}
