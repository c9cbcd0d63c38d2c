"""TcpProxy: a TCP fault-injection proxy on a loopback port (standard library only).

Owns every network fault that needs no root tools: delay, blackhole (a
partition or a hung server), refused and reset connections, redirection.  One
daemon thread runs a selector loop that owns every socket, so faults are
applied atomically with respect to forwarding::

    proxy = TcpProxy("127.0.0.1", node.port).start()
    dsn = f"host=127.0.0.1 port={proxy.port} ..."
    proxy.set_delay(0.2)        # every server->client chunk arrives 200 ms later
    proxy.set_connect_delay(1)  # new connections reach the server 1 s late
    proxy.blackhole(True)       # accept, but forward nothing either way (partition / hang)
    proxy.reject(True)          # new connections are reset at once
    proxy.reset_all()           # RST every current connection (SO_LINGER 0)
    proxy.half_open()           # current connections: the server side closes, the client hears nothing
    proxy.set_drip(1, 0.05)     # server->client: 1 byte every 50 ms (a slow drip)
    proxy.redirect(host, port)  # new connections go elsewhere
    proxy.close()

Blackhole also freezes established connections: data is held (not dropped)
and delivered if blackhole is switched off again, like a healed partition.
Connections accepted during a blackhole connect upstream once it is lifted.
A half-open connection is one whose peer went away without a word (a server
machine lost): the server's side is closed (its session ends), the client's
stays open and is never read from or written to again, until close().
"""

from __future__ import annotations

import collections
import errno
import selectors
import socket
import struct
import threading
import time

__all__ = ["TcpProxy"]

_CHUNK = 65536
_HIGH_WATER = 1 << 20   # stop reading a side when this much is queued towards the other side


