"""A throwaway HTTP server on 127.0.0.1 for the download tests."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def serving(handler, server_class=http.server.HTTPServer) -> Iterator:
    """Serve ``handler`` on a free port of 127.0.0.1 in a thread; ``srv.url`` is its
    address. Stopped and closed on exit."""
    srv = server_class(("127.0.0.1", 0), handler)
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
