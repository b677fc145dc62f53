#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start.sh started (listed in its state file), in
# reverse order, and nothing else. Safe to run when nothing is running.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

[[ -s $STARTED_FILE ]] || { log "nothing to stop"; exit 0; }

# stop_pid NAME PID: SIGTERM, wait up to 20 s, then SIGKILL; only if PID still is NAME.
stop_pid() {
    local name=$1 pid=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$name" ]] || {
        log "$name (pid $pid) is not running"
        return 0
    }
    kill -TERM "$pid"
    for _ in $(seq 200); do
        [[ -d /proc/$pid ]] || { log "stopped $name (pid $pid)"; return 0; }
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# Reverse order: slurmd, then slurmctld, then munged.
tac "$STARTED_FILE" | while read -r name pid; do
    stop_pid "$name" "$pid"
done
rm -f "$STARTED_FILE"
