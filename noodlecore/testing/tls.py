"""Test certificates made with the openssl command: TestCA.

Owns a throwaway certificate authority in a directory of its own and the
server certificates it signs, valid or expired, for ``PgNode.enable_tls``::

    ca = TestCA(workdir)                                   # key + self-signed cert
    cert, key = ca.server_cert("pg")                       # SAN 127.0.0.1 and localhost
    old_cert, old_key = ca.server_cert("old", expired=True)   # valid in 2020 only
    node.enable_tls(cert, key)
    dsn = node.dsn(sslmode="verify-full", sslrootcert=ca.cert)

Certificates are issued with ``openssl ca`` so that their validity dates can
be set outright (``-startdate``/``-enddate``: an expired one without faking
the clock).  EC P-256 keys: made in milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from .processes import PgHarnessError

__all__ = ["TestCA"]

_CA_CONF = """\
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = policy_any
copy_extensions = copy
unique_subject = no
[ policy_any ]
commonName = supplied
[ server_ext ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
"""


def _openssl(*args, cwd=None):
    exe = shutil.which("openssl")
    if exe is None:
        raise PgHarnessError("the openssl command is needed for test certificates")
    r = subprocess.run([exe, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise PgHarnessError("openssl %s failed: %s" % (args[0], r.stderr.decode(errors="replace").strip()))
    return r.stdout


class TestCA:
    """A certificate authority in `directory` (made if missing): `cert` and `key` paths."""

    __test__ = False   # not a pytest test class

    def __init__(self, directory, name="noodlecore test CA"):
        self.dir = os.path.abspath(directory)
        os.makedirs(os.path.join(self.dir, "issued"), exist_ok=True)
        self.cert = os.path.join(self.dir, "ca.crt")
        self.key = os.path.join(self.dir, "ca.key")
        self.conf = os.path.join(self.dir, "ca.cnf")
        with open(self.conf, "w") as f:
            f.write(_CA_CONF.format(dir=self.dir))
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("1000\n")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.key, "-out", self.cert, "-days", "3650", "-subj", "/CN=" + name,
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def server_cert(self, name, hosts=("127.0.0.1", "localhost"), expired=False):
        """A certificate for a server reached as any of `hosts`, signed by this CA: (cert, key) paths.
        expired=True: valid from 2020-01-01 to 2020-01-02 only."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".crt")
        san = ",".join(("IP:" if h.replace(".", "").isdigit() else "DNS:") + h for h in hosts)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=" + hosts[0], "-addext", "subjectAltName=" + san)
        dates = (["-startdate", "20200101000000Z", "-enddate", "20200102000000Z"] if expired
                 else ["-days", "3650"])
        _openssl("ca", "-batch", "-config", self.conf, "-extensions", "server_ext", "-notext",
                 "-cert", self.cert, "-keyfile", self.key, "-in", csr, "-out", cert, *dates)
        return cert, key
