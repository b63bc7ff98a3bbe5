#!/usr/bin/env bash
# Job: a throwaway single-node SLURM cluster on this Debian machine, for the cluster test (make test-cluster).
#   tests/cluster/slurm.sh up       install slurm + munge if missing, write slurm.conf, start munged, slurmctld,
#                                   slurmd; wait until the node is idle. A running cluster is left as it is.
#   tests/cluster/slurm.sh down     stop exactly the daemons `up` started (PIDs from their pid files), remove
#                                   the pid files and the slurm.conf `up` wrote. Fine when nothing runs.
#   tests/cluster/slurm.sh status   what runs, and sinfo; exit 0 if the cluster is up, 1 if not.
# Needs root and no systemd (daemons are started by hand). No accounting database: Snakemake must track jobs
# with `--slurm-status-command squeue` (sacct would hang, see profiles/slurm-local/config.yaml).
# Other services of the machine are never touched; nothing is stopped by process name.
set -euo pipefail

RUN_DIR=/run/graphprune-slurm          # our pid files; their presence means "started by this script"
MUNGE_PID=$RUN_DIR/munged.pid
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid
SLURM_CONF=/etc/slurm/slurm.conf
MARKER="# written by graphprune tests/cluster/slurm.sh"
WAIT_S=${SLURM_WAIT_S:-60}

log() { printf '[slurm.sh] %s\n' "$*"; }
die() { printf '[slurm.sh] error: %s\n' "$*" >&2; exit 1; }

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }   # seconds since $1

