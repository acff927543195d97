"""Connections whose network namespace only a thread shows, for zkconn's drift-repair tests.
Prints 'ready N' once connected, then holds the connections until killed.

  zombie HOST PORT N             N connections from a worker thread; then the main thread
                                 exits alone (SYS_exit), so /proc/PID/ns/net is gone while
                                 the process and its sockets live on
  setns NETNS HOST PORT N        a worker thread enters /run/netns/NETNS and connects N
                                 times there; the rest of the process stays where it is
"""
import ctypes, os, socket, sys, threading, time

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
SYS_exit = 60  # x86-64
held = []
ready = threading.Event()


def connect(host, port, n):
    for _ in range(n):
        held.append(socket.create_connection((host, port), timeout=10))
    print("ready %d" % len(held), flush=True)
    ready.set()


def hold():
    while True:
        time.sleep(1000)


mode = sys.argv[1]
if mode == "zombie":
    host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    threading.Thread(target=lambda: (connect(host, port, n), hold())).start()
    ready.wait()
    time.sleep(0.2)
    libc.syscall(SYS_exit, 0)  # only this thread
elif mode == "setns":
    netns, host, port, n = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

    def worker():
        fd = os.open("/run/netns/" + netns, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            print("error setns %d" % ctypes.get_errno(), flush=True)
            return
        connect(host, port, n)
        hold()

    threading.Thread(target=worker).start()
    hold()
else:
    sys.exit("unknown mode " + mode)
