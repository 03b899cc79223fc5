#!/usr/bin/env bash
# Builds the repository's Dockerfile with podman on this machine and runs the image as a
# user would: `doctor`, a tiny `search` that writes its export to a mounted volume as the
# image's non-root user, `predict` on it, and TensorBoard serving its page.
#
# No registry is reachable here, so the base is a stand-in: a Debian 12 root file system
# with Python 3.11 made by debootstrap and imported into podman, passed as the
# Dockerfile's BASE build argument (its default stays the official Python image). The
# build reaches the package index this host's pip uses: the host's pip settings, and the
# local folders and files they name, are mounted into the build read-only; no address is
# written into the repository.
#
# Then it starts examples/compose.yaml with podman-compose: a chief, two workers and
# TensorBoard on the compose network, the token from a secret, a smaller search; one
# worker is killed mid-trial, and every trial must complete once and the export land in
# the volume.
#
# Exit status: 0 every step passed; 1 a step failed; 77 podman, runc, debootstrap or
# podman-compose is missing (apt-get install podman runc debootstrap podman-compose).
# Runs as root (podman imports and runs rootful here). Options through the environment:
#   KT_CHECK_MIRROR  Debian mirror for debootstrap (default: the one apt uses, else
#                    deb.debian.org)
#   KT_CHECK_KEEP=1  keep the image and the work folder
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in podman runc debootstrap podman-compose; do
  if ! command -v "$tool" > /dev/null; then
    echo "check.sh: $tool is missing: apt-get install podman runc debootstrap podman-compose" >&2
    exit 77
  fi
done

# crun, Debian's default runtime, fails on this host's cgroups; limits stay the host's.
podman=(podman --runtime runc)
limits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
base=localhost/kt-pipeline-base:bookworm
image=localhost/kt-pipeline:check
work=$(mktemp -d /var/tmp/kt-pipeline-check.XXXXXX)
started=$(date +%s)
board=""

cleanup() {
  [[ -n "$board" ]] && "${podman[@]}" rm -f "$board" > /dev/null 2>&1 || true
  if [[ -f "$work/compose/compose.yaml" ]]; then
    podman-compose --project-name ktcheck --file "$work/compose/compose.yaml" down -v \
      > /dev/null 2>&1 || true
  fi
  # debootstrap mounts /proc in its root; never follow a mount while removing.
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r umount -l 2> /dev/null || true
  if [[ "${KT_CHECK_KEEP:-0}" != 1 ]]; then
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT

step() { printf '\n== %s (%ss)\n' "$1" "$(($(date +%s) - started))"; }
fail() { echo "check.sh: FAILED: $*" >&2; exit 1; }

step "the stand-in base: Debian 12 and its Python 3.11, from debootstrap"
if ! "${podman[@]}" image exists "$base"; then
  mirror=${KT_CHECK_MIRROR:-$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list \
    /etc/apt/sources.list.d/ 2> /dev/null | grep -oE 'https?://[^ ]+/debian/?( |$)' \
    | head -n 1 || true)}
  mirror=${mirror%% *}
  mirror=${mirror:-http://deb.debian.org/debian}
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -n 5 "$work/debootstrap.log" >&2; fail "debootstrap from $mirror"; }
  tar -C "$work/rootfs" -c . | "${podman[@]}" import --change 'CMD ["/bin/bash"]' - "$base"
  rm -rf --one-file-system "$work/rootfs"
fi
"${podman[@]}" run --rm "${limits[@]}" "$base" python3 --version

