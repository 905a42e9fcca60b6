"""nginx from Debian's packages as the TLS edge in front of a bundled service.

Real gRPC services sit behind nginx as often as they sit behind nothing, and nginx answers
some requests itself with an HTTP status, which gRPC clients see as INTERNAL, UNKNOWN or
UNAVAILABLE: a duplicate ``authorization`` header (400), a missing or bad client certificate
under ``ssl_verify_client on`` (400, logged as 496/495), an over-large body (413) and a rate
limit (429). ``spawn:reference+nginx-edge`` puts the ``nginx`` binary the project's setup
installs (``.ci/run``: ``apt-get install nginx``) in front of the reference, run as
the current user with a generated configuration in the target's work directory (no root, no
system configuration, ``nginx -p DIR -c nginx.conf -e ... -g 'daemon off; pid ...;'``):

- TLS terminated at nginx with the reference's server certificate, TLS 1.2 and 1.3 with the
  ECDHE AEAD suites, ``http2`` on (ALPN ``h2``), and ``ssl_verify_client on`` against the
  reference CA;
- ``grpc_pass grpcs://`` to the service on 127.0.0.1 (an ``upstream`` with ``keepalive``):
  re-encrypted, presenting the harness's client identity (``grpc_ssl_certificate``) so the
  service's own mTLS holds, and verifying the service's certificate against the same CA;
- ``client_max_body_size`` just above the service's receive limit (one gRPC frame of it and
  some room), so the service judges its own limit and nginx bounds what reaches it;
- header fields up to 16 KiB (``large_client_header_buffers``), for large JWTs, and the
  service's own HTTP/2 stream limit; no version in its ``server`` header; no end to a
  connection after 1000 requests (``keepalive_requests``: gRPC clients keep one
  connection, and nginx's GOAWAY after the thousandth fails the streams in flight of a
  client that does not retry, as the harness does not);
- ``limit_req`` per identity (the ``authorization`` header), looser than the service's own
  limit, answering 429 when it applies.

Nothing secret is written into the configuration: it names the key files, which stay 0600.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from targets.edge import STRICT_TLS12

#: The one-line reason given when nginx cannot be found.
MISSING = (
    "nginx is not installed: spawn:...+nginx-edge runs Debian's nginx "
    "(.ci/run installs it: apt-get install nginx)"
)
#: Where Debian installs the binary (not on a normal user's PATH).
_SBIN = Path("/usr/sbin/nginx")
_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_ATTEMPTS = 3  # a port picked free can be taken before nginx binds it


def binary() -> str | None:
    """The nginx executable: on PATH, else Debian's ``/usr/sbin/nginx``; ``None`` if neither."""
    found = shutil.which("nginx")
    if found is None and os.access(_SBIN, os.X_OK):
        found = str(_SBIN)
    return found


@dataclass(frozen=True)
class NginxSettings:
    """What the edge enforces: its body limit and its per-identity rate.

    Attributes:
        max_body_bytes: ``client_max_body_size``.
        rate_rps: ``limit_req_zone ... rate``, per ``authorization`` header value.
        burst: ``limit_req ... burst`` (``nodelay``): requests over the rate let through at once.
        status: The HTTP status of a request over the rate (``limit_req_status``).
        header_bytes: The largest header field (``large_client_header_buffers``): above
            nginx's 8 KiB default, as operators set it for large JWTs, and no more than
            gRPC core's hard metadata limit (16 KiB); nginx closes the connection of a
            larger one with GOAWAY ENHANCE_YOUR_CALM.
        streams: ``http2_max_concurrent_streams``: the service's own limit (nginx's
            default is 128).
        early_data: ``ssl_early_data on`` (a defect: TLS 1.3 0-RTT data accepted).
    """

    max_body_bytes: int
    rate_rps: int
    burst: int
    status: int = 429
    header_bytes: int = 16 * 1024
    streams: int = 100
    early_data: bool = False


@dataclass(frozen=True)
class EdgeFiles:
    """The PEM files nginx reads: its server chain, the client CA, the backend identity."""

    server_chain: Path
    server_key: Path
    ca: Path
    client_chain: Path
    client_key: Path
    backend_name: str = "localhost"


