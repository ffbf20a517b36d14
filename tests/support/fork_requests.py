"""What a fork host (:mod:`tests.support.forked_deputy_host`, :mod:`tests.conformance.adapter_host`) reads from
whoever asks it for a process: a 4-byte length and a JSON request, with three descriptors (the new process's
standard input, output and error) passed with its first bytes (``SCM_RIGHTS``, unix(7))."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

MAX_REQUEST = 1 << 20  # the request's environment and arguments, as JSON
DESCRIPTORS = 3  # standard input, output and error


def receive_request(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The request and the three descriptors sent with its first bytes; a request without them is refused."""
    data, fds, _flags, _address = socket.recv_fds(connection, MAX_REQUEST, DESCRIPTORS)
    if len(fds) != DESCRIPTORS or len(data) < 4:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request must carry its three standard descriptors")
    length = int.from_bytes(data[:4], "big")
    body = data[4:]
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ValueError("the request ended early")
        body += chunk
    request: dict[str, Any] = json.loads(body)
    return request, fds
