# --- every runtime: what a labstack job does (labstack/cluster/templates/common.sh) --------------------------------
# The same file runs three ways: `sbatch` runs it as the batch script (no argument), and the batch script runs it
# again on the nodes as `check` (one task per node: the node preflight) and, for the docker runtime, as `task`
# (every task: one container). SCRIPT is this file in the run's folder, which the nodes share with the login
# node, as they share the runs folder the checkpoints go to.

say() { printf 'labstack: %s\n' "$*" >&2; }

# One line per event, "<epoch ns> <event> [detail]", in the run's slurm folder: what the figures and tests read.
event() { printf '%s %s\n' "$(date +%s%N)" "$*" >>"$EVENTS_DIR/${SLURM_JOB_ID:-0}.events"; }

node_name() { printf '%s' "${SLURMD_NODENAME:-$(hostname -s)}"; }

# The allocated GPUs this task may use, as the node numbers them: its own share of the step's GPUs when the job
# asked for GPUs per task (SLURM_STEP_GPUS lists the node's, in task order), else all the step's or job's. Not
# CUDA_VISIBLE_DEVICES: with ConstrainDevices Slurm renumbers it from 0, and Docker's daemon, outside the task's
# cgroup, needs the node's own numbers.
task_gpus() {
  local all=${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}
  [ -n "$all" ] || return 0
  if [ "${GPUS_PER_TASK:-0}" -gt 0 ]; then
    local -a ids
    IFS=, read -r -a ids <<<"$all"
    local first=$((${SLURM_LOCALID:-0} * GPUS_PER_TASK))
    if [ "${#ids[@]}" -ge $((first + GPUS_PER_TASK)) ]; then
      local IFS=,
      printf '%s' "${ids[*]:first:GPUS_PER_TASK}"
      return 0
    fi
  fi
  printf '%s' "$all"
}

# This task's memory in MB: --mem-per-cpu times its CPUs, or --mem (per node) shared by the node's tasks; empty
# when the job asked for neither and the cluster gives none.
task_memory_mb() {
  local cpus=${SLURM_CPUS_PER_TASK:-1}
  if [ -n "${SLURM_MEM_PER_CPU:-}" ]; then
    printf '%s' $((SLURM_MEM_PER_CPU * cpus))
  elif [ -n "${SLURM_MEM_PER_NODE:-}" ] && [ "${SLURM_MEM_PER_NODE}" -gt 0 ]; then
    printf '%s' $((SLURM_MEM_PER_NODE / ${SLURM_NTASKS_PER_NODE:-1}))
  fi
}

# The node preflight, one task per node: the image is here with the expected ID; a CUDA image's driver is new
# enough. Prints "<node> ok <ms>", or one `labstack:` line naming the fix, and fails.
check_node() {
  local node began driver
  node=$(node_name)
  began=$(date +%s%N)
  check_image "$node" || return 1
  if [ -n "$MIN_DRIVER" ]; then
    if ! driver=$(timeout 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1) \
      || [ -z "$driver" ]; then
      say "$node: no NVIDIA driver answers (nvidia-smi): $IMAGE needs one, $MIN_DRIVER or newer; use a CPU image or a GPU partition"
      return 1
    fi
    # Dotted versions compare as sort -V orders them: 580.65.06 < 580.82 < 590.1.
    if [ "$driver" != "$MIN_DRIVER" ] \
      && [ "$(printf '%s\n' "$driver" "$MIN_DRIVER" | sort -V | head -n 1)" = "$driver" ]; then
      say "$node: NVIDIA driver $driver is older than the $MIN_DRIVER that $IMAGE needs: ask the admins, or use an image built for an older CUDA"
      return 1
    fi
  fi
  printf '%s ok %s\n' "$node" $((($(date +%s%N) - began) / 1000000))
}

# Runs one step in the background and waits for it, so that a signal to the batch script is handled at once;
# sets STEP_STATUS.
run_step() {
  local pid
  "$@" &
  pid=$!
  while :; do
    wait "$pid"
    STEP_STATUS=$?
    kill -0 "$pid" 2>/dev/null || break
  done
}

# --signal=B:TERM@LEAD signals this batch script only. It passes the signal to the training step's tasks on every
# node with `scancel --signal` (which signals without cancelling; not through srun, which takes SIGTERM as "kill the
# step"), and each task stops its container, which checkpoints. Slurm may send it up to 60 s before LEAD, so it
# can come before the training step has started: then the job stops after the preflight. scancel and the time limit
# signal every process of the job, tasks included, so passing it on again is harmless.
SIGNALLED=""
TRAINING=""
on_signal() {
  SIGNALLED=$1
  event "signal $1"
  [ -z "$TRAINING" ] || scancel --signal="$1" "$SLURM_JOB_ID" >/dev/null 2>&1 || true
}

first_node_address() {
  local first
  first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  scontrol show node "$first" 2>/dev/null | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n 1
}

batch() {
  trap 'on_signal TERM' TERM
  trap 'on_signal INT' INT
  mkdir -p "$EVENTS_DIR"
  event start
  printf 'labstack: job %s on %s: %s (%s), runtime %s, run %s\n' "$SLURM_JOB_ID" "$SLURM_JOB_NODELIST" "$IMAGE" \
    "${IMAGE_ID:7:12}" "$RUNTIME" "$RUN"

  event preflight-start
  run_step srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 \
    --cpus-per-task=1 --kill-on-bad-exit=0 --job-name=labstack-check bash "$SCRIPT" check
  if [ "$STEP_STATUS" -ne 0 ]; then
    event "preflight-failed $STEP_STATUS"
    say "node preflight failed (the lines above name each node and the fix): nothing was started"
    exit 1
  fi
  event preflight-ok
  if [ -n "$SIGNALLED" ]; then
    say "job $SLURM_JOB_ID got SIG$SIGNALLED before its step started: nothing to checkpoint yet; submit again with a longer --time"
    exit 143
  fi

  MASTER_ADDR=$(first_node_address)
  MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
  export MASTER_ADDR MASTER_PORT
  event step-start
  TRAINING=1
  launch_step
  TRAINING=""
  event "step-end $STEP_STATUS"
  case $STEP_STATUS in
    0) printf 'labstack: job %s finished: results in %s/%s\n' "$SLURM_JOB_ID" "$RUNS" "$RUN" ;;
    130 | 137 | 143 | 15 | 9)
      say "job $SLURM_JOB_ID stopped (${SIGNALLED:-signal}, exit $STEP_STATUS): the checkpoint is in $RUNS/$RUN; resubmit to resume: sbatch $SCRIPT"
      ;;
    *) say "job $SLURM_JOB_ID: the step failed with exit $STEP_STATUS (its output is above)" ;;
  esac
  exit "$STEP_STATUS"
}

dispatch() {
  case ${1:-} in
    check) check_node ;;
    task) run_task ;;
    "") batch ;;
    *)
      say "unknown mode $1: sbatch this script without arguments"
      exit 2
      ;;
  esac
}

# Run, not sourced: sourcing defines the settings and functions only (the unit tests call them one by one).
[[ ${BASH_SOURCE[0]} != "$0" ]] || dispatch "$@"
