#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on one Debian machine (slurm-wlm), for tests and trials.
#
#   scripts/local-slurm.sh start [DIR]   start munged, slurmctld and slurmd; print the SLURM_CONF
#   scripts/local-slurm.sh stop [DIR]    stop them
#
# No systemd and no cgroups: processes are tracked through /proc (proctrack/linuxproc) and tasks
# are not bound (task/none); slurmd runs as node "localhost". The node declares CPUS (default 8)
# CPUs whatever the hardware has (SlurmdParameters=config_overrides), so that `srun -n 3` fits on
# a 2-core machine. Everything lives under DIR (default /tmp/cruncher-slurm). Needs root and
# Debian's slurm-wlm (apt-get install slurm-wlm); `.ci/run` installs it when it is missing.
set -euo pipefail
action=${1:-start}
dir=${2:-/tmp/cruncher-slurm}
conf=$dir/slurm.conf
cpus=${CPUS:-8}

stop() {
  for daemon in slurmd slurmctld; do
    if [ -f "$dir/$daemon.pid" ]; then
      kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
      rm -f "$dir/$daemon.pid"
    fi
  done
}

start_munge() {
  if munge -n </dev/null >/dev/null 2>&1; then
    return                                  # a munged already answers
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    su -s /bin/sh munge -c "munged --force" 2>/dev/null || munged --force
  else
    munged --force
  fi
  for _ in $(seq 1 50); do
    munge -n </dev/null >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "local-slurm: munged did not start" >&2
  exit 1
}

write_conf() {
  local mem
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat > "$conf" <<CONF
ClusterName=cruncher
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
}

case $action in
  start)
    stop
    start_munge
    write_conf
    export SLURM_CONF=$conf
    slurmctld -f "$conf"
    slurmd -N localhost -f "$conf"
    for _ in $(seq 1 100); do
      if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "SLURM_CONF=$conf"
        exit 0
      fi
      scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
      sleep 0.2
    done
    echo "local-slurm: the node did not come up; see $dir/log" >&2
    tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    exit 1
    ;;
  stop)
    stop
    ;;
  *)
    echo "usage: $0 start|stop [DIR]" >&2
    exit 2
    ;;
esac
