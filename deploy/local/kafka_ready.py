#!/usr/bin/env python3
"""Readiness probe for the local Kafka broker (stdlib only, no client library needed).

A TCP connect is not enough: the socket accepts before the broker has joined the KRaft quorum
and been unfenced. This probe speaks the Kafka wire protocol:

1. ApiVersions v0 -> learns which Metadata versions the broker serves;
2. Metadata (highest non-flexible version 4..8 the broker supports), asking for no topics ->
   succeeds only when the broker lists itself (node id, host, port) among the live (unfenced)
   brokers and reports an active controller.

Usage: kafka_ready.py HOST:PORT [--node-id 1] [--timeout SECONDS] [--quiet]
Exit 0 when ready, 1 otherwise (one attempt; callers loop). Prints the reason on failure.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"gapwatch-ready"


class ProbeError(Exception):
    pass


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProbeError("truncated response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def i8(self) -> int:
        return self._take(">b")

    def i16(self) -> int:
        return self._take(">h")

    def i32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> Reader:
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    reader = Reader(_recv_exact(sock, size))
    if reader.i32() != corr:  # response header v0: correlation_id
        raise ProbeError("correlation id mismatch")
    return reader


def probe(host: str, port: int, node_id: int, timeout: float) -> str:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(f"cannot connect to {host}:{port}: {exc}") from exc
    with sock:
        sock.settimeout(timeout)
        # ApiVersions v0. Even a broker that rejects v0 answers in v0 format with its api list.
        r = _request(sock, API_VERSIONS, 0, 1, b"")
        error = r.i16()
        ranges = {}
        for _ in range(r.i32()):
            key, lo, hi = r.i16(), r.i16(), r.i16()
            ranges[key] = (lo, hi)
        if error not in (0, 35):
            raise ProbeError(f"ApiVersions error code {error}")
        if API_METADATA not in ranges:
            raise ProbeError("broker does not advertise the Metadata API")
        lo, hi = ranges[API_METADATA]
        candidates = [v for v in range(4, 9) if lo <= v <= hi]
        if not candidates:
            raise ProbeError(f"no Metadata version in 4..8 supported (broker: {lo}..{hi})")
        version = max(candidates)

        # Metadata request: topics = [] (none), allow_auto_topic_creation = false,
        # v8+: include_cluster/topic_authorized_operations = false.
        body = struct.pack(">ib", 0, 0)
        if version >= 8:
            body += struct.pack(">bb", 0, 0)
        r = _request(sock, API_METADATA, version, 2, body)
        r.i32()  # throttle_time_ms (v3+)
        brokers = []
        for _ in range(r.i32()):
            bid, bhost, bport = r.i32(), r.string(), r.i32()
            r.string()  # rack
            brokers.append((bid, bhost, bport))
        cluster_id = r.string()
        controller_id = r.i32()

    me = [b for b in brokers if b[0] == node_id]
    if not me:
        raise ProbeError(f"broker {node_id} not yet live in metadata (brokers={brokers})")
    if controller_id < 0:
        raise ProbeError("no active controller yet")
    return (
        f"broker {node_id} live at {me[0][1]}:{me[0][2]}, controller {controller_id}, "
        f"cluster id {cluster_id}, Metadata v{version}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("bootstrap", help="HOST:PORT")
    ap.add_argument("--node-id", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    host, _, port = args.bootstrap.rpartition(":")
    try:
        info = probe(host or "127.0.0.1", int(port), args.node_id, args.timeout)
    except (ProbeError, OSError, ValueError) as exc:
        if not args.quiet:
            print(f"not ready: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"ready: {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
