#!/bin/bash
#
# agentsetup.sh, as the headnode test double (ci/src/headnode.rs) serves it.
#
# Part two of `sdc-server setup` on a Triton Linux compute node: once
# joysetup.sh has succeeded, ur runs `cd /var/tmp; ./agentsetup.sh` with
# ASSETS_URL (the headnode's assets) in the environment.
#
# Like joysetup.sh, it exists to run on our CN the command lines of the
# Linux branch of sdc-headnode's scripts/agentsetup.sh, in the same order,
# in this project's own words:
#
#   - nothing at all if /opt/triton/agents/bin exists (agents are in)
#   - /usr/triton/bin/install-default-agents, its output in
#     /var/log/triton-agent-install.log
#   - a pause for net-agent (below)
#   - setup state agents_installed, then setup_complete with
#     complete=true, and `sysinfo -u` so that CNAPI hears of it
#
# The pause: the node reboots right after setup, and if net-agent has not
# yet told NAPI that the admin NICs belong to this server by then, booter
# gives the next boot the default platform rather than this server's.
# Upstream waits 30 s. This copy waits $TRITON_AGENTSETUP_NET_AGENT_WAIT
# seconds (30 when unset); the headnode double, which has no NAPI, asks for
# less.
#

# Console notes on fd 4, where there is a console to open.
{ exec 4>/dev/console; } 2>/dev/null || exec 4>/dev/null

# Everything else goes to ur and stays on the node in /var/log.
exec > >(tee /var/log/agent-setup.log) 2>&1

set -o errexit
set -o pipefail
PS4='+ \D{%Y-%m-%d %H:%M:%S} ${BASH_SOURCE##*/}:${LINENO}${FUNCNAME[0]:+ in ${FUNCNAME[0]}}: '
set -o xtrace

export PATH=/usr/bin:/usr/sbin:/bin:/sbin:/opt/triton/bin:/usr/node/bin:/usr/triton/bin

readonly STATE=/opt/triton/config/triton-setup-state.json
readonly AGENTS_BIN=/opt/triton/agents/bin
readonly INSTALL_LOG=/var/log/triton-agent-install.log
NET_AGENT_WAIT=${TRITON_AGENTSETUP_NET_AGENT_WAIT:-30}

note()
{
    printf 'agentsetup: %s\n' "$*" >&4
}

die()
{
    printf 'agentsetup failed: %s\n' "$*" >&4
    printf 'agentsetup failed: %s\n' "$*" >&2
    exit 1
}

if [[ ! -f $STATE ]]; then
    die "there is no $STATE, so joysetup.sh has not finished on this" \
        "node; run sdc-server setup again"
fi
if [[ ! $NET_AGENT_WAIT =~ ^[0-9]+$ ]]; then
    die "TRITON_AGENTSETUP_NET_AGENT_WAIT is '$NET_AGENT_WAIT'; give it a" \
        "whole number of seconds, or unset it for 30"
fi

record_state()
{
    local state=$1

    chmod 600 "$STATE"
    json -e \
        "this.current_state = '$state';
         this.last_updated = new Date().toISOString();
         this.seen_states.push('$state');" < "$STATE" \
        | tee "$STATE.new"
    mv "$STATE.new" "$STATE"
    chmod 400 "$STATE"
}

# The last state: complete, and sysinfo republished with Setup true.
finish_setup()
{
    chmod 600 "$STATE"
    json -e "this.complete = true;
         this.current_state = 'setup_complete';
         this.seen_states.push('setup_complete');
         this.last_updated = new Date().toISOString();" < "$STATE" \
        | tee "$STATE.new"
    mv "$STATE.new" "$STATE"
    chmod 400 "$STATE"

    sysinfo -u
}

install_agents()
{
    note "installing the agents (output in $INSTALL_LOG)"
    /usr/triton/bin/install-default-agents &> "$INSTALL_LOG"

    # Time for net-agent to claim this server's NICs in NAPI before the
    # reboot that ends the setup (see the top of this file).
    note "waiting ${NET_AGENT_WAIT} s for net-agent"
    sleep "${NET_AGENT_WAIT}"
}

if [[ -z ${ASSETS_URL:-} ]]; then
    die "ASSETS_URL is empty; CNAPI's setup workflow sets it to the" \
        "headnode's assets URL, so run this through sdc-server setup"
fi

if [[ -d $AGENTS_BIN ]]; then
    echo "agents already installed ($AGENTS_BIN exists)"
else
    install_agents
    record_state agents_installed
    finish_setup
fi

# ur hands stdout back to CNAPI.
note "done"
echo "agentsetup: done"
exit 0