step "the build: the repository's Dockerfile on that base"
# The host's pip settings as one file (an environment variable first, as pip reads
# them), and every local path they name.
mounts=()
declare -A seen=()
pip_conf="$work/pip.conf"
echo "[global]" > "$pip_conf"
while IFS= read -r line; do
  key=${line%%=*}
  key=${key##*.}
  value=${line#*=}
  value=${value#\'}
  value=${value%\'}
  [[ -n "${seen[$key]:-}" ]] && continue
  seen[$key]=1
  echo "$key = $value" >> "$pip_conf"
  for item in $value; do
    path=${item#file://}
    # A local index (file://.../simple) links to its files beside it: mount its parent.
    [[ "$item" == file://* ]] && path=$(dirname "$path")
    if [[ "$path" == /* && -e "$path" ]]; then
      mounts+=(--volume "$path:$path:ro")
    fi
  done
done < <(python3 -m pip config list 2> /dev/null || pip config list 2> /dev/null || true)
mounts+=(--volume "$pip_conf:/etc/pip.conf:ro")
"${podman[@]}" build --network host "${limits[@]}" "${mounts[@]}" \
  --build-arg "BASE=$base" --tag "$image" . || fail "podman build"
size=$("${podman[@]}" image inspect "$image" --format '{{.Size}}')

step "doctor: exits 0 and says there is no GPU"
"${podman[@]}" run --rm "${limits[@]}" "$image" doctor | tee "$work/doctor.txt"
grep -q "No GPU" "$work/doctor.txt" || fail "doctor did not say 'No GPU'"
# The GPU wheels as TensorFlow needs them, checked without a GPU.
"${podman[@]}" run --rm "${limits[@]}" "$image" doctor --json > "$work/doctor.json"
python3 - "$work/doctor.json" << 'PY' || fail "the CUDA and cuDNN wheels"
import json, sys
report = json.load(open(sys.argv[1]))
wheels = report["cuda_libraries"]
assert report["usable"] and wheels, report["problems"]
assert all(w["matches"] and w["libraries"] for w in wheels), wheels
built = [w for w in wheels if "built_with" in w]  # cuDNN and the CUDA runtime
assert len(built) == 2, wheels
print(report["build"])
print("; ".join(f"{w['package']} {w['installed']} ({', '.join(w['libraries'])})" for w in wheels))
PY

step "search: a tiny search writes its export to the volume as the image's user (1000)"
mkdir -p "$work/experiments"
chown 1000:1000 "$work/experiments"  # the image's user owns its volume, as on any host
volume=(--volume "$work/experiments:/experiments")
"${podman[@]}" run --rm "${limits[@]}" "${volume[@]}" "$image" search \
  --experiment-dir /experiments/check --tuner random --max-trials 2 --max-epochs 2 \
  || fail "search"
export_dir=$work/experiments/check/export/1
[[ -f "$export_dir/saved_model.pb" ]] || fail "no export at $export_dir"
[[ "$(stat -c %u "$export_dir/saved_model.pb")" == 1000 ]] || fail "export not owned by 1000"

step "predict: the export read back"
"${podman[@]}" run --rm "${limits[@]}" "${volume[@]}" --entrypoint python "$image" -c \
  "from sklearn.datasets import load_digits; load_digits(as_frame=True).frame.head(20).to_csv('/experiments/rows.csv', index=False)"
"${podman[@]}" run --rm "${limits[@]}" "${volume[@]}" "$image" predict \
  --model /experiments/check/export/1 --input /experiments/rows.csv \
  --output /experiments/predictions.csv || fail "predict"
rows=$(($(wc -l < "$work/experiments/predictions.csv") - 1))
[[ "$rows" == 20 ]] || fail "predict wrote $rows rows, not 20"

step "TensorBoard: starts and serves its page"
port=${KT_CHECK_PORT:-16006}
board=$("${podman[@]}" run -d "${limits[@]}" "${volume[@]}" -p "127.0.0.1:$port:6006" \
  --entrypoint tensorboard "$image" --logdir /experiments/check/tensorboard --bind_all)
for _ in $(seq 60); do
  if curl -fsS -o "$work/page.html" "http://127.0.0.1:$port/" 2> /dev/null \
    && grep -q "<title>TensorBoard</title>" "$work/page.html"; then
    served=1
    break
  fi
  sleep 1
done
[[ "${served:-0}" == 1 ]] || fail "TensorBoard served no page on 127.0.0.1:$port in 60 s"

step "compose: a chief, two workers and TensorBoard; one worker killed mid-trial"
# podman-compose runs podman itself: runc and the limits come from a containers.conf.
printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' \
  > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf
podman tag "$image" localhost/kt-pipeline:latest
mkdir -p "$work/compose"
# The compose file as written, with a CPU-sized search for its 40 Bayesian trials.
sed 's/"--tuner", "bayesian", "--max-trials", "40"/"--tuner", "random", "--max-trials", "6", "--max-epochs", "10"/' \
  examples/compose.yaml > "$work/compose/compose.yaml"
python3 -c "import secrets; print(secrets.token_hex(32))" > "$work/compose/oracle_token"
compose=(podman-compose --project-name ktcheck --file "$work/compose/compose.yaml")
project=ktcheck
"${compose[@]}" up -d > "$work/compose.log" 2>&1 || { tail -n 20 "$work/compose.log" >&2; fail "compose up"; }
for _ in $(seq 300); do
  podman logs "${project}_worker-1_1" 2>&1 | grep -q '^trial ' && break
  sleep 1
done
podman logs "${project}_worker-1_1" 2>&1 | grep -q '^trial ' || fail "worker-1 finished no trial in 300 s"
podman kill "${project}_worker-1_1" > /dev/null  # in its next trial
echo "killed worker-1 after its first trial"
status=$(timeout 900 podman wait "${project}_chief_1") || fail "the chief did not finish in 900 s"
podman logs "${project}_chief_1" > "$work/chief.log" 2>&1
[[ "$status" == 0 ]] || { tail -n 20 "$work/chief.log" >&2; fail "the chief exited $status"; }
grep -q "presumed dead" "$work/chief.log" || fail "the chief never took worker-1's trial back"
shared=$(podman volume inspect "${project}_experiments" --format '{{.Mountpoint}}')
python3 - "$shared/digits/results.csv" << 'PY' || fail "results.csv"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ids = [row["trial_id"] for row in rows]
assert len(rows) == 6 and len(set(ids)) == 6, ids  # every trial once
assert all(row["status"] == "COMPLETED" for row in rows), [row["status"] for row in rows]
print("results.csv: 6 trials, each completed once, by", sorted({row["worker"] for row in rows}))
PY
[[ -f "$shared/digits/export/1/saved_model.pb" ]] || fail "no export in the volume"
curl -fsS -o "$work/compose-board.html" http://127.0.0.1:6006/ || fail "compose's TensorBoard"
"${compose[@]}" down -v > /dev/null 2>&1 || true

seconds=$(($(date +%s) - started))
commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
printf '\ncheck.sh: every step passed: %s, commit %s, %s s, image %s MB\n' \
  "$(date -u +%Y-%m-%d)" "$commit" "$seconds" "$((size / 1000000))"
