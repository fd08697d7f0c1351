//! The commands as the headnode's joysetup.sh and agentsetup.sh call them:
//! the built binaries on PATH, the scripts' exact command lines, under
//! `set -o errexit -o pipefail`.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

/// A directory with our binaries (and a fake `triton-ctl`) to put on PATH.
fn bin_dir(root: &Path) -> std::path::PathBuf {
    let bin = root.join("bin");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&bin).expect("mkdir");
    for (name, exe) in [
        ("json", env!("CARGO_BIN_EXE_json")),
        ("bootparams", env!("CARGO_BIN_EXE_bootparams")),
        ("zonename", env!("CARGO_BIN_EXE_zonename")),
        ("systemctl", env!("CARGO_BIN_EXE_systemctl")),
    ] {
        symlink(exe, bin.join(name)).expect("symlink");
    }
    let ctl = bin.join("triton-ctl");
    let log = root.join("ctl.log");
    std::fs::write(
        &ctl,
        format!(
            "#!/bin/bash\nif [[ \"$*\" == 'status --json' ]]; then\n  echo '{{\"ok\":true,\"mode\":\"setup\",\
             \"services\":[{{\"name\":\"ur-agent\",\"state\":\"running\",\"pid\":9,\"restarts\":0,\"order\":0}},\
             {{\"name\":\"config-agent\",\"state\":\"running\",\"pid\":10,\"restarts\":0,\"order\":1}}]}}'\n  exit 0\nfi\n\
             echo \"$*\" >> {}\n[[ \"$2\" != broken ]]\n",
            log.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

fn bash(root: &Path, script: &str) -> Run {
    let bin = bin_dir(root);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let full = format!("set -o errexit\nset -o pipefail\n{script}\n");
    let out = Command::new("bash")
        .arg("-c")
        .arg(full)
        .current_dir(root)
        .env("PATH", path)
        .env("TRITON_CTL", bin.join("triton-ctl"))
        .env("BOOTPARAMS_CMDLINE", root.join("cmdline"))
        .output()
        .expect("bash");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Fakes of the other CN commands the snippets call.
const FAKES: &str = r#"
sysinfo() { echo '{"UUID": "564dfd57-1dd4-6fc0-d973-4f137ee12afe", "MiB of Memory": 8192, "System Type": "Linux"}'; }
ntpdig() { echo '{"time":"2026-01-02T03:04:05.6Z","offset":-3.25,"precision":1e-6,"host":"10.0.0.2","ip":"10.0.0.2","stratum":2,"leap":"no-leap","adjusted":false}'; }
"#;

#[test]
fn setup_state_file_life_cycle() {
    let dir = tempfile::tempdir().expect("tmp");
    let script = format!(
        r#"{FAKES}
SETUP_FILE=$PWD/triton-setup-state.json
TYPE=computenode
echo "{{ \"node_type\": \"$TYPE\", " \
    '"start_time":' \
    "\"$(date "+%Y-%m-%dT%H:%M:%SZ")\", " \
    '"current_state": "", ' \
    '"seen_states": [], ' \
    '"complete": false }}' \
    > $SETUP_FILE
chmod 400 $SETUP_FILE

function update_setup_state
{{
    STATE=$1

    chmod 600 $SETUP_FILE
    json -e \
        "this.current_state = '$STATE';
         this.last_updated = new Date().toISOString();
         this.seen_states.push('$STATE');" < "$SETUP_FILE" \
        | tee ${{SETUP_FILE}}.new
    mv ${{SETUP_FILE}}.new $SETUP_FILE
    chmod 400 $SETUP_FILE
}}

# agentsetup's flavour (cat | json).
function update_setup_state_agent
{{
    STATE=$1

    chmod 600 $SETUP_FILE
    cat "$SETUP_FILE" | json -e \
        "this.current_state = '$STATE';
         this.last_updated = new Date().toISOString();
         this.seen_states.push('$STATE');" \
        | tee ${{SETUP_FILE}}.new
    mv ${{SETUP_FILE}}.new $SETUP_FILE
    chmod 400 $SETUP_FILE
}}

function setup_state_not_seen
{{
    STATE=$1

    IS_SEEN=$(json -f ${{SETUP_FILE}} -e \
        "this.result = this.seen_states.filter(
            function(e) {{ return e === '$STATE' }})[0]" result)
    if [[ -z "$IS_SEEN" ]]; then
        return 0
    else
        return 1
    fi
}}

function mark_as_setup
{{
    chmod 600 $SETUP_FILE
    cat "$SETUP_FILE" | json -e "this.complete = true;
         this.current_state = 'setup_complete';
         this.seen_states.push('setup_complete');
         this.last_updated = new Date().toISOString();" \
        | tee ${{SETUP_FILE}}.new
    mv ${{SETUP_FILE}}.new $SETUP_FILE
    chmod 400 $SETUP_FILE
}}

update_setup_state "zpool_created" >/dev/null
update_setup_state "datasets_setup" >/dev/null
setup_state_not_seen "imgadm_setup" && echo "imgadm_setup not seen"
setup_state_not_seen "zpool_created" || echo "zpool_created seen"
update_setup_state_agent "agents_installed" >/dev/null
mark_as_setup >/dev/null
json -o json-0 < $SETUP_FILE | sed -e 's/"last_updated":"[^"]*"/"last_updated":"T"/' -e 's/"start_time":"[^"]*"/"start_time":"S"/'
json complete < $SETUP_FILE
"#
    );
    let r = bash(dir.path(), &script);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "imgadm_setup not seen\nzpool_created seen\n\
         {\"node_type\":\"computenode\",\"start_time\":\"S\",\"current_state\":\"setup_complete\",\
         \"seen_states\":[\"zpool_created\",\"datasets_setup\",\"agents_installed\",\"setup_complete\"],\
         \"complete\":true,\"last_updated\":\"T\"}\ntrue\n"
    );
}

#[test]
fn sizes_ntp_and_imgadm_config() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("pool.json"), "{\"capacity\": 42949672960, \"layout\": \"single\"}").expect("w");
    std::fs::write(
        dir.path().join("imgadm.conf"),
        "{\n  \"dockerImportSkipUuids\": true,\n  \"sources\": [\n    {\n      \"url\": \"https://images.smartos.org\",\n      \"type\": \"imgapi\"\n    }\n  ]\n}\n",
    )
    .expect("w");
    let script = format!(
        r#"{FAKES}
RAM_MiB=$(sysinfo | json 'MiB of Memory')
space=$(json capacity < "pool.json")
Disk_MiB=$(( space / 1024 / 1024 ))
echo "ram=$RAM_MiB disk=$Disk_MiB"
servers=10.0.0.2
offset=$(ntpdig -j "${{servers}}" | \
    json -e 'this.offset=Math.floor(Math.abs(this.offset))' offset)
echo "offset=$offset"
IMGADM_CONF=imgadm.conf
json -f "${{IMGADM_CONF}}" \
    -e "this.userAgentExtra = 'server/$(sysinfo | json UUID)'" \
    > "${{IMGADM_CONF}}.new"
mv "${{IMGADM_CONF}}.new" "${{IMGADM_CONF}}"
cat "${{IMGADM_CONF}}"
json -e "this.usage = $(( 3 * 7 ))" < pool.json > pool.json.new && mv pool.json.new pool.json
json usage < pool.json
"#
    );
    let r = bash(dir.path(), &script);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "ram=8192 disk=40960\noffset=3\n{\n  \"dockerImportSkipUuids\": true,\n  \"sources\": [\n    {\n      \
         \"url\": \"https://images.smartos.org\",\n      \"type\": \"imgapi\"\n    }\n  ],\n  \
         \"userAgentExtra\": \"server/564dfd57-1dd4-6fc0-d973-4f137ee12afe\"\n}\n21\n"
    );
}

