"""Plain TCP client for zkconn's tests: opens connections from threads, optionally from a
given cgroup, holds them and closes some on request. Prints 'ready' / 'closed'."""
import argparse, os, resource, socket, sys, threading, time

p = argparse.ArgumentParser()
p.add_argument("host"); p.add_argument("port", type=int)
p.add_argument("--count", type=int, default=1, help="connections per thread")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--cgroup", action="append", default=[],
               help="cgroup directory (v1 or v2) to join before connecting; repeatable")
p.add_argument("--exit-after", type=float, help="exit this many seconds after connecting")
p.add_argument("--tag", help="ignored: marks the command line")
p.add_argument("--interval", type=float, default=0.0, help="seconds between connects")
p.add_argument("--say", help="send this (a four-letter word) on each connection and read to EOF")
p.add_argument("--expect-refused", action="store_true")
p.add_argument("--bind", help="source address of every connection (another client host)")
a = p.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
for cg in a.cgroup:
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))

family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
socks, lock, errors = [], threading.Lock(), []
start = threading.Barrier(a.threads)

def worker():
    start.wait()
    for _ in range(a.count):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            if a.bind:
                s.bind((a.bind, 0))
            s.connect((a.host, a.port))
        except OSError as e:
            errors.append(e); s.close(); continue
        if a.say:
            s.sendall(a.say.encode())
            while s.recv(65536):
                pass
        with lock:
            socks.append(s)
        if a.interval:
            time.sleep(a.interval)

threads = [threading.Thread(target=worker) for _ in range(a.threads)]
for t in threads: t.start()
for t in threads: t.join()
if errors and not a.expect_refused:
    print("error %s" % errors[0], flush=True); sys.exit(1)
print("ready %d" % len(socks), flush=True)
if a.exit_after is not None:
    time.sleep(a.exit_after)
    os._exit(0)  # leave the sockets to the kernel, as a crashing process does
for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] == "close":
        for _ in range(int(cmd[1])):
            socks.pop().close()
        print("closed", flush=True)
