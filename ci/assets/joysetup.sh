#!/bin/bash
#
# joysetup.sh: first half of `sdc-server setup` on a Triton Linux compute
# node. CNAPI's server-setup workflow fetches it from the headnode's assets
# (<tftpboot>/extra/joysetup/joysetup.sh) into /var/tmp and runs it through ur
# as `cd /var/tmp; ./joysetup.sh`. This copy is served by the headnode test
# double (ci/src/headnode.rs) and written for this project; it takes the
# same steps as the Linux paths of sdc-headnode's scripts/joysetup.sh and
# calls the same commands the same way:
#
#   on a node without a pool (`zpool list` says "no pools available"):
#     check_ntp          ntpdate -b <ntp_hosts>; ntpdig -j offset <= 10 s
#     disklayout         disklayout [-c] [-s n] [-w n] [-e excl] [layout] > /tmp/pool.json
#     check_disk_space   disk >= 2 x RAM
#     create_zpool       mkzpool -B -f zones (else mkzpool -f), atime=off, .system_pool
#     setup state        triton-setup-state.json, one state per step below
#     setup_datasets     zones/dump, config, cores(+global), opt (/opt), var (/var)
#     install_configs    /var/tmp/node.config -> /opt/triton/config, symlinked
#                        from /usr/triton/config
#     create_swap        zones/swap (0.25x RAM, at least 2 GiB; volsize >= RAM)
#     setup_imgadm       imgadm sources: only http://<imgapi_domain>
#   on a node with a pool: print the pool and exit 0.
#
# Two differences: when the pool exists but the setup-state file says an
# earlier run stopped before imgadm_setup, the remaining steps run again
# (each one skips what is already there), so a setup that failed half-way
# can be repeated; and CONFIG_* are read from the node.config CNAPI put in
# /var/tmp (as SmartOS's config.sh does on an unsetup CN), so the disk
# options of `sdc-server setup` reach disklayout. Everything the headnode
# script does only for SmartOS, headnodes, installer media or mock CNs is
# left out.
#
# The environment comes from ur (CNAPI sends `env: {}`): PATH is set here.
#

PATH=/usr/bin:/usr/sbin:/sbin
export PATH

MIN_SWAP=2
DEFAULT_SWAP=0.25x
# Servers need twice as much disk as RAM.
MIN_DISK_TO_RAM=2
TEMP_CONFIGS=/var/tmp/node.config
POOL=zones
POOL_FILE=/tmp/pool.json

BASEDIR=/opt/triton
IMGADM_DIR=/usr/triton/config/imgadm
CONFIG_SH=/usr/triton/bin/config.sh
PATH=$PATH:/usr/node/bin:/usr/triton/bin
export PATH

PAGESIZE=$(getconf PAGESIZE)
[[ -z "$PAGESIZE" ]] && PAGESIZE=4096

# Progress lines go to the console (fd 4), everything else to ur and to a
# log kept in /tmp (copied to /var/log/joysetup.log once /var is on the pool).
{ exec 4>/dev/console; } 2>/dev/null || exec 4>/dev/null
exec > >(tee "/tmp/joysetup.$$")
exec 2>&1

set -o errexit
set -o pipefail
export PS4='[\D{%FT%TZ}] ${BASH_SOURCE}:${LINENO}: ${FUNCNAME[0]:+${FUNCNAME[0]}(): }'
set -o xtrace

echo "" >&4

