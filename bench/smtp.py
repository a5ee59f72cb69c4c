"""The smtp scenario: gatehouse's smtp listener against nginx's mail module, in front of
Postfix's smtp-sink. Run by bench.py (`bench/run --scenarios smtp`); see bench/README.md.

Layout as for the HTTP scenarios: the proxies on CPU 1; smtp-sink (the origin), nginx's
auth_http responder and smtp-source (the load) on CPU 0. Per proxy and run: messages/s, and the
proxy's CPU (utime + stime from /proc) per message. Then the memory of idle sessions: N
connections that each read the 220 greeting, sent EHLO and read its reply.
"""
import os
import re
import resource
import socket
import subprocess
import sys
import time

import bench

NGINX_MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"
MESSAGES = 10000
SESSIONS = 20
MESSAGE_BYTES = 10240
# The two ways smtp-source sends: a new SMTP session (connection, greeting, EHLO, ..., QUIT)
# per message, and `-d`: 20 sessions that stay open, 500 messages each.
MODES = {
    "smtp": ("a new session per message", []),
    "smtp-d": ("20 long sessions (smtp-source -d)", ["-d"]),
}


class SmtpSetup:
    """smtp-sink, nginx's auth_http responder, and the proxies in front of the sink."""

    def __init__(self, s):
        self.s = s
        self.sink_port = bench.free_port()
        self.sink_out = os.path.join(s.work, "smtp-sink.out")

    def start_sink(self, sessions):
        # -c: running counters on stdout ("sess=N quit=N mesg=N"), read to check that every
        # message arrived. -m: sessions at once (the idle test holds `sessions` through
        # gatehouse). -u: smtp-sink refuses to run as root without it.
        args = [bench.which("smtp-sink"), "-c", "-m", str(sessions + 100)]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += [f"127.0.0.1:{self.sink_port}", "4096"]
        p = subprocess.Popen(["taskset", "-c", bench.LOAD_CPU] + args, stdout=open(self.sink_out, "w"),
                             stderr=subprocess.STDOUT)
        self.s.procs.append(p)
        bench.wait_port(self.sink_port, "smtp-sink", p)

    def sink_messages(self):
        """Messages smtp-sink has received so far (its last counter line)."""
        last = 0
        for _ in range(20):
            with open(self.sink_out, "rb") as f:
                found = re.findall(rb"mesg=(\d+)", f.read()[-4096:])
            n = int(found[-1]) if found else 0
            if n == last and n:
                return n
            last = n
            time.sleep(0.1)
        return last

    def start_nginx(self):
        """nginx's mail proxy on CPU 1, asking an auth_http responder for the backend: a
        separate nginx on CPU 0, so that the responder's work is not billed to the proxy (in
        production it is another service)."""
        auth = bench.free_port()
        _, conf = self.s.nginx_conf("smtp-auth", f"""
  server {{
    listen 127.0.0.1:{auth};
    location /auth {{
      add_header Auth-Status OK;
      add_header Auth-Server 127.0.0.1;
      add_header Auth-Port {self.sink_port};
      return 204;
    }}
  }}""")
        d = os.path.dirname(conf)
        p = self.s.spawn([bench.which("nginx"), "-c", conf, "-p", d, "-e", f"{d}/error.log"], bench.LOAD_CPU)
        bench.wait_port(auth, "nginx auth_http responder", p)
        port = bench.free_port()
        d = os.path.join(self.s.work, "nginx-mail")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        # smtp_auth none: nginx reads EHLO, MAIL and RCPT itself, asks auth_http for the backend,
        # replays them there and then relays the session's bytes as they come. The EHLO reply
        # offers what gatehouse's does.
        with open(conf, "w") as f:
            f.write(f"""
load_module {NGINX_MAIL_MODULE};""" + bench.nginx_main(d) + f"""
mail {{
  server_name bench.example;
  auth_http 127.0.0.1:{auth}/auth;
  smtp_capabilities PIPELINING "SIZE 26214400" 8BITMIME ENHANCEDSTATUSCODES;
  timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    protocol smtp;
    proxy on;
    xclient off;
    smtp_auth none;
  }}
}}
""")
        p = self.s.spawn([bench.which("nginx"), "-c", conf, "-p", d, "-e", f"{d}/error.log"], bench.PROXY_CPU)
        bench.wait_port(port, "nginx mail proxy", p)
        return p, port

    def start_gatehouse(self, binary, name):
        port = bench.free_port()
        conf = os.path.join(self.s.work, f"{name}-smtp.toml")
        with open(conf, "w") as f:
            f.write(f"""
[global]
threads = 1
access_log = "off"
[listeners.mx]
bind = "127.0.0.1:{port}"
protocol = "smtp"
upstream = "sink"
[listeners.mx.smtp]
hostname = "bench.example"
[upstreams.sink]
servers = ["127.0.0.1:{self.sink_port}"]
protocol = "smtp"
""")
        p = self.s.spawn([binary, "run", "-c", conf], bench.PROXY_CPU, env={**os.environ, "RUST_LOG": "warn"})
        bench.wait_port(port, name, p)
        return p, port


