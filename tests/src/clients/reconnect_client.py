"""Holds N plain TCP connections and, like a ZooKeeper client library, reconnects each one
that the server closes, after a short random pause, until it is connected again. Prints
'ready N' once all are first connected; on 'count' prints how many are connected now."""
import argparse, random, selectors, socket, sys, time

p = argparse.ArgumentParser()
p.add_argument("host"); p.add_argument("port", type=int)
p.add_argument("--count", type=int, default=1)
a = p.parse_args()

import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

sel = selectors.DefaultSelector()
sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
pending = {}  # slot -> time to retry
live = {}     # slot -> socket

def connect(slot):
    s = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET)
    s.settimeout(2)
    try:
        s.connect((a.host, a.port))
    except OSError:
        s.close()
        pending[slot] = time.time() + random.uniform(0.2, 1.0)
        return
    s.setblocking(False)
    live[slot] = s
    sel.register(s, selectors.EVENT_READ, slot)

for slot in range(a.count):
    connect(slot)
    while slot in pending:
        time.sleep(0.05); pending.pop(slot); connect(slot)
print("ready %d" % len(live), flush=True)

while True:
    for key, _ in sel.select(timeout=0.1):
        if key.data == "stdin":
            line = sys.stdin.readline()
            if not line:
                sys.exit(0)
            if line.strip() == "count":
                print("count %d" % len(live), flush=True)
            continue
        slot = key.data
        s = live[slot]
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s); s.close(); del live[slot]
            pending[slot] = time.time() + random.uniform(0.2, 1.0)
    now = time.time()
    for slot, at in list(pending.items()):
        if at <= now:
            del pending[slot]
            connect(slot)
