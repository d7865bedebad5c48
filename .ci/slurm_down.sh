#!/usr/bin/env bash
# Stop the single-node SLURM started by .ci/slurm_up.sh, each daemon by its pid file (never by name,
# so nothing else on the machine is touched). Safe to call when nothing runs.
set -uo pipefail

# stop_by_pidfile NAME PIDFILE: SIGTERM the recorded pid, wait up to 20 s, then SIGKILL.
stop_by_pidfile() {
  local name="$1" pidfile="$2" pid
  [[ -s "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "[slurm_down] stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 80); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
}

# Order: compute daemon, controller, accounting, then the auth daemon everyone uses.
stop_by_pidfile slurmd /run/slurm/slurmd.pid
stop_by_pidfile slurmctld /run/slurm/slurmctld.pid
stop_by_pidfile slurmdbd /run/slurm/slurmdbd.pid
stop_by_pidfile mariadb /run/mysqld/mysqld.pid
stop_by_pidfile munged /run/munge/munged.pid
exit 0
