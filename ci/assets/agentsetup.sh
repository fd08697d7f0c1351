#!/bin/bash
#
# agentsetup.sh: second half of `sdc-server setup` on a Triton Linux compute
# node, run through ur after joysetup.sh as `cd /var/tmp; ./agentsetup.sh`
# with ASSETS_URL in the environment. This copy is served by the headnode
# test double (ci/src/headnode.rs) and written for this project; it takes
# the same steps as the Linux path of sdc-headnode's scripts/agentsetup.sh:
#
#   unless /opt/triton/agents/bin exists:
#     /usr/triton/bin/install-default-agents &> /var/log/triton-agent-install.log
#     wait for net-agent to register the NICs in NAPI (see below)
#     setup state agents_installed, then complete (and `sysinfo -u`)
#
# The wait: without it the node reboots before net-agent has made the
# server own its NICs in NAPI, and booter would then serve the default
# platform instead of this server's. The real script sleeps 30 s. Here it
# is $TRITON_AGENTSETUP_NET_AGENT_WAIT seconds, 30 when unset; the
# headnode double, which has no NAPI, passes a smaller value.
#

{ exec 4>/dev/console; } 2>/dev/null || exec 4>/dev/null

# A copy of the output stays on the node.
exec > >(tee /var/log/agent-setup.log)
exec 2>&1

set -o errexit
set -o pipefail
export PS4='[\D{%FT%TZ}] ${BASH_SOURCE}:${LINENO}: ${FUNCNAME[0]:+${FUNCNAME[0]}(): }'
set -o xtrace

BASEDIR=/opt/triton
PATH=/usr/bin:/usr/sbin:/bin:/sbin:${BASEDIR}/bin:/usr/node/bin:/usr/triton/bin
export PATH

SETUP_FILE="${BASEDIR}/config/triton-setup-state.json"
NET_AGENT_WAIT=${TRITON_AGENTSETUP_NET_AGENT_WAIT:-30}

fatal()
{
    echo "Error: $1" 1>&2
    exit 1
}

if [[ ! -f $SETUP_FILE ]]; then
    fatal "Setup file does not exist: ${SETUP_FILE}"
fi
if [[ ! $NET_AGENT_WAIT =~ ^[0-9]+$ ]]; then
    fatal "TRITON_AGENTSETUP_NET_AGENT_WAIT must be a number of seconds, not '${NET_AGENT_WAIT}'"
fi

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

mark_as_setup()
{
    chmod 600 "$SETUP_FILE"
    json -e "this.complete = true;
         this.current_state = 'setup_complete';
         this.seen_states.push('setup_complete');
         this.last_updated = new Date().toISOString();" < "$SETUP_FILE" \
        | tee "${SETUP_FILE}.new"
    mv "${SETUP_FILE}.new" "$SETUP_FILE"
    chmod 400 "$SETUP_FILE"

    sysinfo -u
}

setup_agents()
{
    local logfile=/var/log/triton-agent-install.log

    /usr/triton/bin/install-default-agents &> "${logfile}"

    # Give net-agent time to push this server's NICs to NAPI before the
    # reboot that follows setup (see the header).
    sleep "${NET_AGENT_WAIT}"
}

if [[ -z "${ASSETS_URL:-}" ]]; then
    fatal "ASSETS_URL environment variable must be set"
fi

if [[ ! -d "${BASEDIR}/agents/bin" ]]; then
    setup_agents
    update_setup_state "agents_installed"
    mark_as_setup
fi

# Ur returns stdout to CNAPI.
echo "agentsetup: done"

exit 0