# Arguments of the form key=value (only swap= is used) become arg_<key>.
for p in "$@"; do
    k=${p%%=*}
    v=${p#*=}
    if [[ $k =~ ^[A-Za-z_][A-Za-z0-9_]*$ && $p == *=* ]]; then
        export "arg_${k}=${v}"
    fi
done

fatal()
{
    echo "Error: $*" >&4
    echo "Error: $*"
    exit 1
}

# Boot parameters, one key=value a line (what `bootparams` prints).
get_bootparams()
{
    tr ' ' '\n' < /proc/cmdline
}

is_headnode()
{
    get_bootparams | grep '^headnode=true' >/dev/null
}

# CONFIG_* from node.config. Like SmartOS's config.sh on an unsetup CN,
# read the copy CNAPI just fetched into /var/tmp: it carries the disk
# options of `sdc-server setup` (layout, spares, ...), which the boot-time
# /usr/triton/config/node.config lacks.
# shellcheck disable=SC1090
. "${CONFIG_SH:?}"
if [[ -f ${TEMP_CONFIGS}/node.config ]]; then
    # shellcheck disable=SC2034
    SDC_CONFIG_FILENAME=${TEMP_CONFIGS}/node.config
fi
load_sdc_config

ENCRYPTION=
[[ "${CONFIG_encryption_enabled:-}" == "true" ]] && ENCRYPTION=1

# Rounds a floating point expression up to an integer (awk's %.f rounds to
# nearest; adding just under one half makes it round up).
ceil()
{
    awk "BEGIN{printf(\"%.f\n\", $1 + 0.4999999)}"
}

ram_mib()
{
    sysinfo | json 'MiB of Memory'
}

check_ntp()
{
    local servers='' output retval offset
    local waited=0 wait_max=600 wait_step=10
    local -a hosts

    # This function catches its own errors.
    set +o pipefail

    if [[ -f ${TEMP_CONFIGS}/node.config ]]; then
        servers=$(grep "^ntp_hosts=" < "${TEMP_CONFIGS}/node.config" \
            | cut -d'=' -f2- | tr ',' ' ')
        servers=${servers//\'/}
        servers=${servers//\"/}
    fi
    if [[ -z ${servers} ]]; then
        # No ntp_hosts configured: ask DNS for the public pool.
        local -a force_dns=()
        if [[ $(wc -l < /etc/resolv.conf) -eq 0 ]]; then
            force_dns=("@8.8.8.8")
        fi
        servers=$(dig "${force_dns[@]}" pool.ntp.org +short | grep "^[0-9]" | xargs)
    fi
    if [[ -z ${servers} ]]; then
        fatal "Cannot find any servers to sync with using NTP."
    fi
    read -r -a hosts <<< "${servers}"

    # Wait (up to 10 minutes) for the headnode's NTP to answer.
    set +o errexit
    while true; do
        output=$(ntpdate -b "${hosts[@]}" 2>&1)
        retval=$?
        if (( retval == 0 )) && [[ -n ${output} ]]; then
            break
        fi
        # Run again with debugging output, for the log.
        ntpdate -d "${hosts[@]}"
        sleep "${wait_step}"
        waited=$((waited + wait_step))
        if (( waited > wait_max )); then
            fatal "Unable to set system clock: '${output}'"
        fi
    done
    set -o errexit

    # The offset, in whole seconds, must now be small.
    if [[ -e /usr/bin/ntpdig ]]; then
        offset=$(ntpdig -j "${hosts[@]}" | \
            json -e 'this.offset=Math.floor(Math.abs(this.offset))' offset)
    else
        offset=$(ntpdate -q "${hosts[@]}" | grep "offset .* sec" | \
            sed -e "s/^.*offset //" | cut -d' ' -f1 | tr -d '-' | cut -d'.' -f1)
    fi
    if [[ -z ${offset} ]]; then
        fatal "Unable to set system clock, fix NTP settings and try again."
    elif (( offset > 10 )); then
        fatal "System clock is off by ${offset} seconds, fix NTP settings" \
            "and try again."
    fi
    echo "Clock OK"

    set -o pipefail
}

run_disklayout()
{
    local -a dlargs=()

    # The old option names have no disk_ prefix (except disk_exclude).
    [[ "${CONFIG_cache:-}" == "false" ]] && dlargs+=("-c")
    [[ -n "${CONFIG_spares:-}" ]] && dlargs+=("-s" "${CONFIG_spares}")
    [[ -n "${CONFIG_width:-}" ]] && dlargs+=("-w" "${CONFIG_width}")
    [[ -n "${CONFIG_disk_exclude:-}" ]] && dlargs+=("-e" "${CONFIG_disk_exclude}")
    [[ -n "${CONFIG_layout:-}" ]] && dlargs+=("${CONFIG_layout}")

    if ! disklayout "${dlargs[@]}" > "${POOL_FILE}"; then
        fatal "disk layout failed"
    fi
}

check_disk_space()
{
    local pool_json=$1
    local ram space disk min

    ram=$(ram_mib)
    space=$(json capacity < "${pool_json}")
    disk=$(( space / 1024 / 1024 ))
    min=$(( ram * MIN_DISK_TO_RAM ))
    if (( disk < min )); then
        fatal "$(printf 'Cannot setup: system has %dG memory but %dG disk (>= %dG expected)' \
            $(( ram / 1024 )) $(( disk / 1024 )) $(( min / 1024 )))"
    fi
}

create_zpool()
{
    local pool=$1 pool_json=$2
    local -a eflag=()

    [[ -n "$ENCRYPTION" ]] && eflag=("-e")

    if ! zpool list -H -o name "${pool}"; then
        printf "%-56s" "creating pool: ${pool}" >&4
        # With an EFI system partition first (-B), then without.
        if mkzpool -B -f "${eflag[@]}" "${pool}" "${pool_json}"; then
            printf "\n%-56s          (as potentially bootable)" "" >&4
        elif ! mkzpool -f "${eflag[@]}" "${pool}" "${pool_json}"; then
            printf "%6s\n" "failed" >&4
            fatal "failed to create pool"
        fi
    fi

    if ! zfs set atime=off "${pool}"; then
        printf "%6s\n" "failed" >&4
        fatal "failed to set atime=off for pool ${pool}"
    fi
    printf "%4s\n" "done" >&4

    # Some software looks for the (one) system pool by this marker.
    touch "/${pool}/.system_pool"
}

CONFDS=${POOL}/config
COREDS=${POOL}/cores
OPTDS=${POOL}/opt
VARDS=${POOL}/var
SWAPVOL=${POOL}/swap

# The setup-state file: on /opt once zones/opt is there, before that in
# /usr/triton/config (install_configs moves it).
if [[ -d ${BASEDIR}/config ]]; then
    SETUP_FILE="${BASEDIR}/config/triton-setup-state.json"
else
    SETUP_FILE="/usr/triton/config/triton-setup-state.json"
fi

create_setup_file()
{
    local type=$1

    if [[ ! -e "$SETUP_FILE" ]]; then
        mkdir -p "$(dirname "$SETUP_FILE")"
        echo "{ \"node_type\": \"$type\", " \
            '"start_time":' \
            "\"$(date -u "+%Y-%m-%dT%H:%M:%SZ")\", " \
            '"current_state": "", ' \
            '"seen_states": [], ' \
            '"complete": false }' \
            > "$SETUP_FILE"
        chmod 400 "$SETUP_FILE"
    fi
}

update_setup_state()
{
    local state=$1

    chmod 600 "$SETUP_FILE"
    json -e \
        "this.current_state = '$state';
         this.last_updated = new Date().toISOString();
         this.seen_states.push('$state');" < "$SETUP_FILE" \
        | tee "${SETUP_FILE}.new"
    mv "${SETUP_FILE}.new" "$SETUP_FILE"
    chmod 400 "$SETUP_FILE"
}

has_dataset()
{
    # grep reads everything (no -q): an early exit could SIGPIPE zfs.
    zfs list -H -o name | grep -x -- "$1" >/dev/null
}

# The dump zvol: half of RAM (only kernel pages are dumped, compressed).
create_dump()
{
    local dumpsize
    local -a encr_opt=()

    dumpsize=$(( $(ram_mib) / 2 ))
    # Dumps have their own encryption; the zvol does not need ZFS's.
    [[ -n "$ENCRYPTION" ]] && encr_opt=("-o" "encryption=off")

    zfs create -V "${dumpsize}mb" \
        -o checksum=noparity \
        "${encr_opt[@]}" \
        -b "${PAGESIZE}" \
        -o logbias=throughput \
        -o sync=always \
        -o primarycache=metadata \
        -o secondarycache=none \
        "${POOL}/dump" || \
        fatal "failed to create the dump zvol"
}

setup_datasets()
{
    if ! has_dataset "${POOL}/dump"; then
        printf "%-56s" "adding volume: dump" >&4
        create_dump
        printf "%4s\n" "done" >&4
    fi

    if ! has_dataset "${CONFDS}"; then
        printf "%-56s" "adding volume: config" >&4
        zfs create "${CONFDS}" || fatal "failed to create the config dataset"
        chmod 755 "/${CONFDS}"
        if [[ -d /etc/zones ]]; then
            cp -p /etc/zones/* "/${CONFDS}"
        fi
        # Mounted at /zones/config on Linux.
        printf "%4s\n" "done" >&4
    fi

    if ! has_dataset "${COREDS}"; then
        printf "%-56s" "adding volume: cores" >&4
        zfs create -o compression=lz4 -o mountpoint=none "${COREDS}" || \
            fatal "failed to create the cores dataset"
        printf "%4s\n" "done" >&4
    fi
    if ! has_dataset "${COREDS}/global"; then
        zfs create -o quota=10g -o mountpoint="/${POOL}/global/cores" \
            "${COREDS}/global" || \
            fatal "failed to create the global zone cores dataset"
    fi

    if ! has_dataset "${OPTDS}"; then
        printf "%-56s" "adding volume: opt" >&4
        zfs create "${OPTDS}" || fatal "failed to create the opt dataset"
        zfs set mountpoint=/opt "${OPTDS}"
        printf "%4s\n" "done" >&4
    fi

    if ! has_dataset "${VARDS}"; then
        printf "%-56s" "adding volume: var" >&4
        zfs create "${VARDS}" || fatal "failed to create the var dataset"
        chmod 755 "/${VARDS}"
        cd /var

        # What this script prints after /var moves would be lost with the
        # old /var: keep the log from /tmp.
        mkdir -p /var/log
        # shellcheck disable=SC2064
        trap "cp /tmp/joysetup.$$ /var/log/joysetup.log" EXIT

        # Copy the live /var onto the dataset (not lxcfs's FUSE mount).
        if ( ! find . -not -path '*/lib/lxcfs*' -print | \
            TMPDIR=/tmp cpio -pdm "/${VARDS}" ); then
            fatal "failed to initialize the var directory"
        fi

        zfs set mountpoint=/var "${VARDS}" || \
            fatal "failed to set the mountpoint for ${VARDS}"
        # LXD keeps its state under /var: restart it on the new one.
        systemctl restart triton-lxd.service

        zfs set atime=on "${VARDS}" || \
            fatal "failed to set atime=on for ${VARDS}"
        printf "%4s\n" "done" >&4
    fi
}

# pkgsrc-setup exists only in SmartOS's global zone.
install_pkgsrc()
{
    if [[ "${CONFIG_install_pkgsrc:-}" == "true" ]]; then
        echo "install_pkgsrc: pkgsrc tools are not installed on Linux"
    fi
}

# node.config (with CNAPI's disk options) into /opt/triton/config, and
# /usr/triton/config becomes a symlink to it.
install_configs()
{
    local config_dir="${BASEDIR}/config"
    local usr_config=/usr/triton/config
    local -a old

    # Standalone machines get no config in /var/tmp.
    if get_bootparams | grep "^standalone=true" >/dev/null; then
        return 0
    fi
    if is_headnode; then
        return 0
    fi

    printf "%-56s" "Compute node, installing config files... " >&4
    if [[ ! -d $TEMP_CONFIGS ]]; then
        fatal "config files not present in $TEMP_CONFIGS"
    fi

    # zones/opt is mounted on /opt by its mountpoint property.
    mkdir -p "${BASEDIR}"
    if [[ ! -d "${config_dir}" ]]; then
        mv "$TEMP_CONFIGS" "${config_dir}"
    else
        cp -rp "$TEMP_CONFIGS"/* "${config_dir}/"
    fi

    if [[ -d $usr_config && ! -L $usr_config ]]; then
        # What was kept here before /opt existed (the boot-time node.config,
        # the setup-state file) moves along, as the headnode script does.
        old=("$usr_config"/*)
        if [[ -e ${old[0]} ]]; then
            mv "${old[@]}" "${config_dir}/"
        fi
    fi
    if [[ ! -L $usr_config ]]; then
        rm -rf "$usr_config"
        ln -s "${config_dir}" "$usr_config"
    fi
    SETUP_FILE="${config_dir}/triton-setup-state.json"
    printf "%4s\n" "done" >&4

    # The config moved: read it again, from the default place.
    # shellcheck disable=SC2034
    SDC_CONFIG_FILENAME=
    load_sdc_config
}

# Value is a multiple of RAM (x) or GiB (g), e.g. 0.25x, 2x, 8g.
swap_in_GiB()
{
    local swap val unit ram_gib result

    swap=$(echo "$1" | tr "[:upper:]" "[:lower:]")
    ram_gib=$(ceil "$(ram_mib) / 1024.0")
    val=${swap%?}
    unit=${swap#"${val}"}

    case ${unit} in
        x) result=$(ceil "${val} * ${ram_gib}") ;;
        g) result=${val} ;;
        *)
            echo "Unhandled swap argument: '${swap}'"
            return 1
            ;;
    esac
    if (( result < MIN_SWAP )); then
        echo "${MIN_SWAP}"
    else
        echo "${result}"
    fi
}

create_swap()
{
    local swapsize minsize volsize

    if [[ -n "${arg_swap:-}" ]]; then
        swapsize=$(swap_in_GiB "${arg_swap}")
    elif [[ -n "${CONFIG_swap:-}" ]]; then
        swapsize=$(swap_in_GiB "${CONFIG_swap}")
    else
        swapsize=$(swap_in_GiB "${DEFAULT_SWAP}")
    fi

    if ! zfs list -H -o name "${SWAPVOL}"; then
        printf "%-56s" "adding volume: swap" >&4
        # Never smaller than RAM (locked anonymous memory is accounted
        # against swap); a smaller configured size becomes the
        # refreservation instead.
        minsize=$(swap_in_GiB 1x)
        volsize=${swapsize}
        if (( minsize > swapsize )); then
            volsize=${minsize}
        fi

        zfs create -V "${volsize}g" \
            -b "${PAGESIZE}" \
            -o logbias=throughput \
            -o sync=always \
            -o primarycache=metadata \
            -o secondarycache=none \
            "${SWAPVOL}"

        if (( minsize > swapsize )); then
            zfs set refreservation="${swapsize}g" "${SWAPVOL}"
        fi
        printf "%4s\n" "done" >&4
    fi
}

# One line per imported pool: name, guid, size, available, health, mountpoint.
output_zpool_info()
{
    local pool guid used available health mountpoint

    for pool in $(zpool list -H -o name); do
        guid=$(zpool list -H -o guid "${pool}")
        used=$(zfs get -Hp -o value used "${pool}")
        available=$(zfs get -Hp -o value available "${pool}")
        health=$(zpool get health "${pool}" | grep -v NAME | awk '{print $3}')
        mountpoint=$(zfs get -Hp -o value mountpoint "${pool}")
        printf "%s\t%s\t%s\t%s\t%s\t%s\n" "${pool}" "${guid}" \
            "$(( used + available ))" "${available}" "${health}" "${mountpoint}"
    done
}

setup_filesystems()
{
    echo "Not setting up filesystems on Linux."
}

setup_imgadm()
{
    local conf="${IMGADM_DIR}/imgadm.conf"
    local srv

    if [[ ! -f "${conf}" ]]; then
        mkdir -p "${IMGADM_DIR}"
        # Writes the default config.
        imgadm list -H >/dev/null
    fi
    json -f "${conf}" \
        -e "this.userAgentExtra = 'server/$(sysinfo | json UUID)'" \
        > "${conf}.new"
    mv "${conf}.new" "${conf}"

    # Only this datacenter's IMGAPI: drop whatever sources are there.
    for srv in $(imgadm sources); do
        imgadm sources -f -d "$srv"
    done
    imgadm sources -f -a "http://${CONFIG_imgapi_domain:?}"
}

# An earlier run created the pool but stopped before its last step.
interrupted_setup()
{
    local f state complete

    zpool list -H -o name "${POOL}" >/dev/null 2>&1 || return 1
    for f in "${BASEDIR}/config/triton-setup-state.json" \
        /usr/triton/config/triton-setup-state.json; do
        if [[ -f $f ]]; then
            complete=$(json -f "$f" complete)
            state=$(json -f "$f" current_state)
            [[ $complete != "true" && $state != "imgadm_setup" ]]
            return
        fi
    done
    return 1
}

if [[ "$(zpool list)" == "no pools available" ]]; then
    if is_headnode; then
        fatal "joysetup.sh sets up Linux compute nodes only"
    fi
    check_ntp
    run_disklayout
    check_disk_space "${POOL_FILE}"
    resuming=
elif interrupted_setup; then
    echo "Resuming an interrupted setup"
    resuming=yes
else
    output_zpool_info
    exit 0
fi

create_zpool "${POOL}" "${POOL_FILE}"
create_setup_file computenode
if [[ -z $resuming ]]; then
    update_setup_state "zpool_created"
fi

setup_datasets
update_setup_state "datasets_setup"

install_pkgsrc
update_setup_state "pkgsrc_tools"

install_configs
update_setup_state "configs_installed"

create_swap
update_setup_state "swap_created"

output_zpool_info

setup_filesystems
update_setup_state "filesystems_setup"

setup_imgadm
update_setup_state "imgadm_setup"

exit 0
