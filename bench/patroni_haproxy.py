"""bench/patroni.py's HAProxy: Debian's haproxy in front of a Patroni cluster the
way Patroni's own documentation deploys it (its haproxy.cfg template): one
listener whose health check is Patroni's ``/primary`` (writes), one on
``/replica`` (reads, round robin), both on 127.0.0.1 only.  The check timings
are the template's (inter 3s, fall 3, rise 2, on-marked-down
shutdown-sessions): that is what users run, and the bench measures it as is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import socket

CONFIG = """\
global
    maxconn 200

defaults
    mode tcp
    log global
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s

listen primary
    bind 127.0.0.1:{primary_port}
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter {inter} fall {fall} rise {rise} on-marked-down shutdown-sessions
{primary_servers}

listen replicas
    bind 127.0.0.1:{replica_port}
    balance roundrobin
    option httpchk OPTIONS /replica
    http-check expect status 200
    default-server inter {inter} fall {fall} rise {rise} on-marked-down shutdown-sessions
{replica_servers}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HAProxy:
    """haproxy -db (foreground) with the config above; stop() ends it."""

    def __init__(self, members, workdir, inter="3s", fall=3, rise=2):
        self.exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                              else None)
        if self.exe is None:
            raise RuntimeError("haproxy not found: apt-get install haproxy (with a policy-rc.d that exits "
                               "101, so that the package does not start its service)")
        self.primary_port = free_port()
        self.replica_port = free_port()
        servers = "\n".join("    server %s 127.0.0.1:%d maxconn 100 check port %d" % (m.name, m.port, m.api_port)
                            for m in members)
        self.config = os.path.join(workdir, "haproxy.cfg")
        self.log = os.path.join(workdir, "haproxy.log")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(primary_port=self.primary_port, replica_port=self.replica_port, inter=inter,
                                  fall=fall, rise=rise, primary_servers=servers, replica_servers=servers))
        self.proc = None

    def start(self, timeout=10):
        out = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen([self.exe, "-db", "-f", self.config], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                with open(self.log, errors="replace") as f:
                    raise RuntimeError("haproxy exited (rc=%s): %s" % (self.proc.returncode, f.read()[-2000:]))
            try:
                socket.create_connection(("127.0.0.1", self.primary_port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not listen on 127.0.0.1:%d within %ss" % (self.primary_port, timeout))

    def version(self):
        r = subprocess.run([self.exe, "-v"], capture_output=True, text=True)
        return (r.stdout.splitlines() or ["?"])[0]

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
