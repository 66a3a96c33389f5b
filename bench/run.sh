#!/usr/bin/env bash
# Benchmark of the gateway against a direct upstream, nginx (plain proxy) and haproxy (JWT edge),
# and against itself with revocation checks off (gateway-norevoke) and with its hot path
# interpreted instead of compiled (gateway-interpreted).
# One command; see bench/README.md. Everything listens on 127.0.0.1 only, runs in the
# foreground under this script, and is killed on exit (trap). Settings come from the environment:
#   DURATION=10s ROUNDS=3 CONNECTIONS=50 THREADS=1 WARMUP=2s PROXY_CPU=0 WRK_CPU=1
#   VENV=<repo>/.venv GATEWAY_START_TIMEOUT=15
#   TARGETS="direct nginx haproxy gateway gateway-norevoke gateway-interpreted"
#   BENCH_REDIS=1 if a Redis answers on 127.0.0.1:6379, else 0 (the gateways use it)
#   NICE=-10 (as root; 0 otherwise)
#   RESULTS=bench/results/latest.json KEEP_WORKDIR=0 GATEWAY_JWT_SECRET=<random if unset>
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
VENV=${VENV:-$REPO/.venv}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
GATEWAY_START_TIMEOUT=${GATEWAY_START_TIMEOUT:-15}
TARGETS=${TARGETS:-"direct nginx haproxy gateway gateway-norevoke gateway-interpreted"}
RESULTS=${RESULTS:-$BENCH_DIR/results/latest.json}
BENCH_EMAIL=bench@example.com
BENCH_PASSWORD=bench-password-123

log() { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# "10s" / "2m" / "10" -> whole seconds (wrk's own duration syntax, integers only).
to_secs() {
  case $1 in
    *s) echo "${1%s}" ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *h) echo $(( ${1%h} * 3600 )) ;;
    *) echo "$1" ;;
  esac
}
[[ $(to_secs "$DURATION") =~ ^[0-9]+$ ]] || die "DURATION must look like 10s, 2m or 10 (got $DURATION)"
[[ $(to_secs "$WARMUP") =~ ^[0-9]+$ ]] || die "WARMUP must look like 2s (got $WARMUP)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got $ROUNDS)"
DURATION_S=$(to_secs "$DURATION")
WARMUP_S=$(to_secs "$WARMUP")
for target in $TARGETS; do
  case $target in
    direct | nginx | haproxy | gateway | gateway-norevoke | gateway-interpreted) ;;
    *) die "unknown target in TARGETS: $target (direct nginx haproxy gateway gateway-norevoke gateway-interpreted)" ;;
  esac
done

# ------------------------------------------------------------------ 1. tools (idempotent)
ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
[ -e "$ECHO_MODULE" ] || need+=(libnginx-mod-http-echo)   # request echo for the sanity checks
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
  SUDO=()
  [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  log "installing with apt-get: ${need[*]}"
  apt_log=$(mktemp)
  if ! { "${SUDO[@]}" apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq \
           --no-install-recommends "${need[@]}"; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get install ${need[*]} failed"
  fi
  rm -f "$apt_log"
fi
PATH=$PATH:/usr/sbin:/sbin

PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  warn "no python at $PY (set VENV); using $(command -v python3)"
  PY=$(command -v python3)
fi
REPORT=("$PY" "$BENCH_DIR/report.py")

# The gateway as production runs it: the hot path compiled with mypyc (gateway/native.py), from
# the checkout's build/native (made or refreshed by `./dev native`); gateway-interpreted runs
# the same sources interpreted. PYTHONSAFEPATH keeps the working directory off sys.path, so
# PYTHONPATH alone says which of the two `python -m gateway` imports.
NATIVE_DIR=$REPO/build/native
if [[ " $TARGETS " == *" gateway "* || " $TARGETS " == *" gateway-norevoke "* ]]; then
  "$REPO/dev" native >/dev/null || die "could not build the compiled hot path (./dev native)"
fi
declare -A GATEWAY_PATH=([gateway]="$NATIVE_DIR" [gateway-norevoke]="$NATIVE_DIR" [gateway-interpreted]="$REPO")
build_of() {  # the hot path a gateway target runs, as gateway.native describes it
  PYTHONSAFEPATH=1 PYTHONPATH=${GATEWAY_PATH[$1]} "$PY" -c \
    'import gateway.native as n; print(n.describe())' 2>/dev/null || echo unknown
}
TOKENS=("$PY" "$BENCH_DIR/tokens.py")

# Redis for both gateways (BENCH_REDIS=1): revocations then come through the Redis mirror fed by
# pub/sub, the path of a replica; keys live under a per-run prefix, deleted at exit.
REDIS_HOST=127.0.0.1 REDIS_PORT=6379
if [ -z "${BENCH_REDIS:-}" ]; then
  BENCH_REDIS=0
  "${REPORT[@]}" redis-ping "$REDIS_HOST" "$REDIS_PORT" && BENCH_REDIS=1
fi
case $BENCH_REDIS in
  1)
    "${REPORT[@]}" redis-ping "$REDIS_HOST" "$REDIS_PORT" ||
      die "BENCH_REDIS=1 but no Redis answers on $REDIS_HOST:$REDIS_PORT"
    REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT/0"
    REDIS_PREFIX="bench-$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n'):"
    ;;
  0) REDIS_URL=null REDIS_PREFIX="gateway:" ;;
  *) die "BENCH_REDIS must be 0 or 1 (got $BENCH_REDIS)" ;;
