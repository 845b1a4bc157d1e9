#!/usr/bin/env python3
"""Idle memory per connection as a user sees it, measured with an independent client.

Opens N WebSocket connections spread round-robin over the given edges, each for its own
user, keeps them open and idle, and reads the edges' resident memory (VmRSS from
/proc/PID/status) before the first connection and at fixed delays after the last one
completed. Prints the growth per connection in KB (sum over edges / N) at each delay,
and the kernel's Slab growth (/proc/meminfo) separately: socket buffers and other
kernel objects are not in any process's RSS but are part of what a connection costs the
machine (both ends of a loopback connection count there, so it is context only).

It is deliberately independent of the project's own load generator and test code: the
upgrade, the HS256 token and the frame handling are written here from the RFCs (6455,
7519), stdlib only, so a mistake shared by the edge and its own tools cannot hide here.

Connections authenticate with a token (`/ws?token=JWT`, HS256, claims `sub` and `exp`)
or, with --auth user, anonymously (`/ws?user=NAME`; the edge needs --allow-anonymous).
Each connection checks the 101 and the server's welcome frame, then a reader per
connection answers pings with pongs and notes closes, so holds longer than the ping
interval stay valid.

Usage (benches/idle_user.sh starts Redis and the edges and calls this):
  idle_user.py --edge 127.0.0.1:PORT:PID [--edge ...] --secret S [-n 10000]
               [--auth token|user] [--reads 1.5,5] [--sources 4] [--parallel 256]
               [--hold SECONDS]
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time

# Linux IP_BIND_ADDRESS_NO_PORT: bind a source address without reserving a port yet, so
# the port is picked at connect time per destination and the ephemeral range is shared.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(secret: bytes, user: str, ttl_s: int = 3600) -> str:
    """An HS256 compact JWS with the claims the edge requires (`sub`, `exp`)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"sub": user, "exp": int(time.time()) + ttl_s}
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (clients must mask, RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


async def read_frame(reader: asyncio.StreamReader):
    """Reads one server frame; returns (fin, opcode, payload). Server frames are unmasked."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    if b1 & 0x80:
        raise ValueError("server frame is masked")
    payload = await reader.readexactly(n) if n else b""
    return bool(b0 & 0x80), b0 & 0x0F, payload


def vm_rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def meminfo_kb(*keys: str) -> dict:
    """Selected /proc/meminfo fields in KiB."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, rest = line.split(":", 1)
            if name in keys:
                out[name] = int(rest.split()[0])
    return out


class Conn:
    """One held connection: its streams, and what the reader saw since the welcome."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.pings = 0
        self.closed = None  # close code / reason text once the server closed


class Client:
    """Opens, holds and watches the idle connections."""

    def __init__(self, args):
        self.args = args
        self.secret = args.secret.encode()
        self.conns = []
        self.readers = []
        self.sem = asyncio.Semaphore(args.parallel)

    def request_path(self, user: str) -> str:
        if self.args.auth == "token":
            return "/ws?token=" + make_jwt(self.secret, user)
        return "/ws?user=" + user

    async def open_one(self, i: int) -> Conn:
        host, port, _pid = self.args.edge[i % len(self.args.edge)]
        src = f"127.0.0.{1 + i % self.args.sources}"
        user = f"{self.args.user_prefix}{i}"
        async with self.sem:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
            key = base64.b64encode(os.urandom(16))
            request = (
                f"GET {self.request_path(user)} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            check_upgrade(head, key, i)
            conn = Conn(reader, writer)
            fin, op, payload = await read_frame(reader)
            if op != OP_TEXT or not fin or b'"welcome"' not in payload:
                raise RuntimeError(f"conn {i}: expected the welcome frame, got op {op}: {payload[:200]!r}")
            return conn

    async def hold(self, conn: Conn):
        """Answers pings, notes a close; ignores everything else."""
        try:
            while True:
                fin, op, payload = await read_frame(conn.reader)
                if op == OP_PING:
                    conn.pings += 1
                    conn.writer.write(client_frame(OP_PONG, payload))
                elif op == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    conn.closed = f"{code} {payload[2:].decode(errors='replace')}"
                    conn.writer.write(client_frame(OP_CLOSE, payload[:2]))
                    return
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            if conn.closed is None:
                conn.closed = f"eof ({type(e).__name__})"

    async def run(self):
        a = self.args
        pids = [pid for _h, _p, pid in a.edge]
        before = {pid: vm_rss_kb(pid) for pid in pids}
        before_extra = {pid: vm_rss_kb(pid) for pid in a.extra_pid}
        slab0 = meminfo_kb("Slab", "SUnreclaim")
        t0 = time.monotonic()
        opened = await asyncio.gather(*(self.open_one(i) for i in range(a.n)), return_exceptions=True)
        errors = [e for e in opened if isinstance(e, BaseException)]
        if errors:
            print(f"idle_user.py: {len(errors)} of {a.n} connections failed; first: {errors[0]!r}", file=sys.stderr)
            return 1
        self.conns = opened
        t_last = time.monotonic()
        self.readers = [asyncio.create_task(self.hold(c)) for c in self.conns]
        print(f"opened {a.n} connections ({a.auth}) over {len(a.edge)} edge(s) in {t_last - t0:.1f} s")
        print(f"{'after':>7} {'edge RSS growth':>16} {'per conn':>10}   per edge (KB)          "
              f"{'Slab growth':>12} {'per conn':>9}  --extra-pid RSS growth per conn (KB)")
        for delay in a.reads:
            await asyncio.sleep(max(0.0, t_last + delay - time.monotonic()))
            now = {pid: vm_rss_kb(pid) for pid in pids}
            slab = meminfo_kb("Slab", "SUnreclaim")
            extra = {pid: vm_rss_kb(pid) for pid in a.extra_pid}
            self.report(delay, before, now, slab0, slab, before_extra, extra)
        if a.hold > 0:
            # Kept open for outside tools (a heap profiler, ss, smem) to look at.
            await asyncio.sleep(a.hold)
        closed = [c.closed for c in self.conns if c.closed is not None]
        pings = sum(c.pings for c in self.conns)
        print(f"held: {a.n - len(closed)} open, {len(closed)} closed by the server, {pings} pings answered")
        if closed:
            print(f"  first close: {closed[0]}")
        for t in self.readers:
            t.cancel()
        for c in self.conns:
            c.writer.close()
        return 1 if closed else 0

    def report(self, delay, before, now, slab0, slab, before_extra, extra):
        n = self.args.n
        growth = sum(now[p] - before[p] for p in before)
        per_edge = " ".join(f"{before[p]}->{now[p]}" for p in before)
        d_slab = slab["Slab"] - slab0["Slab"]
        others = " ".join(f"{p}:{(extra[p] - before_extra[p]) / n:.2f}" for p in extra)
        print(f"{delay:>6.1f}s {growth:>13} KB {growth / n:>7.2f} KB   {per_edge:<22} "
              f"{d_slab:>9} KB {d_slab / n:>6.2f} KB  {others}")


def check_upgrade(head: bytes, key: bytes, i: int):
    """Checks the 101 status and Sec-WebSocket-Accept (RFC 6455 section 4.2.2)."""
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise RuntimeError(f"conn {i}: upgrade refused: {lines[0]!r}")
    expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != expected:
        raise RuntimeError(f"conn {i}: bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")


def parse_edge(text: str):
    host, port, pid = text.rsplit(":", 2)
    return host, int(port), int(pid)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edge", action="append", type=parse_edge, required=True,
                   help="HOST:PORT:PID of an edge (repeat); PID is the process whose VmRSS is read")
    p.add_argument("-n", type=int, default=10000, help="connections (default 10000)")
    p.add_argument("--auth", choices=("token", "user"), default="token")
    p.add_argument("--secret", default="", help="HS256 secret (for --auth token)")
    p.add_argument("--reads", type=lambda s: [float(x) for x in s.split(",")], default=[1.5, 5.0],
                   help="seconds after the last connect at which to read (default 1.5,5)")
    p.add_argument("--sources", type=int, default=4, help="source addresses 127.0.0.1..N (default 4)")
    p.add_argument("--parallel", type=int, default=256, help="handshakes in flight (default 256)")
    p.add_argument("--hold", type=float, default=0.0,
                   help="seconds to keep the connections open after the last read (default 0)")
    p.add_argument("--user-prefix", default="iu", help="user ids are PREFIX<i>")
    p.add_argument("--extra-pid", type=int, action="append", default=[],
                   help="another process (e.g. redis-server) whose RSS growth per connection is shown")
    args = p.parse_args()
    if args.auth == "token" and not args.secret:
        p.error("--auth token needs --secret")
    return asyncio.run(Client(args).run())


if __name__ == "__main__":
    sys.exit(main())
