#!/usr/bin/env python3
"""hostile_clients.py — robustness tests of the example HTTP servers.

Drives a running build/http_server or build/prefork_server with raw sockets the
way slow, broken or hostile clients would, and checks the behaviour promised by
the servers' contract (timeouts, error statuses, keep-alive, pipelining, the
connection cap, a quick stop). Python 3.11 standard library only.

Usage (the server is started by the caller, e.g. scripts/test_examples.sh):

    scripts/hostile_clients.py --host 127.0.0.1 --port P --case NAME [options]
    scripts/hostile_clients.py --host 127.0.0.1 --port P --suite [options]

Cases (--suite runs the first seven, those that need no special server):

    parsing      malformed, binary and oversized request heads, each answered
                 at once (400, 431, 505) and followed by a close
    http         keep-alive, pipelining, Connection: close, HTTP/1.0, HEAD,
                 405/404, /metrics, keying by IP and by X-API-Key
    keepalive    an idle kept-alive connection is closed after ~--keepalive-timeout
    slowloris    --conns connections dripping a request head one byte every
                 0.5 s get 408 (or are closed) after ~--header-timeout
    idle         --idle connections that send nothing are closed after
                 ~--header-timeout (with --evictions: by then; for a server
                 with room for fewer, which evicts the oldest)
    drip-after   clients that keep dripping after a Connection: close response
                 are cut off within ~2 s
    unread       a client pipelining --unread requests and never reading is cut
                 off after ~--header-timeout
    cap          for a server started with --max-connections --cap and one
                 thread/worker: 2 x --cap idle connections, the oldest
                 evicted; then --cap in mid-request, none evicted, a new
                 one waiting for their 408s
    ipv6         for --host ::1: served, and keyed by the client's IPv6 address
    hold         not a test: opens silent, dripping, idle keep-alive and
                 not-reading connections, prints "holding ..." and keeps
                 them (reopening those the server closes) until SIGTERM or
                 --hold-seconds; the caller stops the server meanwhile

All cases except hold run probes where it matters: a fresh connection sending
a complete GET / with its own X-API-Key, which must be answered 200 within
--probe-within seconds while the hostile clients are attached.

Every assertion prints one line, "ok: ..." or "FAIL: ..."; "note: ..." lines
explain skips. The exit status is 1 when any assertion failed, 2 for bad
arguments, else 0. Every case is bounded in time by its own deadlines, and the
whole run by --time-limit.

The timing options must match the server's: --header-timeout and
--keepalive-timeout (whole seconds). An event that must happen "after about S
s" is accepted from S - --early seconds to S + --margin seconds after its
start; the margins are generous because the machine may be loaded.
"""

import argparse
import os
import random
import re
import resource
import selectors
import signal
import socket
import sys
import threading
import time

# ---- reporting ----------------------------------------------------------------


class Report:
    """Counts and prints assertions; thread-safe (the probes run in a thread)."""

    def __init__(self):
        self.failures = 0
        self.passes = 0
        self.lock = threading.Lock()

    def _print(self, line):
        with self.lock:
            print(line, flush=True)

    def ok(self, msg):
        with self.lock:
            self.passes += 1
        self._print("ok: " + msg)

    def fail(self, msg):
        with self.lock:
            self.failures += 1
        self._print("FAIL: " + msg)

    def note(self, msg):
        self._print("note: " + msg)

    def check(self, cond, msg, detail=""):
        """ok: msg when cond, else FAIL: msg (detail)."""
        if cond:
            self.ok(msg)
        else:
            self.fail(msg + (f" ({detail})" if detail else ""))
        return cond


def now():
    return time.monotonic()


# ---- keys and sockets -----------------------------------------------------------

RUN_ID = f"{os.getpid()}-{random.randrange(1 << 30):x}"
_key_counter = 0
_key_lock = threading.Lock()


def fresh_key(name):
    """An X-API-Key no other request of any run has used: its own full quota."""
    global _key_counter
    with _key_lock:
        _key_counter += 1
        return f"{name}-{RUN_ID}-{_key_counter}"


class Closed(Exception):
    """The server closed (EOF) or reset the connection."""


class Timeout(Exception):
    """Nothing (complete) arrived before the deadline."""


def raise_nofile_limit():
    """Raises RLIMIT_NOFILE's soft limit to the hard limit (for the floods)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


def connect(cfg, source=None, rcvbuf=None, timeout=5.0):
    """A connected, non-blocking TCP socket to the server. source: an IPv4
    address to send from (Linux routes all of 127/8 locally), so that a test
    keyed by IP gets a client IP no other test used. rcvbuf: SO_RCVBUF set
    before connecting (a small one keeps the kernel from absorbing responses
    the client does not read)."""
    family, stype, proto, _, addr = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)[0]
    s = socket.socket(family, stype, proto)
    try:
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect(addr)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        s.close()
        raise
    return s


def fresh_source_ip():
    """A random 127.x.y.z other than 127.0.0.1, or None when this host cannot
    send from it (then the tests keyed by IP share 127.0.0.1's quota)."""
    ip = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
        return ip
    except OSError:
        return None


TCP_STATE_ESTABLISHED = 1
TCP_STATE_CLOSE_WAIT = 8


def tcp_state(sock):
    """The kernel's TCP state of sock (Linux TCP_INFO), None when unknown."""
    opt = getattr(socket, "TCP_INFO", None)
    if opt is None:
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, opt, 8)[0]
    except OSError:
        return None


def wait_io(sock, write, deadline):
    """Waits until sock is readable (or writable); False at the deadline."""
    left = deadline - now()
    if left <= 0:
        return False
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_WRITE if write else selectors.EVENT_READ)
        return bool(sel.select(left))


def send_all(sock, data, deadline):
    """Sends all of data before the deadline; Closed when the server reset
    the connection, Timeout when it stopped reading."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
            view = view[n:]
        except BlockingIOError:
            if not wait_io(sock, True, deadline):
                raise Timeout(f"server stopped reading, {len(view)} bytes unsent")
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))


# ---- HTTP responses -------------------------------------------------------------------


class Response:
    """One parsed response: status, headers (lower-case names, in order), body."""

    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first value of header name, None when absent."""
        for n, v in self.headers:
            if n == name.lower():
                return v
        return None

    def count(self, name):
        return sum(1 for n, _ in self.headers if n == name.lower())

    def int_header(self, name):
        v = self.header(name)
        return int(v) if v is not None and v.isdigit() else None

    @property
    def remaining(self):
        return self.int_header("X-RateLimit-Remaining")

    def says_close(self):
        return (self.header("Connection") or "").lower() == "close"

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body[:60]!r}>"


