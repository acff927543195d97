"""A process that connects to a server and hands its connections to another process, then
exits: `fork` leaves them to a forked child (as a daemonising program does), `unix` sends
them over a Unix socket (SCM_RIGHTS) to a process that never connected itself. The holder
prints 'ready <its pid>' once the connector is gone, then closes some on 'close N' (answers
'closed') and exits when its stdin ends."""
import argparse, os, socket, sys, time

p = argparse.ArgumentParser()
p.add_argument("host"); p.add_argument("port", type=int)
p.add_argument("--count", type=int, default=1)
p.add_argument("--mode", choices=["fork", "unix"], required=True)
a = p.parse_args()
family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
connector = os.getpid()

def connect():
    out = []
    for _ in range(a.count):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.connect((a.host, a.port))
        out.append(s)
    return out

def hold(socks):
    # The connector exits right after the hand-over; say ready once it is gone.
    while os.getppid() == connector:
        time.sleep(0.01)
    print("ready %d" % os.getpid(), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "close":
            for _ in range(int(cmd[1])):
                socks.pop().close()
            print("closed", flush=True)
    os._exit(0)

if a.mode == "fork":
    socks = connect()
    if os.fork() == 0:
        hold(socks)
    os._exit(0)

# unix: the receiver is forked before any connect, so it holds only what it is sent.
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
if os.fork() == 0:
    ours.close()
    _, fds, _, _ = socket.recv_fds(theirs, 16, a.count)
    hold([socket.socket(fileno=fd) for fd in fds])
theirs.close()
socks = connect()
socket.send_fds(ours, [b"x"], [s.fileno() for s in socks])
for s in socks:
    s.close()
os._exit(0)
