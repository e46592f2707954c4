#!/usr/bin/env python3
"""slowloris.py — the idle and slow-header flood of phase 4 of scripts/loadtest.sh.

    python3 bench/loadtest/slowloris.py PORT IDLE DRIPPERS SECONDS

For SECONDS, against 127.0.0.1:PORT (loopback only, by construction), keeps
IDLE connections open that never send a byte, and DRIPPERS connections that
send a request head one byte every half second and never finish it. A
connection the server closes is opened again (the flood stays at its size),
so the load is bounded: at most IDLE + DRIPPERS connections at once, and new
ones only as fast as the server drops old ones. Then it closes everything
and prints one line:

    RESULT idle_opened=N idle_closed=N drippers_opened=N drippers_cut=N
           status_408=N other_status=N connect_errors=N max_open=N

(idle_closed, drippers_cut: connections the server closed; status_408 and
other_status: status lines the drippers received before the close.)
"""

import errno
import selectors
import socket
import sys
import time

HOST = "127.0.0.1"
DRIP = b"GET / HTTP/1.1\r\nHost: loadtest\r\nX-Slow: " + b"a" * 4096


def main():
    port, idle, drippers, seconds = (int(a) for a in sys.argv[1:5])
    sel = selectors.DefaultSelector()
    stats = dict(idle_opened=0, idle_closed=0, drippers_opened=0, drippers_cut=0,
                 status_408=0, other_status=0, connect_errors=0, max_open=0)
    conns = {}  # socket -> {"kind", "sent", "reply"}

    def open_one(kind):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((HOST, port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            stats["connect_errors"] += 1
            return False
        conns[s] = {"kind": kind, "sent": 0, "reply": b""}
        sel.register(s, selectors.EVENT_READ)
        stats[kind + "_opened"] += 1
        stats["max_open"] = max(stats["max_open"], len(conns))
        return True

    def close_one(s, by_server):
        c = conns.pop(s)
        sel.unregister(s)
        s.close()
        if by_server:
            if c["kind"] == "idle":
                stats["idle_closed"] += 1
            else:
                stats["drippers_cut"] += 1
                line = c["reply"].split(b"\r\n", 1)[0].split(b" ")
                if len(line) > 1 and line[1] == b"408":
                    stats["status_408"] += 1
                elif c["reply"]:
                    stats["other_status"] += 1

    want = {"idle": idle, "drippers": drippers}
    end = time.monotonic() + seconds
    next_drip = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        # top the flood up to its size (a refused connect waits a round)
        for kind in want:
            have = sum(1 for c in conns.values() if c["kind"] == kind)
            for _ in range(want[kind] - have):
                if not open_one(kind):
                    break
        if now >= next_drip:
            next_drip = now + 0.5
            for s, c in list(conns.items()):
                if c["kind"] == "drippers" and c["sent"] < len(DRIP):
                    try:
                        c["sent"] += s.send(DRIP[c["sent"]:c["sent"] + 1])
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        close_one(s, True)
        for key, _ in sel.select(timeout=min(0.1, max(0.0, end - now))):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                conns[s]["reply"] += data[:256]
            else:
                close_one(s, True)
    for s in list(conns):
        close_one(s, False)
    print("RESULT " + " ".join("%s=%d" % kv for kv in stats.items()), flush=True)


if __name__ == "__main__":
    main()