class Conn:
    """A client connection that reads responses one by one (pipelining-safe)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    @classmethod
    def open(cls, cfg, **kw):
        return cls(connect(cfg, **kw))

    def close(self):
        self.sock.close()

    def send(self, data, deadline=None):
        send_all(self.sock, data, deadline if deadline is not None else now() + 5)

    def _fill(self, deadline):
        """Reads more into buf; Closed on EOF/reset, Timeout at the deadline."""
        if self.eof:
            raise Closed("eof")
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                if not wait_io(self.sock, False, deadline):
                    raise Timeout("no answer")
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                self.eof = True
                raise Closed(str(e))
            if not data:
                self.eof = True
                raise Closed("eof")
            self.buf += data
            return

    def _parse(self, head):
        """A complete response at the start of buf, removed from it; None
        while incomplete (buf is left as it is)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3}) ?(.*)$", lines[0])
        if not m:
            raise ValueError(f"bad status line {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        resp = Response(m.group(1), int(m.group(2)), m.group(3), headers, b"")
        start = end + 4
        if head or resp.status in (204, 304) or 100 <= resp.status < 200:
            length = 0
        else:
            length = resp.int_header("Content-Length")
            if length is None:  # a body delimited by the close
                if not self.eof:
                    return None
                length = len(self.buf) - start
        if len(self.buf) < start + length:
            return None
        resp.body = self.buf[start:start + length]
        self.buf = self.buf[start + length:]
        return resp

    def read_response(self, deadline, head=False):
        """The next response (head=True: to a HEAD request, no body). Closed
        when the connection ends first, Timeout at the deadline (what came so
        far stays in buf: calling again with a later deadline goes on)."""
        while True:
            resp = self._parse(head)
            if resp is not None:
                return resp
            try:
                self._fill(deadline)
            except Closed:
                resp = self._parse(head)  # a body delimited by the close
                if resp is not None:
                    return resp
                if self.buf:
                    raise Closed(f"closed inside a response: {self.buf[:80]!r}")
                raise

    def wait_closed(self, deadline):
        """Waits for EOF or a reset, dropping whatever arrives. Returns the
        time it came, or None at the deadline."""
        if self.eof:
            return now()
        self.buf = b""
        try:
            while True:
                self._fill(deadline)
                self.buf = b""
        except Closed:
            return now()
        except Timeout:
            return None


def request(path="/", method="GET", version="HTTP/1.1", key=None, host="test", extra=()):
    """A request head as bytes; key None sends no X-API-Key."""
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(cfg, data, head=False, timeout=None, **kw):
    """Sends data on a fresh connection and reads one response. Returns
    (response, seconds it took, the Conn)."""
    conn = Conn.open(cfg, **kw)
    t0 = now()
    deadline = t0 + (timeout or cfg.header_timeout + cfg.margin)
    conn.send(data, deadline)
    resp = conn.read_response(deadline, head=head)
    return resp, now() - t0, conn


# ---- probes ---------------------------------------------------------------------------


class Probes:
    """A thread that sends probes one after the other while the hostile
    clients are attached: each a fresh connection with a complete GET / and
    its own X-API-Key, to be answered 200 within cfg.probe_within seconds."""

    def __init__(self, cfg, rep, what):
        self.cfg, self.rep, self.what = cfg, rep, what
        self.results = []  # (seconds, error or None)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _one(self):
        t0 = now()
        conn = None
        try:
            conn = Conn.open(self.cfg, timeout=self.cfg.probe_timeout)
            deadline = t0 + self.cfg.probe_timeout
            conn.send(request(key=fresh_key("probe"), extra=["Connection: close"]), deadline)
            resp = conn.read_response(deadline)
            err = None if resp.status == 200 else f"status {resp.status}"
        except (OSError, Closed, Timeout, ValueError) as e:
            err = f"{type(e).__name__}: {e}"
        finally:
            if conn:
                conn.close()
        self.results.append((now() - t0, err))

    def _run(self):
        while not self.stop_event.is_set():
            self._one()
            self.stop_event.wait(self.cfg.probe_interval)

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(self.cfg.probe_timeout + 5)
        if exc[0] is not None:
            return False
        self.report()
        return False

    def report(self):
        cfg, rep = self.cfg, self.rep
        if len(self.results) < cfg.min_probes:
            rep.fail(f"{self.what}: only {len(self.results)} probes ran (want >= {cfg.min_probes}): "
                     "the server answered them too slowly")
        bad = [(t, e) for t, e in self.results if e is not None or t >= cfg.probe_within]
        if bad:
            for t, e in bad[:5]:
                rep.fail(f"{self.what}: a probe took {t:.2f} s (limit {cfg.probe_within} s)"
                         + (f": {e}" if e else ""))
            if len(bad) > 5:
                rep.fail(f"{self.what}: {len(bad) - 5} more probes failed")
        elif self.results:
            slowest = max(t for t, _ in self.results)
            rep.ok(f"{self.what}: {len(self.results)} probes answered 200 within "
                   f"{cfg.probe_within} s (slowest {slowest:.3f} s)")


def in_window(cfg, timeout, end, start, start_late=None):
    """Whether an event due timeout s after a start came at end, about then
    (see --early and --margin). The server's clock started between start
    (taken before the action that starts it) and start_late (taken after;
    default start): the lower bound counts from the first, the upper from
    the second, so that a client held up by a loaded machine between the
    two does not see an event early."""
    late = start if start_late is None else start_late
    return end - start >= timeout - cfg.early and end - late <= timeout + cfg.margin


def window_text(cfg, timeout):
    return f"[{timeout - cfg.early:g}, {timeout + cfg.margin:g}] s"


# ---- case: slowloris -------------------------------------------------------------------


def case_slowloris(cfg, rep):
    """--conns connections each drip a request head, one byte every 0.5 s;
    each must get 408 (or a close) after about the header timeout while
    probes keep being answered."""
    n, pace = cfg.conns, 0.5
    drippers = []
    with Probes(cfg, rep, "slowloris"):
        for i in range(n):
            head = request(key=fresh_key("slowloris"), extra=["X-Padding: " + "a" * 2000])
            s = connect(cfg)
            drippers.append({"sock": s, "head": head, "pos": 0, "start": None, "next": now(),
                             "answer": None, "closed": None, "data": b""})
        sel = selectors.DefaultSelector()
        for d in drippers:
            sel.register(d["sock"], selectors.EVENT_READ, d)
        deadline = now() + cfg.header_timeout + cfg.margin + 1
        active = len(drippers)
        while active and now() < deadline:
            t = now()
            for d in drippers:
                if d["closed"] is None and t >= d["next"]:
                    try:
                        d["sock"].send(d["head"][d["pos"]:d["pos"] + 1])
                        d["pos"] += 1
                        if d["start"] is None:
                            d["start"] = t
                    except BlockingIOError:
                        pass
                    except OSError:  # reset: the server closed it
                        d["closed"] = t
                        sel.unregister(d["sock"])
                        active -= 1
                        continue
                    d["next"] += pace
            wait = min([d["next"] for d in drippers if d["closed"] is None] + [deadline]) - now()
            for key, _ in sel.select(max(0.0, min(wait, 0.1))):
                d = key.data
                try:
                    data = d["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    d["data"] += data
                    if d["answer"] is None:
                        d["answer"] = now()
                else:
                    d["closed"] = now()
                    sel.unregister(d["sock"])
                    active -= 1
        sel.close()
        for d in drippers:
            d["sock"].close()
    h = cfg.header_timeout
    for i, d in enumerate(drippers):
        what = f"slowloris dripper {i + 1}/{n} (sent {d['pos']} bytes)"
        end = d["answer"] if d["answer"] is not None else d["closed"]
        if end is None or d["start"] is None:
            rep.fail(f"{what}: still open {cfg.header_timeout + cfg.margin + 1:g} s later "
                     f"(header timeout {h} s)")
            continue
        took = end - d["start"]
        if d["answer"] is not None:
            status = d["data"][:12]
            ok = status.startswith(b"HTTP/1.1 408") and in_window(cfg, h, end, d["start"])
            rep.check(ok, f"{what}: 408 after {took:.2f} s, within {window_text(cfg, h)}",
                      f"got {d['data'][:40]!r}")
            rep.check(b"\r\nconnection: close\r\n" in d["data"].lower(),
                      f"{what}: the 408 says Connection: close")
            rep.check(d["closed"] is not None, f"{what}: the server closes after the 408")
        else:
            rep.check(in_window(cfg, h, end, d["start"]),
                      f"{what}: closed without an answer after {took:.2f} s, within {window_text(cfg, h)}")

    # A new connection's first head has the header timeout from the connect,
    # not from its first byte: a client silent until just before it, then
    # dripping, is cut off at about h after connecting (timed from the first
    # byte it would hold on until about 2h).
    wait = h - 0.25
    cut_by = (h + wait + h) / 2  # halfway between the two readings
    before = now()
    conn = Conn.open(cfg)
    t0 = now()
    head = request(key=fresh_key("late-drip"), extra=["X-Padding: " + "a" * 2000])
    pos, resp, err = 0, None, None
    closed = conn.wait_closed(t0 + wait)  # silent until then
    while closed is None and resp is None and err is None and now() < t0 + h + cfg.margin:
        try:
            conn.send(head[pos:pos + 1])
            pos += 1
            resp = conn.read_response(min(now() + pace, t0 + h + cfg.margin))
        except Timeout:
            pass
        except (Closed, ValueError) as e:
            err = e
    end = closed if closed is not None else now()
    conn.close()
    rep.check(resp is not None and resp.status == 408 and end - before >= h - cfg.early and end - t0 < cut_by,
              f"slowloris: a connection silent for {wait:g} s, then dripping, gets 408 at about {h} s after "
              f"connecting ({end - t0:.2f} s; before {cut_by:g} s)",
              f"got {resp!r}, {err!r}" + (" (silent close)" if closed is not None else ""))


# ---- case: idle flood ---------------------------------------------------------------------


def case_idle(cfg, rep):
    """--idle connections send nothing: probes are answered meanwhile, and the
    server closes each one silently after about the header timeout. (The
    probes start once the flood is open: a probe is then the newest
    connection, which a server short of room must not evict, whereas one
    caught between its connect and its send, mid-flood, is fair game.)"""
    n, h = cfg.idle, cfg.header_timeout
    conns = []
    connect_errors = []
    for _ in range(n):
        try:
            before = now()
            conns.append({"sock": connect(cfg), "before": before, "start": now(), "closed": None,
                          "data": b""})
        except OSError as e:
            connect_errors.append(str(e))
    rep.check(not connect_errors, f"idle flood: {n} connections opened",
              f"{len(connect_errors)} failed, e.g. {connect_errors[:1]}")
    with Probes(cfg, rep, f"{n} idle connections") as probes:
        sel = selectors.DefaultSelector()
        for c in conns:
            sel.register(c["sock"], selectors.EVENT_READ, c)
        deadline = (conns[-1]["start"] if conns else now()) + h + cfg.margin
        active = len(conns)
        while active and now() < deadline:
            for key, _ in sel.select(max(0.0, min(0.2, deadline - now()))):
                c = key.data
                try:
                    data = c["sock"].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    c["data"] += data
                    continue
                c["closed"] = now()
                sel.unregister(c["sock"])
                active -= 1
        sel.close()
        # A server with room for fewer (--evictions) may close the whole
        # flood at once: a probe evicts the last of it. Probes still run.
        while len(probes.results) < cfg.min_probes and now() < deadline:
            time.sleep(0.05)
    open_ = [c for c in conns if c["closed"] is None]
    early = [c["closed"] - c["before"] for c in conns if c["closed"] is not None
             and c["closed"] - c["before"] < h - cfg.early]
    late = [c["closed"] - c["start"] for c in conns if c["closed"] is not None
            and c["closed"] - c["start"] > h + cfg.margin]
    talked = [c["data"][:40] for c in conns if c["data"]]
    times = [c["closed"] - c["start"] for c in conns if c["closed"] is not None]
    span = f"{min(times):.2f}-{max(times):.2f} s" if times else "none closed"
    if cfg.evictions:  # the server has room for fewer: the oldest are evicted early
        rep.check(not open_ and not late,
                  f"idle flood: all {len(conns)} idle connections closed (evicted or timed out) by "
                  f"{h + cfg.margin:g} s after connecting ({span})",
                  f"{len(open_)} still open, {len(late)} too late")
    else:
        rep.check(not open_ and not early and not late,
                  f"idle flood: all {len(conns)} idle connections closed within {window_text(cfg, h)} "
                  f"of connecting ({span})",
                  f"{len(open_)} still open, {len(early)} closed too early, {len(late)} too late")
    rep.check(not talked, "idle flood: closed silently (no byte sent to a client that sent none)",
              f"{len(talked)} got data, e.g. {talked[:1]}")
    for c in conns:
        c["sock"].close()


# ---- case: dripping after a response ---------------------------------------------------------


def case_drip_after(cfg, rep):
    """--conns clients send a Connection: close request, read the response,
    then keep sending a byte every 0.2 s: the server must close each within
    about 2 s (its drain time) while probes are answered."""
    n, pace, drain = cfg.conns, 0.2, 2.0
    clients = []
    with Probes(cfg, rep, "dripping after a response"):
        for i in range(n):
            conn = Conn.open(cfg)
            conn.send(request(key=fresh_key("drip-after"), extra=["Connection: close"]))
            clients.append({"conn": conn, "resp": None, "err": None, "t": None, "closed": None})
        # One loop for all: read the responses still to come, drip to the
        # clients that have theirs, note when the server closes each.
        answer_by = now() + cfg.header_timeout + cfg.margin
        deadline = answer_by + drain + cfg.margin + 1
        while now() < deadline:
            for c in clients:
                if c["err"] or c["closed"] is not None:
                    continue
                if c["resp"] is None:
                    try:
                        c["resp"] = c["conn"].read_response(min(now() + 0.01, answer_by))
                        c["t"] = now()
                    except Timeout:
                        if now() >= answer_by:
                            c["err"] = "no answer"
                    except (Closed, ValueError) as e:
                        c["err"] = f"{type(e).__name__}: {e}"
                    continue
                s = c["conn"].sock
                try:
                    s.send(b"x")
                except BlockingIOError:
                    pass
                except OSError:
                    c["closed"] = now()  # the server closed: a byte before drew a reset
                    continue
                state = tcp_state(s)
                if state is not None and state not in (TCP_STATE_ESTABLISHED, TCP_STATE_CLOSE_WAIT):
                    c["closed"] = now()  # reset by the server (CLOSE_WAIT: it only shut down writing)
            if all(c["err"] or c["closed"] is not None for c in clients):
                break
            time.sleep(pace)  # the client's own pace, not a wait for the server
    for i, c in enumerate(clients):
        what = f"drip after response {i + 1}/{n}"
        if not c["resp"]:
            rep.fail(f"{what}: no response to the Connection: close request ({c['err']})")
            continue
        rep.check(c["resp"].status == 200 and c["resp"].says_close(),
                  f"{what}: 200 with Connection: close", repr(c["resp"]))
        took = None if c["closed"] is None else c["closed"] - c["t"]
        rep.check(took is not None and took <= drain + cfg.margin,
                  f"{what}: the server cut the dripping client off within {drain + cfg.margin:g} s "
                  f"of its response" + (f" ({took:.2f} s)" if took is not None else ""),
                  "still open" if took is None else "too late")
        c["conn"].close()

    # A client that floods after its Connection: close response is cut off
    # once the server has drained 64 KiB, long before the drain time is over.
    conn = Conn.open(cfg)
    conn.send(request(key=fresh_key("flood-after"), extra=["Connection: close"]))
    resp = conn.read_response(now() + cfg.header_timeout + cfg.margin)
    t0, sent, cut = now(), 0, None
    chunk = b"x" * 65536
    while cut is None and now() < t0 + drain + cfg.margin:
        try:
            sent += conn.sock.send(chunk)
        except BlockingIOError:
            wait_io(conn.sock, True, min(now() + 0.05, t0 + drain + cfg.margin))
        except OSError:
            cut = now()
        state = tcp_state(conn.sock)
        if state is not None and state not in (TCP_STATE_ESTABLISHED, TCP_STATE_CLOSE_WAIT):
            cut = now()
    conn.close()
    took = None if cut is None else cut - t0
    rep.check(resp.status == 200 and took is not None and took < drain / 2,
              f"flooding after a response: cut off within {drain / 2:g} s, not at the end of the {drain:g} s "
              f"drain" + (f" ({took:.2f} s, {sent >> 10} KiB sent)" if took is not None else ""),
              f"{resp.status}, {sent >> 10} KiB sent, " + ("still open" if took is None else f"{took:.2f} s"))


# ---- case: parsing ------------------------------------------------------------------------------

BIG = "X-Big: " + "a" * 9000


def parsing_requests():
    """(description, request bytes, expected status). Requests without an
    X-API-Key that would be served carry a fresh one."""
    k = fresh_key
    r = request
    return [
        ("a NUL byte in a header value", b"GET / HTTP/1.1\r\nHost: t\r\nX-API-Key: a\x00b\r\n\r\n", 400),
        ("a NUL byte in the request line", b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("a NUL byte as the first byte", b"\x00GET / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("a control byte 0x01 in a value", b"GET / HTTP/1.1\r\nHost: t\r\nX-API-Key: a\x01b\r\n\r\n", 400),
        ("a control byte 0x7f (DEL) in a value", b"GET / HTTP/1.1\r\nHost: t\r\nX-API-Key: a\x7fb\r\n\r\n", 400),
        ("bare LF line ends", b"GET / HTTP/1.1\nHost: t\nX-API-Key: " + k("lf").encode() + b"\n\n", 400),
        ("one bare LF among CRLFs", b"GET / HTTP/1.1\r\nHost: t\nX-API-Key: k\r\n\r\n", 400),
        ("a bare CR inside the head", b"GET / HTTP/1.1\r\nHost: t\rX-API-Key: k\r\n\r\n", 400),
        ("a bare CR in the request line", b"GET /\r HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("a space before the colon (X-API-Key : k)", r(extra=["X-API-Key : k"]), 400),
        ("a tab before the colon", r(extra=["X-API-Key\t: k"]), 400),
        ("obs-fold (a line starting with SP)", r(key="a", extra=[" b"]), 400),
        ("obs-fold (a line starting with HTAB)", r(key="a", extra=["\tb"]), 400),
        ("a bad header name (parentheses)", r(key=k("p"), extra=["X(y): 1"]), 400),
        ("an empty header name", r(key=k("p"), extra=[": 1"]), 400),
        ("a header line without a colon", r(key=k("p"), extra=["NoColon"]), 400),
        ("HTTP/1.1 without Host", r(host=None, key=k("nohost")), 400),
        ("two Host headers", r(key=k("p"), extra=["Host: other"]), 400),
        ("two X-API-Key headers", r(key="a", extra=["X-API-Key: b"]), 400),
        ("two X-API-Key headers (other case)", r(key="a", extra=["x-api-key: a"]), 400),
        ("Content-Length: abc", r(key=k("p"), extra=["Content-Length: abc"]), 400),
        ("Content-Length: -1", r(key=k("p"), extra=["Content-Length: -1"]), 400),
        ("an empty Content-Length", r(key=k("p"), extra=["Content-Length:"]), 400),
        ("conflicting Content-Length headers", r(key=k("p"), extra=["Content-Length: 1", "Content-Length: 2"]), 400),
        ("Content-Length: 1, 2", r(key=k("p"), extra=["Content-Length: 1, 2"]), 400),
        ("Content-Length with Transfer-Encoding (request smuggling)",
         r(key=k("p"), method="POST", extra=["Content-Length: 1", "Transfer-Encoding: chunked"]), 400),
        ("request line garbage", b"garbage\r\nHost: t\r\n\r\n", 400),
        ("binary garbage", bytes(range(1, 32)) + b"\r\n\r\n", 400),
        ("a request line without version", b"GET /\r\nHost: t\r\n\r\n", 400),
        ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("a trailing space in the request line", b"GET / HTTP/1.1 \r\nHost: t\r\n\r\n", 400),
        ("a relative target", b"GET x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("an asterisk target (OPTIONS *)", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("a malformed version HTTP/1.x", b"GET / HTTP/1.x\r\nHost: t\r\n\r\n", 400),
        ("a lower-case http/1.1", b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
        ("HTTP/2.0", r(version="HTTP/2.0", key=k("v2")), 505),
        ("HTTP/1.2", r(version="HTTP/1.2", key=k("v12")), 505),
        ("a head over 8 KiB (complete)", r(key=k("big"), extra=[BIG]), 431),
        ("a head over 8 KiB (no end yet)", f"GET / HTTP/1.1\r\nHost: t\r\n{BIG}".encode(), 431),
        # what must still be served
        ("HTTP/1.0 without Host", r(version="HTTP/1.0", host=None, key=k("v10")), 200),
        ("a HTAB inside a header value", r(key=k("tab") + "\tx"), 200),
        ("a head just under 8 KiB", r(key=k("under"), extra=["X-Big: " + "a" * 7900]), 200),
        ("an absolute-form target (RFC 9112 3.2.2: a server MUST accept it)",
         b"GET http://t/ HTTP/1.1\r\nHost: t\r\nX-API-Key: " + k("abs").encode() + b"\r\n\r\n", 200),
    ]


def case_parsing(cfg, rep):
    """Each malformed request is answered at once (well before the header
    timeout) with its status, says Connection: close and is followed by the
    server closing; the well-formed edge cases are served."""
    limit = cfg.at_once
    for what, data, want in parsing_requests():
        try:
            resp, took, conn = exchange(cfg, data)
        except (OSError, Closed, Timeout, ValueError) as e:
            rep.fail(f"parsing: {what}: expected {want}, got {type(e).__name__}: {e}")
            continue
        rep.check(resp.status == want and took < limit,
                  f"parsing: {what}: {want}, answered at once (within {limit:g} s)",
                  f"got {resp.status} after {took:.3f} s")
        if want != 200 and resp.status >= 400:  # an error answer (a 200 failed above already)
            rep.check(resp.says_close(), f"parsing: {what}: the {resp.status} says Connection: close")
            closed = conn.wait_closed(now() + 1.0)
            rep.check(closed is not None, f"parsing: {what}: the server closes after the {resp.status}",
                      "still open 1 s later")
        conn.close()


# ---- case: http --------------------------------------------------------------------------------


def parse_metrics(body):
    """The /metrics body as {name or name{labels}: int}."""
    out = {}
    for line in body.decode("latin-1").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if value.isdigit():
                out[name] = int(value)
    return out


ALLOWED = 'ratelimit_checks_total{decision="allowed"}'
LIMITED = 'ratelimit_checks_total{decision="limited"}'


def metrics(cfg):
    resp, _, conn = exchange(cfg, request("/metrics", extra=["Connection: close"]))
    conn.close()
    return resp, parse_metrics(resp.body)


def answer_deadline(cfg):
    return now() + cfg.header_timeout + cfg.margin


def one(cfg, data, **kw):
    """exchange() for a single response: the connection is closed after it."""
    resp, _, conn = exchange(cfg, data, **kw)
    conn.close()
    return resp


def http_keepalive(cfg, rep, limit):
    """Three requests on one connection, each answered and charged."""
    key = fresh_key("keepalive")
    conn = Conn.open(cfg)
    got = []
    for _ in range(3):
        conn.send(request(key=key))
        got.append(conn.read_response(answer_deadline(cfg)))
    conn.close()
    rep.check([r.status for r in got] == [200] * 3, "http: keep-alive: 3 requests on one connection are 200",
              repr(got))
    rep.check([r.remaining for r in got] == [limit - 1, limit - 2, limit - 3],
              "http: keep-alive: X-RateLimit-Remaining decreases, each request charged",
              f"{[r.remaining for r in got]}")
    rep.check(not any(r.header("Connection") for r in got),
              "http: keep-alive: the responses carry no Connection header", repr(got))


def http_pipelining(cfg, rep, limit):
    """The quota and two more in one send, a 404 among them: answered in order."""
    key = fresh_key("pipeline")
    reqs = [request(key=key) for _ in range(limit - 1)] + [request("/nope", key=key)] + \
        [request(key=key) for _ in range(2)]
    conn = Conn.open(cfg)
    conn.send(b"".join(reqs))
    got = []
    try:
        for _ in reqs:
            got.append(conn.read_response(answer_deadline(cfg)))
    except (Closed, Timeout, ValueError) as e:
        rep.fail(f"http: pipelining: {len(reqs)} requests in one send: {type(e).__name__} after "
                 f"{len(got)} responses: {e}")
    conn.close()
    want_status = [200] * (limit - 1) + [404, 200, 429]
    want_rem = list(range(limit - 1, 0, -1)) + [None, 0, 0]
    rep.check([r.status for r in got] == want_status,
              f"http: pipelining: {len(reqs)} requests in one send are answered in order "
              f"({limit} x 200 with a 404 in place, then 429)", f"{[r.status for r in got]}")
    rep.check([r.remaining for r in got] == want_rem,
              "http: pipelining: X-RateLimit-Remaining decreases, each request charged",
              f"{[r.remaining for r in got]}")
    rep.check(len(got) == len(reqs) and got[-1].int_header("Retry-After") is not None,
              "http: pipelining: the 429 has Retry-After")


def http_connection_header(cfg, rep, limit):
    """Connection: close honoured; HTTP/1.0 closes unless keep-alive is asked."""
    resp, _, conn = exchange(cfg, request(key=fresh_key("close"), extra=["Connection: close"]))
    rep.check(resp.status == 200 and resp.says_close(), "http: Connection: close: the response says it",
              repr(resp))
    rep.check(conn.wait_closed(now() + 1.0) is not None, "http: Connection: close: the server closes")
    conn.close()

    resp, _, conn = exchange(cfg, request(version="HTTP/1.0", key=fresh_key("v10")))
    rep.check(resp.status == 200 and resp.says_close(), "http: HTTP/1.0: the response says Connection: close",
              repr(resp))
    rep.check(conn.wait_closed(now() + 1.0) is not None, "http: HTTP/1.0: the server closes by default")
    conn.close()

    key = fresh_key("v10ka")
    resp, _, conn = exchange(cfg, request(version="HTTP/1.0", key=key, extra=["Connection: keep-alive"]))
    rep.check(resp.status == 200 and (resp.header("Connection") or "").lower() == "keep-alive",
              "http: HTTP/1.0 with Connection: keep-alive: the response says Connection: keep-alive",
              repr(resp))
    try:
        conn.send(request(version="HTTP/1.0", key=key, extra=["Connection: keep-alive"]))
        resp2 = conn.read_response(answer_deadline(cfg))
        ok, detail = resp2.status == 200 and resp2.remaining == limit - 2, repr(resp2)
    except (Closed, Timeout, ValueError) as e:
        ok, detail = False, f"{type(e).__name__}: {e}"
    conn.close()
    rep.check(ok, "http: HTTP/1.0 with Connection: keep-alive: a second request on the connection is served",
              detail)


def http_head(cfg, rep, limit):
    """HEAD /: the headers (Content-Length included), no body, charged."""
    key = fresh_key("head")
    conn = Conn.open(cfg)
    conn.send(request(method="HEAD", key=key) + request(key=key))
    head = conn.read_response(answer_deadline(cfg), head=True)
    try:
        # a body after the HEAD response would be taken for the next status line
        get = conn.read_response(answer_deadline(cfg))
    except (Closed, Timeout, ValueError) as e:
        get = f"{type(e).__name__}: {e}"
    conn.close()
    rep.check(head.status == 200 and head.header("Content-Length") == "2" and head.remaining == limit - 1
              and head.header("X-RateLimit-Limit") == str(limit),
              "http: HEAD / is 200 with Content-Length: 2 and the rate-limit headers", repr(head))
    rep.check(isinstance(get, Response) and get.status == 200 and get.body == b"ok" and get.remaining == limit - 2,
              "http: HEAD / has no body and is charged (the GET after it is answered next, remaining - 1)",
              repr(get))
    # a 429 to HEAD: the 429's headers, its JSON body's length, no body
    conn = Conn.open(cfg)
    conn.send(b"".join(request(key=key) for _ in range(limit - 2)) + request(method="HEAD", key=key)
              + request(key=key))
    for _ in range(limit - 2):
        conn.read_response(answer_deadline(cfg))
    head = conn.read_response(answer_deadline(cfg), head=True)
    get = conn.read_response(answer_deadline(cfg))
    conn.close()
    rep.check(head.status == 429 and head.header("Content-Length") == str(len(get.body))
              and head.header("Retry-After") is not None and get.status == 429,
              "http: HEAD / on a spent key is 429 with Retry-After and the JSON body's Content-Length, no body",
              f"{head!r} then {get!r}")


def http_methods_paths(cfg, rep, limit):
    """405 with Allow, 404, the query string ignored."""
    resp = one(cfg, request(method="POST", key=fresh_key("post"), extra=["Content-Length: 0"]))
    rep.check(resp.status == 405 and resp.header("Allow") == "GET, HEAD",
              "http: POST / is 405 with Allow: GET, HEAD", repr(resp))
    resp = one(cfg, request(method="DELETE", path="/metrics"))
    rep.check(resp.status == 405 and resp.header("Allow") == "GET, HEAD",
              "http: DELETE /metrics is 405 with Allow: GET, HEAD", repr(resp))
    resp = one(cfg, request("/other", key=fresh_key("other")))
    rep.check(resp.status == 404, "http: GET /other is 404", repr(resp))
    resp = one(cfg, request("/other", method="POST", key=fresh_key("other"), extra=["Content-Length: 0"]))
    rep.check(resp.status == 404, "http: POST /other is 404 (other paths: 404 whatever the method)", repr(resp))
    resp = one(cfg, request("/?a=b", key=fresh_key("query")))
    rep.check(resp.status == 200, "http: GET /?a=b is / (the query string ignored)", repr(resp))


def http_body(cfg, rep, limit):
    """A request with a body is answered, then the connection is closed."""
    resp, _, conn = exchange(cfg, request(key=fresh_key("body"), extra=["Content-Length: 0"]))
    rep.check(resp.status == 200 and not resp.header("Connection") and conn.wait_closed(now() + 0.5) is None,
              "http: Content-Length: 0 is no body: 200, the connection stays open", repr(resp))
    conn.close()
    for what, extra, body in [("Content-Length: 5", ["Content-Length: 5"], b"hello"),
                              ("Transfer-Encoding: chunked", ["Transfer-Encoding: chunked"],
                               b"5\r\nhello\r\n0\r\n\r\n")]:
        resp, _, conn = exchange(cfg, request(key=fresh_key("body"), extra=extra) + body)
        rep.check(resp.status == 200 and resp.says_close(),
                  f"http: a request with a body ({what}) is 200 with Connection: close", repr(resp))
        rep.check(conn.wait_closed(now() + 1.0) is not None,
                  f"http: a request with a body ({what}): the server closes")
        conn.close()


def http_metrics(cfg, rep, limit):
    """GET /metrics: the format, counts that match the requests, never charged."""
    m0resp, m0 = metrics(cfg)
    rep.check(m0resp.status == 200 and m0resp.header("Content-Type") == "text/plain; version=0.0.4",
              "http: GET /metrics is 200, Content-Type: text/plain; version=0.0.4", repr(m0resp))
    body = m0resp.body.decode("latin-1")
    names = ["ratelimit_checks_total", "ratelimit_errors_total", "ratelimit_keys", "ratelimit_evictions_total"]
    rep.check(all(f"# HELP {n} " in body and f"# TYPE {n} " in body for n in names),
              "http: /metrics has # HELP and # TYPE lines for every metric", body[:200])
    rep.check(all(n in m0 for n in [ALLOWED, LIMITED] + names[1:]),
              "http: /metrics has every counter", repr(m0))
    # the quota and two more, then /metrics with the spent key, all on one connection
    key = fresh_key("metrics")
    conn = Conn.open(cfg)
    conn.send(b"".join(request(key=key) for _ in range(limit + 2)) + request("/metrics", key=key))
    got = [conn.read_response(answer_deadline(cfg)) for _ in range(limit + 3)]
    conn.close()
    _, m1 = metrics(cfg)
    _, m2 = metrics(cfg)
    da, dlim = m1.get(ALLOWED, 0) - m0.get(ALLOWED, 0), m1.get(LIMITED, 0) - m0.get(LIMITED, 0)
    rep.check((da, dlim) == (limit, 2),
              f"http: /metrics counts match the requests made ({limit} allowed, 2 limited)",
              f"allowed +{da}, limited +{dlim}")
    rep.check(got[-1].status == 200 and (m2.get(ALLOWED), m2.get(LIMITED)) == (m1.get(ALLOWED), m1.get(LIMITED)),
              "http: /metrics is not charged (200 with a spent key, the counts unchanged by it)")
    resp = one(cfg, request("/metrics?x=1"))
    rep.check(resp.status == 200 and ALLOWED in parse_metrics(resp.body), "http: GET /metrics?x=1 is /metrics")
    resp = one(cfg, request("/metrics", method="HEAD"), head=True)
    rep.check(resp.status == 200 and resp.header("Content-Length") not in (None, "0"),
              "http: HEAD /metrics is 200 with a Content-Length", repr(resp))


def http_keys(cfg, rep, limit):
    """The key: X-API-Key when present and non-empty, else the client IP."""
    src = fresh_source_ip()
    if src is None:
        rep.note("cannot send from another 127/8 address: the IP checks share 127.0.0.1's quota")
    r1 = one(cfg, request(), source=src)
    r2 = one(cfg, request(), source=src)
    r3 = one(cfg, request(extra=["X-API-Key:"]), source=src)
    r4 = one(cfg, request(extra=["X-API-Key: "]), source=src)
    r5 = one(cfg, request(key=f"ip:{src or '127.0.0.1'}"), source=src)
    rems = [r.remaining for r in (r1, r2, r3, r4)]
    if src is not None:
        rep.check(rems[:2] == [limit - 1, limit - 2],
                  f"http: no X-API-Key: keyed by the client IP (two connections from {src} share a fresh quota)",
                  f"remaining {rems[:2]}")
    else:
        rep.check(None not in rems[:2] and rems[1] == max(rems[0] - 1, 0),
                  "http: no X-API-Key: keyed by the client IP", f"remaining {rems[:2]}")
    rep.check(None not in rems and rems[2] == max(rems[1] - 1, 0) and rems[3] == max(rems[2] - 1, 0),
              "http: an empty X-API-Key counts as none (charged to the client IP)", f"remaining {rems}")
    rep.check(r5.status == 200 and r5.remaining == limit - 1,
              "http: X-API-Key 'ip:<the client IP>' is another key than the IP's", repr(r5))
    other = fresh_source_ip() if src is not None else None
    if other:
        r6 = one(cfg, request(), source=other)
        rep.check(r6.remaining == limit - 1, f"http: another client IP ({other}) has its own quota", repr(r6))


def case_http(cfg, rep):
    """Keep-alive, pipelining, Connection handling, HEAD, 405, 404, bodies,
    /metrics, and the choice of key (X-API-Key, else the client IP). Each
    part runs on its own: one failing does not hide the others."""
    first = one(cfg, request(key=fresh_key("quota")))
    limit = first.int_header("X-RateLimit-Limit") or 0
    if not rep.check(first.status == 200 and limit >= 6,
                     f"http: GET / is 200 with X-RateLimit-Limit {limit} (the checks want >= 6)", repr(first)):
        return
    for part in [http_keepalive, http_pipelining, http_connection_header, http_head, http_methods_paths,
                 http_body, http_metrics, http_keys]:
        try:
            part(cfg, rep, limit)
        except (OSError, Closed, Timeout, ValueError) as e:
            rep.fail(f"http: {part.__name__[5:]}: stopped by {type(e).__name__}: {e}")


# ---- case: keep-alive timeout ---------------------------------------------------------------------


def case_keepalive(cfg, rep):
    """A kept-alive connection idle for less than the keep-alive timeout is
    still served; idle for longer, the server closes it (after about K s)."""
    k = cfg.keepalive_timeout
    conn = Conn.open(cfg)
    key = fresh_key("katimeout")
    conn.send(request(key=key))
    r1 = conn.read_response(now() + cfg.header_timeout + cfg.margin)
    pause = k / 2
    t = now() + pause
    closed = conn.wait_closed(t)  # must stay open while we pause
    rep.check(closed is None and r1.status == 200,
              f"keep-alive: the connection is still open after {pause:g} s idle (timeout {k} s)")
    if closed is None:
        t_send = now()
        conn.send(request(key=key))
        r2 = conn.read_response(now() + cfg.header_timeout + cfg.margin)
        rep.check(r2.status == 200, "keep-alive: a second request after the pause is served on it", repr(r2))
        t0 = now()
        closed = conn.wait_closed(t0 + k + cfg.margin + 1)
        took = None if closed is None else closed - t0
        rep.check(took is not None and in_window(cfg, k, closed, t_send, t0),
                  f"keep-alive: closed after idling about the keep-alive timeout, within {window_text(cfg, k)}"
                  + (f" ({took:.2f} s)" if took is not None else ""), "still open")
    conn.close()

    # The next request on a kept-alive connection, dripped: its head has the
    # header timeout from its first byte (not from the previous response).
    conn = Conn.open(cfg)
    conn.send(request(key=key))
    conn.read_response(now() + cfg.header_timeout + cfg.margin)
    h = cfg.header_timeout
    head = request(key=key, extra=["X-Padding: " + "a" * 2000])
    t0, pos, resp, err = now(), 0, None, None
    deadline = t0 + h + cfg.margin
    while resp is None and err is None and now() < deadline:
        try:
            conn.send(head[pos:pos + 1])
            pos += 1
            resp = conn.read_response(min(now() + 0.5, deadline))
        except Timeout:
            pass
        except (Closed, ValueError) as e:
            err = e
    took = now() - t0
    rep.check(resp is not None and resp.status == 408 and in_window(cfg, h, t0 + took, t0),
              f"keep-alive: a second request dripped on the connection gets 408 after {took:.2f} s, "
              f"within {window_text(cfg, h)} of its first byte",
              f"got {resp!r}, {err!r}")
    conn.close()


# ---- case: unread responses ----------------------------------------------------------------------


def case_unread(cfg, rep):
    """A client pipelines --unread GET /metrics and never reads: the server
    must drop it after about the header timeout, and keep serving probes."""
    n, h = cfg.unread, cfg.header_timeout
    data = request("/metrics") * n
    conn = Conn.open(cfg, rcvbuf=4096)
    s = conn.sock
    t0 = now()
    cut = None  # when the kernel saw the server close (TCP_INFO)
    observable = tcp_state(s) is not None
    with Probes(cfg, rep, f"a client not reading {n} pipelined responses"):
        view = memoryview(data)
        deadline = t0 + h + cfg.margin
        while now() < deadline and cut is None:
            if view:
                try:
                    view = view[s.send(view):]
                except BlockingIOError:
                    pass
                except OSError:
                    cut = now()
                    break
            state = tcp_state(s)
            if state is not None and state != TCP_STATE_ESTABLISHED:
                cut = now()
                break
            time.sleep(0.05)  # poll the kernel's state; the deadline bounds the loop
    if cut is not None:
        took = cut - t0
        rep.check(took >= h - cfg.early,
                  f"unread: the server dropped the client after {took:.2f} s, within {window_text(cfg, h)}")
    elif observable:
        rep.note(f"unread: no close seen by the kernel within {h + cfg.margin:g} s (a FIN may wait behind "
                 "the unread data); reading now")
    # Read what is there: a dropped client gets fewer than n responses, then the end.
    responses, end = 0, None
    read_deadline = now() + 10
    try:
        while responses < n:
            conn.read_response(read_deadline)
            responses += 1
        end = "all answered"
    except Closed:
        end = "closed"
    except Timeout:
        end = "timeout"
    except ValueError as e:
        end = f"garbage: {e}"
    conn.close()
    sent = len(data) - len(view)
    rep.check(end == "closed" and responses < n,
              f"unread: the client not reading was cut off (got {responses} of {n} responses, then the close; "
              f"{sent} of {len(data)} request bytes sent)", f"end: {end}")


# ---- case: connection cap ------------------------------------------------------------------------


def case_cap(cfg, rep):
    """For a server started with --max-connections cfg.cap and one
    thread/worker: 2 x cap idle connections; the oldest are evicted (closed
    long before the header timeout), the newest kept, probes answered."""
    cap, h = cfg.cap, cfg.header_timeout
    conns = []
    for _ in range(2 * cap):
        conns.append({"conn": Conn.open(cfg), "start": now()})
    with Probes(cfg, rep, f"{2 * cap} idle connections over a cap of {cap}") as probes:
        while len(probes.results) < cfg.min_probes and now() < conns[0]["start"] + h - cfg.early:
            time.sleep(0.05)  # let a few probes run, well before any header timeout
    checked = now()
    evicted = []
    for i, c in enumerate(conns):
        if c["conn"].wait_closed(now()) is not None:
            evicted.append(i)
    early = checked - conns[0]["start"] < h - cfg.early
    rep.check(early, f"cap: the check ran {checked - conns[0]['start']:.2f} s after the first connect, "
              f"before its header timeout ({h} s)")
    most = cap + len(probes.results)  # each probe may evict one more
    rep.check(cap <= len(evicted) <= most, f"cap: {len(evicted)} of the {2 * cap} idle connections were "
              f"evicted (from {cap} to {most}: a connection over the cap evicts one)", f"evicted {evicted}")
    rep.check(0 in evicted and evicted == list(range(len(evicted))),
              "cap: the evicted are the oldest", f"evicted {evicted}")
    rep.check(2 * cap - 1 not in evicted, "cap: the newest idle connection is kept")
    for c in conns:
        c["conn"].close()

    # At the cap, a connection still on its first request head gives way to
    # a new one (a client too slow to finish its first head cannot hold a
    # slot), the oldest first. Connections that finished a request and are
    # in the middle of the next are not evicted: a new connection waits until
    # one ends (their 408s at the header timeout), then is served.
    first = b"GET / HTTP/1.1\r\nHost: t\r\n"  # begun, never finished

    def mid_first(conn):
        conn.send(first)

    def mid_second(conn):
        conn.send(request(key=fresh_key("cap-busy")))
        conn.read_response(now() + h)
        conn.send(first)

    time.sleep(0.5)  # let the server see the closes before (no deadline depends on it)
    cap_slow_first(cfg, rep, f"{cap} connections in the middle of their first request", mid_first)
    time.sleep(0.5)
    cap_busy(cfg, rep, f"{cap} connections in mid-request after a first request", mid_second)


def cap_slow_first(cfg, rep, what, prepare):
    """cfg.cap connections made slow by prepare(conn), then a new one: served
    at once, the oldest slow one closed (without a 408) to make room."""
    h = cfg.header_timeout
    slow = []
    try:
        for _ in range(cfg.cap):
            conn = Conn.open(cfg)
            slow.append(conn)
            prepare(conn)
    except (OSError, Closed, Timeout, ValueError) as e:
        rep.fail(f"cap: {what}: could not set them up: {type(e).__name__}: {e}")
        for c in slow:
            c.close()
        return
    time.sleep(0.2)  # the server has read their bytes: they are slow, not silent
    try:
        resp, took, conn = exchange(cfg, request(key=fresh_key("cap-slow")), timeout=h + cfg.margin)
        conn.close()
        status = resp.status
    except (OSError, Closed, Timeout, ValueError) as e:
        status, took = f"{type(e).__name__}: {e}", h + cfg.margin
    rep.check(status == 200 and took < cfg.probe_within,
              f"cap: with {what}, a new one is served at once (within {cfg.probe_within:g} s)",
              f"got {status} after {took:.2f} s")
    closed = slow[0].wait_closed(now() + 1.0)
    rep.check(closed is not None, f"cap: with {what}, the oldest of them made room (closed)")
    for c in slow:
        c.close()


def cap_busy(cfg, rep, what, prepare):
    """cfg.cap connections made busy by prepare(conn), then a new one: served
    only once they time out, and none of them evicted (closed without 408)."""
    h = cfg.header_timeout
    busy = []
    t_before = now()
    try:
        for _ in range(cfg.cap):
            conn = Conn.open(cfg)
            busy.append(conn)
            prepare(conn)
    except (OSError, Closed, Timeout, ValueError) as e:
        rep.fail(f"cap: {what}: could not set them up: {type(e).__name__}: {e}")
        for b in busy:
            b.close()
        return
    t0 = now()
    if t0 - t_before > h / 2:  # the first of them could time out before the cap is full
        rep.fail(f"cap: {what}: setting them up took {t0 - t_before:.2f} s (want < {h / 2:g} s)")
        for b in busy:
            b.close()
        return
    try:
        resp, _, conn = exchange(cfg, request(key=fresh_key("cap-wait")), timeout=h + cfg.margin)
        conn.close()
        status = resp.status
    except (OSError, Closed, Timeout, ValueError) as e:
        status = f"{type(e).__name__}: {e}"
    took = now() - t0
    evicted = []  # closed without their 408
    for i, b in enumerate(busy):
        try:
            b.read_response(now() + 0.1)
        except Closed:
            evicted.append(i)
        except (Timeout, ValueError):
            pass
        b.close()
    rep.check(status == 200 and in_window(cfg, h, t0 + took, t_before, t0),
              f"cap: with {what}, a new one is served once they time out "
              f"({took:.2f} s, within {window_text(cfg, h)})", f"got {status} after {took:.2f} s")
    rep.check(not evicted, f"cap: none of the {what} is evicted (closed without its 408)",
              f"evicted {evicted}")


# ---- case: IPv6 --------------------------------------------------------------------------------------


def case_ipv6(cfg, rep):
    """For --host ::1: served, and keyed by the client IP (ip:::1) when no
    X-API-Key is sent: two connections share one quota, apart from keys."""
    if ":" not in cfg.host:
        rep.fail("ipv6: --host must be an IPv6 address (::1)")
        return
    resp, _, c = exchange(cfg, request(key=fresh_key("v6")))
    c.close()
    rep.check(resp.status == 200, f"ipv6: GET / over [{cfg.host}] is 200", repr(resp))
    limit = resp.int_header("X-RateLimit-Limit") or 0
    r1, _, c = exchange(cfg, request())
    c.close()
    r2, _, c = exchange(cfg, request())
    c.close()
    rep.check(r1.remaining is not None and r2.remaining == max(r1.remaining - 1, 0),
              f"ipv6: no X-API-Key: two connections from {cfg.host} share one quota (keyed by the IP)",
              f"remaining {r1.remaining} then {r2.remaining}")
    r3, _, c = exchange(cfg, request(key=f"ip:{cfg.host}"))
    c.close()
    rep.check(r3.remaining == limit - 1, f"ipv6: X-API-Key 'ip:{cfg.host}' is another key than the IP's",
              repr(r3))


# ---- mode: hold ---------------------------------------------------------------------------------------


def case_hold(cfg, rep):
    """Holds --hold silent, --hold slowloris, --hold idle keep-alive and
    --hold unread (pipelined GET /metrics, responses never read: the server
    has output it cannot write) connections, reopening those the server
    closes so that they are there whatever the timeouts, until SIGTERM/SIGINT
    or --hold-seconds. Prints "holding N connections" once all are open.
    Asserts nothing."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    unread = request("/metrics") * 5000

    def open_one(kind):
        conn = Conn.open(cfg, rcvbuf=4096 if kind == "unread" else None)
        if kind == "keepalive":  # its response is read (and dropped) below: then it idles
            conn.send(request(key=fresh_key("hold")))
        elif kind == "unread":
            try:
                conn.send(unread, now() + 0.5)
            except Timeout:
                pass  # the server stopped reading: what we want
        return {"kind": kind, "conn": conn, "pos": 0}

    kinds = ["silent", "slowloris", "keepalive", "unread"]
    held = [open_one(kind) for kind in kinds for _ in range(cfg.hold)]  # connect()s: the kernel accepts them
    print(f"holding {len(held)} connections ({cfg.hold} silent, {cfg.hold} slowloris, "
          f"{cfg.hold} idle keep-alive, {cfg.hold} not reading)", flush=True)
    head = request(key="hold", extra=["X-Padding: " + "a" * 4000])
    end = now() + cfg.hold_seconds
    while not stop.is_set() and now() < end:
        for i, h in enumerate(held):
            if h["kind"] == "dead":
                continue
            s = h["conn"].sock
            try:
                if h["kind"] == "slowloris":
                    s.send(head[h["pos"]:h["pos"] + 1])
                    h["pos"] = (h["pos"] + 1) % len(head)
                if h["kind"] != "unread" and s.recv(4096) == b"":
                    raise ConnectionResetError
                if h["kind"] == "unread" and tcp_state(s) not in (None, TCP_STATE_ESTABLISHED):
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                try:
                    held[i] = open_one(h["kind"])
                except (OSError, Closed, Timeout, ValueError):
                    held[i] = {**h, "kind": "dead"}  # the server is gone
        stop.wait(0.5)
    for h in held:
        h["conn"].close()


# ---- main ---------------------------------------------------------------------------------------------------

CASES = {
    "parsing": case_parsing,
    "http": case_http,
    "keepalive": case_keepalive,
    "slowloris": case_slowloris,
    "idle": case_idle,
    "drip-after": case_drip_after,
    "unread": case_unread,
    "cap": case_cap,
    "ipv6": case_ipv6,
    "hold": case_hold,
}
SUITE = ["parsing", "http", "keepalive", "slowloris", "idle", "drip-after", "unread"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (head -60 scripts/hostile_clients.py).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--case", choices=sorted(CASES))
    what.add_argument("--suite", action="store_true", help="run: " + ", ".join(SUITE))
    p.add_argument("--header-timeout", type=int, default=5, help="the server's (default 5)")
    p.add_argument("--keepalive-timeout", type=int, default=15, help="the server's (default 15)")
    p.add_argument("--margin", type=float, default=3.0,
                   help="seconds an expected close may come after its time (default 3)")
    p.add_argument("--early", type=float, default=0.5,
                   help="seconds an expected close may come before its time (default 0.5)")
    p.add_argument("--at-once", type=float, default=0.5,
                   help="an error answered 'at once' takes less than this (default 0.5 s)")
    p.add_argument("--probe-within", type=float, default=1.0, help="probes must be answered within (1 s)")
    p.add_argument("--conns", type=int, default=8, help="slowloris/drip-after connections (8)")
    p.add_argument("--idle", type=int, default=500, help="idle flood connections (500)")
    p.add_argument("--evictions", action="store_true",
                   help="idle: the server has room for fewer connections, so early closes are evictions")
    p.add_argument("--unread", type=int, default=20000, help="requests pipelined by the unread case (20000)")
    p.add_argument("--cap", type=int, default=20, help="the server's --max-connections for the cap case (20)")
    p.add_argument("--hold", type=int, default=10, help="connections of each kind the hold mode keeps (10)")
    p.add_argument("--hold-seconds", type=float, default=60, help="the hold mode's longest run (60 s)")
    p.add_argument("--time-limit", type=float, default=300, help="the whole run's limit (300 s)")
    cfg = p.parse_args()
    if cfg.header_timeout < 1 or cfg.keepalive_timeout < 1:
        p.error("the timeouts are whole seconds >= 1")
    cfg.probe_timeout = cfg.header_timeout + cfg.margin + 2  # a hung probe fails, it does not hang us
    cfg.probe_interval = 0.2
    cfg.min_probes = 3

    rep = Report()
    signal.signal(signal.SIGALRM, lambda *_: (rep.fail(f"the run took over --time-limit {cfg.time_limit:g} s"),
                                               os._exit(1)))
    signal.setitimer(signal.ITIMER_REAL, cfg.time_limit)
    nofile = raise_nofile_limit()
    if nofile < cfg.idle + 4 * cfg.cap + 100:
        rep.note(f"RLIMIT_NOFILE is {nofile}: lowering --idle to fit")
        cfg.idle = max(10, nofile - 4 * cfg.cap - 100)

    for name in (SUITE if cfg.suite else [cfg.case]):
        if name != "hold":
            print(f"== {name}", flush=True)
        t0 = now()
        try:
            CASES[name](cfg, rep)
        except (OSError, Closed, Timeout, ValueError) as e:
            rep.fail(f"{name}: stopped by {type(e).__name__}: {e}")
        if name != "hold":
            print(f"== {name}: {now() - t0:.1f} s", flush=True)
    if not (cfg.case == "hold"):
        print(f"{rep.passes} ok, {rep.failures} failed", flush=True)
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
