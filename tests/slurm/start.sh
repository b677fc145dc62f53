#!/usr/bin/env bash
# Install, configure and start a single-node SLURM (munged, slurmctld, slurmd) on a
# Debian machine without systemd, for the workflow's SLURM tests. Run as root.
# Idempotent: daemons already running are left alone, a second run only waits for the
# node to be idle. Stop with tests/slurm/stop.sh, which stops only what this started.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts daemons)"
command -v apt-get >/dev/null || die "needs a Debian-like system with apt-get"

install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd sbatch squeue; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing SLURM and munge (missing: ${missing[*]})"
    apt-get update -q
    # Debian's maintainer scripts cannot start services here (no init system);
    # this script starts them itself below.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge
}

# install_file TEMPLATE DEST: fill in @PLACEHOLDERS@; refuse to replace a foreign file.
install_file() {
    local template=$1 dest=$2 tmp
    if [[ -e $dest ]] && ! head -n 1 "$dest" | grep -qF "$MARKER"; then
        die "$dest exists and was not written by this script; not touching it"
    fi
    tmp=$(mktemp)
    sed -e "s|@NODE_NAME@|$NODE_NAME|g" \
        -e "s|@CPUS@|$MSPRIOR_SLURM_CPUS|g" \
        -e "s|@REAL_MEMORY@|$REAL_MEMORY|g" \
        -e "s|@PARTITION@|$MSPRIOR_SLURM_PARTITION|g" \
        -e "s|@MIN_JOB_AGE@|$MSPRIOR_SLURM_MIN_JOB_AGE|g" \
        -e "s|@STATE_DIR@|$MSPRIOR_SLURM_STATE_DIR|g" \
        -e "s|@LOG_DIR@|$MSPRIOR_SLURM_LOG_DIR|g" \
        "$template" >"$tmp"
    if cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        return 1 # unchanged
    fi
    install -m 0644 "$tmp" "$dest"
    rm -f "$tmp"
    log "wrote $dest"
}

record_started() { echo "$1 $2" >>"$STARTED_FILE"; }

start_munged() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running"
        return
    fi
    [[ -s /etc/munge/munge.key ]] || {
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    }
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID_FILE"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munged did not come up"
    local pid
    pid=$(pid_of munged "$MUNGE_PID_FILE") || die "no munged pid in $MUNGE_PID_FILE"
    record_started munged "$pid"
    log "started munged"
}

# start_daemon NAME: start slurmctld or slurmd unless our pid file names a live one.
start_daemon() {
    local name=$1 pidfile="$MSPRIOR_SLURM_STATE_DIR/$1.pid" pid
    if pid=$(pid_of "$name" "$pidfile"); then
        log "$name already running (pid $pid)"
        return
    fi
    # -i: carry on over unreadable state left by an earlier, killed run.
    if [[ $name == slurmctld ]]; then slurmctld -i; else slurmd; fi
    for _ in $(seq 100); do
        pid=$(pid_of "$name" "$pidfile") && break
        sleep 0.1
    done
    [[ -n ${pid:-} ]] || die "$name did not start; see $MSPRIOR_SLURM_LOG_DIR/$name.log"
    record_started "$name" "$pid"
    log "started $name (pid $pid)"
}

wait_for_idle_node() {
    local state=""
    for i in $(seq 120); do
        state=$(sinfo -h -n "$NODE_NAME" -o %T 2>/dev/null || true)
        case $state in
        idle) log "node $NODE_NAME is idle"; return 0 ;;
        allocated|mixed) log "node $NODE_NAME is up ($state)"; return 0 ;;
        down*|drain*|fail*)
            # Left down by an earlier run that was stopped: bring it back.
            scontrol update NodeName="$NODE_NAME" State=RESUME 2>/dev/null || true ;;
        esac
        ((i % 10 == 0)) && log "waiting for node $NODE_NAME (state: ${state:-none})"
        sleep 0.5
    done
    die "node $NODE_NAME not idle after 60 s (state: ${state:-none});" \
        "see $MSPRIOR_SLURM_LOG_DIR"
}

install_packages
NODE_NAME=$(hostname -s)
# All of the machine's memory, in MiB; config_overrides keeps slurmd from arguing.
REAL_MEMORY=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
install -d -m 0755 "$MSPRIOR_SLURM_STATE_DIR" "$MSPRIOR_SLURM_STATE_DIR/ctld" \
    "$MSPRIOR_SLURM_STATE_DIR/d" "$MSPRIOR_SLURM_LOG_DIR" "$SLURM_CONF_DIR"
changed=0
install_file "$HERE/slurm.conf.in" "$SLURM_CONF_DIR/slurm.conf" && changed=1
install_file "$HERE/gres.conf.in" "$SLURM_CONF_DIR/gres.conf" && changed=1

start_munged
start_daemon slurmctld
start_daemon slurmd
if ((changed)) && [[ -s $STARTED_FILE ]]; then
    # Daemons that were already running must read the new files.
    scontrol reconfigure || true
fi
wait_for_idle_node
