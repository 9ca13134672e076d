#!/usr/bin/env bash
# Memory under load and faults, against the bound README "Memory" derives
# from the config. One shadowtee core, 100% mirroring to a HUNG shadow (every
# copy stays in flight until mirror.timeout_ms), then:
#   1. POSTS requests with 1 MiB bodies, over 16 connections: the first
#      max_inflight copies pin their bodies, the rest are shed (inflight);
#   2. SLOW clients that send half a request head and stop (each holds its
#      connection's buffers and request state);
#   3. IDLE keep-alive clients served one request each.
# Prints the proxy's RSS after each step and the bound for that step.
#
#   loadtest/memory-bound.sh [SLOW] [IDLE] [POSTS]     (defaults 10000 2000 400)
#
# Needs a release build (cargo build --release -p loadtest -p shadowtee) and
# python3. Bounded in time: every step has a timeout; the proxy is killed at
# the end.
set -euo pipefail
SLOW=${1:-10000}; IDLE=${2:-2000}; POSTS=${3:-400}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LT=$ROOT/target/release/loadtest
ST=$ROOT/target/release/shadowtee
WORK=$(mktemp -d /tmp/shadowtee-membound.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

INFLIGHT=256; QUEUE=4096; COPY_MAX=$((1 << 20)); TIMEOUT_MS=60000
cat > "$WORK/st.toml" <<EOF
[server]
listen = "127.0.0.1:18801"
cores = 1
max_connections = $((SLOW + IDLE + 100))
header_timeout_ms = 120000
idle_timeout_ms = 120000
[admin]
listen = "127.0.0.1:18802"
[mirror]
queue_capacity = $QUEUE
max_inflight = $INFLIGHT
max_body_bytes = $COPY_MAX
timeout_ms = $TIMEOUT_MS
[[upstreams]]
name = "v1"
endpoints = ["127.0.0.1:18803"]
[[upstreams]]
name = "hung"
endpoints = ["127.0.0.1:18804"]
[[routes]]
name = "default"
[[routes.destinations]]
upstream = "v1"
[[routes.mirrors]]
upstream = "hung"
EOF
taskset -c 0 "$LT" serve --name v1 --mode fast --listen 127.0.0.1:18803 --cpus 0 > /dev/null 2>&1 & PIDS+=($!)
taskset -c 0 "$LT" serve --name hung --mode hung --listen 127.0.0.1:18804 --cpus 0 > /dev/null 2>&1 & PIDS+=($!)
taskset -c 1 "$ST" run --config "$WORK/st.toml" > "$WORK/st.log" 2>&1 & PIDS+=($!); STPID=$!
sleep 0.7

timeout 300 python3 - "$STPID" "$SLOW" "$IDLE" "$POSTS" "$INFLIGHT" "$COPY_MAX" <<'PY'
import socket, sys, time, threading
pid, slow, idle, posts, inflight, copy_max = map(int, sys.argv[1:7])
ADDR = ("127.0.0.1", 18801)
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])  # KiB
def answer(c):
    got = b""
    while b"\r\n\r\n" not in got:
        d = c.recv(65536)
        if not d: raise RuntimeError("closed")
        got += d
    head, rest = got.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < n:
        rest += c.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
# warm up
c = socket.create_connection(ADDR)
for _ in range(200):
    c.sendall(b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"); answer(c)
c.close(); time.sleep(0.3)
base = rss()
print(f"base: {base} KiB")
body = b"x" * (1 << 20)
def poster(n):
    c = socket.create_connection(ADDR)
    for _ in range(n):
        c.sendall(b"POST /up HTTP/1.1\r\nHost: m\r\nContent-Length: %d\r\n\r\n" % len(body) + body); answer(c)
    c.close()
ts = [threading.Thread(target=poster, args=(posts // 16,)) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
time.sleep(0.5)
after_posts = rss()
# Copies alive: at most max_inflight (a hung shadow never answers), each pinning
# its body's read-buffer allocations (<= 2x the body: the buffer grows by doubling).
copies = min(posts, inflight)
bound_posts = base + copies * 2 * copy_max // 1024 + 16 * 256
print(f"after {posts} POSTs of 1 MiB ({copies} copies in flight at the hung shadow): {after_posts} KiB (bound {bound_posts} KiB)")
slows = []
for _ in range(slow):
    s = socket.create_connection(ADDR); s.sendall(b"GET /slow HTTP/1.1\r\nHost: m\r\n"); slows.append(s)
time.sleep(0.5)
after_slow = rss()
# A slow client holds its connection buffers (8 KiB read + 8 KiB write, boxed),
# its request state (one ~4 KiB block) and its idle cost (~1 KiB).
per_slow = 8192 + 8192 + 4096 + 1024 + 512
bound_slow = after_posts + slow * per_slow // 1024
print(f"after {slow} slow clients (half a head each): {after_slow} KiB (bound {bound_slow} KiB, {per_slow} bytes each; measured {(after_slow - after_posts) * 1024 // max(slow,1)} each)")
idles = []
for _ in range(idle):
    s = socket.create_connection(ADDR); s.sendall(b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"); answer(s); idles.append(s)
time.sleep(0.5)
after_idle = rss()
bound_idle = after_slow + idle * 1024 // 1024
print(f"after {idle} idle keep-alive clients: {after_idle} KiB (bound {bound_idle} KiB at 1 KiB each; measured {(after_idle - after_slow) * 1024 // max(idle,1)} each)")
t = time.time(); c = socket.create_connection(ADDR); c.sendall(b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"); answer(c)
print(f"a new request still answered in {(time.time() - t) * 1e3:.2f} ms")
ok = after_posts <= bound_posts and after_slow <= bound_slow and after_idle <= bound_idle
print("within bounds" if ok else "OVER A BOUND")
sys.exit(0 if ok else 1)
PY
curl -s "http://127.0.0.1:18802/metrics" | grep -E 'shadowtee_mirror_requests_total.*(shed|failed).*(inflight|queue_full|timeout)' || true
