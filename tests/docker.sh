#!/usr/bin/env bash
# Tests the runtime Docker image of Tollgate without any container registry:
#
#   1. the gateway binary is built on the host (`cargo build --release --locked
#      --bin tollgate`), or taken from TOLLGATE_BIN;
#   2. the base image of the Dockerfile's runtime stage (debian:<suite>-slim)
#      is used when it is already present, else a minimal Debian of the
#      host's release is bootstrapped from Debian packages (mmdebstrap, or
#      debootstrap) and imported as localhost/tollgate-test-base:<suite>;
#   3. the runtime image is built from the runtime stage of ./Dockerfile
#      itself (its last stage, with `COPY --from=build …/tollgate` turned into
#      a copy of the host binary), so USER, WORKDIR, ENV, EXPOSE, ENTRYPOINT
#      and CMD are the real ones;
#   4. checks, each printed as PASS/FAIL: the server runs as a non-root user,
#      `tollgate users add` works on the /data volume before the server starts,
#      GET /healthz answers 200 on a published port, a chat completion through
#      the offline mock provider is metered (GET /api/me balance < 5), and the
#      SQLite file on the volume survives removing the container (a new
#      container on the same volume shows the same balance).
#
# Exit codes: 0 all checks passed; 1 a check failed; 2 usage error;
# 77 skipped: no container runtime can run containers here, or a prerequisite
# (curl, mmdebstrap/debootstrap for a missing base image) is missing.
#
# Environment:
#   TOLLGATE_BIN=PATH          use this binary instead of building one
#   CONTAINER_RUNTIME=docker|podman   force a runtime (default: docker if its
#                              daemon answers and runs a container, else podman)
#   CONTAINER_RUN_ARGS="…"     extra arguments for every `run` (e.g. for
#                              podman: "--cgroups=disabled")
#   CONTAINER_BUILD_ARGS="…"   extra arguments for `build` (e.g. for podman:
#                              "--isolation=chroot")
#   TOLLGATE_DOCKER_NET=host   run the server with --network host on a free
#                              loopback port instead of publishing 4000
#   TOLLGATE_DEBIAN_SUITE=S    Debian release of the bootstrapped base
#                              (default: the host's if it is Debian, else the
#                              Dockerfile's)
#   TOLLGATE_DEBIAN_MIRROR=URL mirror for the bootstrap (default: the tool's)
#   TOLLGATE_DOCKER_CACHE=DIR  where the bootstrap tarball is kept
#                              (default: ~/.cache/tollgate-docker-test)
#   TOLLGATE_DOCKER_KEEP=1     keep the test image, containers and volume
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SKIP=77
NAME="tollgate-test-$$"
IMAGE="localhost/tollgate-test:$$"
VOLUME="$NAME-data"
ADMIN_TOKEN="tgtest-admin-token-$(date +%s)-0123456789abcdef"
EMAIL="docker-test@example.com"

