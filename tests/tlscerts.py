"""Test certificates made with the openssl command: a CA, server certificates it signed (for
localhost and 127.0.0.1), and a client certificate for mutual TLS."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from system_programs import require_program


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA and the pairs it signed."""

    ca: Pair
    directory: Path

    def issue(self, name: str, common_name: str, server: bool = True) -> Pair:
        """A key and a certificate signed by this CA."""
        key, request, cert = (self.directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem"))
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request, "-subj",
                 f"/O=forkserve tests/CN={common_name}")
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" if server
            else "extendedKeyUsage=clientAuth\n"
        )
        _openssl("x509", "-req", "-in", request, "-CA", self.ca.cert, "-CAkey", self.ca.key, "-CAcreateserial",
                 "-out", cert, "-days", "2", "-extfile", extensions)
        return Pair(cert, key)


def make_authority(directory: Path) -> Authority:
    key, cert = directory / "ca.key", directory / "ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
             "-subj", "/O=forkserve tests/CN=forkserve test CA")
    return Authority(Pair(cert, key), directory)


def _openssl(*args: object) -> None:
    """Run the openssl command (the test is skipped, or fails under CI, where it is missing)."""
    openssl = require_program("openssl", "to make the TLS tests' certificates")
    subprocess.run([openssl, *map(str, args)], check=True, capture_output=True, timeout=60)
