"""Resumable, checksum-verified downloads with the standard library only.

:func:`download` fetches one URL into a file. The bytes go to a ``.part`` sibling
first; an interrupted transfer leaves that ``.part`` behind and the next call asks the
server for the rest (HTTP ``Range``). The file appears at its final name only once its
checksum(s) match, so a file at ``dest`` is always complete and verified.

Failures that cannot be resumed (an HTML page where data was expected, a checksum
mismatch) delete the ``.part``; they leave nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ChecksumError", "DownloadError", "download", "file_digest"]

logger = logging.getLogger(__name__)

_HEX_LENGTH = {"md5": 32, "sha256": 64}
_HTML_STARTS = (b"<!doctype html", b"<html")
_LOG_EVERY_S = 5.0


class DownloadError(RuntimeError):
    """A download failed: HTTP error, network error, or HTML instead of data."""


class ChecksumError(ValueError):
    """A downloaded (or present) file does not have the expected checksum."""


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file's bytes.

    Parameters
    ----------
    path : path-like
        The file to hash.
    algorithm : str
        A :mod:`hashlib` name, e.g. ``"md5"`` or ``"sha256"``.

    Returns
    -------
    str
        Lower-case hexadecimal digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _expected_digests(md5: str | None, sha256: str | None) -> dict[str, str]:
    """Validate the given checksums; return ``{algorithm: lower-case hex}``."""
    out = {}
    for name, value in (("md5", md5), ("sha256", sha256)):
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LENGTH[name]}}}", value):
            raise ValueError(
                f"{name} must be {_HEX_LENGTH[name]} hexadecimal digits, got {value!r}"
            )
        out[name] = value
    return out


def _mismatch(path: Path, expected: dict[str, str]) -> tuple[str, str, str] | None:
    """First ``(algorithm, expected, actual)`` that differs, or None if all match."""
    for name, want in expected.items():
        got = file_digest(path, name)
        if got != want:
            return name, want, got
    return None


def _looks_like_html(content_type: str | None, first_bytes: bytes) -> bool:
    if content_type and content_type.split(";")[0].strip().lower() == "text/html":
        return True
    return first_bytes.lstrip()[:16].lower().startswith(_HTML_STARTS)


def _html_error(url: str, html_hint: str | None) -> DownloadError:
    msg = f"{url} answered with an HTML page where a data file was expected"
    if html_hint:
        msg += f". {html_hint}"
    return DownloadError(msg)


def _open(url: str, offset: int, timeout: float):
    """Send the request (with ``Range`` when resuming); return the response."""
    from msprior import __version__

    headers = {"User-Agent": f"msprior/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _resumed_from(response, offset: int) -> int:
    """Byte offset the response body starts at: ``offset`` or 0 (start over)."""
    status = response.getcode() or 200  # file: URLs have no status
    if not offset or status != 206:
        if offset:
            logger.info("server ignored the Range request; starting over")
        return 0
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes (\d+)-", content_range)
    if match is None or int(match.group(1)) != offset:
        raise DownloadError(
            f"asked for bytes from {offset} but the server sent {content_range!r}; "
            "the partial download was deleted, run again to start over"
        )
    return offset


def _expected_total(response, start: int) -> int | None:
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _stream(
    response, part: Path, start: int, total: int | None, chunk_size: int, url: str
) -> int:
    """Write the rest of the body into ``part`` from byte ``start``; return the size.

    ``total`` is the file's size the server announced, if it did.
    """
    done = start
    last_log = time.monotonic()
    with open(part, "r+b" if start else "wb") as f:
        f.seek(start)
        f.truncate()
        while chunk := response.read(chunk_size):
            f.write(chunk)
            done += len(chunk)
            if time.monotonic() - last_log >= _LOG_EVERY_S:
                last_log = time.monotonic()
                of = f" of {total:,}" if total else ""
                logger.info("%s: %s%s bytes", part.name, f"{done:,}", of)
    if total is not None and done != total:
        raise DownloadError(
            f"{url}: connection closed after {done:,} of {total:,} bytes; "
            f"run again to resume from {part}"
        )
    return done


def _transfer(
    url: str,
    part: Path,
    *,
    html_hint: str | None,
    timeout: float,
    chunk_size: int,
    check_html: bool,
) -> None:
    """Fetch ``url`` into ``part``, resuming from what ``part`` already holds."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        err.close()  # its open response would otherwise live as long as the error
        if err.code == 416 and offset:
            # The .part already holds at least the whole file; let the checksum judge.
            logger.info("%s: server has no bytes past %d", part.name, offset)
            return
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: {err}") from err
    with response:
        try:
            start = _resumed_from(response, offset)
        except DownloadError:
            part.unlink()
            raise
        total = _expected_total(response, start)
        try:
            if start:
                logger.info("%s: resuming at byte %d", part.name, start)
            else:
                first = response.read(min(chunk_size, 512))
                if check_html and _looks_like_html(
                    response.headers.get("Content-Type"), first
                ):
                    with contextlib.suppress(FileNotFoundError):
                        part.unlink()
                    raise _html_error(url, html_hint)
                part.write_bytes(first)
                start = len(first)
            size = _stream(response, part, start, total, chunk_size, url)
        except (OSError, http.client.HTTPException) as err:
            # A dropped connection or a timeout: the .part stays for the next call.
            raise DownloadError(f"{url}: {err}; run again to resume") from err
    logger.info("%s: received %s bytes", part.name, f"{size:,}")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    html_hint: str | None = None,
    timeout: float = 60,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify its checksum(s).

    Parameters
    ----------
    url : str
        Anything :func:`urllib.request.urlopen` opens (``http(s)://``, ``file://``).
    dest : path-like
        The final file. Its folder is created if needed.
    md5, sha256 : str, optional
        Expected hex digests; every one given must match. With neither, an existing
        ``dest`` is trusted as it is and a download is not verified.
    html_hint : str, optional
        Appended to the error raised when the server sends an HTML page instead of
        the file (e.g. a quota page): how to obtain the file by hand.
    timeout : float
        Seconds to wait for the server, per blocking operation.
    chunk_size : int
        Bytes read per step.

    Returns
    -------
    Path
        ``dest``, complete and verified.

    Raises
    ------
    DownloadError
        HTTP or network failure (a partial ``.part`` is kept for resuming), or an HTML
        answer (the ``.part`` is deleted).
    ChecksumError
        The downloaded bytes do not match; the ``.part`` is deleted and nothing is
        written at ``dest``.
    """
    dest = Path(dest)
    expected = _expected_digests(md5, sha256)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    if dest.exists():
        bad = _mismatch(dest, expected)
        if bad is None:
            logger.debug("%s is present and verified", dest)
            return dest
        logger.warning(
            "%s exists but its %s is %s, expected %s; downloading it again",
            dest,
            bad[0],
            bad[2],
            bad[1],
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    logger.info("downloading %s -> %s", url, dest)
    _transfer(
        url,
        part,
        html_hint=html_hint,
        timeout=timeout,
        chunk_size=chunk_size,
        check_html=dest.suffix.lower() not in (".html", ".htm"),
    )

    bad = _mismatch(part, expected)
    if bad is not None:
        part.unlink()
        name, want, got = bad
        raise ChecksumError(
            f"{dest.name} downloaded from {url} has {name} {got}, expected {want}; "
            "the partial download was deleted"
        )
    os.replace(part, dest)
    logger.info("%s: done", dest)
    return dest
