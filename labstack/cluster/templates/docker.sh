# --- runtime docker: every task is one `docker run` on its node's daemon (labstack/cluster/templates/docker.sh) ---

check_image() {
  local node=$1 out status
  if ! command -v docker >/dev/null 2>&1; then
    say "$node: no docker command on this node: use --runtime pyxis or apptainer, or a partition with Docker"
    return 1
  fi
  out=$(timeout 30 docker image inspect --format '{{.Id}}' "$IMAGE_ID" 2>&1)
  status=$?
  [ "$status" -eq 0 ] && return 0
  case $out in
    *"No such image"* | *"No such object"*)
      say "$node: $IMAGE (${IMAGE_ID:7:12}) is not on this node's Docker: invoke deploy --hosts ssh://$node --image $IMAGE"
      ;;
    *)
      if [ "$status" -eq 124 ]; then out="no answer in 30 s"; fi
      say "$node: Docker does not answer here (${out##*$'\n'}): ask the admins, or use another partition"
      ;;
  esac
  return 1
}

CONTAINER=""
stop_container() {
  # Docker's client forwards the signal too, but the container must not outlive a client that Slurm kills next.
  event "task-signal $1 ${SLURM_PROCID:-0}"
  [ -z "$CONTAINER" ] || docker kill --signal "$1" "$CONTAINER" >/dev/null 2>&1 || true
}

run_task() {
  local memory gpus
  CONTAINER="labstack-${SLURM_JOB_ID}-${SLURM_STEP_ID:-0}-${SLURM_PROCID:-0}"
  local -a args=(
    --rm --name "$CONTAINER"
    --label "labstack.slurm.job=$SLURM_JOB_ID" --label "labstack.slurm.node=$(node_name)"
    --user "$(id -u):$(id -g)"
    --cpus "${SLURM_CPUS_PER_TASK:-1}"
    --volume "$RUNS:/runs" --volume "$PROJECT:/work" --volume "$DATA:/data:ro" --workdir /work
    --env "LABSTACK_IMAGE=$IMAGE" --env "LABSTACK_IMAGE_ID=$IMAGE_ID" --env "LABSTACK_RUN=$RUN"
    --env HOME=/tmp --env TF_CPP_MIN_LOG_LEVEL=2
    --env "SLURM_JOB_ID=$SLURM_JOB_ID" --env "SLURM_PROCID=${SLURM_PROCID:-0}" --env "SLURMD_NODENAME=$(node_name)"
    --env "RANK=${SLURM_PROCID:-0}" --env "LOCAL_RANK=${SLURM_LOCALID:-0}" --env "WORLD_SIZE=${SLURM_NTASKS:-1}"
    --env "MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}" --env "MASTER_PORT=${MASTER_PORT:-29500}"
  )
  memory=$(task_memory_mb)
  if [ -n "$memory" ]; then
    # /dev/shm is memory too (DataLoader workers pass batches through it): half the task's share.
    args+=(--memory "${memory}m" --memory-swap "${memory}m" --shm-size "$((memory / 2))m")
  fi
  gpus=$(task_gpus)
  if [ -n "$gpus" ]; then
    args+=(--gpus "\"device=$gpus\"")
  fi
  if [ "${SLURM_NTASKS:-1}" -gt 1 ]; then
    args+=(--network host) # ranks reach each other on the nodes' own addresses
  else
    args+=(--network none) # as the train service: a single task reads mounted files only
  fi
  trap 'stop_container TERM' TERM
  trap 'stop_container INT' INT
  run_step docker run "${args[@]}" "$IMAGE_ID" "${COMMAND[@]}"
  exit "$STEP_STATUS"
}

launch_step() {
  run_step srun --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" bash "$SCRIPT" task
}
