#!/usr/bin/env python3
"""gatehouse vs nginx vs HAProxy, one worker each, alternated over rounds, medians and ratios.

Layout on a 2-core machine: every proxy is pinned to CPU 1; the nginx origin and the load tools
share CPU 0. Absolute numbers on a shared machine are noise; the ratios within one run are the
result. See bench/README.md.
"""
import argparse
import collections
import datetime
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GATEHOUSE_BIN: a gatehouse built elsewhere (bench/run then builds nothing).
GATEHOUSE = os.environ.get("GATEHOUSE_BIN") or os.path.join(ROOT, "target/release/gatehouse")
LOADGEN = os.path.join(ROOT, "bench/loadgen/target/release/gatehouse-loadgen")
PROXY_CPU = "1"
# "same": nginx and HAProxy add the header fields gatehouse adds by default, both ways
# (X-Forwarded-Proto, X-Forwarded-Host, Forwarded, Via, X-Request-Id to the origin; X-Request-Id
# and Via to the client), so that every proxy does the same work. "xff": X-Forwarded-For only,
# on every proxy (gatehouse's routes with `forward_headers = ["x-forwarded-for"]`).
HEADERS = "same"
NGINX_SAME = """      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Forwarded "for=$remote_addr;host=$http_host;proto=$scheme";
      proxy_set_header Via "1.1 nginx";
      proxy_set_header X-Request-Id $request_id;
      add_header X-Request-Id $request_id always;
      add_header Via "1.1 nginx" always;
"""
HAPROXY_SAME = """  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header Forwarded for=%[src];host=%[req.hdr(host)];proto=http
  http-request set-header Via "1.1 haproxy"
  http-request set-header X-Request-Id %[unique-id]
  http-response set-header X-Request-Id %[unique-id]
  http-response add-header Via "1.1 haproxy"
"""
LOAD_CPU = "0"
TICK = os.sysconf("SC_CLK_TCK")
# Each target's slice in the interleaved latency runs: a proxy waits (targets - 1) slices between
# its own, 150 ms with four targets, under gatehouse's 250 ms before it parks an idle connection.
LATENCY_SLICE_MS = 50


def which(name):
    return shutil.which(name) or ("/usr/sbin/" + name if os.path.exists("/usr/sbin/" + name) else None)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, what, proc=None, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def nginx_main(d):
    """The main context every nginx of the bench runs with: one worker in the foreground, its pid
    and error log in `d`."""
    return f"""
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile 19500;
pid {d}/nginx.pid;
error_log {d}/error.log error;
events {{ worker_connections 19000; }}"""