#[test]
fn headnode_check_and_zonename() {
    let dir = tempfile::tempdir().expect("tmp");
    let script = r#"
is_headnode()
{
    if [[ -z "$__headnode_known" ]]; then
        __headnode_bp="$(/usr/bin/env bootparams | grep "^headnode=true")"
        __headnode_known=true
    fi
    if [[ -z "$__headnode_bp" ]]; then
        return 1
    else
        return 0
    fi
}
if [[ $(zonename) != "global" && -n ${MOCKCN_SERVER_UUID} ]]; then
    echo mock
fi
if ! is_headnode; then echo "compute node"; fi
bootparams | grep -q "^rabbitmq=" && echo "has rabbitmq"
"#;
    std::fs::write(
        dir.path().join("cmdline"),
        "BOOT_IMAGE=/vmlinuz quiet rabbitmq=guest:guest:10.0.0.3:5672 headnode=false\n",
    )
    .expect("w");
    let r = bash(dir.path(), script);
    assert_eq!((r.code, r.stdout.as_str()), (0, "compute node\nhas rabbitmq\n"), "{}", r.stderr);
    std::fs::write(dir.path().join("cmdline"), "headnode=true\n").expect("w");
    let r = bash(dir.path(), &format!("{script}\nis_headnode && echo headnode"));
    assert_eq!((r.code, r.stdout.as_str()), (0, "headnode\n"), "{}", r.stderr);
    // A cmdline that cannot be read is an error.
    std::fs::remove_file(dir.path().join("cmdline")).expect("rm");
    let r = bash(dir.path(), "bootparams");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("bootparams: cannot read"), "{}", r.stderr);
    let r = bash(dir.path(), "zonename");
    assert_eq!(r.stdout, "global\n");
}

#[test]
fn systemctl_shim() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("ctl.log");
    // joysetup: LXD does not exist here; that must not stop setup.
    let r = bash(dir.path(), "systemctl restart triton-lxd.service\necho after");
    assert_eq!((r.code, r.stdout.as_str()), (0, "after\n"), "{}", r.stderr);
    assert!(r.stderr.contains("triton-lxd.service does not exist on this platform"), "{}", r.stderr);
    // Agent installers: known services go to triton-ctl.
    let r = bash(
        dir.path(),
        "systemctl daemon-reload\nsystemctl enable triton-config-agent.service && systemctl start triton-config-agent.service\n\
         systemctl reload-or-restart triton-config-agent\nsystemctl is-active ur-agent\nsystemctl stop ur-agent.service",
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "active\n"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "start config-agent\nrestart config-agent\nstop ur-agent\n"
    );
    // Unknown units: start/status/is-active fail like systemd.
    for (cmd, code) in [("start lxd", 5), ("status lxd", 4), ("is-active lxd", 3), ("bogus-verb x", 1)] {
        let r = bash(dir.path(), &format!("systemctl {cmd}"));
        assert_eq!(r.code, code, "systemctl {cmd}: {}", r.stderr);
    }
    // triton-ctl unreachable: a clear error.
    let r = bash(dir.path(), "TRITON_CTL=/nonexistent/triton-ctl systemctl restart cn-agent");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot list the services of triton init"), "{}", r.stderr);
}
