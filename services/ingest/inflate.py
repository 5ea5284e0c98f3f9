"""gzip request bodies, inflated with a bound: a few KB can expand to gigabytes.

Pure (chunks in, bytes out): the bound is checked as the output grows, never after, so
a gzip bomb costs at most the limit in memory and the CPU to produce it.
"""

from __future__ import annotations

import zlib

GZIP = ("gzip", "x-gzip")
IDENTITY = ("", "identity")


class Inflated(Exception):
    """Base of the refusals below."""


class InflatedTooLarge(Inflated):
    """The body inflates beyond the limit."""


class NotGzip(Inflated):
    """The body is not a valid gzip stream (or ends before it does)."""


class Inflater:
    """Feed compressed chunks, then :meth:`finish`; members after the first are read too."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._size = 0
        self._parts: list[bytes] = []
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes) -> None:
        data = chunk
        while data:
            try:
                out = self._inflater.decompress(data, self.limit - self._size + 1)
            except zlib.error:
                raise NotGzip("the body is not valid gzip") from None
            self._keep(out)
            if self._inflater.eof:  # another member may follow (concatenated gzip)
                data = self._inflater.unused_data
                if data:
                    self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            else:
                data = self._inflater.unconsumed_tail

    def _keep(self, out: bytes) -> None:
        self._size += len(out)
        if self._size > self.limit:
            raise InflatedTooLarge(f"the body inflates to more than {self.limit} bytes")
        self._parts.append(out)

    def finish(self) -> bytes:
        if not self._inflater.eof:
            raise NotGzip("the gzip body ends before its stream does")
        return b"".join(self._parts)