class Setup:
    def __init__(self, work):
        self.work = work
        self.procs = []
        www = os.path.join(work, "www")
        os.makedirs(www)
        with open(os.path.join(www, "1k"), "wb") as f:
            f.write(b"a" * 1024)
        with open(os.path.join(www, "100k"), "wb") as f:
            f.write(b"b" * 102400)
        # A page that compresses like real HTML (varied words), ~100 KiB.
        words = ["proxy", "cache", "header", "stream", "origin", "client", "request", "answer",
                 "listener", "upstream", "balance", "health", "route", "cookie", "session"]
        rnd = __import__("random").Random(7)
        with open(os.path.join(www, "page.html"), "w") as f:
            size = 0
            while size < 102400:
                line = "<p>" + " ".join(rnd.choice(words) + str(rnd.randint(0, 999)) for _ in range(12)) + "</p>\n"
                f.write(line)
                size += len(line)
        self.origin_port = free_port()
        self.ports = {}
        # One ECDSA P-256 certificate for every proxy's TLS port.
        self.cert = os.path.join(work, "bench.pem")
        self.key = os.path.join(work, "bench.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-days", "30", "-nodes", "-keyout", self.key, "-out", self.cert,
                        "-subj", "/CN=bench.example", "-addext", "subjectAltName=DNS:bench.example"],
                       check=True, capture_output=True)
        self.combined = os.path.join(work, "bench-combined.pem")
        with open(self.combined, "w") as f:
            f.write(open(self.cert).read() + open(self.key).read())
        self.tls_ports = {}
        self.tcp_ports = {}
        # Per proxy: the port of its caching front, and of its compressing front.
        self.cache_ports = {}
        self.gz_ports = {}
        self.sink_port = free_port()

    def spawn(self, args, cpu, **kw):
        p = subprocess.Popen(["taskset", "-c", cpu] + args, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(self.work, f"{os.path.basename(args[0])}-{len(self.procs)}.err"), "w"), **kw)
        self.procs.append(p)
        return p

    def nginx_conf(self, name, body):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        conf = nginx_main(d) + f"""
http {{
  access_log off;
  open_file_cache max=100 inactive=600s;
  open_file_cache_valid 600s;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  {body}
}}
"""
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return d, path

    def start_origin(self):
        d, conf = self.nginx_conf("origin", f"""
  types {{ text/html html; }}
  server {{
    listen 127.0.0.1:{self.origin_port} backlog=4096; root {self.work}/www;
    location /c/ {{ alias {self.work}/www/; add_header Cache-Control "max-age=3600"; }}
  }}""")
        p = self.spawn([which("nginx"), "-c", conf, "-p", d, "-e", f"{d}/error.log"], LOAD_CPU)
        wait_port(self.origin_port, "nginx origin", p)

    def start_sink(self):
        p = self.spawn([LOADGEN, "sink", f"127.0.0.1:{self.sink_port}"], LOAD_CPU)
        wait_port(self.sink_port, "tcp sink", p)

    def start_nginx(self):
        port, h2, tls = free_port(), free_port(), free_port()
        self.tls_ports["nginx"] = tls
        cport, gport = free_port(), free_port()
        self.cache_ports["nginx"], self.gz_ports["nginx"] = cport, gport
        d, conf = self.nginx_conf("nginx-proxy", f"""
  upstream origin {{ server 127.0.0.1:{self.origin_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    listen 127.0.0.1:{h2} http2 backlog=4096;
    listen 127.0.0.1:{tls} ssl backlog=4096;
    ssl_certificate {self.cert};
    ssl_certificate_key {self.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{NGINX_SAME if HEADERS == "same" else ""}      proxy_buffering on;
    }}
  }}
  proxy_cache_path {self.work}/nginx-cache keys_zone=c:10m max_size=256m;
  server {{
    listen 127.0.0.1:{cport} backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{NGINX_SAME if HEADERS == "same" else ""}      proxy_cache c;
    }}
  }}
  server {{
    listen 127.0.0.1:{gport} backlog=4096;
    gzip on;
    gzip_comp_level 5;
    gzip_min_length 1024;
    gzip_proxied any;
    gzip_types text/html text/plain application/json;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{NGINX_SAME if HEADERS == "same" else ""}    }}
  }}""")
        p = self.spawn([which("nginx"), "-c", conf, "-p", d, "-e", f"{d}/error.log"], PROXY_CPU)
        wait_port(port, "nginx proxy", p)
        return p, port, h2

    def start_haproxy(self):
        port, tls, tcp = free_port(), free_port(), free_port()
        self.tls_ports["haproxy"] = tls
        self.tcp_ports["haproxy"] = tcp
        cport, gport = free_port(), free_port()
        self.cache_ports["haproxy"], self.gz_ports["haproxy"] = cport, gport
        conf = os.path.join(self.work, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(f"""
global
  nbthread 1
  maxconn 9800
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option forwardfor
  http-reuse always
  unique-id-format %[rand,hex]%[rand,hex]
frontend fe
  bind 127.0.0.1:{port}
  bind 127.0.0.1:{tls} ssl crt {self.combined}
  default_backend be
backend be
{HAPROXY_SAME if HEADERS == "same" else ""}  server origin 127.0.0.1:{self.origin_port} maxconn 2000
listen tcp
  mode tcp
  bind 127.0.0.1:{tcp}
  server sink 127.0.0.1:{self.sink_port}
cache c
  total-max-size 256
  max-object-size 1048576
  max-age 3600
frontend cached
  bind 127.0.0.1:{cport}
  http-request cache-use c
  http-response cache-store c
  default_backend be
frontend gz
  bind 127.0.0.1:{gport}
  compression algo gzip
  compression type text/html text/plain application/json
  default_backend be
""")
        p = self.spawn([which("haproxy"), "-db", "-f", conf], PROXY_CPU)
        wait_port(port, "haproxy", p)
        return p, port, port

    def start_gatehouse(self, binary=GATEHOUSE, name="gatehouse"):
        port, tls, tcp = free_port(), free_port(), free_port()
        self.tls_ports[name] = tls
        self.tcp_ports[name] = tcp
        cport, gport = free_port(), free_port()
        self.cache_ports[name], self.gz_ports[name] = cport, gport
        conf = os.path.join(self.work, f"{name}.toml")
        fwd = 'forward_headers = ["x-forwarded-for"]' if HEADERS == "xff" else ""
        with open(conf, "w") as f:
            f.write(f"""
[global]
threads = 1
access_log = "off"
[listeners.web]
bind = "127.0.0.1:{port}"
keepalive_timeout = "300s"
[listeners.websecure]
bind = "127.0.0.1:{tls}"
protocol = "https"
tls = {{ certificates = [{{ cert = "{self.cert}", key = "{self.key}" }}] }}
[listeners.tcp]
bind = "127.0.0.1:{tcp}"
protocol = "tcp"
upstream = "sink"
[upstreams.sink]
servers = ["127.0.0.1:{self.sink_port}"]
idle_timeout = "300s"
[listeners.cached]
bind = "127.0.0.1:{cport}"
keepalive_timeout = "300s"
[listeners.gz]
bind = "127.0.0.1:{gport}"
keepalive_timeout = "300s"
[cache]
memory = "256MiB"
[[routes]]
listeners = ["cached"]
upstream = "origin"
cache = {{ enabled = true }}
{fwd}
[[routes]]
listeners = ["gz"]
upstream = "origin"
compress = {{ algorithms = ["zstd", "br", "gzip"], min_size = "1KiB", types = ["text/*", "application/json"] }}
{fwd}
[[routes]]
upstream = "origin"
{fwd}
[upstreams.origin]
servers = ["127.0.0.1:{self.origin_port}"]
idle_timeout = "300s"
""")
        p = self.spawn([binary, "run", "-c", conf], PROXY_CPU, env={**os.environ, "RUST_LOG": "warn"})
        wait_port(port, name, p)
        return p, port, port

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def run_load(cmd):
    out = subprocess.run(["taskset", "-c", LOAD_CPU] + cmd, capture_output=True, text=True)
    return out.stdout + out.stderr


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errs = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errs = sum(int(x) for x in m.groups())
    lat = {}
    for pct, val, unit in re.findall(r"\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out):
        lat[pct] = float(val) * {"us": 1, "ms": 1000, "s": 1e6}[unit]
    return {"rps": rps, "requests": total, "bad": non2xx + errs,
            "p50_us": lat.get("50", 0), "p99_us": lat.get("99", 0)}


def parse_h2load(out):
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if not m:
        raise RuntimeError("h2load failed:\n" + out)
    rps = float(m.group(1))
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    # Failed requests and answers other than 2xx. (Not "total - 2xx": with -D, h2load's total
    # is what it planned, and the answers it counts can exceed it by a few.)
    bad = int(done.group(4)) + sum(int(codes.group(i)) for i in (2, 3, 4))
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms)", out)
    p50 = float(mean.group(1)) * (1000 if mean.group(2) == "ms" else 1) if mean else 0
    return {"rps": rps, "requests": int(done.group(3)), "bad": bad, "p50_us": p50, "p99_us": 0}


SCENARIOS = {
    "keepalive-1k": lambda port, h2, d: parse_wrk(run_load(
        ["wrk", "-t1", "-c50", f"-d{d}s", "--latency", f"http://127.0.0.1:{port}/1k"])),
    "keepalive-100k": lambda port, h2, d: parse_wrk(run_load(
        ["wrk", "-t1", "-c50", f"-d{d}s", "--latency", f"http://127.0.0.1:{port}/100k"])),
    "close-1k": lambda port, h2, d: parse_wrk(run_load(
        ["wrk", "-t1", "-c50", f"-d{d}s", "--latency", "-H", "Connection: close", f"http://127.0.0.1:{port}/1k"])),
    "h2c-1k": lambda port, h2, d: parse_h2load(run_load(
        ["h2load", "-c", "10", "-m", "10", "-D", str(d), f"http://127.0.0.1:{h2}/1k"])),
}


def parse_s_time(out):
    m = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not m:
        raise RuntimeError("openssl s_time failed:\n" + out)
    n = int(m.group(1))
    return {"rps": n / float(m.group(2)), "requests": n, "bad": 0, "p50_us": 0, "p99_us": 0}


TLS_SCENARIOS = {
    # Full handshakes: a new session every connection (ECDSA P-256, TLS 1.3 by default).
    "tls-full": lambda port, d: parse_s_time(run_load(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(d)])),
    # Resumed handshakes: the session of the first connection is offered again. TLS 1.2, because
    # s_time closes TLS 1.3 connections before the post-handshake ticket arrives (no resumption).
    "tls-resumed": lambda port, d: parse_s_time(run_load(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-reuse", "-tls1_2", "-time", str(d)])),
}


def measure(proc, fn):
    before = cpu_ticks(proc.pid)
    r = fn()
    used = cpu_ticks(proc.pid) - before
    r["cpu_us_per_req"] = used / TICK * 1e6 / max(r["requests"], 1)
    return r


def pooled_pct(counts, q):
    """The q-quantile of a value -> count histogram."""
    total = sum(counts.values())
    need = max(1, math.ceil(total * q))
    seen = 0
    for v in sorted(counts):
        seen += counts[v]
        if seen >= need:
            return v
    return 0


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else 0


def paired(sc, rows, names, results, keys=("rps", "cpu_us_per_req")):
    """Per-round ratios of the first proxy to each other one, and their medians.

    A round runs the proxies back to back, so its ratio compares them under the same machine
    state. The machine's speed drifts between rounds (absolute CPU per request moves by 15 %
    within a run here), and the median of the paired ratios moves less than the ratio of the
    medians. Printed, and kept in the results under "paired".
    """
    out = {}
    for n in names[1:]:
        for key in keys:
            ratios = [a[key] / b[key] for a, b in zip(rows[names[0]], rows[n]) if b.get(key)]
            if ratios:
                m = statistics.median(ratios)
                out[f"{names[0]}/{n} {key}"] = {"by_round": [round(x, 3) for x in ratios], "median": round(m, 3)}
                print(f"{sc} {key} {names[0]}/{n} by round: " + ", ".join(f"{x:.2f}" for x in ratios)
                      + f"; median {m:.2f}")
    results.setdefault("paired", {})[sc] = out
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--scenarios", default="keepalive-1k,keepalive-100k,close-1k,h2c-1k,tls-full,tls-resumed,tcp-1g,"
                    "cache-1k,cache-100k,gzip-100k,br-100k,zstd-100k,latency,idle,idle-tls,smtp")
    # 9,000, not 10,000: this sandbox caps open files at 20,000 per process (hard limit, not
    # raisable) and HAProxy reserves two descriptors per connection.
    ap.add_argument("--idle", type=int, default=9000)
    ap.add_argument("--smtp-idle", type=int, default=2000, help="idle SMTP sessions held per proxy")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=BINARY",
                    help="another gatehouse build to measure beside the others (A/B of a change)")
    ap.add_argument("--only", default="", help="comma-separated proxies to run (default: all)")
    ap.add_argument("--latency-rate", type=int, default=0,
                    help="fixed rate for the latency scenario (default: half the slowest keepalive-1k peak)")
    ap.add_argument("--headers", choices=["same", "xff"], default="same",
                    help="same: the peers add the header fields gatehouse adds; xff: X-Forwarded-For only, on every proxy")
    ap.add_argument("--latency-rounds", type=int, default=0,
                    help="runs of the latency scenario, each interleaving every proxy and the origin (default: 3)")
    args = ap.parse_args()
    global HEADERS
    HEADERS = args.headers
    wanted = args.scenarios.split(",")

    work = tempfile.mkdtemp(prefix="gatehouse-bench-")
    results = {}
    if "smtp" in wanted:
        # bench/smtp.py: its own origin (smtp-sink) and proxies (nginx's mail module), run first.
        sys.modules.setdefault("bench", sys.modules[__name__])
        import smtp
        smtp.run(args, work, results)
        wanted = [x for x in wanted if x != "smtp"]
        if not wanted:
            if args.write_results:
                write_results(results, args)
            shutil.rmtree(work, ignore_errors=True)
            return
    s = Setup(work)
    try:
        s.start_origin()
        s.start_sink()
        proxies = {"gatehouse": s.start_gatehouse(), "nginx": s.start_nginx(), "haproxy": s.start_haproxy()}
        for e in args.extra:
            name, binary = e.split("=", 1)
            proxies[name] = s.start_gatehouse(binary, name)
        if args.only:
            proxies = {n: v for n, v in proxies.items() if n in args.only.split(",")}
        names = list(proxies)
        # Warm every proxy's upstream pool.
        for name, (p, port, h2) in proxies.items():
            run_load(["wrk", "-t1", "-c50", "-d1s", f"http://127.0.0.1:{port}/1k"])
        for sc in [x for x in wanted if x in SCENARIOS]:
            rows = {n: [] for n in names}
            for rnd in range(args.rounds):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for n in order:
                    p, port, h2 = proxies[n]
                    rows[n].append(measure(p, lambda: SCENARIOS[sc](port, h2, args.duration)))
                    time.sleep(0.5)
            results[sc] = {n: {k: med(rows[n], k) for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req")}
                           | {"bad": sum(r["bad"] for r in rows[n])} for n in names}
            print_table(sc, results[sc])
            paired(sc, rows, names, results)
        for sc in [x for x in wanted if x in TLS_SCENARIOS]:
            rows = {n: [] for n in names}
            for rnd in range(args.rounds):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for n in order:
                    p = proxies[n][0]
                    rows[n].append(measure(p, lambda: TLS_SCENARIOS[sc](s.tls_ports[n], args.duration)))
                    time.sleep(0.5)
            results[sc] = {n: {k: med(rows[n], k) for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req")}
                           | {"bad": 0} for n in names}
            print_table(f"{sc} (openssl s_time; 'req' = handshake, client-bound: compare CPU per handshake)", results[sc])
        # Cache hits (objects stored after the warm-up) and compression, on each proxy's side ports.
        side = {
            "cache-1k": (s.cache_ports, "/c/1k", None),
            "cache-100k": (s.cache_ports, "/c/100k", None),
            "gzip-100k": (s.gz_ports, "/page.html", "gzip"),
            "br-100k": (s.gz_ports, "/page.html", "br"),
            "zstd-100k": (s.gz_ports, "/page.html", "zstd"),
        }
        for sc in [x for x in wanted if x in side]:
            ports, path, coding = side[sc]
            # Peers without brotli/zstd (Debian's nginx and HAProxy) would answer uncompressed.
            names_sc = [n for n in names if n in ports and (coding in (None, "gzip") or n not in ("nginx", "haproxy"))]
            hdr = ["-H", f"Accept-Encoding: {coding}"] if coding else []
            for n in names_sc:
                run_load(["wrk", "-t1", "-c10", "-d1s"] + hdr + [f"http://127.0.0.1:{ports[n]}{path}"])
                if coding:
                    got = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "-H", f"Accept-Encoding: {coding}",
                                          f"http://127.0.0.1:{ports[n]}{path}"], capture_output=True, text=True).stdout
                    print(f"{sc}: {n} sends {got} bytes for {os.path.getsize(os.path.join(work, 'www/page.html'))}")
            rows = {n: [] for n in names_sc}
            for rnd in range(args.rounds):
                order = names_sc[rnd % len(names_sc):] + names_sc[:rnd % len(names_sc)]
                for n in order:
                    p = proxies[n][0]
                    url = f"http://127.0.0.1:{ports[n]}{path}"
                    rows[n].append(measure(p, lambda: parse_wrk(run_load(
                        ["wrk", "-t1", "-c50", f"-d{args.duration}s", "--latency"] + hdr + [url]))))
                    time.sleep(0.5)
            results[sc] = {n: {k: med(rows[n], k) for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req")}
                           | {"bad": sum(r["bad"] for r in rows[n])} for n in names_sc}
            print_table(sc, results[sc])
        if "tcp-1g" in wanted:
            names_tcp = [n for n in names if n in s.tcp_ports]
            rows = {n: [] for n in names_tcp}
            for rnd in range(args.rounds):
                order = names_tcp[rnd % len(names_tcp):] + names_tcp[:rnd % len(names_tcp)]
                for n in order:
                    p = proxies[n][0]
                    def fn(n=n):
                        out = run_load([LOADGEN, "push", f"127.0.0.1:{s.tcp_ports[n]}", "1024"])
                        j = json.loads(out.strip().splitlines()[-1])
                        # "requests" = GiB moved, so CPU per request reads as CPU per GiB.
                        return {"rps": 1024 / j["seconds"], "requests": 1, "bad": 0 if j["done"] else 1,
                                "p50_us": 0, "p99_us": 0}
                    rows[n].append(measure(p, fn))
                    time.sleep(0.5)
            results["tcp-1g"] = {n: {k: med(rows[n], k) for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req")}
                                 | {"bad": sum(r["bad"] for r in rows[n])} for n in names_tcp}
            print_table("tcp-1g: 1 GiB through a TCP pipe ('req/s' = MiB/s, 'CPU µs/req' = CPU µs per GiB)", results["tcp-1g"])
        if "latency" in wanted:
            peak = min(results.get("keepalive-1k", {}).get(n, {}).get("rps", 0) or 20000 for n in names)
            rate = args.latency_rate or max(int(peak / 2), 1000)
            # The proxies are interleaved within each run, in slices (bench/loadgen/src/rate.rs),
            # with the origin itself as one more target: its figures are the floor of the
            # instrument (loader and origin on one core), which no proxy can go below.
            targets = names + ["origin"]
            urls = [f"http://127.0.0.1:{proxies[n][1]}/1k" for n in names] + [f"http://127.0.0.1:{s.origin_port}/1k"]
            secs = max(30, args.duration * 6)
            rows = {n: [] for n in targets}
            windows = {n: [] for n in targets}
            pooled = {n: collections.Counter() for n in targets}
            for rnd in range(args.latency_rounds or 3):
                # Rotate the slice order between runs, so no proxy always follows the same one.
                k = rnd % len(targets)
                order = list(range(len(targets)))[k:] + list(range(len(targets)))[:k]
                before = {n: cpu_ticks(proxies[n][0].pid) for n in names}
                out = run_load([LOADGEN, "rate", ",".join(urls[i] for i in order), str(rate), "50", str(secs),
                                str(LATENCY_SLICE_MS), "1", "3"])
                lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
                if len(lines) != len(targets):
                    raise RuntimeError("loadgen rate failed:\n" + out)
                for i, j in zip(order, lines):
                    n = targets[i]
                    row = {"rps": j["requests"] / (secs - 1) * len(targets), "requests": j["requests"],
                           "bad": j["non_2xx"] + j["errors"], "p50_us": j["p50_us"], "p99_us": j["p99_us"],
                           "p999_us": j["p999_us"], "max_us": j["max_us"], "cpu_us_per_req": 0}
                    if n in before:
                        used = cpu_ticks(proxies[n][0].pid) - before[n]
                        row["cpu_us_per_req"] = used / TICK * 1e6 / max(j["requests"], 1)
                    rows[n].append(row)
                    windows[n].extend({"p99_us": w} for w in j["window_p99_us"])
                    h = j["hist"]
                    pooled[n].update(dict(zip(h[0::2], h[1::2])))
                for n in targets:
                    r = rows[n][-1]
                    print(f"latency run {rnd + 1}, {n}: p50 {r['p50_us']} p99 {r['p99_us']} p99.9 {r['p999_us']} "
                          f"max {r['max_us']} µs, {r['requests']} requests, {r['bad']} bad")
                sys.stdout.flush()
                time.sleep(1.0)
            for n in targets:
                print(f"latency p99 by 3 s window, {n}: " + ", ".join(str(int(w["p99_us"])) for w in windows[n]))
            # Windows are the pairs: every target had its slices in the same 3 s.
            paired("latency (windows)", windows, names, results, keys=("p99_us",))
            paired("latency (runs)", rows, names, results, keys=("p99_us", "p999_us", "cpu_us_per_req"))
            # The table's percentiles are over every request of every run (to three significant
            # digits); requests/s and CPU per request are medians over the runs.
            results["latency"] = {n: {k: med(rows[n], k) for k in ("rps", "cpu_us_per_req")}
                                  | {f"p{p}_us": pooled_pct(pooled[n], q) for p, q in (("50", .5), ("99", .99), ("999", .999))}
                                  | {"bad": sum(r["bad"] for r in rows[n]), "rate": rate} for n in targets}
            print_table(f"latency at {rate} req/s (half the slowest peak), open loop, interleaved, percentiles "
                        "over all runs; 'origin' = no proxy (the instrument's floor)", results["latency"], p999=True)
        if "idle" in wanted:
            results["idle"] = {}
            for n in names:
                p, port, h2 = proxies[n]
                before = rss_kib(p.pid)
                hold = subprocess.Popen(["taskset", "-c", LOAD_CPU, LOADGEN, "hold", f"127.0.0.1:{port}", str(args.idle)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                line = hold.stdout.readline().split()
                time.sleep(1.0)
                after = rss_kib(p.pid)
                hold.stdin.close()
                hold.wait(30)
                held = int(line[1]) if len(line) > 1 else 0
                failed = int(line[3]) if len(line) > 3 else args.idle
                results["idle"][n] = idle_row(held, failed, before, after)
                time.sleep(2.0)
            print_idle("idle keep-alive connections: resident memory per connection", results["idle"])
        if "idle-tls" in wanted:
            results["idle-tls"] = {}
            for n in names:
                p = proxies[n][0]
                before = rss_kib(p.pid)
                held, failed = hold_tls(s.tls_ports[n], IDLE_TLS)
                time.sleep(1.0)
                after = rss_kib(p.pid)
                for t in held:
                    t.close()
                results["idle-tls"][n] = idle_row(len(held), failed, before, after)
                time.sleep(2.0)
            print_idle(f"idle TLS keep-alive connections ({IDLE_TLS}, HTTP/1.1): resident memory per connection",
                       results["idle-tls"])
    finally:
        s.stop()
    if args.write_results:
        write_results(results, args)
    shutil.rmtree(work, ignore_errors=True)


# TLS connections held by this process (Python's ssl): fewer than the cleartext scenario, whose
# holder is bench/loadgen.
IDLE_TLS = 2000


def hold_tls(port, n):
    """Opens n TLS connections, makes one HTTP/1.1 request on each and reads its whole answer;
    returns the open connections and how many failed."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    held, failed = [], 0
    for _ in range(n):
        try:
            t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                server_hostname="bench.example")
            t.sendall(b"GET /1k HTTP/1.1\r\nHost: bench.example\r\n\r\n")
            got = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    raise OSError("closed")
                got += chunk
                h = got.find(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", got[:h]) if h >= 0 else None
                if m and len(got) >= h + 4 + int(m.group(1)):
                    break
            if not got.startswith(b"HTTP/1.1 200"):
                failed += 1
            held.append(t)
        except OSError:
            failed += 1
    return held, failed


def idle_row(held, failed, before, after):
    return {"held": held, "failed": failed, "bytes_per_conn": (after - before) * 1024 / max(held, 1),
            "rss_before_kib": before, "rss_after_kib": after}


def print_idle(title, rows):
    print(f"\n## {title}")
    print("| proxy | connections | failed | RSS before | RSS after | bytes / connection |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        print(f"| {n} | {r['held']} | {r['failed']} | {r['rss_before_kib']} KiB | {r['rss_after_kib']} KiB | {r['bytes_per_conn']:.0f} |")
    sys.stdout.flush()


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def print_table(title, r, p999=False):
    print(f"\n## {title}")
    extra = " p99.9 µs |" if p999 else ""
    print(f"| proxy | req/s | p50 µs | p99 µs |{extra} CPU µs/req | req per CPU-s | non-2xx+errors |")
    print("|---|---:|---:|---:|" + ("---:|" if p999 else "") + "---:|---:|---:|")
    for n, x in r.items():
        e = f" {x['p999_us']:.0f} |" if p999 else ""
        per_cpu = 1e6 / x["cpu_us_per_req"] if x["cpu_us_per_req"] else 0
        print(f"| {n} | {x['rps']:.0f} | {x['p50_us']:.0f} | {x['p99_us']:.0f} |{e} {x['cpu_us_per_req']:.1f} | {per_cpu:.0f} | {x['bad']} |")
    g = r.get("gatehouse")
    for peer in ("nginx", "haproxy"):
        if g and peer in r:
            x = r[peer]
            gc, pc = g["cpu_us_per_req"], x["cpu_us_per_req"]
            print(f"gatehouse/{peer}: req/s {ratio(g['rps'], x['rps'])}, p99 {ratio(g['p99_us'], x['p99_us'])}, "
                  f"CPU/req {ratio(gc, pc)}, req per CPU-s {ratio(pc, gc)}")
    sys.stdout.flush()


def write_results(results, args):
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    path = os.path.join(ROOT, "bench/RESULTS.latest.json")
    with open(path, "w") as f:
        json.dump({"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z",
                   "commit": commit + ("-dirty" if dirty else ""), "rounds": args.rounds,
                   "duration_s": args.duration, "headers": args.headers, "results": results}, f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
