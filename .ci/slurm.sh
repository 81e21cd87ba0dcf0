#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm integration test (tests/test_slurm.py).
#   bash .ci/slurm.sh start   install slurm-wlm and munge if missing, start munged, slurmctld, slurmd
#   bash .ci/slurm.sh stop    stop exactly the daemons that start started (PIDs in $STATE/pids)
# Needs root (CI runs as root). No systemd, no cgroups, no accounting: jobs are tracked by
# /proc (proctrack/linuxproc) and their status is read with squeue, so finished jobs must stay
# visible to squeue for a while (MinJobAge). The node declares two GPUs without devices.
set -euo pipefail
STATE=${CONVBIAS_SLURM_STATE:-/tmp/convbias-slurm}

start() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
    fi
    if [ -s "$STATE/pids" ]; then stop; fi
    mkdir -p "$STATE/ctld" "$STATE/d" /etc/slurm /run/munge /etc/munge
    # munge: a key, then the daemon as its own user
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key /run/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    rm -f /run/munge/munged.pid
    su -s /bin/sh munge -c "munged --pid-file=/run/munge/munged.pid"

    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( mem * 9 / 10 ))
    cat > /etc/slurm/slurm.conf <<EOF
# written by convbias .ci/slurm.sh: a one-node test cluster
ClusterName=convbias-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SchedulerParameters=defer_batch
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # two GPUs whose "devices" are /dev/null and /dev/zero: jobs ask for GPUs as on a GPU cluster
    # (the smoke study's 1- and 2-GPU runs) and Slurm sets CUDA_VISIBLE_DEVICES; there is no CUDA
    # here, so they compute on the CPU (device auto), the 2-GPU run as two DDP processes (gloo)
    echo "Name=gpu File=/dev/null,/dev/zero" > /etc/slurm/gres.conf
    slurmctld -i
    slurmd
    for _ in $(seq 100); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then break; fi
        # a node drained by an earlier configuration of this cluster (kept in $STATE) comes back
        if sinfo -h -o %t 2>/dev/null | grep -qx drain; then scontrol update nodename="$host" state=resume || true; fi
        sleep 0.2
    done
    { cat /run/munge/munged.pid; cat "$STATE/slurmctld.pid"; cat "$STATE/slurmd.pid"; } > "$STATE/pids"
    sinfo -h -o "%P %D %t %c" | grep -q idle || { echo "slurm did not come up; see $STATE/*.log" >&2; exit 1; }
    echo "slurm up: $(sinfo -h -o '%P %D %t %c CPUs') (pids $(tr '\n' ' ' < "$STATE/pids"))"
}

stop() {
    [ -s "$STATE/pids" ] || return 0
    # slurmd and slurmctld first, munged last; only the PIDs start recorded
    for pid in $(tac "$STATE/pids"); do kill "$pid" 2>/dev/null || true; done
    for pid in $(cat "$STATE/pids"); do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -f "$STATE/pids"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
