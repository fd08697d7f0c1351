#!/bin/bash
#
# joysetup.sh, as the headnode test double (ci/src/headnode.rs) serves it.
#
# Part one of `sdc-server setup` on a Triton Linux compute node. CNAPI's
# server-setup workflow downloads this file from the headnode's assets
# (<tftpboot>/extra/joysetup/) into /var/tmp and has ur run
# `cd /var/tmp; ./joysetup.sh` with an empty environment; agentsetup.sh
# is part two.
#
# Why it exists: to make our CN answer the very command lines that the
# Linux branch of sdc-headnode's scripts/joysetup.sh runs, in the same
# order. The wording and layout here are this project's own; the command
# lines are not ours to change (names, flags, argument order, the json -e
# code, file paths, the setup-state fields and state names). When upstream
# changes a command line, change it here the same way.
#
# A node without a pool (and not booted as a headnode) goes through:
#   clock         ntpdate -b <servers> until it answers, then the offset
#                 (ntpdig -j, or ntpdate -q) must be 10 s or less
#   disks         disklayout [-c] [-s n] [-w n] [-e list] [layout] writes
#                 /tmp/pool.json; the pool must hold twice the RAM
#   pool          mkzpool -B -f zones (mkzpool -f if that fails),
#                 atime=off, /zones/.system_pool       state zpool_created
#   datasets      zones/dump, config, cores, cores/global, opt (on /opt),
#                 var (a copy of /var, then on /var)   state datasets_setup
#   pkgsrc        nothing on Linux                     state pkgsrc_tools
#   config        /var/tmp/node.config becomes /opt/triton/config and
#                 /usr/triton/config links to it      state configs_installed
#   swap          zones/swap, at least as big as RAM   state swap_created
#   filesystems   nothing on Linux                     state filesystems_setup
#   imgadm        the DC's IMGAPI is the only source   state imgadm_setup
# A node that already has a pool only gets its pools listed, one
# tab-separated line each.
#
# Two departures from upstream are deliberate. If the setup-state file
# shows that an earlier run created the pool but never reached
# imgadm_setup, the steps from "pool" on run again, each skipping whatever
# already exists, so a failed setup can simply be retried. And CONFIG_*
# come from the node.config CNAPI has just put into /var/tmp (which holds
# the disk options of `sdc-server setup`), not from the boot-time copy.
# Branches upstream has for SmartOS, headnodes, installer media and mock
# CNs have no counterpart here.
#

export PATH=/usr/bin:/usr/sbin:/sbin:/usr/node/bin:/usr/triton/bin

readonly POOL=zones
readonly LAYOUT_JSON=/tmp/pool.json
readonly FETCHED_DIR=/var/tmp/node.config
readonly FETCHED_CONFIG=$FETCHED_DIR/node.config
readonly OPT_CONFIG=/opt/triton/config
readonly USR_CONFIG=/usr/triton/config
readonly IMGADM_CONF_DIR=$USR_CONFIG/imgadm
readonly STATE_NAME=triton-setup-state.json
# The pool must hold DISK_PER_RAM times the RAM. Swap is never below
# SWAP_FLOOR_GIB GiB, and SWAP_DEFAULT unless the swap= argument or
# node.config's swap says otherwise.
readonly DISK_PER_RAM=2
readonly SWAP_FLOOR_GIB=2
readonly SWAP_DEFAULT=0.25x

page_size=$(getconf PAGESIZE || true)
: "${page_size:=4096}"

# Our output goes to ur (which hands it to CNAPI) and to a file in /tmp
# that ends up as /var/log/joysetup.log. Short progress notes go to the
# console on fd 4 -- or nowhere, where there is no console to open.
run_log=/tmp/joysetup.$$
{ exec 4>/dev/console; } 2>/dev/null || exec 4>/dev/null
exec > >(tee "$run_log") 2>&1