log() { printf '[docker.sh] %s\n' "$*" >&2; }
passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'PASS: %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL: %s\n' "$*"; }
skip_exit() {
  printf 'SKIPPED: %s\n' "$*"
  printf 'docker.sh: skipped (exit %d): no check was run\n' "$SKIP"
  exit "$SKIP"
}
finish() {
  printf '%d passed, %d failed\n' "$passed" "$failed"
  [ "$failed" -eq 0 ] && exit 0
  exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-docker.XXXXXX")
RT=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$RT" ] && [ "${TOLLGATE_DOCKER_KEEP:-0}" != 1 ]; then
    "$RT" rm -f "$NAME-a" "$NAME-b" >/dev/null 2>&1
    "$RT" volume rm -f "$VOLUME" >/dev/null 2>&1
    "$RT" rmi "$IMAGE" >/dev/null 2>&1
  elif [ -n "$RT" ]; then
    log "kept: image $IMAGE, containers $NAME-a/$NAME-b, volume $VOLUME ($RT)"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v curl >/dev/null || skip_exit "curl is not installed on the host (apt-get install curl)"

# --- the Dockerfile's runtime stage ------------------------------------------
DOCKERFILE="$ROOT/Dockerfile"
[ -f "$DOCKERFILE" ] || { echo "docker.sh: no $DOCKERFILE" >&2; exit 2; }
# The last FROM's image, e.g. debian:bookworm-slim.
DOCKERFILE_BASE=$(awk 'toupper($1) == "FROM" { img = $2 } END { print img }' "$DOCKERFILE")
DOCKERFILE_SUITE=$(printf '%s' "$DOCKERFILE_BASE" | sed -n 's/^debian:\([a-z]*\).*/\1/p')
[ -n "$DOCKERFILE_SUITE" ] || DOCKERFILE_SUITE=bookworm

HOST_SUITE=""
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  HOST_SUITE=$(. /etc/os-release && [ "${ID:-}" = debian ] && printf '%s' "${VERSION_CODENAME:-}")
fi
SUITE=${TOLLGATE_DEBIAN_SUITE:-${HOST_SUITE:-$DOCKERFILE_SUITE}}
if [ -z "$HOST_SUITE" ] && [ -z "${TOLLGATE_DEBIAN_SUITE:-}" ]; then
  log "the host is not Debian: the host-built binary must run on Debian $SUITE's glibc"
fi
if [ "$SUITE" = "$DOCKERFILE_SUITE" ]; then
  UPSTREAM_BASE=$DOCKERFILE_BASE
else
  UPSTREAM_BASE="debian:$SUITE-slim"
  log "the host is Debian $SUITE, the Dockerfile uses $DOCKERFILE_BASE: the base is Debian $SUITE (glibc of the host-built binary)"
fi
LOCAL_BASE="localhost/tollgate-test-base:$SUITE"

# --- 1. the binary -------------------------------------------------------------
if [ -n "${TOLLGATE_BIN:-}" ]; then
  BIN=$TOLLGATE_BIN
  [ -x "$BIN" ] || { echo "docker.sh: TOLLGATE_BIN=$BIN is not an executable file" >&2; exit 2; }
  log "binary: $BIN (TOLLGATE_BIN; nothing compiled)"
else
  log "binary: cargo build --release --locked --bin tollgate"
  (cd "$ROOT" && cargo build --release --locked --bin tollgate) || {
    fail "build the gateway binary on the host (cargo build --release --locked --bin tollgate)"
    finish
  }
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate"
fi

# --- 2. a container runtime and a base image ----------------------------------
# A minimal Debian tarball of $SUITE, kept between runs.
CACHE=${TOLLGATE_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-docker-test}
TARBALL="$CACHE/debian-$SUITE-minbase.tar"
bootstrap_tarball() {
  [ -s "$TARBALL" ] && return 0
  mkdir -p "$CACHE" || return 1
  local mirror=()
  [ -n "${TOLLGATE_DEBIAN_MIRROR:-}" ] && mirror=("$TOLLGATE_DEBIAN_MIRROR")
  if command -v mmdebstrap >/dev/null; then
    log "bootstrapping Debian $SUITE (minbase) with mmdebstrap into $TARBALL"
    # Like debian:*-slim: no man pages, docs or translations.
    mmdebstrap --variant=minbase --format=tar \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --aptopt='Acquire::Languages "none"' \
      "$SUITE" "$TARBALL.part" "${mirror[@]}" || { rm -rf "$TARBALL.part"; return 1; }
  elif command -v debootstrap >/dev/null; then
    log "bootstrapping Debian $SUITE (minbase) with debootstrap into $TARBALL"
    local dir="$WORK/rootfs"
    if ! debootstrap --variant=minbase "$SUITE" "$dir" "${mirror[@]}" ||
      ! tar -C "$dir" --numeric-owner -cf "$TARBALL.part" .; then
      rm -rf "$TARBALL.part"
      return 1
    fi
  else
    return 3
  fi
  mv "$TARBALL.part" "$TARBALL"
}

has_image() { "$1" image inspect "$2" >/dev/null 2>&1; }

# Makes $BASE name an image present in runtime $1, bootstrapping one if needed.
ensure_base() {
  local rt=$1
  if has_image "$rt" "$UPSTREAM_BASE"; then BASE=$UPSTREAM_BASE; return 0; fi
  BASE=$LOCAL_BASE
  has_image "$rt" "$BASE" && return 0
  log "$UPSTREAM_BASE is not present in $rt and no registry is used: bootstrapping $BASE"
  bootstrap_tarball
  local status=$?
  if [ "$status" -eq 3 ]; then
    skip_exit "neither mmdebstrap nor debootstrap is installed, and $UPSTREAM_BASE is not present in $rt (apt-get install mmdebstrap)"
  elif [ "$status" -ne 0 ]; then
    fail "bootstrap a Debian $SUITE base image (see the errors above)"
    finish
  fi
  log "$rt import $TARBALL $BASE"
  "$rt" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    "$TARBALL" "$BASE" >/dev/null || { fail "$rt import of the bootstrapped base"; finish; }
}

read -r -a RUN_ARGS <<<"${CONTAINER_RUN_ARGS:-}"
read -r -a BUILD_ARGS <<<"${CONTAINER_BUILD_ARGS:-}"

# Whether runtime $1 can run a container: its errors go to $WORK/$1.err.
try_runtime() {
  local rt=$1 err="$WORK/$1.err"
  if ! command -v "$rt" >/dev/null; then
    echo "$rt: command not found" >"$err"
    return 1
  fi
  if ! "$rt" info >/dev/null 2>"$err"; then
    return 1
  fi
  ensure_base "$rt"
  log "$rt: probing with \`$rt run --rm ${RUN_ARGS[*]} $BASE true\`"
  "$rt" run --rm "${RUN_ARGS[@]}" "$BASE" true >/dev/null 2>"$err" && return 0
  log "$rt: $(tr '\n' ' ' <"$err")"
  [ "$rt" = podman ] && [ -z "${CONTAINER_RUN_ARGS:-}${CONTAINER_BUILD_ARGS:-}" ] || return 1
  # Rootful podman asks for rlimits above a sandbox's hard limits (crun:
  # "setrlimit `RLIMIT_NOFILE`: Operation not permitted"), and crun refuses
  # hybrid cgroup v1/v2 hosts: retry within the host's limits, then with runc.
  local nofile nproc
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] && nofile=1048576
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
  local limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  local attempt
  for attempt in "" "--runtime runc"; do
    read -r -a RUN_ARGS <<<"${limits[*]} $attempt"
    log "$rt: retrying with \`$rt run --rm ${RUN_ARGS[*]} $BASE true\`"
    if "$rt" run --rm "${RUN_ARGS[@]}" "$BASE" true >/dev/null 2>"$err.retry"; then
      BUILD_ARGS=("${RUN_ARGS[@]}")
      log "$rt: works with ${RUN_ARGS[*]} (used for build and every run)"
      return 0
    fi
    log "$rt: $(tr '\n' ' ' <"$err.retry")"
    cat "$err.retry" >>"$err"
  done
  return 1
}

