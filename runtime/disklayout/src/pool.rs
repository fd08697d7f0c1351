//! mkzpool: validate a layout JSON and create the pool from it.
//!
//! The input is what `disklayout` prints (SmartOS's shape): `vdevs` (groups with `type` and
//! `devices`, or bare disk objects), optional `spares`, `logs` and `cache`; each disk an object
//! with at least a `name`. Everything is checked before any command runs, so a bad file never
//! touches a disk.
//!
//! Disks are passed to `zpool create` as `/dev/<name>`. Stable `/dev/disk/by-id` paths are not
//! needed: the pool is imported at boot by scanning the devices' labels, so kernel names that
//! change between boots do not matter.
//!
//! On top of SmartOS's `zpool create` (which sets no properties) the pool's root dataset gets
//! the Linux-only [`DATASET_PROPERTIES`]; everything below it inherits them. The mountpoint is
//! the default `/<pool>` (`/zones`), and [`create`] makes sure it is mounted there.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::layout::VdevType;

/// `-O` properties of the pool's root dataset. Linux stores extended attributes in hidden
/// directories unless `xattr=sa` (slow for containers, whose images are full of xattrs and
/// file capabilities), and has ACLs off unless `acltype=posix` (systemd and container images
/// expect POSIX ACLs). illumos needs neither.
pub const DATASET_PROPERTIES: [(&str, &str); 2] = [("xattr", "sa"), ("acltype", "posix")];

/// A validated layout: disk names per role, ready for `zpool create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub vdevs: Vec<VdevSpec>,
    pub spares: Vec<String>,
    pub logs: Vec<String>,
    pub cache: Vec<String>,
}

/// One top-level vdev; `kind` is `None` for a plain disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdevSpec {
    pub kind: Option<VdevType>,
    pub devices: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("not valid JSON ({0}); regenerate it with `disklayout > FILE` and read disklayout's error output")]
    Json(String),
    #[error("expected a JSON object with a \"vdevs\" array, as disklayout prints")]
    NotObject,
    #[error("no \"vdevs\" (or an empty list): nothing to build a pool from; regenerate it with disklayout")]
    NoVdevs,
    #[error("{at}: {problem}")]
    Field { at: String, problem: String },
    #[error("{at}: unknown vdev type {kind:?}; expected mirror, raidz, raidz2 or raidz3")]
    UnknownType { at: String, kind: String },
    #[error("{at}: a {kind} needs at least {need} devices, found {found}")]
    TooFewDevices { at: String, kind: &'static str, need: usize, found: usize },
    #[error("{at}: {name:?} is not a disk name such as sda or nvme0n1")]
    BadName { at: String, name: String },
    #[error("disk {0} appears more than once; each disk may have one role only")]
    Duplicate(String),
    #[error(
        "disk {name} is not present on this node (no {path}); the layout was made for other disks, \
         run disklayout again here"
    )]
    Missing { name: String, path: PathBuf },
}

fn field(at: impl Into<String>, problem: &str) -> SpecError {
    SpecError::Field { at: at.into(), problem: problem.to_owned() }
}

