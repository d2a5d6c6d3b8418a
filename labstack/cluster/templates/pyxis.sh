# --- runtime pyxis: srun --container-image (NVIDIA pyxis + enroot) (labstack/cluster/templates/pyxis.sh) ----------
# On paper here: neither pyxis nor enroot is packaged for Debian. Slurm's own cgroups confine the container (it is
# the task), enroot's hooks give it the allocated GPUs, and it runs as the user.

check_image() {
  local node=$1
  case $CONTAINER_IMAGE in
    dockerd://*)
      if ! timeout 30 docker image inspect --format '{{.Id}}' "$IMAGE_ID" >/dev/null 2>&1; then
        say "$node: $IMAGE (${IMAGE_ID:7:12}) is not on this node's Docker, which enroot imports from: invoke deploy --hosts ssh://$node --image $IMAGE"
        return 1
      fi
      ;;
    /*)
      if [ ! -r "$CONTAINER_IMAGE" ]; then
        say "$node: $CONTAINER_IMAGE cannot be read here: put the squashfs image on storage the nodes share"
        return 1
      fi
      ;;
  esac
}

run_task() {
  say "the pyxis runtime runs its tasks through srun --container-image, not as tasks of this script"
  exit 2
}

launch_step() {
  run_step srun --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
    --container-image="$CONTAINER_IMAGE" --container-workdir=/work --no-container-mount-home \
    --container-mounts="$RUNS:/runs,$PROJECT:/work,$DATA:/data:ro" \
    --export="ALL,LABSTACK_IMAGE=$IMAGE,LABSTACK_IMAGE_ID=$IMAGE_ID,LABSTACK_RUN=$RUN,HOME=/tmp" \
    "${COMMAND[@]}"
}