if [ -n "${CONTAINER_RUNTIME:-}" ]; then
  CANDIDATES=("$CONTAINER_RUNTIME")
else
  CANDIDATES=(docker podman)
fi
for rt in "${CANDIDATES[@]}"; do
  if try_runtime "$rt"; then RT=$rt; break; fi
done
if [ -z "$RT" ]; then
  for rt in "${CANDIDATES[@]}"; do
    printf '%s cannot run a container here:\n' "$rt"
    sed 's/^/    /' "$WORK/$rt.err"
  done
  skip_exit "no container runtime can run containers on this machine (tried: ${CANDIDATES[*]})"
fi
RT_VERSION=$("$RT" version --format '{{.Server.Version}}' 2>/dev/null || "$RT" --version 2>/dev/null)
echo "runtime: $RT ($RT_VERSION), base image: $BASE"

# --- 3. the runtime image ------------------------------------------------------
CTX="$WORK/context"
mkdir -p "$CTX/config"
cp "$BIN" "$CTX/tollgate"
cp "$ROOT"/config/*.toml "$CTX/config/"
# The Dockerfile's last stage, on the local base, with the host binary.
awk -v base="$BASE" '
  toupper($1) == "FROM" { n++ }
  { line[NR] = $0; stage[NR] = n }
  END {
    for (i = 1; i <= NR; i++) {
      if (stage[i] != n) continue
      l = line[i]
      if (toupper(l) ~ /^FROM /) { print "FROM " base; continue }
      if (l ~ /^COPY +--from=[^ ]+ +[^ ]*\/tollgate +/) {
        sub(/^COPY +--from=[^ ]+ +[^ ]*\/tollgate +/, "COPY tollgate ", l)
      } else if (l ~ /--from=/) {
        print "docker.sh: cannot rewrite: " l > "/dev/stderr"; bad = 1
      }
      print l
    }
    exit bad
  }' "$DOCKERFILE" >"$CTX/Dockerfile" || { fail "derive the runtime stage from $DOCKERFILE"; finish; }
log "runtime Dockerfile (the last stage of ./Dockerfile):"
sed 's/^/    /' "$CTX/Dockerfile" >&2

BUILD=("$RT" build)
if [ "$RT" = docker ] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0 # the legacy builder: no buildx plugin here
fi
[ "$RT" = podman ] && BUILD+=(--pull=never)
log "${BUILD[*]} ${BUILD_ARGS[*]} -t $IMAGE $CTX"
if "${BUILD[@]}" "${BUILD_ARGS[@]}" -t "$IMAGE" "$CTX" >"$WORK/build.log" 2>&1; then
  pass "image builds ($IMAGE from $BASE, $RT)"
else
  tail -30 "$WORK/build.log" | sed 's/^/    /'
  fail "image builds ($RT build)"
  finish
fi

# --- 4. the checks -------------------------------------------------------------
"$RT" volume create "$VOLUME" >/dev/null || { fail "$RT volume create $VOLUME"; finish; }

# A user with $5, created by the CLI on the volume before any server runs.
if "$RT" run --rm "${RUN_ARGS[@]}" -v "$VOLUME:/data" "$IMAGE" \
  users add "$EMAIL" --credits 5 >"$WORK/users-add.out" 2>&1; then
  KEY=$(sed -n 's/^key:[[:space:]]*//p' "$WORK/users-add.out")
