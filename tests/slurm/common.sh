# Shared settings for start.sh and stop.sh (sourced, not run).
# Every path can be overridden from the environment.
MSPRIOR_SLURM_STATE_DIR="${MSPRIOR_SLURM_STATE_DIR:-/var/lib/msprior-slurm-test}"
MSPRIOR_SLURM_LOG_DIR="${MSPRIOR_SLURM_LOG_DIR:-/var/log/msprior-slurm-test}"
MSPRIOR_SLURM_PARTITION="${MSPRIOR_SLURM_PARTITION:-debug}"
MSPRIOR_SLURM_CPUS="${MSPRIOR_SLURM_CPUS:-2}"
MSPRIOR_SLURM_MIN_JOB_AGE="${MSPRIOR_SLURM_MIN_JOB_AGE:-1800}"
SLURM_CONF_DIR=/etc/slurm
# The first line of every file we write; a file without it is never overwritten.
MARKER="# msprior-test-cluster"
# Daemons this script started, one "name pid" a line; stop.sh stops only these.
STARTED_FILE="$MSPRIOR_SLURM_STATE_DIR/started"
MUNGE_PID_FILE=/run/munge/munged.pid

log() { echo "[msprior-slurm] $*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_of NAME PIDFILE: print the pid if PIDFILE names a live process called NAME.
pid_of() {
    local name=$1 pidfile=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$name" ]] || return 1
    echo "$pid"
}
