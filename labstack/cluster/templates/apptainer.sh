# --- runtime apptainer: apptainer exec on a SIF built from `invoke export` (labstack/cluster/templates/apptainer.sh)
# On paper here: Apptainer is not packaged for Debian. The SIF inherits the task's cgroups; --nv binds the node's
# driver libraries into CUDA images (they must match the node's kernel module, which the preflight checks).

check_image() {
  local node=$1
  if ! command -v apptainer >/dev/null 2>&1; then
    say "$node: no apptainer command on this node: use --runtime docker or pyxis, or load the apptainer module"
    return 1
  fi
  if [ ! -r "$CONTAINER_IMAGE" ]; then
    say "$node: $CONTAINER_IMAGE cannot be read here: build it from \`invoke export\` on storage the nodes share"
    return 1
  fi
}

run_task() {
  local -a nv=()
  [ -z "$MIN_DRIVER" ] || nv=(--nv)
  export APPTAINERENV_LABSTACK_IMAGE=$IMAGE APPTAINERENV_LABSTACK_IMAGE_ID=$IMAGE_ID APPTAINERENV_LABSTACK_RUN=$RUN
  export APPTAINERENV_RANK=${SLURM_PROCID:-0} APPTAINERENV_LOCAL_RANK=${SLURM_LOCALID:-0}
  export APPTAINERENV_WORLD_SIZE=${SLURM_NTASKS:-1} APPTAINERENV_HOME=/tmp
  export APPTAINERENV_MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} APPTAINERENV_MASTER_PORT=${MASTER_PORT:-29500}
  exec apptainer exec --containall --cleanenv "${nv[@]}" --pwd /work \
    --bind "$RUNS:/runs,$PROJECT:/work,$DATA:/data:ro" "$CONTAINER_IMAGE" "${COMMAND[@]}"
}

launch_step() {
  run_step srun --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" bash "$SCRIPT" task
}
