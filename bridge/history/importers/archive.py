"""Zip members read within bounds: decompressed in chunks and counted, since a zip's own sizes may lie.

A zip bomb states a small size and inflates to gigabytes; only the bytes actually decompressed tell. Two
bounds: the bytes a member may give (CONFIDE_IMPORTS__MAX_MEMBER_BYTES), and how far it may inflate over the
compressed bytes read so far (CONFIDE_IMPORTS__MAX_COMPRESSION_RATIO): text deflates 3 to 10 times, a bomb a
thousand, so a bomb stops after its first MiB, not at the bytes bound. Members compressed with anything but
deflate are refused: the standard library inflates bzip2 and LZMA a whole input chunk at a time, with no bound
on the output (a few hundred bytes of bzip2 can inflate to a gigabyte).
"""

from __future__ import annotations

import io
import zipfile
from typing import IO

CHUNK = 64 * 1024
READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# The first MiB of a member is read whatever its compression ratio: a small file of repeats deflates far.
RATIO_FLOOR = 1 << 20


class TooBig(ValueError):
    """More bytes than a bound allows (decompressed, or stated by the zip)."""


class Unreadable(ValueError):
    """A zip member that is not read: encrypted, or compressed with a method Confide does not read."""


def refusal(info: zipfile.ZipInfo, limit: int, setting: str = "MAX_MEMBER_BYTES") -> str | None:
    """Why `info` is not read, judged on its header alone; None when it may be (and is then counted)."""
    if info.flag_bits & 0x1:
        return f"{info.filename} is encrypted"
    if info.compress_type not in READABLE_METHODS:
        return f"{info.filename} is compressed with method {info.compress_type} (only deflate is read)"
    if info.file_size > limit:
        return f"{info.filename} unpacks to {info.file_size:,} bytes (over {limit:,}: CONFIDE_IMPORTS__{setting})"
    return None


def member_limit(info: zipfile.ZipInfo, max_bytes: int, max_ratio: int) -> tuple[int, str]:
    """How many bytes `info` may inflate to, and the setting that says so. The ratio bound is sound however the
    header lies: the stdlib reads no more than the stated compressed size."""
    by_ratio = max(RATIO_FLOOR, info.compress_size * max_ratio)
    return (by_ratio, "MAX_COMPRESSION_RATIO") if by_ratio < max_bytes else (max_bytes, "MAX_MEMBER_BYTES")


def open_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, setting: str = "MAX_MEMBER_BYTES", ratio: int = 0
) -> Capped:
    """A member as a stream that ends at `limit` decompressed bytes, or where it inflates more than `ratio`
    times the compressed bytes read (0: no such bound); `Capped.cut` then says so."""
    if why := refusal(info, limit, setting):
        raise TooBig(why) if info.file_size > limit else Unreadable(why)
    return Capped(archive.open(info), limit, setting, ratio)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes; raises `TooBig` past `limit` bytes, however small its header says it is."""
    with open_member(archive, info, limit) as stream:
        data = stream.read()
        if stream.cut:
            raise TooBig(f"{info.filename} unpacks to more than {limit:,} bytes (its header says {info.file_size:,})")
    return data


def check_archive(data: bytes, max_member_bytes: int, total_limit: int, max_ratio: int) -> None:
    """Raises when a zip (a .docx) would inflate past the bounds: each member decompressed and counted, then
    dropped, before a library that reads every member whole is given it."""
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            total += info.file_size
            if total > total_limit:
                raise TooBig(f"it unpacks to over {total_limit:,} bytes (its members state {total:,})")
        counted = 0
        for info in archive.infolist():
            limit, setting = member_limit(info, max_member_bytes, max_ratio)
            with open_member(archive, info, limit, setting, max_ratio) as stream:
                while chunk := stream.read(CHUNK):
                    counted += len(chunk)
                    if counted > total_limit:
                        raise TooBig(f"it unpacks to over {total_limit:,} bytes")
                if stream.cut:
                    raise TooBig(f"{info.filename} {stream.why()}")


class Capped(io.RawIOBase):
    """A binary stream that gives at most `limit` bytes of another, read in bounded chunks, and, with `ratio`,
    stops where it has inflated more than `ratio` times the compressed bytes read (past `RATIO_FLOOR`). `cut` is
    True when it stopped early; `setting` then names the bound, for the problem that reports it."""

    def __init__(self, raw: IO[bytes], limit: int, setting: str = "MAX_MEMBER_BYTES", ratio: int = 0) -> None:
        super().__init__()
        self._raw = raw
        self._left = self.limit = limit
        self.setting = setting
        self.cut = False
        self._given = 0
        self._ratio = ratio
        # CPython's ZipExtFile counts down the compressed bytes it has yet to read; elsewhere only `limit` holds.
        self._compressed_at_start: int | None = getattr(raw, "_compress_left", None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._left <= 0:
            # One byte more tells a member of exactly `limit` bytes from a bigger one.
            self.cut = self.cut or bool(self._raw.read(1))
            return 0
        data = self._raw.read(min(len(view), self._left, CHUNK))
        self._left -= len(data)
        self._given += len(data)
        if self._inflated_too_far():
            self.cut, self._left, self.setting = True, 0, "MAX_COMPRESSION_RATIO"
        view[: len(data)] = data
        return len(data)

    def _inflated_too_far(self) -> bool:
        if not self._ratio or self._compressed_at_start is None or self._given <= RATIO_FLOOR:
            return False
        consumed = self._compressed_at_start - getattr(self._raw, "_compress_left", 0)
        return self._given > self._ratio * max(consumed, 1)

    def why(self) -> str:
        """What `cut` means, for a `Problem`."""
        if self.setting == "MAX_COMPRESSION_RATIO":
            return f"inflates over {self._ratio} times its compressed size (CONFIDE_IMPORTS__MAX_COMPRESSION_RATIO)"
        return f"inflates past {self.limit:,} bytes (CONFIDE_IMPORTS__{self.setting})"

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