fi
ON_VOLUME=$("$RT" run --rm "${RUN_ARGS[@]}" -v "$VOLUME:/data" --entrypoint ls "$IMAGE" /data 2>&1)
if [ -n "${KEY:-}" ] && printf '%s\n' "$ON_VOLUME" | grep -qx tollgate.db; then
  pass "\`tollgate users add $EMAIL --credits 5\` on the /data volume: $(grep -E '^(user|balance):' "$WORK/users-add.out" | tr -s ' ' | paste -sd ';' -)"
else
  sed 's/^/    /' "$WORK/users-add.out"
  fail "\`tollgate users add\` on the /data volume (key: '${KEY:-}'; files on the volume: $(printf '%s' "$ON_VOLUME" | paste -sd ' ' -))"
  finish
fi

if [ "${TOLLGATE_DOCKER_NET:-}" = host ]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000)))
fi

# Starts container $1 on the volume; sets URL.
start_server() {
  local name=$1 net=()
  if [ "${TOLLGATE_DOCKER_NET:-}" = host ]; then
    net=(--network host -e "TOLLGATE_SERVER__LISTEN=127.0.0.1:$PORT")
  else
    net=(-p 127.0.0.1::4000)
  fi
  "$RT" run -d --name "$name" "${RUN_ARGS[@]}" "${net[@]}" -v "$VOLUME:/data" \
    -e "TOLLGATE_ADMIN_TOKEN=$ADMIN_TOKEN" "$IMAGE" >"$WORK/$name.run" 2>&1 || {
    sed 's/^/    /' "$WORK/$name.run"
    return 1
  }
  if [ "${TOLLGATE_DOCKER_NET:-}" = host ]; then
    URL="http://127.0.0.1:$PORT"
  else
    local hostport
    hostport=$("$RT" port "$name" 4000/tcp 2>/dev/null | grep -m1 -E '^(127\.0\.0\.1|0\.0\.0\.0):')
    URL="http://127.0.0.1:${hostport##*:}"
  fi
}