def config(settings: NginxSettings, files: EdgeFiles, port: int, backend: int) -> str:
    """The ``nginx.conf`` of an edge on 127.0.0.1:``port`` in front of ``backend``."""
    name = pwd.getpwuid(os.geteuid()).pw_name
    user = f"user {name};\n" if os.geteuid() == 0 else ""  # root: workers stay root
    temp = "\n".join(
        f"    {kind}_temp_path temp/{kind};" for kind in ("client_body", *_UNUSED_TEMP)
    )
    return f"""# Written by targets/nginx.py for spawn:...+nginx-edge.
{user}worker_processes 1;
events {{ worker_connections 512; }}
http {{
    access_log logs/access.log;
    server_tokens off;
    keepalive_requests 1000000;
{temp}
    limit_req_zone $http_authorization zone=per_identity:1m rate={settings.rate_rps}r/s;
    upstream service {{
        server 127.0.0.1:{backend};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {files.server_chain};
        ssl_certificate_key {files.server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {STRICT_TLS12};
        ssl_prefer_server_ciphers on;
        ssl_early_data {"on" if settings.early_data else "off"};
        ssl_client_certificate {files.ca};
        ssl_verify_client on;
        ssl_verify_depth 2;
        client_max_body_size {settings.max_body_bytes};
        large_client_header_buffers 4 {settings.header_bytes};
        http2_max_concurrent_streams {settings.streams};
        location / {{
            limit_req zone=per_identity burst={settings.burst} nodelay;
            limit_req_status {settings.status};
            grpc_pass grpcs://service;
            grpc_ssl_certificate {files.client_chain};
            grpc_ssl_certificate_key {files.client_key};
            grpc_ssl_trusted_certificate {files.ca};
            grpc_ssl_verify on;
            grpc_ssl_name {files.backend_name};
            grpc_ssl_server_name on;
            grpc_ssl_protocols TLSv1.2 TLSv1.3;
            grpc_read_timeout 120s;
            grpc_send_timeout 120s;
        }}
    }}
}}
"""


#: Temporary directories nginx creates at start-up whether or not it uses them (the
#: compiled-in ones are under /var/lib/nginx, which only root may write).
_UNUSED_TEMP = ("proxy", "fastcgi", "uwsgi", "scgi")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class NginxEdge:
    """nginx serving ``settings`` on an ephemeral 127.0.0.1 port in front of ``backend``.

    Raises:
        RuntimeError: nginx is not installed (:data:`MISSING`), or did not start (its error
            log's last line).
    """

    def __init__(
        self, workdir: Path, settings: NginxSettings, files: EdgeFiles, backend: int
    ) -> None:
        exe = binary()
        if exe is None:
            raise RuntimeError(MISSING)
        self._dir = workdir.resolve()
        for sub in ("logs", "temp"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        problem = ""
        for _ in range(_ATTEMPTS):
            self.port = _free_port("127.0.0.1")
            (self._dir / "nginx.conf").write_text(config(settings, files, self.port, backend))
            problem = self._start(exe)
            if not problem:
                return
        raise RuntimeError(f"nginx did not start: {problem}")

    def _start(self, exe: str) -> str:
        """Start nginx in the foreground; '' once it listens, else why it did not."""
        logs = self._dir / "logs"
        errors = str(logs / "error.log")
        directives = f"daemon off; pid {logs / 'nginx.pid'}; error_log {errors} info;"
        with (logs / "stderr.log").open("wb") as stderr:
            self._proc = subprocess.Popen(
                [exe, "-p", f"{self._dir}/", "-c", "nginx.conf", "-e", errors, "-g", directives],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )  # in the target's process group: the harness's signals to it reach nginx too
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (logs / "stderr.log").read_text(errors="replace")
                lines = [ln for ln in err.splitlines() if ln.strip()]
                return lines[-1] if lines else f"exit status {self._proc.returncode}"
            if _listening("127.0.0.1", self.port):
                return ""
            time.sleep(0.05)
        self.stop()
        return f"not listening on 127.0.0.1:{self.port} after {_READY_TIMEOUT_S:g} s"

    def stop(self) -> None:
        """Fast shutdown (SIGTERM to the master, which stops its worker); kill if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for pid in (*workers, proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(_STOP_TIMEOUT_S)


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its workers), as Linux lists them; [] elsewhere."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def in_front(
    workdir: Path,
    server: Path,
    backend: int,
    *,
    recv_bytes: int,
    rate_rps: float,
    streams: int,
    early_data: bool = False,
) -> NginxEdge:
    """The edge in front of a bundled reference's ``backend`` port, in ``workdir / "nginx"``.

    Its server certificate is the service's (``server.pem``, ``server-key.pem`` in
    ``server``); it presents the harness's client identity (``workdir``'s ``client.pem``) to
    the service and trusts ``workdir``'s ``ca.pem``; its body limit sits 1 MiB above the
    service's receive limit ``recv_bytes``, its rate (and burst) per identity at twice the
    service's ``rate_rps``, its HTTP/2 stream limit at the service's ``streams``: what
    reaches the service is judged by it.
    """
    files = EdgeFiles(
        server_chain=server / "server.pem",
        server_key=server / "server-key.pem",
        ca=workdir / "ca.pem",
        client_chain=workdir / "client.pem",
        client_key=workdir / "client-key.pem",
    )
    rate = int(2 * rate_rps)
    settings = NginxSettings(
        max_body_bytes=recv_bytes + 1024 * 1024,
        rate_rps=rate,
        burst=rate,
        streams=streams,
        early_data=early_data,
    )
    return NginxEdge(workdir / "nginx", settings, files, backend)
