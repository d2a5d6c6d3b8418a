#!/bin/bash
# labstack's Slurm epilog for nodes that run jobs with Docker: no container of a job outlives it.
#
# A job's containers are named labstack-<job>-<step>-<task> and labelled labstack.slurm.job=<job>. Its tasks stop
# them on TERM, and `docker run --rm` removes them when they exit; but Slurm sends KILL KillWait seconds after TERM,
# and a container whose program ignores TERM, or whose task was killed with its node's slurmd, would keep running
# under the node's Docker daemon. slurmd runs this script as root after every job on the node (slurm.conf:
# Epilog=/path/to/epilog.sh; a folder of epilogs works too). It removes the ending job's containers, then those of
# jobs Slurm no longer knows as running (a node that failed and came back). It always exits 0: a failing epilog
# drains the node.
#
# Install: copy to every node (e.g. /etc/slurm/epilog.d/labstack.sh), chmod 755, set Epilog= in slurm.conf.
# DOCKER_HOST is honoured when the node's daemon is not the default one.
set -u
LABEL=labstack.slurm.job
TIMEOUT=${LABSTACK_EPILOG_TIMEOUT:-60}

remove_job_containers() {
  local job=$1 ids
  ids=$(timeout "$TIMEOUT" docker ps --all --quiet --filter "label=$LABEL=$job" 2>/dev/null) || return 0
  [ -n "$ids" ] || return 0
  # shellcheck disable=SC2086 # container IDs, one word each
  timeout "$TIMEOUT" docker rm --force $ids >/dev/null 2>&1
  logger -t labstack-epilog "removed the containers of job $job" 2>/dev/null || true
}

command -v docker >/dev/null 2>&1 || exit 0
[ -z "${SLURM_JOB_ID:-}" ] || remove_job_containers "$SLURM_JOB_ID"

# Containers of jobs that are over: squeue names a live job's state, a finished one's, or (once the controller has
# forgotten it) none; a controller that does not answer removes nothing.
jobs=$(timeout "$TIMEOUT" docker ps --all --format "{{.Label \"$LABEL\"}}" 2>/dev/null | sort -u) || exit 0
for job in $jobs; do
  [ "$job" = "${SLURM_JOB_ID:-}" ] && continue
  case $job in *[!0-9]*) continue ;; esac
  if state=$(timeout "$TIMEOUT" squeue --noheader --jobs="$job" --format=%T 2>&1); then
    case $state in
      *RUNNING* | *COMPLETING* | *CONFIGURING* | *SUSPENDED* | *STOPPED* | *SIGNALING* | *RESIZING* | *PENDING*) ;;
      *) remove_job_containers "$job" ;;
    esac
  elif [[ $state == *"Invalid job id"* ]]; then
    remove_job_containers "$job"
  fi
done
exit 0
