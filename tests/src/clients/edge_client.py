"""Edge-case TCP peers for zkconn's exactness tests. Prints 'ready ...' when set up, then obeys
commands on stdin, answering each with one line.

  listen IP PORT            a listener with backlog 0 that never accepts: its first connect
                            is queued (ESTABLISHED), later ones stay in SYN_SENT
  pending IP PORT N         N non-blocking connects, left as they are
  hold IP PORT N            N connects that complete (ESTABLISHED)
  storm IP PORT SECONDS K P connects every P seconds for SECONDS, keeping at most K pending
                            (the oldest is closed first); 'ready' comes at once
  ask IP PORT WORD          connect, send WORD, read to EOF; prints 'got BYTES' or 'error E'
  lazy IP PORT SECONDS      a listener that accepts, and closes each connection SECONDS
                            later without sending a byte
  chatty IP PORT            a listener that accepts and sends each connection one line,
                            then keeps it open

Commands: 'reset' closes every socket with SO_LINGER 0 (a reset, or an abort of a connect);
'close' closes every socket normally; 'wait' (storm) waits for the storm to end and prints
'done N' with the number of connects made; 'count' prints how many sockets are held.
"""
import socket, struct, sys, threading, time

mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in ip else socket.AF_INET
socks = []
LINGER0 = struct.pack("ii", 1, 0)


def nonblocking_connect():
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect((ip, port))
    except (BlockingIOError, InterruptedError):
        pass
    return s


def close_all(linger0):
    while socks:
        s = socks.pop()
        if linger0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        s.close()


storm_done = threading.Event()
storm_made = [0]

if mode == "listen":
    l = socket.socket(family, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((ip, port))
    l.listen(0)
    socks.append(l)
    print("ready", flush=True)
elif mode == "lazy":
    l = socket.socket(family, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((ip, port))
    l.listen(16)
    socks.append(l)
    delay = float(sys.argv[4])

    def serve():
        while True:
            c, _ = l.accept()
            threading.Timer(delay, c.close).start()

    threading.Thread(target=serve, daemon=True).start()
    print("ready", flush=True)
elif mode == "chatty":
    l = socket.socket(family, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((ip, port))
    l.listen(16)
    socks.append(l)

    def serve():
        while True:
            c, _ = l.accept()
            c.sendall(b"hello\n")
            socks.append(c)

    threading.Thread(target=serve, daemon=True).start()
    print("ready", flush=True)
elif mode == "pending":
    for _ in range(int(sys.argv[4])):
        socks.append(nonblocking_connect())
    print("ready %d" % len(socks), flush=True)
elif mode == "hold":
    for _ in range(int(sys.argv[4])):
        s = socket.create_connection((ip, port), timeout=5)
        socks.append(s)
    print("ready %d" % len(socks), flush=True)
elif mode == "storm":
    seconds, keep, pause = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    lock = threading.Lock()

    def storm():
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s = nonblocking_connect()
            with lock:
                socks.append(s)
                storm_made[0] += 1
                if len(socks) > keep:
                    old = socks.pop(0)
                    old.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
                    old.close()
            if pause:
                time.sleep(pause)
        storm_done.set()

    threading.Thread(target=storm, daemon=True).start()
    print("ready", flush=True)
elif mode == "ask":
    got = 0
    try:
        s = socket.create_connection((ip, port), timeout=30)
        s.settimeout(30)
        # A refusal may reset the connection before the word is even sent.
        s.sendall(sys.argv[4].encode())
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
        print("got %d" % got, flush=True)
    except OSError as e:
        print("error %s (after %d bytes)" % (e.__class__.__name__, got), flush=True)
    sys.exit(0)
else:
    sys.exit("unknown mode " + mode)

for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "reset":
        close_all(True)
        print("closed", flush=True)
    elif cmd[0] == "close":
        close_all(False)
        print("closed", flush=True)
    elif cmd[0] == "wait":
        storm_done.wait()
        print("done %d" % storm_made[0], flush=True)
    elif cmd[0] == "count":
        print("count %d" % len(socks), flush=True)