set -o errexit
set -o pipefail
PS4='+ \D{%Y-%m-%d %H:%M:%S} ${BASH_SOURCE##*/}:${LINENO}${FUNCNAME[0]:+ in ${FUNCNAME[0]}}: '
set -o xtrace

# Start below whatever the console shows (a login prompt, usually).
printf '\n' >&4

note()
{
    printf 'joysetup: %s\n' "$*" >&4
}

die()
{
    printf 'joysetup failed: %s\n' "$*" >&4
    printf 'joysetup failed: %s\n' "$*"
    exit 1
}

# `./joysetup.sh swap=<size>` picks the swap size (see swap_gib); other
# key=value words are accepted and ignored.
swap_arg=
for word in "$@"; do
    case $word in
    swap=*) swap_arg=${word#swap=} ;;
    esac
done

# The kernel command line, one word a line.
cmdline_words()
{
    tr ' ' '\n' < /proc/cmdline
}

# grep reads to the end (no -q) so that a match cannot turn into a
# SIGPIPE failure of the command on its left under pipefail.
booted_as_headnode()
{
    /usr/bin/bootparams | grep '^headnode=true' >/dev/null
}

booted_standalone()
{
    cmdline_words | grep '^standalone=true' >/dev/null
}

# config.sh provides load_sdc_config, which sets CONFIG_<key> from
# node.config. Before setup, the complete node.config is the one CNAPI has
# just fetched into /var/tmp: the copy under /usr/triton/config is the one
# the node booted with and lacks the disk options of `sdc-server setup`.
# shellcheck source=/dev/null
. /usr/triton/bin/config.sh
if [[ -f $FETCHED_CONFIG ]]; then
    # shellcheck disable=SC2034 # read by load_sdc_config
    SDC_CONFIG_FILENAME=$FETCHED_CONFIG
fi
load_sdc_config

encrypt=
if [[ ${CONFIG_encryption_enabled:-} == true ]]; then
    encrypt=yes
fi

# Prints the awk expression $1 rounded up to a whole number. (awk's %.f
# rounds to the nearest; adding a hair under one half makes that "up".)
round_up()
{
    awk "BEGIN { printf(\"%.f\\n\", ($1) + 0.4999999) }"
}

memory_mib()
{
    sysinfo | json 'MiB of Memory'
}

# --- clock ----------------------------------------------------------------

sync_clock()
{
    local list='' out offset waited=0
    local -a servers via

    # This step checks every result itself.
    set +o pipefail

    if [[ -f $FETCHED_CONFIG ]]; then
        list=$(grep '^ntp_hosts=' < "$FETCHED_CONFIG" | cut -d= -f2- | tr , ' ')
        list=${list//[\"\']/}
    fi
    if [[ -z $list ]]; then
        # No ntp_hosts: use the public pool, resolved through Google's DNS
        # when this node has no resolver configured.
        via=()
        if [[ $(wc -l < /etc/resolv.conf) -eq 0 ]]; then
            via=(@8.8.8.8)
        fi
        list=$(dig "${via[@]}" pool.ntp.org +short | grep '^[0-9]' | xargs)
    fi
    if [[ -z $list ]]; then
        die "no NTP server to set the clock from: node.config has no" \
            "ntp_hosts and pool.ntp.org does not resolve; set ntp_hosts" \
            "in the headnode's config and run the setup again"
    fi
    read -r -a servers <<< "$list"

    # The headnode's NTP may still be starting: try every 10 s, for up to
    # 10 minutes, until ntpdate steps the clock and says so.
    set +o errexit
    until out=$(ntpdate -b "${servers[@]}" 2>&1) && [[ -n $out ]]; do
        # The same again with debugging output, for the log.
        ntpdate -d "${servers[@]}"
        sleep 10
        waited=$((waited + 10))
        if ((waited > 600)); then
            die "ntpdate could not set the clock from ${servers[*]} in" \
                "10 minutes (last output: ${out:-none}); check that these" \
                "hosts serve NTP to this node's admin network"
        fi
    done
    set -o errexit

    # What is left of the offset, in whole seconds, sign dropped.
    if [[ -e /usr/bin/ntpdig ]]; then
        offset=$(ntpdig -j "${servers[@]}" |
            json -e 'this.offset=Math.floor(Math.abs(this.offset))' offset)
    else
        offset=$(ntpdate -q "${servers[@]}" | grep "offset .* sec" |
            sed -e "s/^.*offset //" | cut -d' ' -f1 | tr -d '-' | cut -d'.' -f1)
    fi
    if [[ -z $offset ]]; then
        die "got no clock offset from ${servers[*]}; check the NTP" \
            "servers (ntp_hosts in node.config) and run the setup again"
    fi
    if ((offset > 10)); then
        die "the clock is still ${offset} s off ${servers[*]} (10 s" \
            "allowed); fix the time on the NTP servers and run the setup" \
            "again"
    fi
    echo "clock within ${offset} s of ${servers[*]}"

    set -o pipefail
}

# --- disks and pool -------------------------------------------------------

lay_out_disks()
{
    local -a opts=()

    # The disk options `sdc-server setup` adds to node.config. All but
    # disk_exclude still have their old names, without "disk_".
    if [[ ${CONFIG_cache:-} == false ]]; then
        opts+=(-c)
    fi
    if [[ -n ${CONFIG_spares:-} ]]; then
        opts+=(-s "$CONFIG_spares")
    fi
    if [[ -n ${CONFIG_width:-} ]]; then
        opts+=(-w "$CONFIG_width")
    fi
    if [[ -n ${CONFIG_disk_exclude:-} ]]; then
        opts+=(-e "$CONFIG_disk_exclude")
    fi
    if [[ -n ${CONFIG_layout:-} ]]; then
        opts+=("$CONFIG_layout")
    fi

    disklayout "${opts[@]}" > "$LAYOUT_JSON" ||
        die "disklayout found no pool layout for these disks (its" \
            "message is above); check the disks, or the layout, spares," \
            "width and exclude options given to sdc-server setup"
}

check_room()
{
    local ram_mib pool_bytes pool_mib need_mib

    ram_mib=$(memory_mib)
    pool_bytes=$(json capacity < "$LAYOUT_JSON")
    pool_mib=$((pool_bytes / 1024 / 1024))
    need_mib=$((ram_mib * DISK_PER_RAM))
    if ((pool_mib < need_mib)); then
        die "the pool would hold $((pool_mib / 1024)) GiB, but with" \
            "$((ram_mib / 1024)) GiB of RAM this node needs at least" \
            "$((need_mib / 1024)) GiB; add disks or choose a layout with" \
            "more capacity"
    fi
}

make_pool()
{
    local -a enc=()

    if [[ -n $encrypt ]]; then
        enc=(-e)
    fi

    if ! zpool list -H -o name "$POOL"; then
        note "creating pool $POOL"
        # First with an EFI system partition (-B), so that the pool could
        # boot the node; -f in case the disks carry an old pool's labels.
        if mkzpool -B -f "${enc[@]}" "$POOL" "$LAYOUT_JSON"; then
            note "pool $POOL has an EFI system partition"
        elif ! mkzpool -f "${enc[@]}" "$POOL" "$LAYOUT_JSON"; then
            die "mkzpool could not create pool $POOL from $LAYOUT_JSON" \
                "(its message is above); clear the disks or exclude the" \
                "faulty ones, then run the setup again"
        fi
    fi

    zfs set atime=off "$POOL" ||
        die "zfs could not turn atime off on pool $POOL"
    note "pool $POOL is ready"

    # Marks the node's single system pool for software that looks for it.
    touch "/$POOL/.system_pool"
}

# --- setup state ----------------------------------------------------------

# The state file sits with the node's config: under /usr/triton/config
# until zones/opt exists, under /opt/triton/config after (move_config
# takes it along).
state_file=$USR_CONFIG/$STATE_NAME
if [[ -d $OPT_CONFIG ]]; then
    state_file=$OPT_CONFIG/$STATE_NAME
fi

start_state_file()
{
    [[ -e $state_file ]] && return 0
    mkdir -p "${state_file%/*}"
    printf '{ "node_type": "%s", "start_time": "%s", %s }\n' \
        "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        '"current_state": "", "seen_states": [], "complete": false' \
        > "$state_file"
    chmod 400 "$state_file"
}

# True if the state file lists $1 among the states seen.
state_seen()
{
    [[ -n $(json -f "$state_file" -e \
        "this.result = this.seen_states.filter(
            function(e) { return e === '$1' })[0]" result) ]]
}

record_state()
{
    local state=$1

    chmod 600 "$state_file"
    json -e \
        "this.current_state = '$state';
         this.last_updated = new Date().toISOString();
         this.seen_states.push('$state');" < "$state_file" \
        | tee "$state_file.new"
    mv "$state_file.new" "$state_file"
    chmod 400 "$state_file"
}

# --- datasets -------------------------------------------------------------

dataset_exists()
{
    # No grep -q: see booted_as_headnode.
    zfs list -H -o name | grep -x -- "$1" >/dev/null
}

# The crash dump zvol, half the size of RAM: dumps hold only kernel pages,
# compressed. Dumps are encrypted by the dump code itself, so the zvol
# opts out of ZFS encryption on an encrypted pool.
make_dump_zvol()
{
    local dump_mib
    local -a no_zfs_crypto=()

    dump_mib=$(($(memory_mib) / 2))
    if [[ -n $encrypt ]]; then
        no_zfs_crypto=(-o encryption=off)
    fi

    zfs create -V "${dump_mib}mb" \
        -o checksum=noparity \
        "${no_zfs_crypto[@]}" \
        -b "$page_size" \
        -o logbias=throughput \
        -o sync=always \
        -o primarycache=metadata \
        -o secondarycache=none \
        "$POOL/dump" ||
        die "zfs could not create the dump zvol $POOL/dump"
}

make_datasets()
{
    if ! dataset_exists "$POOL/dump"; then
        note "creating $POOL/dump"
        make_dump_zvol
    fi

    if ! dataset_exists "$POOL/config"; then
        note "creating $POOL/config"
        zfs create "$POOL/config" || die "zfs could not create $POOL/config"
        chmod 755 "/$POOL/config"
        # Stays mounted on /zones/config. Zone configs, where a node
        # keeps any, are copied in.
        [[ ! -d /etc/zones ]] || cp -p /etc/zones/* "/$POOL/config"
    fi

    if ! dataset_exists "$POOL/cores"; then
        note "creating $POOL/cores"
        zfs create -o compression=lz4 -o mountpoint=none "$POOL/cores" ||
            die "zfs could not create $POOL/cores"
    fi
    if ! dataset_exists "$POOL/cores/global"; then
        zfs create -o quota=10g -o mountpoint="/$POOL/global/cores" \
            "$POOL/cores/global" ||
            die "zfs could not create $POOL/cores/global"
    fi

    if ! dataset_exists "$POOL/opt"; then
        note "creating $POOL/opt"
        zfs create "$POOL/opt" || die "zfs could not create $POOL/opt"
        zfs set mountpoint=/opt "$POOL/opt"
    fi

    if ! dataset_exists "$POOL/var"; then
        note "creating $POOL/var"
        zfs create "$POOL/var" || die "zfs could not create $POOL/var"
        chmod 755 "/$POOL/var"
        cd /var

        # From here on the old /var disappears under zones/var: keep the
        # complete log by copying it over when the script exits.
        mkdir -p /var/log
        trap 'cp "$run_log" /var/log/joysetup.log' EXIT

        # Everything in /var, except what lxcfs serves through FUSE.
        if ! find . -not -path '*/lib/lxcfs*' -print |
            TMPDIR=/tmp cpio -pdm "/$POOL/var"; then
            die "cpio could not copy /var onto $POOL/var (its message" \
                "is above); check the space on pool $POOL"
        fi

        zfs set mountpoint=/var "$POOL/var" ||
            die "zfs could not mount $POOL/var on /var"
        # LXD keeps its state in /var: make it use the new one.
        systemctl restart triton-lxd.service
        zfs set atime=on "$POOL/var" ||
            die "zfs could not turn atime on on $POOL/var"
    fi
}

# pkgsrc-tools only exist for SmartOS's global zone.
skip_pkgsrc()
{
    if [[ ${CONFIG_install_pkgsrc:-} == true ]]; then
        echo "install_pkgsrc=true has no effect on a Linux node"
    fi
}

# --- config ---------------------------------------------------------------

# CNAPI's node.config goes to /opt/triton/config, and /usr/triton/config
# turns into a link to it.
move_config()
{
    local -a leftovers

    # Headnodes and standalone nodes get no node.config from CNAPI.
    if booted_standalone || booted_as_headnode; then
        return 0
    fi

    note "installing node.config in $OPT_CONFIG"
    if [[ ! -d $FETCHED_DIR ]]; then
        die "$FETCHED_DIR is missing; CNAPI downloads it just before" \
            "running this script, so start over with sdc-server setup"
    fi

    # zones/opt is on /opt already (its mountpoint property).
    mkdir -p /opt/triton
    if [[ -d $OPT_CONFIG ]]; then
        cp -rp "$FETCHED_DIR"/* "$OPT_CONFIG/"
    else
        mv "$FETCHED_DIR" "$OPT_CONFIG"
    fi

    # What was kept in /usr/triton/config while there was no /opt (the
    # boot-time node.config, the setup-state file) moves along.
    if [[ -d $USR_CONFIG && ! -L $USR_CONFIG ]]; then
        leftovers=("$USR_CONFIG"/*)
        if [[ -e ${leftovers[0]} ]]; then
            mv "${leftovers[@]}" "$OPT_CONFIG/"
        fi
    fi
    if [[ ! -L $USR_CONFIG ]]; then
        rm -rf "$USR_CONFIG"
        ln -s "$OPT_CONFIG" "$USR_CONFIG"
    fi
    state_file=$OPT_CONFIG/$STATE_NAME

    # node.config has moved: read it again from the default place.
    # shellcheck disable=SC2034 # read by load_sdc_config
    SDC_CONFIG_FILENAME=
    load_sdc_config
}

# --- swap -----------------------------------------------------------------

# Prints a swap size in GiB, at least SWAP_FLOOR_GIB, for a size given as
# a multiple of RAM (0.25x, 2x) or in GiB (8g).
swap_gib()
{
    local spec=${1,,} count unit ram_gib gib

    count=${spec%?}
    unit=${spec: -1}
    ram_gib=$(round_up "$(memory_mib) / 1024.0")
    case $unit in
    x) gib=$(round_up "$count * $ram_gib") ;;
    g) gib=$count ;;
    *) return 1 ;;
    esac
    if ((gib < SWAP_FLOOR_GIB)); then
        gib=$SWAP_FLOOR_GIB
    fi
    echo "$gib"
}

make_swap()
{
    local spec=${swap_arg:-${CONFIG_swap:-$SWAP_DEFAULT}}
    local want_gib ram_gib vol_gib

    want_gib=$(swap_gib "$spec") ||
        die "cannot read the swap size '$spec' (joysetup.sh swap=... or" \
            "node.config's swap): write <n>x for n times the RAM or <n>g" \
            "for n GiB"

    if zfs list -H -o name "$POOL/swap"; then
        return 0
    fi

    note "creating $POOL/swap"
    # The zvol is never smaller than RAM: locked anonymous memory counts
    # against swap, and too little swap would cap how many VMs fit. A
    # smaller size asked for only lowers the space the zvol reserves.
    ram_gib=$(swap_gib 1x)
    vol_gib=$want_gib
    if ((ram_gib > want_gib)); then
        vol_gib=$ram_gib
    fi

    zfs create -V "${vol_gib}g" \
        -b "$page_size" \
        -o logbias=throughput \
        -o sync=always \
        -o primarycache=metadata \
        -o secondarycache=none \
        "$POOL/swap"

    if ((ram_gib > want_gib)); then
        zfs set refreservation="${want_gib}g" "$POOL/swap"
    fi
}

# --- the rest -------------------------------------------------------------

# One line per imported pool: name, guid, size, free, health, mountpoint.
report_pools()
{
    local p guid used avail health mnt

    for p in $(zpool list -H -o name); do
        guid=$(zpool list -H -o guid "$p")
        used=$(zfs get -Hp -o value used "$p")
        avail=$(zfs get -Hp -o value available "$p")
        health=$(zpool get health "$p" | grep -v NAME | awk '{print $3}')
        mnt=$(zfs get -Hp -o value mountpoint "$p")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' \
            "$p" "$guid" "$((used + avail))" "$avail" "$health" "$mnt"
    done
}

# SmartOS restarts its filesystem services here; Linux has none to restart.
skip_filesystems()
{
    echo "filesystems: nothing to restart on Linux"
}

point_imgadm_at_dc()
{
    local conf=$IMGADM_CONF_DIR/imgadm.conf src

    if [[ -z ${CONFIG_imgapi_domain:-} ]]; then
        die "node.config has no imgapi_domain, so imgadm cannot be" \
            "pointed at this datacenter's IMGAPI; add it on the headnode"
    fi

    if [[ ! -f $conf ]]; then
        mkdir -p "$IMGADM_CONF_DIR"
        # Any imgadm command writes the default config first.
        imgadm list -H >/dev/null
    fi
    json -f "$conf" \
        -e "this.userAgentExtra = 'server/$(sysinfo | json UUID)'" \
        > "$conf.new"
    mv "$conf.new" "$conf"

    # A node fresh from setup pulls images from its own DC only; whatever
    # sources the default config lists go.
    for src in $(imgadm sources); do
        imgadm sources -f -d "$src"
    done
    imgadm sources -f -a "http://${CONFIG_imgapi_domain:?}"
}

# True if the pool exists and the state file shows a run that stopped after
# creating it and before the last step.
left_unfinished()
{
    local f

    zpool list -H -o name "$POOL" >/dev/null 2>&1 || return 1
    for f in "$OPT_CONFIG/$STATE_NAME" "$USR_CONFIG/$STATE_NAME"; do
        [[ -f $f ]] || continue
        [[ $(json -f "$f" complete) != true &&
            $(json -f "$f" current_state) != imgadm_setup ]]
        return
    done
    # A pool without any state file: the file lives on tmpfs
    # (/usr/triton/config) until the config moves onto the pool, so a
    # power-off in between loses it. A finished setup always leaves it on
    # /opt, so this pool's setup is unfinished.
    return 0
}

# --- main -----------------------------------------------------------------

resuming=
if [[ "$(zpool list)" == "no pools available" ]]; then
    if booted_as_headnode; then
        die "this joysetup.sh only sets up compute nodes, and this node" \
            "booted as a headnode (headnode=true)"
    fi
    sync_clock
    lay_out_disks
    check_room
elif left_unfinished; then
    note "an earlier setup stopped half-way: carrying on from there"
    echo "carrying on with the setup recorded in $state_file"
    resuming=yes
else
    report_pools
    exit 0
fi

make_pool
start_state_file computenode
# A resumed run whose state file was lost with a power-off starts a new one:
# the pool it finds was still created by this setup.
if [[ -z $resuming ]] || ! state_seen zpool_created; then
    record_state zpool_created
fi

make_datasets
record_state datasets_setup

skip_pkgsrc
record_state pkgsrc_tools

move_config
record_state configs_installed

make_swap
record_state swap_created

report_pools

skip_filesystems
record_state filesystems_setup

point_imgadm_at_dc
record_state imgadm_setup

note "done"
exit 0