def source(port, messages, extra):
    """smtp-source on CPU 0: `messages` of MESSAGE_BYTES over SESSIONS parallel sessions."""
    cmd = ["taskset", "-c", bench.LOAD_CPU, bench.which("smtp-source"), "-s", str(SESSIONS), "-m", str(messages),
           "-l", str(MESSAGE_BYTES), "-c", "-f", "from@example.org", "-t", "to@example.org"] + extra + [
           f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return time.monotonic() - t0, out.returncode, (out.stdout + out.stderr).replace("\r", "\n")


def run_once(ss, port, extra):
    """One run: every message through one proxy; 'bad' counts messages the sink did not get and
    smtp-source's errors. smtp-source stops at the first unexpected reply (no -A)."""
    before = ss.sink_messages()
    secs, rc, out = source(port, MESSAGES, extra)
    got = ss.sink_messages() - before
    problems = [l for l in out.splitlines() if "fatal" in l or "warning" in l or "error" in l.lower()]
    bad = (MESSAGES - got) + len(problems) + (1 if rc else 0)
    if bad:
        print(f"  smtp-source exit {rc}, the sink got {got} of {MESSAGES}: " + "; ".join(problems[:3]))
    return {"rps": got / secs, "requests": max(got, 1), "bad": bad}


def check_path(ss, name, port):
    """One message through the proxy must reach smtp-sink: proves the proxy is set up."""
    before = ss.sink_messages()
    _, rc, out = source(port, 1, [])
    got = ss.sink_messages() - before
    if rc or got != 1:
        raise SystemExit(f"smtp: {name} does not pass mail to smtp-sink (exit {rc}, sink got {got}):\n{out[-2000:]}")


def read_reply(f):
    """One SMTP reply (the lines up to the one with a space after the code)."""
    while True:
        line = f.readline()
        if not line:
            raise OSError("closed")
        if line[3:4] != b"-":
            return line


def hold(port, n):
    """Opens n sessions: greeting read, EHLO sent and answered; returns them and the failures."""
    held, failed = [], 0
    for _ in range(n):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = c.makefile("rb")
            ok = read_reply(f).startswith(b"220")
            c.sendall(b"EHLO client.example\r\n")
            ok = ok and read_reply(f).startswith(b"250")
            if not ok:
                failed += 1
            held.append((c, f))
        except OSError:
            failed += 1
    return held, failed


def print_table(title, r):
    print(f"\n## {title}")
    print("| proxy | messages/s | CPU µs/message | messages per CPU-s | errors |")
    print("|---|---:|---:|---:|---:|")
    for n, x in r.items():
        cpu = x["cpu_us_per_req"]
        figures = f"{cpu:.1f} | {1e6 / cpu:.0f}" if cpu else "- | -"
        print(f"| {n} | {x['rps']:.0f} | {figures} | {x['bad']} |")
    g, x = r.get("gatehouse"), r.get("nginx")
    if g and x:
        gc, pc = g["cpu_us_per_req"], x["cpu_us_per_req"]
        print(f"gatehouse/nginx: messages/s {bench.ratio(g['rps'], x['rps'])}, CPU/message {bench.ratio(gc, pc)}, "
              f"messages per CPU-s {bench.ratio(pc, gc)}")
    sys.stdout.flush()


def run(args, work, results):
    """The scenario: every mode alternated over the rounds, then the idle sessions."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for tool in ("smtp-sink", "smtp-source", "nginx"):
        if not bench.which(tool):
            raise SystemExit(f"smtp: {tool} is missing (bench/run installs postfix and nginx)")
    if not os.path.exists(NGINX_MAIL_MODULE):
        raise SystemExit(f"smtp: {NGINX_MAIL_MODULE} is missing (apt-get install libnginx-mod-mail)")
    s = bench.Setup(os.path.join(work, "smtp"))
    ss = SmtpSetup(s)
    try:
        ss.start_sink(args.smtp_idle)
        proxies = {"gatehouse": ss.start_gatehouse(bench.GATEHOUSE, "gatehouse"), "nginx": ss.start_nginx()}
        for e in args.extra:
            name, binary = e.split("=", 1)
            proxies[name] = ss.start_gatehouse(binary, name)
        if args.only:
            proxies = {n: v for n, v in proxies.items() if n in args.only.split(",")}
        names = list(proxies)
        for n, (p, port) in proxies.items():
            check_path(ss, n, port)
        for mode, (what, extra) in MODES.items():
            # Warm-up: connections, allocator, page cache of the binaries.
            for n, (p, port) in proxies.items():
                source(port, 500, extra)
            rows = {n: [] for n in names}
            origin = []
            for rnd in range(args.rounds):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for n in order:
                    p, port = proxies[n]
                    rows[n].append(bench.measure(p, lambda: run_once(ss, port, extra)))
                    time.sleep(0.5)
                # The same load straight to smtp-sink: the instrument's floor for messages/s.
                origin.append(run_once(ss, ss.sink_port, extra) | {"cpu_us_per_req": 0})
                time.sleep(0.5)
            res = {n: {k: bench.med(rows[n], k) for k in ("rps", "cpu_us_per_req")}
                   | {"bad": sum(r["bad"] for r in rows[n])} for n in names}
            res["origin"] = {"rps": bench.med(origin, "rps"), "cpu_us_per_req": 0,
                             "bad": sum(r["bad"] for r in origin)}
            results[mode] = res
            print_table(f"{mode}: {MESSAGES} messages of {MESSAGE_BYTES} bytes over {SESSIONS} parallel sessions, "
                        f"{what}; 'origin' = smtp-source straight to smtp-sink", res)
            bench.paired(mode, rows, names, results)
        idle = {}
        for n, (p, port) in proxies.items():
            before = bench.rss_kib(p.pid)
            held, failed = hold(port, args.smtp_idle)
            time.sleep(1.0)
            after = bench.rss_kib(p.pid)
            for c, f in held:
                f.close()
                c.close()
            idle[n] = bench.idle_row(len(held), failed, before, after)
            time.sleep(2.0)
        results["smtp-idle"] = idle
        bench.print_idle(f"idle SMTP sessions ({args.smtp_idle}: greeting read, EHLO answered): resident memory "
                         "per session (gatehouse has opened its origin session by then; nginx has not)", idle)
    finally:
        s.stop()
