#!/usr/bin/env bash
# Start the services the test suite needs, installing them first where this machine can
# (root with apt-get): a single-node Slurm cluster (munge, slurmctld, slurmd on this host) and a
# PostgreSQL server on 127.0.0.1.  Idempotent: what already runs is left as it is.
# Prints, on stdout, the lines to `eval` (GEOSCREEN_TEST_SLURM, GEOSCREEN_TEST_PG_URL); progress
# and problems go to stderr.  Without root or apt the tests that need a service skip (outside CI)
# and say why.
set -uo pipefail
STATE=${GEOSCREEN_SERVICES_DIR:-/tmp/geoscreen-services}
PG_PORT=${GEOSCREEN_TEST_PG_PORT:-55432}
mkdir -p "$STATE"
log() { echo "services: $*" >&2; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
  if [ ! -f "$STATE/apt-updated" ]; then
    apt-get update -qq >/dev/null 2>&1 && touch "$STATE/apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$STATE/apt.log" 2>&1
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  return 1
}

start_postgres() {
  local bin data=$STATE/pgdata
  if ! bin=$(pg_bin); then
    can_install && { log "installing postgresql"; apt_install postgresql; }
    bin=$(pg_bin) || { log "no PostgreSQL server here; the PostgreSQL tests will skip"; return 1; }
  fi
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    echo "export GEOSCREEN_TEST_PG_URL=postgresql://geoscreen@127.0.0.1:$PG_PORT/postgres"
    return 0
  fi
  local run=()
  if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
    id postgres >/dev/null 2>&1 || useradd -r -M postgres
    chown -R postgres "$STATE"
    run=(runuser -u postgres --)
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    "${run[@]}" "$bin/initdb" -D "$data" -U geoscreen -A trust >"$STATE/initdb.log" 2>&1 \
      || { log "initdb failed (see $STATE/initdb.log)"; return 1; }
  fi
  "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$STATE/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $STATE -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
    || { log "PostgreSQL did not start (see $STATE/postgres.log)"; return 1; }
  echo "export GEOSCREEN_TEST_PG_URL=postgresql://geoscreen@127.0.0.1:$PG_PORT/postgres"
}

slurm_up() { timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

start_slurm() {
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    can_install && { log "installing slurm-wlm and munge"; apt_install slurm-wlm munge; }
    command -v slurmctld >/dev/null 2>&1 \
      || { log "no Slurm here; the Slurm tests will skip"; return 1; }
  fi
  if slurm_up; then echo "export GEOSCREEN_TEST_SLURM=1"; return 0; fi
  [ "$(id -u)" = 0 ] || { log "starting Slurm needs root; the Slurm tests will skip"; return 1; }
  local host cpus mem conf=/etc/slurm/slurm.conf
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
  if [ ! -f "$conf" ] || grep -q '^# geoscreen test cluster' "$conf"; then
    cat >"$conf" <<CONF
# geoscreen test cluster: one node, this host (written by .ci/services.sh)
ClusterName=geoscreen
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
MpiDefault=none
InactiveLimit=0
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- munged || { log "munged did not start"; return 1; }
  pgrep -x slurmctld >/dev/null || slurmctld || { log "slurmctld did not start"; return 1; }
  pgrep -x slurmd >/dev/null || slurmd || { log "slurmd did not start"; return 1; }
  local i
  for i in $(seq 1 60); do
    slurm_up && { echo "export GEOSCREEN_TEST_SLURM=1"; return 0; }
    [ "$i" = 5 ] && scontrol update nodename="$host" state=resume >/dev/null 2>&1
    sleep 1
  done
  log "Slurm started but its node is not idle (see /var/log/slurm/)"; return 1
}

start_postgres
start_slurm
exit 0