esac

ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
  PIN_PROXY=(taskset -c "$PROXY_CPU")
  PIN_WRK=(taskset -c "$WRK_CPU")
else
  warn "only $ncpu CPU: wrk and the proxies share it (no pinning)"
  PIN_PROXY=()
  PIN_WRK=()
fi
# This script (its curl, python and sleep calls) stays off the proxies' core too.
[ "$ncpu" -ge 2 ] && taskset -pc "$WRK_CPU" $$ >/dev/null
# A higher priority for every benchmark process (servers and wrk alike) keeps other jobs on
# the machine from taking their cores; the same for all targets, so it does not bias them.
NICE=${NICE:-}
if [ -z "$NICE" ]; then
  NICE=0
  [ "$(id -u)" -eq 0 ] && NICE=-10
fi
AUTOGROUP=0
if [ "$NICE" != 0 ]; then
  PIN_PROXY=(nice -n "$NICE" "${PIN_PROXY[@]}")
  PIN_WRK=(nice -n "$NICE" "${PIN_WRK[@]}")
  # With autogroup scheduling, nice only ranks processes within one session: each benchmark
  # process then gets a session (setsid, same PID) whose autogroup is given the nice value.
  if [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo 0)" = 1 ]; then
    AUTOGROUP=1
    PIN_PROXY=(setsid "${PIN_PROXY[@]}")
    PIN_WRK=(setsid "${PIN_WRK[@]}")
  fi