# Run a step and print how long it took: step <label> <command...>
step() {
    local label=$1 start=$EPOCHREALTIME
    shift
    "$@"
    log "$(printf '%-28s %6s s' "$label" "$(since "$start")")"
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {   # wait_for <what> <command...>: poll until the command succeeds (0) or WAIT_S passes (1)
    local what=$1 i
    shift
    for ((i = 0; i < WAIT_S * 4; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    log "timed out after ${WAIT_S}s waiting for $what"
    return 1
}

# The node answers and takes jobs (a '*' suffix means not responding; down/drain states never match).
node_up() { sinfo -h -o %T 2>/dev/null | grep -qxE 'idle|mixed|allocated|completing'; }

install_packages() {
    local missing=()
    for cmd in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
        command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("${cmd#*:}")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Debian's postinst scripts try to start services; without systemd/init that must not happen.
        local had_policy=0
        [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
        if ((!had_policy)); then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/graphprune-slurm-apt.log 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 &&
              apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/graphprune-slurm-apt.log 2>&1; } ||
            { ((had_policy)) || rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/graphprune-slurm-apt.log >&2;
              die "apt-get install failed (log: /tmp/graphprune-slurm-apt.log)"; }
        ((had_policy)) || rm -f /usr/sbin/policy-rc.d
    fi
}

start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running (not ours, left alone)"
        return
    fi
    # munged runs as the munge user and writes its pid file into /run/munge; ours is a root-owned copy.
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    wait_for "munged" bash -c 'munge -n | unmunge' || die "munged did not start"
    wait_for "munged pid file" test -s /run/munge/munged.pid || die "munged wrote no pid file"
    cp /run/munge/munged.pid "$MUNGE_PID"
}

write_conf() {
    local host cpus mem
    host=$(hostname)
    getent hosts "$host" >/dev/null || { echo "127.0.0.1 $host" >>/etc/hosts; log "added $host to /etc/hosts"; }
    cpus=$(nproc)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [[ -n $mem ]] || die "could not read RealMemory from 'slurmd -C'"
    mem=$((mem * 9 / 10))   # more than the node really has drains it
    if [[ -e $SLURM_CONF ]] && ! grep -qF "$MARKER" "$SLURM_CONF"; then
        die "$SLURM_CONF exists and was not written by this script; not overwriting it"
    fi
    install -d /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    chown slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
    cat >"$SLURM_CONF" <<EOF
$MARKER: a one-node test cluster.
ClusterName=graphprune-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue this long; Snakemake's squeue status path needs >= 300.
MinJobAge=300
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    log "slurm.conf: node $host, CPUs=$cpus, RealMemory=$mem MB, partition debug"
}

start_daemons() {
    slurmctld
    wait_for "slurmctld" scontrol ping || die "slurmctld did not start (/var/log/slurm/slurmctld.log)"
    slurmd
    # idle, or busy with jobs recovered from the saved state of an earlier run
    wait_for "node $(hostname) to answer" node_up || die "the node did not come up (/var/log/slurm/slurmd.log)"
}

up() {
    [[ $EUID -eq 0 ]] || die "run as root (installs packages, starts daemons)"
    install -d -m 0755 "$RUN_DIR"
    if alive "$CTLD_PID" && alive "$SLURMD_PID" && node_up; then
        log "cluster already running (slurmctld $(cat "$CTLD_PID"), slurmd $(cat "$SLURMD_PID")); nothing to do"
        return
    fi
    if alive "$CTLD_PID" || alive "$SLURMD_PID"; then
        log "a half-started cluster from an earlier run: stopping it first"
        down
        install -d -m 0755 "$RUN_DIR"
    fi
    local t0=$EPOCHREALTIME
    step "packages" install_packages
    step "munged" start_munge
    step "slurm.conf" write_conf
    step "slurmctld + slurmd" start_daemons
    log "$(printf '%-28s %6s s' "cluster up (total)" "$(since "$t0")")"
    sinfo
}

stop_pidfile() {   # stop_pidfile <name> <pidfile>: SIGTERM, wait up to 15 s, then SIGKILL; remove the file
    local name=$1 file=$2 pid i
    [[ -e $file ]] || return 0
    pid=$(cat "$file")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) ignored SIGTERM: SIGKILL"; kill -KILL "$pid"; fi
        log "stopped $name ($pid)"
    else
        log "$name not running (stale pid file)"
    fi
    rm -f "$file"
}

# With our slurm.conf left behind, every `scontrol` waits ~9 s for the stopped controller, and Snakemake's SLURM
# plugin runs one on each start (`snakemake -n` 11 s instead of 2 s); without a conf it fails at once.
remove_conf() {
    if [[ -e $SLURM_CONF ]] && grep -qF "$MARKER" "$SLURM_CONF"; then rm -f "$SLURM_CONF"; fi
}

down() {
    [[ $EUID -eq 0 ]] || die "run as root"
    local t0=$EPOCHREALTIME
    if [[ ! -d $RUN_DIR ]] || [[ -z $(ls -A "$RUN_DIR") ]]; then
        log "no cluster started by this script is running"
        remove_conf
        return
    fi
    # Jobs still queued or running would be orphaned (their processes outlive slurmd): cancel them first.
    local jobs
    if alive "$CTLD_PID" && jobs=$(squeue -h -t pending,running,suspended -o %i 2>/dev/null) && [[ -n $jobs ]]; then
        log "cancelling unfinished jobs: $(echo $jobs)"
        # shellcheck disable=SC2086  # one job id per word
        scancel $jobs || true
        wait_for "the cancelled jobs to end" bash -c '[[ -z $(squeue -h -t running,completing -o %i) ]]' ||
            log "some jobs did not end in ${WAIT_S}s"
    fi
    # slurmd first, then the controller, then munge.
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
    stop_pidfile munged "$MUNGE_PID"
    rmdir "$RUN_DIR" 2>/dev/null || true
    remove_conf
    log "$(printf '%-28s %6s s' "cluster down (total)" "$(since "$t0")")"
}

status() {   # exit 0 when the cluster this script started runs and its node answers, else 1
    local name file
    for name in munged slurmctld slurmd; do
        file=$RUN_DIR/$name.pid
        if alive "$file"; then log "$name running (pid $(cat "$file"))"; else log "$name not running"; fi
    done
    if alive "$CTLD_PID" && alive "$SLURMD_PID" && node_up; then
        sinfo
        squeue
        return 0
    fi
    return 1
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