impl PoolSpec {
    /// Parses and validates layout JSON (pure; see [`PoolSpec::check_present`] for the disks).
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let v: Value = serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
        let obj = v.as_object().ok_or(SpecError::NotObject)?;
        let vdevs = match obj.get("vdevs") {
            None | Some(Value::Null) => return Err(SpecError::NoVdevs),
            Some(Value::Array(a)) if a.is_empty() => return Err(SpecError::NoVdevs),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(field("vdevs", "must be an array")),
        };
        let vdevs = vdevs.iter().enumerate().map(|(i, v)| vdev(&format!("vdevs[{i}]"), v)).collect::<Result<_, _>>()?;
        let role = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().enumerate().map(|(i, d)| disk_name(&format!("{key}[{i}]"), d)).collect(),
            Some(_) => Err(field(key, "must be an array of disks")),
        };
        let spec = PoolSpec { vdevs, spares: role("spares")?, logs: role("logs")?, cache: role("cache")? };
        let mut seen = HashSet::new();
        if let Some(dup) = spec.disks().find(|d| !seen.insert(*d)) {
            return Err(SpecError::Duplicate(dup.to_owned()));
        }
        Ok(spec)
    }

    /// Every disk of the layout, in any role.
    pub fn disks(&self) -> impl Iterator<Item = &str> {
        self.vdevs
            .iter()
            .flat_map(|v| &v.devices)
            .chain(&self.spares)
            .chain(&self.logs)
            .chain(&self.cache)
            .map(String::as_str)
    }

    /// Checks that each disk exists as a whole disk, `<sys_block>/<name>` (`/sys/block`).
    pub fn check_present(&self, sys_block: &Path) -> Result<(), SpecError> {
        for name in self.disks() {
            let path = sys_block.join(name);
            if !path.exists() {
                return Err(SpecError::Missing { name: name.to_owned(), path });
            }
        }
        Ok(())
    }
}

fn vdev(at: &str, v: &Value) -> Result<VdevSpec, SpecError> {
    let obj = v.as_object().ok_or_else(|| field(at, "must be an object"))?;
    match (obj.get("type"), obj.get("devices")) {
        // A bare disk (the single layout).
        (None, None) => Ok(VdevSpec { kind: None, devices: vec![disk_name(at, v)?] }),
        (Some(t), Some(Value::Array(devs))) => {
            let t = t.as_str().ok_or_else(|| field(format!("{at}.type"), "must be a string"))?;
            let kind =
                VdevType::parse(t).ok_or_else(|| SpecError::UnknownType { at: at.to_owned(), kind: t.to_owned() })?;
            let devices = devs
                .iter()
                .enumerate()
                .map(|(i, d)| disk_name(&format!("{at}.devices[{i}]"), d))
                .collect::<Result<Vec<_>, _>>()?;
            if devices.len() < kind.min_devices() {
                let (need, found) = (kind.min_devices(), devices.len());
                return Err(SpecError::TooFewDevices { at: at.to_owned(), kind: kind.as_str(), need, found });
            }
            Ok(VdevSpec { kind: Some(kind), devices })
        }
        (Some(_), _) => Err(field(at, "has a \"type\" but no \"devices\" array")),
        (None, Some(_)) => Err(field(at, "has \"devices\" but no \"type\"")),
    }
}

/// A disk object's `name`, without `/dev/`, restricted to kernel-name characters (so it can
/// never be read as a `zpool` option).
fn disk_name(at: &str, v: &Value) -> Result<String, SpecError> {
    let name = v
        .get("name")
        .ok_or_else(|| field(at, "has no \"name\""))?
        .as_str()
        .ok_or_else(|| field(format!("{at}.name"), "must be a string"))?;
    let short = name.strip_prefix("/dev/").unwrap_or(name);
    let ok = short.starts_with(|c: char| c.is_ascii_alphanumeric())
        && short.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
    if !ok {
        return Err(SpecError::BadName { at: at.to_owned(), name: name.to_owned() });
    }
    Ok(short.to_owned())
}

/// Checks a pool name against ZFS's rules, so `zpool` is never handed an option or a reserved
/// word.
pub fn check_pool_name(pool: &str) -> Result<(), String> {
    let reserved = ["mirror", "raidz", "draid", "spare"].iter().any(|r| pool.starts_with(r))
        || matches!(pool, "log" | "cache" | "special" | "dedup");
    if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Err("it must start with a letter".to_owned())
    } else if !pool.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)) {
        Err("it may contain only letters, digits, '_', '-', '.' and ':'".to_owned())
    } else if reserved {
        Err("it is reserved by ZFS".to_owned())
    } else {
        Ok(())
    }
}

