#!/usr/bin/env bash
# Paired CPU-per-request comparison: two proxies on the SAME core, loaded AT
# THE SAME TIME by two generators, so the VM's speed drift (±25% over
# minutes here) hits both alike. `loadtest scenario tee` measures rows one
# after another and interleaves them; this measures them side by side.
#
#   loadtest/paired.sh ROUNDS DURATION A B
#
# A and B are each one of:
#   shadowtee-plain | shadowtee-mirror | nginx-plain | nginx-mirror
#   or BIN:CONFIG:PORT (a shadowtee binary, its config, its listen port)
#
# Upstreams (`loadtest serve`: primary :3201, shadow :3202) and both
# generators (`loadtest run`, 25 connections each) run on CPU 0, the two
# proxies on CPU 1. Each round prints both proxies' CPU µs per request
# (utime+stime from /proc over the requests their generator completed) and
# B/A; the last line is the median B/A. Needs: a release build, taskset,
# python3; nginx for the nginx variants.
#
# RATE=N (environment) loads both proxies open-loop at N requests/s each
# instead of closed-loop: the same offered load for both, so neither gets
# more work per wake-up than the other. Without it, each proxy serves what
# its 25 connections can drive, and the faster one batches more per wake.
set -euo pipefail

ROUNDS=${1:?rounds}; DUR=${2:?duration, e.g. 4s}; A=${3:?A}; B=${4:?B}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LT=$ROOT/target/release/loadtest
ST=$ROOT/target/release/shadowtee
WORK=$(mktemp -d /tmp/shadowtee-paired.XXXXXX)
PIDS=()
NGINX_CONFS=()

cleanup() {
  for c in "${NGINX_CONFS[@]}"; do nginx -c "$c" -s stop 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

shadowtee_conf() { # name port admin mirror?
  cat > "$WORK/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
cores = 1
[admin]
listen = "127.0.0.1:$3"
[[upstreams]]
name = "v1"
endpoints = ["127.0.0.1:3201"]
[[upstreams]]
name = "test-v1"
endpoints = ["127.0.0.1:3202"]
[[routes]]
name = "default"
[[routes.destinations]]
upstream = "v1"
EOF
  if [ "$4" = 1 ]; then printf '[[routes.mirrors]]\nupstream = "test-v1"\n' >> "$WORK/$1.toml"; fi
}

nginx_conf() { # name port mirror?
  mkdir -p "$WORK/$1-tmp"
  local mirror="" loc=""
  if [ "$3" = 1 ]; then
    mirror="mirror /m;"
    loc="location = /m { internal; proxy_pass http://shadow\$request_uri; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
  fi
  cat > "$WORK/$1.conf" <<EOF
worker_processes 1;
worker_cpu_affinity 10;
pid $WORK/$1.pid;
error_log $WORK/$1.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/$1-tmp/body; proxy_temp_path $WORK/$1-tmp/proxy;
  fastcgi_temp_path $WORK/$1-tmp/fastcgi; uwsgi_temp_path $WORK/$1-tmp/uwsgi; scgi_temp_path $WORK/$1-tmp/scgi;
  upstream primary { server 127.0.0.1:3201; keepalive 64; keepalive_requests 1000000; }
  upstream shadow { server 127.0.0.1:3202; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$2;
    location / { $mirror proxy_pass http://primary; proxy_http_version 1.1; proxy_set_header Connection ""; }
    $loc
  }
}
EOF
}

# start NAME SPEC PORT ADMIN -> sets PORT_<NAME> and CPUPIDS_<NAME>
start() {
  local name=$1 spec=$2 port=$3 admin=$4 bin conf
  case $spec in
    shadowtee-plain|shadowtee-mirror)
      shadowtee_conf "$name" "$port" "$admin" "$([ "$spec" = shadowtee-mirror ] && echo 1 || echo 0)"
      taskset -c 1 "$ST" run --config "$WORK/$name.toml" > "$WORK/$name.log" 2>&1 &
      PIDS+=($!); eval "CPUPIDS_$name=$!"; eval "PORT_$name=$port" ;;
    nginx-plain|nginx-mirror)
      nginx_conf "$name" "$port" "$([ "$spec" = nginx-mirror ] && echo 1 || echo 0)"
      taskset -c 1 nginx -c "$WORK/$name.conf"
      NGINX_CONFS+=("$WORK/$name.conf")
      sleep 0.3
      local master; master=$(cat "$WORK/$name.pid")
      eval "CPUPIDS_$name=\"$master $(pgrep -P "$master" | tr '\n' ' ')\""; eval "PORT_$name=$port" ;;
    *:*:*)
      IFS=: read -r bin conf port <<< "$spec"
      taskset -c 1 "$bin" run --config "$conf" > "$WORK/$name.log" 2>&1 &
      PIDS+=($!); eval "CPUPIDS_$name=$!"; eval "PORT_$name=$port" ;;
    *) echo "unknown proxy spec: $spec" >&2; exit 2 ;;
  esac
}

cpu_ticks() { local s=0 t; for p in "$@"; do t=$(awk '{print $14+$15}' "/proc/$p/stat"); s=$((s+t)); done; echo $s; }

taskset -c 0 "$LT" serve --name v1 --mode fast --listen 127.0.0.1:3201 --cpus 0 > /dev/null 2>&1 & PIDS+=($!)
taskset -c 0 "$LT" serve --name test-v1 --mode fast --listen 127.0.0.1:3202 --cpus 0 > /dev/null 2>&1 & PIDS+=($!)
start a "$A" 18501 19501
start b "$B" 18502 19502
sleep 0.7

RATE_ARGS=(); LOAD="closed loop, 25 connections each"
if [ -n "${RATE:-}" ]; then RATE_ARGS=(-R "$RATE"); LOAD="open loop, $RATE requests/s each over 25 connections"; fi
echo "A = $A, B = $B; $ROUNDS rounds of $DUR, both loaded at once ($LOAD)"
for r in $(seq "$ROUNDS"); do
  a0=$(cpu_ticks $CPUPIDS_a); b0=$(cpu_ticks $CPUPIDS_b)
  taskset -c 0 "$LT" run "http://127.0.0.1:$PORT_a/" -c 25 -d "$DUR" --cpus 0 "${RATE_ARGS[@]}" --json > "$WORK/a.json" 2>/dev/null & ga=$!
  taskset -c 0 "$LT" run "http://127.0.0.1:$PORT_b/" -c 25 -d "$DUR" --cpus 0 "${RATE_ARGS[@]}" --json > "$WORK/b.json" 2>/dev/null & gb=$!
  wait $ga $gb
  a1=$(cpu_ticks $CPUPIDS_a); b1=$(cpu_ticks $CPUPIDS_b)
  python3 - "$a0" "$a1" "$b0" "$b1" "$(getconf CLK_TCK)" "$WORK" <<'PY'
import json, sys
a0, a1, b0, b1, hz = map(int, sys.argv[1:6]); w = sys.argv[6]
na = json.load(open(f"{w}/a.json"))["requests"]; nb = json.load(open(f"{w}/b.json"))["requests"]
ca = (a1 - a0) * 1e6 / hz / na; cb = (b1 - b0) * 1e6 / hz / nb
print(f"A {ca:6.2f} µs/req ({na} req)   B {cb:6.2f} µs/req ({nb} req)   B/A {cb / ca:.3f}")
PY
done | tee "$WORK/rounds.txt"
python3 - "$WORK/rounds.txt" <<'PY'
import statistics, sys
r = [float(l.split()[-1]) for l in open(sys.argv[1])]
print(f"median B/A {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f}, {len(r)} rounds)")
PY
