"""download(): against a small HTTP server on 127.0.0.1 that serves a tmp folder."""

from __future__ import annotations

import hashlib
import http.server
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from loopback import serving

from msprior.download import ChecksumError, DownloadError, download, file_digest


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files from ``server.root``; honours ``Range`` unless told not to."""

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        body = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not srv.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/*")
        else:
            self.send_response(200)
        self.send_header("Content-Type", srv.content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        sent = body[start:]
        if srv.truncate_at is not None:
            sent = sent[: srv.truncate_at]
        # Count before writing: the client may have read every byte and returned
        # before this thread runs again, so a count after the write can lag.
        srv.bytes_sent += len(sent)
        self.wfile.write(sent)


@pytest.fixture
def server(tmp_path):
    """A server on a free port of 127.0.0.1, serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    with serving(_Handler) as srv:
        srv.root = root
        srv.requests = []
        srv.ignore_range = False
        srv.content_type = "application/octet-stream"
        srv.truncate_at = None
        srv.bytes_sent = 0
        yield srv


@pytest.fixture
def payload(server) -> bytes:
    """100 kB of seeded random bytes, served as ``/data.bin``."""
    data = np.random.default_rng(0).bytes(100_000)
    (server.root / "data.bin").write_bytes(data)
    return data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_file_is_downloaded_and_verified(server, payload, tmp_path, caplog):
    dest = tmp_path / "out" / "data.bin"
    md5 = hashlib.md5(payload).hexdigest()
    with caplog.at_level(logging.INFO, logger="msprior.download"):
        got = download(
            f"{server.url}/data.bin",
            dest,
            sha256=_sha256(payload),
            md5=md5.upper(),
            chunk_size=4096,
        )
    assert got == dest
    assert dest.read_bytes() == payload
    assert not dest.with_suffix(".bin.part").exists()
    assert any("done" in r.getMessage() for r in caplog.records)


def test_wrong_checksum_is_a_clear_error_and_leaves_nothing(server, payload, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download(f"{server.url}/data.bin", dest, sha256=wrong)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    for part in ("data.bin", "sha256", wrong, _sha256(payload)):
        assert part in msg
    assert list(tmp_path.glob("data.bin*")) == []


def test_resume_asks_only_for_the_rest(server, payload, tmp_path):
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    part.write_bytes(payload[:30_000])
    download(f"{server.url}/data.bin", dest, sha256=_sha256(payload))
    assert dest.read_bytes() == payload
    assert server.requests == [("/data.bin", "bytes=30000-")]
    assert server.bytes_sent == 70_000
    assert not part.exists()


def test_server_ignoring_range_starts_over(server, payload, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    part.write_bytes(b"x" * 30_000)  # not even the right bytes: must be discarded
    download(f"{server.url}/data.bin", dest, sha256=_sha256(payload))
    assert dest.read_bytes() == payload
    assert server.bytes_sent == len(payload)


def test_dropped_connection_keeps_part_and_next_call_resumes(server, payload, tmp_path):
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    server.truncate_at = 40_000
    with pytest.raises(DownloadError, match="resume"):
        download(f"{server.url}/data.bin", dest, sha256=_sha256(payload), timeout=5)
    assert not dest.exists()
    assert part.read_bytes() == payload[:40_000]
    server.truncate_at = None
    download(f"{server.url}/data.bin", dest, sha256=_sha256(payload), timeout=5)
    assert dest.read_bytes() == payload
    assert server.requests[-1] == ("/data.bin", "bytes=40000-")


def test_complete_part_with_416_is_verified_and_kept(server, payload, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(payload)
    download(f"{server.url}/data.bin", dest, sha256=_sha256(payload))
    assert dest.read_bytes() == payload
    assert server.bytes_sent == 0


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("text/html; charset=utf-8", b"quota exceeded"),
        ("application/octet-stream", b"\n  <!DOCTYPE html><html><body>no</body>"),
        ("application/octet-stream", b"<HTML><body>Sign in</body></HTML>"),
    ],
)
def test_html_answer_is_refused_with_the_hint(server, tmp_path, content_type, body):
    server.content_type = content_type
    (server.root / "data.bin").write_bytes(body)
    dest = tmp_path / "data.bin"
    # A stale .part from an earlier try: the page answers the Range request with 200.
    (tmp_path / "data.bin.part").write_bytes(b"stale")
    server.ignore_range = True
    hint = "Put data.bin in the folder by hand."
    with pytest.raises(DownloadError, match="HTML") as info:
        download(f"{server.url}/data.bin", dest, html_hint=hint)
    assert hint in str(info.value)
    assert list(tmp_path.glob("data.bin*")) == []


def test_present_verified_file_makes_no_request(server, payload, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(payload)
    assert download(f"{server.url}/data.bin", dest, sha256=_sha256(payload)) == dest
    assert server.requests == []


def test_present_file_with_wrong_checksum_is_replaced(server, payload, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"corrupt")
    download(f"{server.url}/data.bin", dest, sha256=_sha256(payload))
    assert dest.read_bytes() == payload
    assert len(server.requests) == 1


def test_404_is_a_download_error_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError, match="404"):
        download(f"{server.url}/missing.bin", dest, sha256="a" * 64)
    assert list(tmp_path.glob("missing.bin*")) == []


@pytest.mark.parametrize(
    "kwargs, name",
    [({"sha256": "abc"}, "sha256"), ({"md5": "z" * 32}, "md5")],
)
def test_malformed_checksum_is_rejected_before_any_request(
    server, tmp_path, kwargs, name
):
    with pytest.raises(ValueError, match=name):
        download(f"{server.url}/data.bin", tmp_path / "data.bin", **kwargs)
    assert server.requests == []


def test_file_digest_matches_hashlib(tmp_path):
    path = Path(tmp_path / "f")
    path.write_bytes(b"abc")
    assert file_digest(path, "sha256") == hashlib.sha256(b"abc").hexdigest()