/// `zpool create` arguments (after the program name).
pub fn create_args(pool: &str, spec: &PoolSpec, force: bool) -> Vec<String> {
    let mut args = vec!["create".to_owned()];
    if force {
        args.push("-f".to_owned());
    }
    for (k, v) in DATASET_PROPERTIES {
        args.extend(["-O".to_owned(), format!("{k}={v}")]);
    }
    args.push(pool.to_owned());
    let dev = |name: &String| format!("/dev/{name}");
    for v in &spec.vdevs {
        args.extend(v.kind.map(|k| k.as_str().to_owned()));
        args.extend(v.devices.iter().map(dev));
    }
    for (word, disks) in [("spare", &spec.spares), ("log", &spec.logs), ("cache", &spec.cache)] {
        if !disks.is_empty() {
            args.push(word.to_owned());
            args.extend(disks.iter().map(dev));
        }
    }
    args
}

/// What a finished command reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs external commands: the OS seam of mkzpool.
pub trait Runner {
    fn run(&self, program: &Path, args: &[String]) -> io::Result<CmdOutput>;
}

/// Runs commands with `std::process`, capturing their output.
#[derive(Debug, Default)]
pub struct HostRunner;

impl Runner for HostRunner {
    fn run(&self, program: &Path, args: &[String]) -> io::Result<CmdOutput> {
        let out = std::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).output()?;
        Ok(CmdOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A command line for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine(pub PathBuf, pub Vec<String>);

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())?;
        self.1.iter().try_for_each(|a| write!(f, " {a}"))
    }
}

/// The request `mkzpool` was given.
#[derive(Debug, Clone)]
pub struct Request {
    pub pool: String,
    pub layout: PathBuf,
    pub force: bool,
    pub encrypt: bool,
    pub bootable: bool,
}

/// Where things are: the filesystem root (for `/sys/block`) and the ZFS tools.
#[derive(Debug, Clone)]
pub struct Env {
    pub root: PathBuf,
    pub zpool: PathBuf,
    pub zfs: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum MkzpoolError {
    #[error(
        "bootable pools (-B) are not supported on Linux: OpenZFS's zpool create has no -B (EFI \
         system partition) and this platform does not boot from the pool; retry without -B \
         (joysetup.sh does so by itself)"
    )]
    Bootable,
    #[error(
        "pool encryption (-e) is not supported on Linux compute nodes: SmartOS creates encrypted \
         pools with kbmadm and keys held by KBMAPI, which this platform lacks; set \
         encryption_enabled=false for this server and run setup again"
    )]
    Encryption,
    #[error("invalid pool name {pool:?}: {reason}")]
    PoolName { pool: String, reason: String },
    #[error("cannot read the layout {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("layout {path}: {source}")]
    Spec { path: PathBuf, source: SpecError },
    #[error(
        "cannot run {command}: {source} (is zfsutils-linux installed? MKZPOOL_ZPOOL/MKZPOOL_ZFS override the paths)"
    )]
    Spawn { command: CommandLine, source: io::Error },
    #[error("cannot write the system pool marker {path}: {source} (the pool was created; touch it by hand)")]
    Marker {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: CommandLine, status: String, stderr: String },
}

/// What [`create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub commands: Vec<CommandLine>,
}

