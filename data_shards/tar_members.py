"""The sample payloads of a shard's tar bytes, read straight from the 512-byte USTAR headers polyfid writes.

`tarfile` (and webdataset's iterator on top of it) spends ~30 us per member decoding every header field; shards
hold tens of thousands of small samples, so that was most of a loader's time and of a resume's shard re-reads.
Only what is needed is decoded here: the name, the size and the type. A header this parser does not handle (PAX
or GNU extensions, which polyfid never writes) returns None so the caller can use the general reader; the bytes
were already checked against the manifest's sha256.
"""

from __future__ import annotations

_BLOCK = 512
_REGULAR = (b"0", b"\0")


def member_payloads(data: bytes, suffix: str) -> list[bytes] | None:
    """Payloads of the regular members whose names end with `suffix`, in order; None for an unsupported tar."""
    end = suffix.encode()
    view = memoryview(data)
    out: list[bytes] = []
    pos, n = 0, len(data)
    while pos + _BLOCK <= n:
        header = view[pos : pos + _BLOCK]
        if header[0] == 0:  # end-of-archive block
            return out
        kind = bytes(header[156:157])
        size_field = bytes(header[124:136])
        if size_field[0] & 0x80 or kind not in (*_REGULAR, b"5"):
            return None  # base-256 sizes, links, PAX / GNU headers: not what polyfid writes
        size = int(size_field.rstrip(b"\0 ").lstrip(b" ") or b"0", 8)
        start = pos + _BLOCK
        if kind in _REGULAR and bytes(header[:100]).rstrip(b"\0").endswith(end):
            out.append(data[start : start + size])
        pos = start + (size + _BLOCK - 1) // _BLOCK * _BLOCK
    return None  # no end-of-archive block: truncated