fi
# boost PID : give PID's own autogroup the NICE value (no-op without autogroup scheduling).
# Only once PID leads its own session (setsid done): before that, its autogroup is this
# script's, shared with the caller's session, which must not be touched.
boost() {
  local pid=$1 stat sid
  ((AUTOGROUP)) || return 0
  for _ in $(seq 100); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
    stat=${stat##*) }                          # after "pid (comm) "
    read -r _ _ _ sid _ <<<"$stat"             # state ppid pgrp session
    if [ "$sid" = "$pid" ]; then
      echo "$NICE" 2>/dev/null >"/proc/$pid/autogroup" || true
      return 0
    fi
    sleep 0.01
  done
}

# Only the secret reaches the gateway from the caller's environment (GATEWAY_START_TIMEOUT is
# this script's own setting); other GATEWAY_*
# overrides (port, database, redis...) would silently change what is measured.
for var in $(compgen -e); do
  if [[ $var == GATEWAY_* && $var != GATEWAY_JWT_SECRET && $var != GATEWAY_START_TIMEOUT ]]; then
    warn "ignoring $var from the environment"
    unset "$var"
  fi
done
if [ -n "${GATEWAY_JWT_SECRET:-}" ]; then
  [ "${#GATEWAY_JWT_SECRET}" -ge 32 ] || die "GATEWAY_JWT_SECRET must be at least 32 bytes"
  [[ $GATEWAY_JWT_SECRET =~ ^[A-Za-z0-9._~+/=-]+$ ]] ||
    die "GATEWAY_JWT_SECRET: use only [A-Za-z0-9._~+/=-] (it is written into haproxy.cfg)"
else
  GATEWAY_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
fi
export GATEWAY_JWT_SECRET

# ------------------------------------------------------------------ 2. work dir, cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gw-bench.XXXXXX")
mkdir -p "$WORK/upstream" "$WORK/nginx" "$WORK/runs"
PIDS=()
declare -A PID_OF=() STATUS=() URL=()

cleanup() {
  local rc=$? tree pid alive
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    tree=$("${REPORT[@]}" tree "${PIDS[@]}" 2>/dev/null || echo "${PIDS[*]}")
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      alive=0
      for pid in $tree; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    for pid in $tree; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
  if [ "$BENCH_REDIS" = 1 ]; then
    "${REPORT[@]}" redis-clean "$REDIS_HOST" "$REDIS_PORT" "$REDIS_PREFIX" >/dev/null 2>&1 ||
      warn "could not delete the Redis keys $REDIS_PREFIX* on $REDIS_HOST:$REDIS_PORT"
  fi
  if [ "${KEEP_WORKDIR:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    log "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

render() { "${REPORT[@]}" render "$BENCH_DIR/$1" "$2" "${@:3}"; }

# start NAME LOG CMD... : the command in the foreground of a background job, on PROXY_CPU.
start() {
  local name=$1 logfile=$2
  shift 2
  (cd "$REPO" && exec "${PIN_PROXY[@]}" "$@") </dev/null >"$logfile" 2>&1 &
  PID_OF[$name]=$!
  PIDS+=("$!")
  boost "$!"
}

# wait_http NAME URL SECONDS : true once URL answers any HTTP status; false if the process
# died or the time ran out (the reason goes to $WHY).
wait_http() {
  local name=$1 url=$2 deadline=$((SECONDS + $3)) code
  while ((SECONDS < deadline)); do
    if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
      WHY="process exited"
      return 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
    [ -n "$code" ] && [ "$code" != 000 ] && return 0
    sleep 0.2
  done
  WHY="no answer within $3 s"
  return 1
}

last_line() {  # the last non-blank line of a log, or "empty log"
  local line
  line=$(grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-200 || true)
  echo "${line:-empty log}"
}

read -r UP_PORT NGINX_PORT HAPROXY_PORT GATEWAY_PORT NOREVOKE_PORT INTERPRETED_PORT < <(
  "${REPORT[@]}" free-ports 6)
NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root;"

log "bench: work dir $WORK; ports upstream $UP_PORT, nginx $NGINX_PORT, haproxy $HAPROXY_PORT, gateway $GATEWAY_PORT, gateway-norevoke $NOREVOKE_PORT, gateway-interpreted $INTERPRETED_PORT"
if [ "$BENCH_REDIS" = 1 ]; then
  log "bench: gateways use Redis $REDIS_URL, key prefix $REDIS_PREFIX (BENCH_REDIS=1)"
else
  log "bench: gateways use the in-process store, no Redis (BENCH_REDIS=0)"
fi
log "bench: proxies + upstream pinned to CPU $PROXY_CPU, wrk to CPU $WRK_CPU ($ncpu CPUs), nice $NICE; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# (a) FAST upstream
render nginx-upstream.conf.tmpl "$WORK/upstream/nginx.conf" "DIR=$WORK/upstream" \
  "UPSTREAM_PORT=$UP_PORT" "NGINX_USER=$NGINX_USER" "ECHO_MODULE=$ECHO_MODULE"
start upstream "$WORK/upstream/stderr.log" \
  nginx -p "$WORK/upstream" -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log"
if ! wait_http upstream "http://127.0.0.1:$UP_PORT/" 10; then
  cat "$WORK/upstream/stderr.log" "$WORK/upstream/error.log" >&2 2>/dev/null || true
  die "upstream nginx did not start ($WHY)"
fi
URL[direct]="http://127.0.0.1:$UP_PORT"
STATUS[direct]=ok

# (b) nginx, plain reverse proxy
render nginx-proxy.conf.tmpl "$WORK/nginx/nginx.conf" "DIR=$WORK/nginx" \
  "UPSTREAM_PORT=$UP_PORT" "NGINX_PORT=$NGINX_PORT" "NGINX_USER=$NGINX_USER"
start nginx "$WORK/nginx/stderr.log" \
  nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
if wait_http nginx "http://127.0.0.1:$NGINX_PORT/" 10; then
  STATUS[nginx]=ok
else
  STATUS[nginx]="not available ($WHY: $(last_line "$WORK/nginx/error.log"))"
fi
URL[nginx]="http://127.0.0.1:$NGINX_PORT"

# (c) haproxy, JWT-checking edge
render haproxy.cfg.tmpl "$WORK/haproxy.cfg" "UPSTREAM_PORT=$UP_PORT" \
  "HAPROXY_PORT=$HAPROXY_PORT" "JWT_SECRET=$GATEWAY_JWT_SECRET"
if ! haproxy -c -q -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1; then
  STATUS[haproxy]="not available (config rejected: $(grep -m1 ALERT "$WORK/haproxy-check.log" | cut -c1-200 || true))"
else
  start haproxy "$WORK/haproxy.log" haproxy -db -f "$WORK/haproxy.cfg"
  if wait_http haproxy "http://127.0.0.1:$HAPROXY_PORT/" 10; then
    STATUS[haproxy]=ok
  else
    STATUS[haproxy]="not available ($WHY: $(last_line "$WORK/haproxy.log"))"
  fi
fi
URL[haproxy]="http://127.0.0.1:$HAPROXY_PORT"

# (d) the gateway, and (e) the same with revocation checks off: same database (the SQLite file
# of the temp dir), same Redis and prefix, same upstream, its own port. Started one after the
# other: the first one migrates the database.
URL[gateway]="http://127.0.0.1:$GATEWAY_PORT"
URL[gateway-norevoke]="http://127.0.0.1:$NOREVOKE_PORT"
URL[gateway-interpreted]="http://127.0.0.1:$INTERPRETED_PORT"
declare -A CONFIG_OF=([gateway]="$WORK/gateway.yaml" [gateway-norevoke]="$WORK/gateway-norevoke.yaml"
  [gateway-interpreted]="$WORK/gateway-interpreted.yaml")
render gateway.yaml.tmpl "${CONFIG_OF[gateway]}" "DIR=$WORK" "GATEWAY_PORT=$GATEWAY_PORT" \
  "UPSTREAM_PORT=$UP_PORT" "REDIS_URL=$REDIS_URL" "REDIS_PREFIX=$REDIS_PREFIX" \
  "REVOCATION_CHECKS=true"
render gateway.yaml.tmpl "${CONFIG_OF[gateway-norevoke]}" "DIR=$WORK" \
  "GATEWAY_PORT=$NOREVOKE_PORT" "UPSTREAM_PORT=$UP_PORT" "REDIS_URL=$REDIS_URL" \
  "REDIS_PREFIX=$REDIS_PREFIX" "REVOCATION_CHECKS=false"
render gateway.yaml.tmpl "${CONFIG_OF[gateway-interpreted]}" "DIR=$WORK" \
  "GATEWAY_PORT=$INTERPRETED_PORT" "UPSTREAM_PORT=$UP_PORT" "REDIS_URL=$REDIS_URL" \
  "REDIS_PREFIX=$REDIS_PREFIX" "REVOCATION_CHECKS=true"
GATEWAY_TOKEN_SOURCE=none
declare -A BUILD=()
for target in gateway gateway-norevoke gateway-interpreted; do
  if [[ " $TARGETS " == *" $target "* ]]; then
    BUILD[$target]=$(build_of "$target")
    log "bench: $target runs its ${BUILD[$target]}"
    start "$target" "$WORK/$target.log" env PYTHONSAFEPATH=1 "PYTHONPATH=${GATEWAY_PATH[$target]}" \
      "$PY" -m gateway serve --config "${CONFIG_OF[$target]}"
    if wait_http "$target" "${URL[$target]}/api/v1/auth/me" "$GATEWAY_START_TIMEOUT"; then
      STATUS[$target]=ok
    else
      STATUS[$target]="not available ($WHY: $(last_line "$WORK/$target.log"))"
    fi
  else
    STATUS[$target]="not available (not in TARGETS)"
  fi
done
# What each gateway says of its store: with BENCH_REDIS=1, the revocation mirror must follow
# Redis (synced) for "checks on" to be the replica path.
declare -A READY=()
for target in gateway gateway-norevoke gateway-interpreted; do
  [ "${STATUS[$target]}" = ok ] || continue
  READY[$target]=$({ curl -s --max-time 5 "${URL[$target]}/readyz" 2>/dev/null || true; } |
    "${REPORT[@]}" readyz)
  log "bench: $target /readyz: ${READY[$target]}"
  if [ "$BENCH_REDIS" = 1 ] && [[ ${READY[$target]} != *"store=redis synced=true"* ]]; then
    warn "$target does not follow Redis (${READY[$target]}): checks on are not the replica path"
  fi
done
for target in nginx haproxy gateway gateway-norevoke gateway-interpreted; do
  [ "${STATUS[$target]}" = ok ] || log "$target: ${STATUS[$target]}"
done

# ------------------------------------------------------------------ 3. tokens
TOKEN=$("${TOKENS[@]}" mint --user-id 42) || die "cannot mint a token with $PY (pyjwt missing?)"
ADMIN_TOKEN=$("${TOKENS[@]}" mint --user-id 7 --admin)
GATEWAY_TOKEN="" GATEWAY_REFRESH="" GATEWAY_UID=""
# The gateways share the database and the secret: one user, one login (on the first of them
# that runs), one token for all.
LOGIN_ON=""
for target in gateway gateway-norevoke gateway-interpreted; do
  if [ -z "$LOGIN_ON" ] && [ "${STATUS[$target]}" = ok ]; then LOGIN_ON=$target; fi
done
if [ -n "$LOGIN_ON" ]; then
  create_out=$(cd "$REPO" && timeout 60 "${PIN_WRK[@]}" "$PY" -m gateway users create \
      --config "${CONFIG_OF[$LOGIN_ON]}" --email "$BENCH_EMAIL" --password "$BENCH_PASSWORD" \
      --verified 2>&1) || warn "gateway users create failed: $(tail -n 1 <<<"$create_out")"
  if login_out=$("${TOKENS[@]}" login "${URL[$LOGIN_ON]}" "$BENCH_EMAIL" "$BENCH_PASSWORD" 2>&1); then
    { read -r GATEWAY_TOKEN; read -r GATEWAY_REFRESH; read -r GATEWAY_UID; } <<<"$login_out"
    GATEWAY_TOKEN_SOURCE=login
  else
    warn "gateway login failed ($login_out); using a self-minted token — the gateway may refuse it"
    GATEWAY_UID=1
    GATEWAY_TOKEN=$("${TOKENS[@]}" mint --user-id 1)
    GATEWAY_TOKEN_SOURCE=minted
  fi
fi

# ------------------------------------------------------------------ 4. sanity checks
: >"$WORK/sanity.tsv"
# expect TARGET CHECK CODE TOKEN [curl args...] : one request to /__bench/check.
expect() {
  local target=$1 check=$2 expected=$3 token=$4 code ok
  shift 4
  local args=(-s -o "$WORK/sanity.body" -w '%{http_code}' --max-time 5 "$@")
  [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
  code=$(curl "${args[@]}" "${URL[$target]}/__bench/check" 2>/dev/null || true)
  ok=FAIL
  [ "$code" = "$expected" ] && ok=ok
  printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$check" "$expected" "$code" "$ok" >>"$WORK/sanity.tsv"
  printf '  %-16s %-40s expect %s, got %-3s %s\n' "$target" "$check" "$expected" "$code" "$ok"
}
# echo_check TARGET CHECK TOKEN USER_ID ADMIN : forged identity headers must not get through.
echo_check() {
  local target=$1 check=$2 token=$3 uid=$4 admin=$5 head verdict ok=FAIL
  head=$(curl -s --max-time 5 -H "Authorization: Bearer $token" -H 'X-User-Id: 999999' \
    -H 'X-Is-Admin: true' -H 'X_User_Id: 999999' -H 'x-is_admin: true' \
    "${URL[$target]}/__bench/echo" 2>/dev/null || true)
  if verdict=$("${REPORT[@]}" check-echo --user-id "$uid" --admin "$admin" <<<"$head"); then
    ok=ok
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$check" "X-User-Id=$uid X-Is-Admin=$admin" \
    "$verdict" "$ok" >>"$WORK/sanity.tsv"
  printf '  %-16s %-40s %s  %s\n' "$target" "$check" "$verdict" "$ok"
}
sanity_suite() {  # TARGET VALID_TOKEN USER_ID [REFRESH_TOKEN]
  local target=$1 valid=$2 uid=$3 refresh=${4:-}
  [ -n "$refresh" ] || refresh=$("${TOKENS[@]}" mint --user-id "$uid" --token-type refresh)
  expect "$target" "valid token" 200 "$valid"
  expect "$target" "no token" 401 ""
  expect "$target" "tampered payload (user 1, admin)" 401 "$("${TOKENS[@]}" tamper "$valid")"
  expect "$target" "signed with another secret" 401 \
    "$(GATEWAY_JWT_SECRET=another-secret-another-secret-0123456789 "${TOKENS[@]}" mint --user-id "$uid")"
  expect "$target" "alg none" 401 "$("${TOKENS[@]}" none --user-id "$uid")"
  expect "$target" "expired (exp = now-60)" 401 \
    "$("${TOKENS[@]}" mint --user-id "$uid" --exp-offset -60)"
  expect "$target" "refresh token" 401 "$refresh"
  expect "$target" "Basic auth instead of Bearer" 401 "" -H 'Authorization: Basic YTpi'
  echo_check "$target" "forged X-User-Id/X-Is-Admin replaced" "$valid" "$uid" false
}
log "sanity checks:"
if [ "${STATUS[haproxy]}" = ok ]; then
  sanity_suite haproxy "$TOKEN" 42
  echo_check haproxy "admin token -> X-Is-Admin: true" "$ADMIN_TOKEN" 7 true
fi
# gateway-norevoke gets the same suite: signature, alg, exp and token_type are still checked
# with revocation checks off (a revoked token would pass there; not tested, by design).
for target in gateway gateway-norevoke gateway-interpreted; do
  if [ "${STATUS[$target]}" = ok ]; then
    sanity_suite "$target" "$GATEWAY_TOKEN" "$GATEWAY_UID" "$GATEWAY_REFRESH"
  fi
done
for target in haproxy gateway gateway-norevoke gateway-interpreted; do
  failed=$(awk -F'\t' -v t="$target" '$1 == t && $5 != "ok"' "$WORK/sanity.tsv" | wc -l)
  ((failed == 0)) || warn "$target failed $failed sanity check(s): its numbers are not comparable"
done

# ------------------------------------------------------------------ 5. rounds
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host=$(hostname)"
  echo "cpus=$ncpu"
  echo "cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel=$(uname -r)"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "haproxy=$(haproxy -v 2>/dev/null | head -n 1)"
  echo "wrk=$(wrk -v 2>&1 | head -n 1)"
  echo "python=$("$PY" -c 'import sys; print(sys.version.split()[0])')"
  echo "git_commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "duration=$DURATION"
  echo "warmup=$WARMUP"
  echo "rounds=$ROUNDS"
  echo "connections=$CONNECTIONS"
  echo "threads=$THREADS"
  echo "proxy_cpu=$PROXY_CPU"
  echo "wrk_cpu=$WRK_CPU"
  echo "nice=$NICE"
  echo "autogroup=$AUTOGROUP"
  echo "targets=$TARGETS"
  echo "gateway_token=$GATEWAY_TOKEN_SOURCE"
  echo "gateway_login_on=${LOGIN_ON:-none}"
  echo "bench_redis=$BENCH_REDIS"
  echo "readyz_gateway=${READY[gateway]:--}"
  echo "readyz_gateway_norevoke=${READY[gateway-norevoke]:--}"
  echo "readyz_gateway_interpreted=${READY[gateway-interpreted]:--}"
  echo "build_gateway=${BUILD[gateway]:--}"
  echo "build_gateway_norevoke=${BUILD[gateway-norevoke]:--}"
  echo "build_gateway_interpreted=${BUILD[gateway-interpreted]:--}"
  echo "redis_url=$REDIS_URL"
  if [ "$BENCH_REDIS" = 1 ]; then
    echo "redis_key_prefix=$REDIS_PREFIX"
    echo "redis_server=$("${REPORT[@]}" redis-version "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null || echo unknown)"
  fi
} >"$WORK/meta.env"

token_for() {
  case $1 in
    gateway | gateway-norevoke | gateway-interpreted) echo "$GATEWAY_TOKEN" ;;
    *) echo "$TOKEN" ;;   # direct and nginx ignore it (same request shape for every target)
  esac
}
# CHILD_MS := CPU milliseconds (user+sys) of this shell's reaped children so far; around one
# wrk run, the CPU wrk itself used. bash's "times" (second line: children) must run in this
# shell, not in a $(...) subshell, hence the file.
children_cpu_ms() {
  local user sys
  times >"$WORK/times"
  read -r user sys < <(tail -n 1 "$WORK/times")
  CHILD_MS=$(awk -v u="$user" -v s="$sys" 'function ms(t,  m) {
      m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t)
      return int((m * 60 + t) * 1000 + 0.5)
    } BEGIN { print ms(u) + ms(s) }')
}
# wrk_run TARGET SECONDS OUTFILE [--latency] : one wrk run on WRK_CPU, killed if it overruns.
# While it runs, WRK_WAIT_NS tracks the time wrk's threads spent runnable but waiting for a
# CPU (run_delay, 2nd field of /proc/<pid>/task/*/schedstat, read every 0.2 s): wrk has its
# core to itself, so any wait there is other processes disturbing the load generator.
wrk_run() {
  local target=$1 secs=$2 out=$3 pid deadline file delay total
  shift 3
  "${PIN_WRK[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout 5s "$@" \
    -H "Authorization: Bearer $(token_for "$target")" "${URL[$target]}/" >"$out" 2>&1 &
  pid=$!
  boost "$pid"
  deadline=$((SECONDS + secs + 20))
  WRK_WAIT_NS=0
  while kill -0 "$pid" 2>/dev/null; do
    total=0
    for file in /proc/"$pid"/task/*/schedstat; do
      read -r _ delay _ <"$file" 2>/dev/null && total=$((total + delay))
    done
    ((total > WRK_WAIT_NS)) && WRK_WAIT_NS=$total
    if ((SECONDS > deadline)); then
      warn "wrk against $target overran; killed"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  wait "$pid" || true
}
: >"$WORK/runs.tsv"
for ((round = 1; round <= ROUNDS; round++)); do
  for target in $TARGETS; do
    [ "${STATUS[$target]:-}" = ok ] || continue
    if [ "$target" != direct ] && ! kill -0 "${PID_OF[$target]}" 2>/dev/null; then
      STATUS[$target]="not available (exited during the benchmark)"
      log "$target: ${STATUS[$target]}"
      continue
    fi
    wrk_run "$target" "$WARMUP_S" /dev/null
    out="$WORK/runs/round$round-$target.txt"
    proxy_pid="-"
    [ "$target" = direct ] || proxy_pid=${PID_OF[$target]}
    # CPU snapshots: "upstream-ticks proxy-ticks" then busy and total ticks of the proxies'
    # core and of wrk's core; taken on wrk's core, outside the measured window.
    before=$("${PIN_WRK[@]}" "${REPORT[@]}" cpu --cores "$PROXY_CPU,$WRK_CPU" \
      "${PID_OF[upstream]}" "$proxy_pid")
    children_cpu_ms
    wrk_before=$CHILD_MS
    t0=$(date +%s%N)
    wrk_run "$target" "$DURATION_S" "$out" --latency
    t1=$(date +%s%N)
    children_cpu_ms
    wrk_after=$CHILD_MS
    after=$("${PIN_WRK[@]}" "${REPORT[@]}" cpu --cores "$PROXY_CPU,$WRK_CPU" \
      "${PID_OF[upstream]}" "$proxy_pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$out" "$((t1 - t0))" \
      "$before" "$after" "$((wrk_after - wrk_before))" "$WRK_WAIT_NS" >>"$WORK/runs.tsv"
    rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
    bad=$(awk '/^  Non-2xx/ {print " non-2xx: " $NF}' "$out")
    log "round $round/$ROUNDS $(printf '%-16s' "$target") ${rps:-?} req/s$bad"
  done
done

for target in direct nginx haproxy gateway gateway-norevoke gateway-interpreted; do
  printf '%s\t%s\n' "$target" "${STATUS[$target]:-not available (not in TARGETS)}"
done >"$WORK/status.tsv"
"${REPORT[@]}" summarize "$WORK" "$RESULTS"
