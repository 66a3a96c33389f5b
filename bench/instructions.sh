#!/usr/bin/env bash
# Instructions per proxied request (valgrind callgrind), independent of the machine's noise.
#   bench/instructions.sh            # about 5 minutes: gateway and direct, 1000 and 4000 requests
# Needs valgrind (apt-get install valgrind). See bench/README.md, "Instructions per request".
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
PY=${VENV:-$REPO/.venv}/bin/python
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
count() {  # count N [--direct] -> instructions of the whole run
  (cd "$REPO" && PYTHONHASHSEED=0 PYTHONPATH="$REPO" valgrind --tool=callgrind \
    --callgrind-out-file=/dev/null "$PY" "$BENCH_DIR/instructions.py" "$@" 2>&1) |
    awk '/Collected :/ {print $4}'
}
per_request() {  # the cost of 3000 more requests, per request
  local low high
  low=$(count 1000 "$@")
  high=$(count 4000 "$@")
  echo $(((high - low) / 3000))
}
through=$(per_request)
direct=$(per_request --direct)
echo "instructions per request: through the gateway $through, straight to the upstream $direct"
echo "the gateway's share: $((through - direct)) instructions per proxied request"
