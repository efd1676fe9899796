"""A free TCP port on localhost, for the tests, benchmarks and tools that start a server."""

import socket


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; another process could still take
    it before the caller binds, which is fine for tests on one machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
