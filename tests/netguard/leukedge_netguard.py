"""A network guard for tests: a ``sys.addaudithook`` hook that refuses (OSError) and records
every non-loopback connect, send or name lookup, in this process and, through
``sitecustomize`` on PYTHONPATH, in every Python subprocess (``LEUKEDGE_NETGUARD`` names
the file the subprocesses append their attempts to). An audit hook sees what a library does
below its own error handling, so an attempt it swallows is still recorded."""

from __future__ import annotations

import os
import socket
import sys

#: The record of the test being guarded (None: the guard is off).
ATTEMPTS: list[str] | None = None
_HOST = socket.gethostname()
_LOCAL_NAMES = {"", "localhost", "localhost.localdomain", "ip6-localhost", _HOST}


def _local(host) -> bool:
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in _LOCAL_NAMES or host.startswith("127.") or host in ("::1", "0.0.0.0", "::")


def _hook(event: str, args: tuple) -> None:
    if ATTEMPTS is None or not event.startswith("socket."):
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1] if len(args) > 1 else None
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not address:
            return  # Unix sockets, netlink: not the network
        host = address[0]
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        host = args[0]
    else:
        return
    if _local(host):
        return
    what = f"{event} {host!r} (pid {os.getpid()}: {' '.join(sys.argv)[:120]})"
    ATTEMPTS.append(what)
    record = os.environ.get("LEUKEDGE_NETGUARD")
    if record and os.getpid() != _OWNER:
        with open(record, "a") as f:
            f.write(what + "\n")
    raise OSError(f"network disabled in tests: {what}")


_OWNER = -1  # the pid of the pytest process (its attempts stay in ATTEMPTS)


def install(owner: bool) -> None:
    """Add the hook (once per process); ``owner``: this is the pytest process."""
    global _OWNER
    if owner:
        _OWNER = os.getpid()
    sys.addaudithook(_hook)


def start() -> list[str]:
    """Guard from now on; returns the list attempts are recorded in."""
    global ATTEMPTS
    ATTEMPTS = []
    return ATTEMPTS


def stop() -> None:
    global ATTEMPTS
    ATTEMPTS = None
