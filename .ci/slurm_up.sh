#!/usr/bin/env bash
# Start a real single-node SLURM 22.05 on this machine (root, no systemd, no cgroups) for the slurm tests.
#
# Installs munge/slurmctld/slurmd/slurm-client (+ slurmdbd/mariadb for accounting, so `sacct` and submitit's
# job-state polling work) with apt when missing, writes a cgroup-free config, and starts each daemon that is
# not already running. Idempotent: a second call with everything up only prints the node state.
# Stop with .ci/slurm_down.sh (daemons are stopped by their pid files).
#
# Env: SRDD_SLURM_ACCOUNTING=0 skips slurmdbd + mariadb (sacct then fails; submitit only warns).
set -euo pipefail

ACCOUNTING="${SRDD_SLURM_ACCOUNTING:-1}"
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
DB_PASSWORD="srdd-slurm-ci"

log() { echo "[slurm_up] $*"; }

# pid_alive PIDFILE: the daemon whose pid is recorded there still runs.
pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll until COMMAND succeeds or fail naming what did not come up.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  for _ in $(seq "$((seconds * 4))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  echo "[slurm_up] ERROR: $what did not come up within ${seconds}s; see /var/log/slurm/ and /var/log/munge/" >&2
  return 1
}

install_packages() {
  local packages=(munge slurmctld slurmd slurm-client)
  [[ "$ACCOUNTING" == 1 ]] && packages+=(slurmdbd mariadb-server)
  local missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

write_configs() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
  local accounting_lines="AccountingStorageType=accounting_storage/none"
  if [[ "$ACCOUNTING" == 1 ]]; then
    accounting_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none"
  fi
  # cgroup-free: proctrack/linuxproc + task/none (no systemd/cgroup v2 delegation in this sandbox).
  cat >/etc/slurm/slurm.conf <<EOF
ClusterName=srdd
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=30
${accounting_lines}
NodeName=localhost NodeHostname=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ "$ACCOUNTING" == 1 ]]; then
    cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASSWORD}
StorageLoc=slurm_acct_db
EOF
    chmod 600 /etc/slurm/slurmdbd.conf  # slurmdbd refuses a world-readable config (it holds the password)
  fi
}

start_munge() {
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  if ! pid_alive /run/munge/munged.pid; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  fi
  wait_for munged 10 munge -n
}

start_accounting() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! pid_alive /run/mysqld/mysqld.pid; then
    log "starting mariadb"
    /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --socket=/run/mysqld/mysqld.sock \
      --bind-address=127.0.0.1 >>/var/log/slurm/mariadb.log 2>&1 &
  fi
  wait_for mariadb 30 mysqladmin --socket=/run/mysqld/mysqld.sock ping
  mysql --socket=/run/mysqld/mysqld.sock <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
  if ! pid_alive /run/slurm/slurmdbd.pid; then
    log "starting slurmdbd"
    /usr/sbin/slurmdbd
  fi
  wait_for slurmdbd 30 sacctmgr -n -i list cluster
}

start_slurm() {
  if ! pid_alive /run/slurm/slurmctld.pid; then
    log "starting slurmctld"
    # No -c: keeping the saved state keeps job ids increasing across restarts, so the accounting database
    # (which outlives slurmctld) never holds two jobs with the same id for sacct/submitit to confuse.
    /usr/sbin/slurmctld
  fi
  wait_for slurmctld 30 scontrol ping
  if ! pid_alive /run/slurm/slurmd.pid; then
    log "starting slurmd"
    /usr/sbin/slurmd -N localhost
  fi
  wait_for "node localhost (idle)" 60 bash -c "sinfo -h -n localhost -o %t | grep -qE '^(idle|mix|alloc)'"
}

install_packages
write_configs
start_munge
[[ "$ACCOUNTING" == 1 ]] && start_accounting
start_slurm
log "up: $(sinfo -h -o '%P %D %t %c CPUs')"