# Waits up to 30 s for GET /healthz; prints its status code.
wait_healthy() {
  local name=$1 code=000
  for _ in $(seq 1 60); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/healthz" || true)
    [ "$code" = 200 ] && break
    [ "$("$RT" inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || break
    sleep 0.5
  done
  echo "$code"
}

container_logs() { "$RT" logs "$1" 2>&1 | tail -20 | sed 's/^/    /'; }

balance() {
  curl -s --max-time 5 "$URL/api/me" -H "Authorization: Bearer $KEY" |
    sed -n 's/.*"balance_usd":"\([^"]*\)".*/\1/p'
}

if ! start_server "$NAME-a"; then
  fail "the server container starts"
  finish
fi
CODE=$(wait_healthy "$NAME-a")
if [ "$CODE" = 200 ]; then
  pass "GET /healthz answers 200 on ${TOLLGATE_DOCKER_NET:+the host network, }$URL/healthz"
else
  container_logs "$NAME-a"
  fail "GET /healthz on $URL answered $CODE (container: $("$RT" inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$NAME-a" 2>&1))"
  finish
fi

# The server process (PID 1) and the image's default user.
PID1_UID=$("$RT" exec "$NAME-a" sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' /proc/1/status 2>&1)
EXEC_UID=$("$RT" exec "$NAME-a" id -u 2>&1)
IMAGE_USER=$("$RT" image inspect -f '{{.Config.User}}' "$IMAGE" 2>&1)
if [[ "$PID1_UID" =~ ^[0-9]+$ ]] && [ "$PID1_UID" != 0 ] && [ "$EXEC_UID" != 0 ]; then
  pass "runs as a non-root user (server PID 1 uid=$PID1_UID, \`id -u\`=$EXEC_UID, image USER=$IMAGE_USER)"
else
  fail "runs as a non-root user (server PID 1 uid=$PID1_UID, \`id -u\`=$EXEC_UID, image USER=$IMAGE_USER)"
fi

RESPONSE=$(curl -s --max-time 10 -w '\n%{http_code}' "$URL/v1/chat/completions" \
  -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  -d '{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}')
STATUS=${RESPONSE##*$'\n'}
BALANCE=""
for _ in $(seq 1 20); do
  BALANCE=$(balance)
  [ -n "$BALANCE" ] && awk -v b="$BALANCE" 'BEGIN { exit !(b + 0 < 5) }' && break
  sleep 0.5
done
if [ "$STATUS" = 200 ] && [ -n "$BALANCE" ] && awk -v b="$BALANCE" 'BEGIN { exit !(b + 0 < 5) }'; then
  pass "a mock-1 chat completion is metered (POST /v1/chat/completions 200; GET /api/me balance_usd 5 -> $BALANCE)"
else
  printf '    response: %s\n' "${RESPONSE%$'\n'*}"
  container_logs "$NAME-a"
  fail "a mock-1 chat completion is metered (POST status $STATUS; balance_usd '${BALANCE}', expected < 5)"
fi

# Persistence: stop (SIGTERM drains the ledger), remove, start anew.
"$RT" stop -t 20 "$NAME-a" >/dev/null 2>&1
STOPPED=$("$RT" inspect -f '{{.State.ExitCode}}' "$NAME-a" 2>&1)
"$RT" rm -f "$NAME-a" >/dev/null 2>&1
DB_LS=$("$RT" run --rm "${RUN_ARGS[@]}" -v "$VOLUME:/data" --entrypoint ls "$IMAGE" -ln /data 2>&1 | grep tollgate.db | tr -s ' ' | paste -sd ';' -)
if ! start_server "$NAME-b"; then
  fail "a new container starts on the same volume"
  finish
fi
CODE=$(wait_healthy "$NAME-b")
AFTER=$(balance)
if [ "$CODE" = 200 ] && [ -n "$BALANCE" ] && [ "$AFTER" = "$BALANCE" ]; then
  pass "the SQLite file persists on the volume across a restart (first container exited $STOPPED; new container: balance_usd $AFTER; /data: $DB_LS)"
else
  container_logs "$NAME-b"
  fail "the SQLite file persists on the volume across a restart (healthz $CODE; balance before '$BALANCE', after '$AFTER'; /data: $DB_LS)"
fi
"$RT" stop -t 20 "$NAME-b" >/dev/null 2>&1

finish