/// Validates everything, then creates the pool and makes sure its root dataset is mounted.
pub fn create(req: &Request, env: &Env, runner: &dyn Runner) -> Result<Created, MkzpoolError> {
    if req.bootable {
        return Err(MkzpoolError::Bootable);
    }
    if req.encrypt {
        return Err(MkzpoolError::Encryption);
    }
    check_pool_name(&req.pool).map_err(|reason| MkzpoolError::PoolName { pool: req.pool.clone(), reason })?;
    let text = std::fs::read_to_string(&req.layout)
        .map_err(|source| MkzpoolError::Read { path: req.layout.clone(), source })?;
    let spec_err = |source| MkzpoolError::Spec { path: req.layout.clone(), source };
    let spec = PoolSpec::parse(&text).map_err(spec_err)?;
    spec.check_present(&env.root.join("sys/block")).map_err(spec_err)?;

    let mut done = Vec::new();
    let create = CommandLine(env.zpool.clone(), create_args(&req.pool, &spec, req.force));
    run_ok(runner, &create)?;
    done.push(create);

    // zpool create mounts the root dataset; if that did not happen, mount it now.
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).chain([req.pool.clone()]).collect::<Vec<_>>();
    let mounted = CommandLine(env.zfs.clone(), args(&["get", "-H", "-o", "value", "mounted"]));
    let answer = run_ok(runner, &mounted)?;
    done.push(mounted);
    if answer.stdout.trim() != "yes" {
        let mount = CommandLine(env.zfs.clone(), args(&["mount"]));
        run_ok(runner, &mount)?;
        done.push(mount);
    }
    // The system pool marker Triton's tools look for (one system pool).
    let where_ = CommandLine(env.zfs.clone(), args(&["get", "-H", "-o", "value", "mountpoint"]));
    let mountpoint = run_ok(runner, &where_)?.stdout.trim().to_owned();
    done.push(where_);
    let dir = if mountpoint.starts_with('/') { mountpoint } else { format!("/{}", req.pool) };
    let marker = env.root.join(dir.trim_start_matches('/')).join(SYSTEM_POOL_MARKER);
    std::fs::write(&marker, b"").map_err(|source| MkzpoolError::Marker { path: marker.clone(), source })?;
    Ok(Created { commands: done })
}

/// Marks the system pool (created in its root dataset's mountpoint).
pub const SYSTEM_POOL_MARKER: &str = ".system_pool";