def _abort(sock):
    """Close with SO_LINGER 0: the peer gets an RST."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Conn:
    __slots__ = ("client", "upstream", "state", "accepted_at", "target", "c2s", "s2c",
                 "s2c_bytes", "client_eof", "upstream_eof", "id", "next_drip")

    def __init__(self, client, target, cid):
        self.id = cid
        self.client = client
        self.upstream = None
        self.state = "held"          # held -> connecting -> open -> closed
        self.accepted_at = time.monotonic()
        self.target = target
        self.c2s = bytearray()
        self.s2c = collections.deque()   # [deliver_at, bytes]
        self.s2c_bytes = 0
        self.client_eof = False
        self.upstream_eof = False
        self.next_drip = 0.0         # slow drip: when the next bytes may go to the client


class TcpProxy:
    """A proxy from 127.0.0.1:`port` (0: any free one) to target_host:target_port."""

    def __init__(self, target_host, target_port, listen_host="127.0.0.1", port=0):
        self.target = (target_host, int(target_port))
        self.listen_host = listen_host
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((listen_host, port))
        self._lsock.listen(256)
        self._lsock.setblocking(False)
        self.port = self._lsock.getsockname()[1]
        self.host = listen_host
        self._delay = 0.0
        self._connect_delay = 0.0
        self._blackhole = False
        self._reject = False
        self._drip = None             # (bytes, interval): server->client trickle
        self._conns = []
        self._next_id = 0
        self._cmds = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._regs = {}               # sock -> events currently registered
        self._thread = None
        self._stopping = False
        self._closed = False
        self.accepted = 0             # connections accepted so far (including rejected)
        self.rejected = 0
        self.client_bytes = 0         # bytes received from clients so far (all connections)
        self.error = None             # exception that killed the loop, if any

    # ---- public knobs ------------------------------------------------------
    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="TcpProxy:%d" % self.port,
                                            daemon=True)
            self._thread.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<TcpProxy 127.0.0.1:%d -> %s:%d>" % (self.port, self.target[0], self.target[1])

    def dsn_hostport(self):
        return self.host, self.port

    def set_delay(self, seconds):
        """Delay every chunk forwarded server->client by `seconds` (latency, not bandwidth)."""
        self._delay = max(0.0, float(seconds))
        self._wake()

    def set_connect_delay(self, seconds):
        """Delay opening the upstream connection of each new client by `seconds`."""
        self._connect_delay = max(0.0, float(seconds))
        self._wake()

    def blackhole(self, on=True):
        """Accept connections but forward nothing in either direction (held, not dropped)."""
        self._blackhole = bool(on)
        self._wake()

    def reject(self, on=True):
        """New connections are accepted and immediately reset."""
        self._reject = bool(on)
        self._wake()

    def redirect(self, host, port):
        """New connections go to host:port (current ones are untouched)."""
        self.target = (host, int(port))
        self._wake()

    def reset_all(self, timeout=5):
        """RST every current connection (both the client and the upstream side)."""
        self._call("reset", timeout)

    def half_open(self, timeout=5):
        """Every current connection goes half-open: its upstream side is closed (the server's
        session ends), its client side stays open and silent (nothing read, nothing sent)."""
        self._call("half_open", timeout)

    def set_drip(self, nbytes, interval):
        """Trickle server->client data: at most `nbytes` per connection every `interval`
        seconds (a slow or lossy link).  set_drip(0, 0) or clear() ends it."""
        self._drip = (int(nbytes), float(interval)) if nbytes > 0 else None
        self._wake()

    def clear(self):
        """Back to a transparent proxy (no delay, blackhole, reject)."""
        self._delay = 0.0
        self._connect_delay = 0.0
        self._blackhole = False
        self._reject = False
        self._drip = None
        self._wake()

    @property
    def active_connections(self):
        return sum(1 for c in list(self._conns) if c.state != "closed")

    def close(self, timeout=5):
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._cleanup()

    # ---- internals -------------------------------------------------------------
    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _call(self, cmd, timeout):
        if self._thread is None or not self._thread.is_alive():
            self._do(cmd)
            return
        ev = threading.Event()
        self._cmds.append((cmd, ev))
        self._wake()
        if not ev.wait(timeout):
            raise TimeoutError("TcpProxy %s did not complete" % cmd)

    def _do(self, cmd):
        if cmd == "reset":
            for c in list(self._conns):
                self._close_conn(c, abort=True)
        elif cmd == "half_open":
            for c in list(self._conns):
                if c.state == "closed":
                    continue
                if c.upstream is not None:
                    self._unreg(c.upstream)
                    try:
                        c.upstream.close()
                    except OSError:
                        pass
                    c.upstream = None
                self._unreg(c.client)
                c.state = "silent"

    def _cleanup(self):
        for c in list(self._conns):
            self._close_conn(c, abort=False)
        for s in (self._lsock, self._wake_r, self._wake_w):
            try:
                self._unreg(s)
            except Exception:
                pass
            try:
                s.close()
            except OSError:
                pass
        try:
            self._sel.close()
        except Exception:
            pass

    def _set_events(self, sock, events, data):
        cur = self._regs.get(sock)
        if events == 0:
            if cur is not None:
                self._unreg(sock)
            return
        if cur is None:
            self._sel.register(sock, events, data)
        elif cur != events:
            self._sel.modify(sock, events, data)
        self._regs[sock] = events

    def _unreg(self, sock):
        if sock in self._regs:
            del self._regs[sock]
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass

    def _close_conn(self, c, abort):
        if c.state == "closed":
            return
        c.state = "closed"
        for s in (c.client, c.upstream):
            if s is None:
                continue
            self._unreg(s)
            if abort:
                _abort(s)
            else:
                try:
                    s.close()
                except OSError:
                    pass
        try:
            self._conns.remove(c)
        except ValueError:
            pass

    def _accept(self):
        while True:
            try:
                s, _ = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.accepted += 1
            if self._reject:
                self.rejected += 1
                _abort(s)
                continue
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_id += 1
            self._conns.append(_Conn(s, self.target, self._next_id))

    def _start_upstream(self, c):
        try:
            u = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            u.setblocking(False)
            u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self._close_conn(c, abort=True)
            return
        c.upstream = u
        err = u.connect_ex(c.target)
        if err in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            c.state = "connecting" if err else "open"
        else:
            self._close_conn(c, abort=True)   # client sees a reset, like a refused connect

    def _finish_connect(self, c):
        err = c.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._close_conn(c, abort=True)
        else:
            c.state = "open"

    def _read(self, c, side):
        sock = c.client if side == "client" else c.upstream
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(c, abort=True)   # propagate the reset to the other side
            return
        if side == "client":
            if not data:
                c.client_eof = True
            else:
                c.c2s += data
                self.client_bytes += len(data)
        else:
            if not data:
                c.upstream_eof = True
            else:
                c.s2c.append([time.monotonic() + self._delay, data])
                c.s2c_bytes += len(data)

    def _flush(self, c, now):
        """Send what may be sent; returns (client_wants_write, upstream_wants_write)."""
        cw = uw = False
        if self._blackhole or c.state == "closed":
            return cw, uw
        if c.state == "open" and c.c2s:
            try:
                n = c.upstream.send(c.c2s)
                del c.c2s[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close_conn(c, abort=True)
                return cw, uw
            uw = bool(c.c2s)
        drip = self._drip
        if drip is not None and c.s2c and c.s2c[0][0] <= now and now >= c.next_drip:
            # one trickle: a few bytes, then nothing until the next interval
            item = c.s2c[0]
            try:
                n = c.client.send(item[1][:drip[0]])
            except (BlockingIOError, InterruptedError):
                return True, uw
            except OSError:
                self._close_conn(c, abort=True)
                return False, False
            c.next_drip = now + drip[1]
            c.s2c_bytes -= n
            if n < len(item[1]):
                item[1] = item[1][n:]
            else:
                c.s2c.popleft()
            return cw, uw
        while drip is None and c.s2c and c.s2c[0][0] <= now:
            item = c.s2c[0]
            try:
                n = c.client.send(item[1])
            except (BlockingIOError, InterruptedError):
                cw = True
                break
            except OSError:
                self._close_conn(c, abort=True)
                return False, False
            c.s2c_bytes -= n
            if n < len(item[1]):
                item[1] = item[1][n:]
                cw = True
                break
            c.s2c.popleft()
        return cw, uw

    def _run(self):
        try:
            self._set_events(self._lsock, selectors.EVENT_READ, ("listen", None))
            self._set_events(self._wake_r, selectors.EVENT_READ, ("wake", None))
            while not self._stopping:
                self._iteration()
        except Exception as e:  # pragma: no cover - visible through .error
            self.error = e
        finally:
            self._cleanup()
            while self._cmds:
                _, ev = self._cmds.popleft()
                ev.set()

    def _iteration(self):
        now = time.monotonic()
        timeout = 0.5
        for c in list(self._conns):
            if c.state == "silent":
                continue               # half-open: nothing is read or sent, ever
            if c.state == "held":
                if c.client_eof:
                    self._close_conn(c, abort=False)
                    continue
                if self._blackhole:
                    continue
                due = c.accepted_at + self._connect_delay
                if due > now:
                    timeout = min(timeout, due - now)
                    continue
                self._start_upstream(c)
                if c.state == "closed":
                    continue
            cw, uw = self._flush(c, now)
            if c.state == "closed":
                continue
            # finished?
            if (c.client_eof and not c.c2s and c.state == "open") or \
                    (c.upstream_eof and not c.s2c):
                self._close_conn(c, abort=False)
                continue
            if c.s2c and not self._blackhole and not cw:
                due = c.s2c[0][0]
                if self._drip is not None:
                    due = max(due, c.next_drip)
                timeout = min(timeout, max(0.0, due - now))
            # interests
            cev = 0
            if not c.client_eof and len(c.c2s) < _HIGH_WATER:
                cev |= selectors.EVENT_READ
            if cw:
                cev |= selectors.EVENT_WRITE
            self._set_events(c.client, cev, (c, "client"))
            if c.upstream is not None:
                uev = 0
                if c.state == "connecting":
                    uev |= selectors.EVENT_WRITE
                elif c.state == "open":
                    if not c.upstream_eof and c.s2c_bytes < _HIGH_WATER:
                        uev |= selectors.EVENT_READ
                    if uw:
                        uev |= selectors.EVENT_WRITE
                self._set_events(c.upstream, uev, (c, "upstream"))

        events = self._sel.select(timeout)
        for key, mask in events:
            kind, side = key.data
            if kind == "listen":
                self._accept()
            elif kind == "wake":
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass
                while self._cmds:
                    cmd, ev = self._cmds.popleft()
                    try:
                        self._do(cmd)
                    finally:
                        ev.set()
            else:
                c = kind
                if c.state == "closed":
                    continue
                if side == "upstream" and c.state == "connecting":
                    if mask & selectors.EVENT_WRITE:
                        self._finish_connect(c)
                    continue
                if mask & selectors.EVENT_READ:
                    self._read(c, side)
