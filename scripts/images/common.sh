# Shared settings of the image scripts (sourced). buildah as Debian packages it, rootful, on a host without
# a Docker engine: vfs storage (no overlay mounts in a container) and chroot isolation (no user namespaces).
BASE_IMAGE="${FLYWHEEL_BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
ML_TASKS_IMAGE="${FLYWHEEL_ML_TASKS_IMAGE:-localhost/flywheel-ml-tasks:ci}"
AIRFLOW_IMAGE="${FLYWHEEL_AIRFLOW_IMAGE:-localhost/flywheel-airflow:ci}"
STORAGE_DRIVER="${FLYWHEEL_BUILDAH_STORAGE_DRIVER:-vfs}"

bah() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "$1 not found: install it (as root: apt-get install -y buildah debootstrap)" >&2
    exit 2
  }
}

# the Debian mirror apt already uses on this host (deb822 or one-line sources)
apt_mirror() {
  local uri
  uri=$(grep -hoE '^(URIs: *|deb +)https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/* /etc/apt/sources.list \
    2>/dev/null | head -1 | sed -E 's/^(URIs: *|deb +)//; s/ *$//')
  echo "${uri:-http://deb.debian.org/debian}"
}

# the image's size as buildah reports it (e.g. "1.2 GB")
image_size() { bah images --noheading --format '{{.Size}}' "$1" 2>/dev/null | head -1; }