fn run_ok(runner: &dyn Runner, cmd: &CommandLine) -> Result<CmdOutput, MkzpoolError> {
    let out = runner.run(&cmd.0, &cmd.1).map_err(|source| MkzpoolError::Spawn { command: cmd.clone(), source })?;
    if out.code == Some(0) {
        return Ok(out);
    }
    let status = out.code.map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
    Err(MkzpoolError::Failed { command: cmd.clone(), status, stderr: out.stderr.trim().to_owned() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::cell::RefCell;
    use std::fs;

    use super::*;
    use crate::disk::Disk;
    use crate::layout::{plan, LayoutKind, Options};

    const MIRROR: &str = r#"{
        "vdevs": [ { "type": "mirror", "devices": [
            { "name": "sda", "vid": "ATA", "pid": "X", "size": "1000204886016", "solid_state": false },
            { "name": "sdb", "size": 1000204886016 } ] } ],
        "capacity": 1000204886016,
        "spares": [ { "name": "sdc" } ],
        "logs": [ { "name": "nvme0n1" } ],
        "cache": [ { "name": "nvme1n1" } ]
    }"#;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_smartos_shape_and_builds_argv() {
        let spec = PoolSpec::parse(MIRROR).unwrap();
        assert_eq!(
            create_args("zones", &spec, true),
            strs(&[
                "create",
                "-f",
                "-O",
                "xattr=sa",
                "-O",
                "acltype=posix",
                "zones",
                "mirror",
                "/dev/sda",
                "/dev/sdb",
                "spare",
                "/dev/sdc",
                "log",
                "/dev/nvme0n1",
                "cache",
                "/dev/nvme1n1",
            ])
        );
        let single = PoolSpec::parse(r#"{"vdevs":[{"name":"/dev/vda","size":1}],"capacity":1}"#).unwrap();
        assert_eq!(
            create_args("zones", &single, false),
            strs(&["create", "-O", "xattr=sa", "-O", "acltype=posix", "zones", "/dev/vda"])
        );
        let raidz = PoolSpec::parse(
            r#"{"vdevs":[{"type":"raidz2","devices":[{"name":"a"},{"name":"b"},{"name":"c"}]},
                         {"type":"raidz1","devices":[{"name":"d"},{"name":"e"}]}]}"#,
        )
        .unwrap();
        let args = create_args("zones", &raidz, false);
        assert_eq!(args[5..], strs(&["zones", "raidz2", "/dev/a", "/dev/b", "/dev/c", "raidz", "/dev/d", "/dev/e"]));
    }

    #[test]
    fn bad_inputs_are_explained() {
        let err = |t: &str| PoolSpec::parse(t).unwrap_err();
        assert!(matches!(err("fatal error: no disks"), SpecError::Json(_)));
        assert_eq!(err("[]"), SpecError::NotObject);
        assert_eq!(err(r#"{"capacity": 1}"#), SpecError::NoVdevs);
        assert_eq!(err(r#"{"vdevs": []}"#), SpecError::NoVdevs);
        assert_eq!(err(r#"{"vdevs": [{"size": 1}]}"#).to_string(), "vdevs[0]: has no \"name\"");
        assert_eq!(
            err(r#"{"vdevs": [{"type": "stripe", "devices": []}]}"#),
            SpecError::UnknownType { at: "vdevs[0]".into(), kind: "stripe".into() }
        );
        assert!(matches!(
            err(r#"{"vdevs": [{"type": "mirror", "devices": [{"name": "sda"}]}]}"#),
            SpecError::TooFewDevices { need: 2, found: 1, .. }
        ));
        assert!(matches!(err(r#"{"vdevs": [{"type": "mirror"}]}"#), SpecError::Field { .. }));
        assert!(matches!(err(r#"{"vdevs": [{"name": "-o"}]}"#), SpecError::BadName { .. }));
        assert!(matches!(err(r#"{"vdevs": [{"name": "disk/by-id/x"}]}"#), SpecError::BadName { .. }));
        assert_eq!(
            err(r#"{"vdevs": [{"name": "sda"}], "cache": [{"name": "sda"}]}"#),
            SpecError::Duplicate("sda".into())
        );
        assert!(matches!(err(r#"{"vdevs": [{"name": "sda"}], "spares": {}}"#), SpecError::Field { .. }));
    }

    #[test]
    fn pool_names() {
        assert!(check_pool_name("zones").is_ok());
        assert!(check_pool_name("-f").is_err());
        assert!(check_pool_name("mirror1").is_err());
        assert!(check_pool_name("zo nes").is_err());
    }

    #[test]
    fn disklayout_output_round_trips() {
        let mut disks: Vec<Disk> =
            (0..3).map(|i| Disk::whole(&format!("sd{}", (b'a' + i) as char), 1 << 40, false)).collect();
        disks.push(Disk { transport: "NVME".into(), ..Disk::whole("nvme0n1", 200_000_000_000, true) });
        for layout in [None, Some(LayoutKind::Mirror), Some(LayoutKind::Single)] {
            let p = plan(&disks, &Options { layout, ..Options::default() }).unwrap();
            let spec = PoolSpec::parse(&p.layout.to_json().unwrap()).unwrap();
            let ours: Vec<&str> = p.layout.disk_names().collect();
            assert_eq!(spec.disks().collect::<Vec<_>>(), ours);
        }
    }

    /// Records commands and answers with canned outputs (default: success, no output).
    #[derive(Default)]
    struct Fake {
        log: RefCell<Vec<String>>,
        answers: RefCell<Vec<CmdOutput>>,
    }

    impl Runner for Fake {
        fn run(&self, program: &Path, args: &[String]) -> io::Result<CmdOutput> {
            self.log.borrow_mut().push(CommandLine(program.to_path_buf(), args.to_vec()).to_string());
            let mut answers = self.answers.borrow_mut();
            Ok(if answers.is_empty() { CmdOutput { code: Some(0), ..CmdOutput::default() } } else { answers.remove(0) })
        }
    }

    struct Setup {
        dir: tempfile::TempDir,
        env: Env,
        req: Request,
    }

    fn setup(layout: &str, disks: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for d in disks {
            fs::create_dir_all(dir.path().join("sys/block").join(d)).unwrap();
        }
        let file = dir.path().join("pool.json");
        fs::write(&file, layout).unwrap();
        let env = Env { root: dir.path().to_path_buf(), zpool: "/usr/sbin/zpool".into(), zfs: "/usr/sbin/zfs".into() };
        let req = Request { pool: "zones".into(), layout: file, force: true, encrypt: false, bootable: false };
        Setup { dir, env, req }
    }

    #[test]
    fn creates_then_mounts_if_needed() {
        let s = setup(MIRROR, &["sda", "sdb", "sdc", "nvme0n1", "nvme1n1"]);
        let fake = Fake::default();
        fake.answers.borrow_mut().extend([
            CmdOutput { code: Some(0), ..CmdOutput::default() },
            CmdOutput { code: Some(0), stdout: "no\n".into(), ..CmdOutput::default() },
        ]);
        fs::create_dir_all(s.dir.path().join("zones")).unwrap();
        let created = create(&s.req, &s.env, &fake).unwrap();
        assert_eq!(created.commands.len(), 4);
        let log = fake.log.borrow();
        assert!(log[0].starts_with("/usr/sbin/zpool create -f -O xattr=sa -O acltype=posix zones mirror /dev/sda"));
        assert_eq!(
            log[1..],
            [
                "/usr/sbin/zfs get -H -o value mounted zones",
                "/usr/sbin/zfs mount zones",
                "/usr/sbin/zfs get -H -o value mountpoint zones"
            ]
        );
        assert!(s.dir.path().join("zones/.system_pool").is_file(), "the system pool marker");
        drop(log);

        let fake = Fake::default();
        fake.answers.borrow_mut().extend([
            CmdOutput { code: Some(0), ..CmdOutput::default() },
            CmdOutput { code: Some(0), stdout: "yes\n".into(), ..CmdOutput::default() },
        ]);
        create(&s.req, &s.env, &fake).unwrap();
        assert_eq!(fake.log.borrow().len(), 3);
        drop(s.dir);
    }

    #[test]
    fn refusals_and_bad_input_run_nothing() {
        let s = setup(MIRROR, &["sda", "sdb", "sdc", "nvme0n1"]);
        let fake = Fake::default();
        let bootable = Request { bootable: true, ..s.req.clone() };
        assert!(matches!(create(&bootable, &s.env, &fake), Err(MkzpoolError::Bootable)));
        let encrypted = Request { encrypt: true, ..s.req.clone() };
        assert!(matches!(create(&encrypted, &s.env, &fake), Err(MkzpoolError::Encryption)));
        let err = create(&s.req, &s.env, &fake).unwrap_err().to_string();
        assert!(err.contains("disk nvme1n1 is not present on this node"), "{err}");
        let missing = Request { layout: s.dir.path().join("nope.json"), ..s.req.clone() };
        assert!(matches!(create(&missing, &s.env, &fake), Err(MkzpoolError::Read { .. })));
        let badname = Request { pool: "-o".into(), ..s.req.clone() };
        assert!(matches!(create(&badname, &s.env, &fake), Err(MkzpoolError::PoolName { .. })));
        assert!(fake.log.borrow().is_empty());
    }

    #[test]
    fn zpool_failure_carries_its_stderr() {
        let s = setup(r#"{"vdevs":[{"name":"sda"}]}"#, &["sda"]);
        let fake = Fake::default();
        fake.answers.borrow_mut().push(CmdOutput {
            code: Some(1),
            stderr: "invalid vdev specification\n".into(),
            ..CmdOutput::default()
        });
        let err = create(&s.req, &s.env, &fake).unwrap_err().to_string();
        assert!(err.ends_with("failed (exit 1): invalid vdev specification"), "{err}");
        assert_eq!(fake.log.borrow().len(), 1);
    }
}
