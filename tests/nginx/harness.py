"""An nginx of its own for a test or a benchmark (tests/nginx/test_nginx.py,
bench/nginx.py): the distribution's nginx with the module loaded, in a
temporary directory, on a loopback port from the kernel, started and
stopped with bounded waits. Standard library only."""

import concurrent.futures
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The environment of nginx processes: scripts/nginx_san.sh makes them (and
# only them) load the sanitizers' runtimes, for a module built with them.
NGINX_ENV = dict(os.environ)
if os.environ.get("RL_NGINX_PRELOAD"):
    NGINX_ENV["LD_PRELOAD"] = os.environ["RL_NGINX_PRELOAD"]
    NGINX_ENV["ASAN_OPTIONS"] = os.environ.get("RL_NGINX_SAN_OPTIONS", "")
    NGINX_ENV["UBSAN_OPTIONS"] = os.environ.get("RL_NGINX_UBSAN_OPTIONS", "")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """One nginx: a directory of its own, `http_body` the http{} block's text
    ({port} and {html} substituted), `workers` worker processes."""

    def __init__(self, module, http_body, workers=4, extra_main=""):
        self.module = module
        self.dir = tempfile.mkdtemp(prefix="rl-nginx-")
        # Workers run as nobody when nginx is started as root: they must read it.
        os.chmod(self.dir, 0o755)
        os.makedirs(os.path.join(self.dir, "html"))
        os.chmod(os.path.join(self.dir, "html"), 0o755)
        with open(os.path.join(self.dir, "html", "index.html"), "w") as f:
            f.write("ok\n")
        os.chmod(os.path.join(self.dir, "html", "index.html"), 0o644)
        self.port = free_port()
        self.workers = workers
        self.extra_main = extra_main
        self.proc = None
        self.write(http_body)

    @property
    def conf(self):
        return os.path.join(self.dir, "nginx.conf")

    @property
    def error_log(self):
        return os.path.join(self.dir, "error.log")

    def write(self, http_body):
        d = self.dir
        if http_body.startswith("load_module"):
            # A whole configuration of the user's kind (README's): nginx's
            # defaults, relative to the prefix; only `daemon off` is added, on
            # the command line.
            os.makedirs(os.path.join(d, "logs"), exist_ok=True)
            with open(self.conf, "w") as f:
                f.write(http_body.replace("{port}", str(self.port)))
            self.raw = True
            return
        self.raw = False
        body = http_body.replace("{port}", str(self.port)).replace("{html}", d + "/html")
        with open(self.conf, "w") as f:
            f.write(
                f"""load_module {self.module};
daemon off;
master_process on;
worker_processes {self.workers};
error_log {d}/error.log info;
pid {d}/nginx.pid;
{self.extra_main}
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 0;
{body}
}}
"""
            )

    def test_config(self):
        """`nginx -t`: (exit status, what it printed)."""
        p = subprocess.run(
            [NGINX, "-t", "-p", self.dir, "-c", self.conf, "-e", self.error_log]
            + (["-g", "daemon off;"] if self.raw else []),
            capture_output=True, text=True, timeout=30, env=NGINX_ENV)
        return p.returncode, p.stdout + p.stderr

    def start(self):
        with open(os.path.join(self.dir, "stderr.log"), "w") as err:
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.dir, "-c", self.conf, "-e", self.error_log]
                + (["-g", "daemon off;"] if self.raw else []),
                stdout=subprocess.DEVNULL, stderr=err, env=NGINX_ENV)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited at start: " + self.log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if len(self.worker_pids()) == self.workers:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("nginx did not start listening: " + self.log())

    def worker_pids(self):
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return sorted(int(l.split()[0]) for l in out.splitlines() if "worker process" in l
                      and "shutting down" not in l)

    def reload(self):
        """nginx -s reload, then waits until only new workers serve."""
        old = set(self.worker_pids())
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = set(self.worker_pids())
            if len(pids) == self.workers and not (pids & old):
                # Old workers may still finish their connections: wait them out.
                while time.monotonic() < deadline:
                    if not any(os.path.exists(f"/proc/{p}") for p in old):
                        return
                    time.sleep(0.05)
            time.sleep(0.05)
        raise AssertionError("reload did not replace the workers: " + self.log())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def get(self, path="/", headers=None, timeout=10):
        """(status, headers as a dict, body, seconds taken)."""
        t = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            return r.status, dict(r.getheaders()), body, time.monotonic() - t
        finally:
            c.close()

    def many(self, n, parallel, path="/", headers=None):
        """n requests, `parallel` at a time, each on its own connection:
        the list of statuses (None for a request that failed)."""
        def one(_):
            try:
                return self.get(path, headers)[0]
            except OSError:
                return None
        with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
            return list(ex.map(one, range(n)))
