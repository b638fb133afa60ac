from __future__ import annotations

import io
import tarfile

import pytest

from polyfid.data_shards.tar_members import member_payloads


def tar_bytes(members: dict[str, bytes], fmt: int = tarfile.USTAR_FORMAT, directory: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if directory:
            tar.addfile(_dir("d"))
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_payloads_match_tarfile_and_skip_other_members():
    members = {f"{k:016x}.msgpack": bytes(range(k % 256)) * (k + 1) for k in range(40)}
    members["notes.txt"] = b"not a sample"
    data = tar_bytes(members, directory=True)
    want = [p for n, p in members.items() if n.endswith(".msgpack")]
    assert member_payloads(data, ".msgpack") == want
    assert member_payloads(tar_bytes({}), ".msgpack") == []


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_extended_headers_defer_to_the_general_reader(fmt):
    data = tar_bytes({"x" * 150 + ".msgpack": b"abc"}, fmt)  # a long name needs PAX / GNU headers
    assert member_payloads(data, ".msgpack") is None


def test_a_truncated_tar_is_not_read_as_shorter():
    data = tar_bytes({f"{k}.msgpack": b"z" * 700 for k in range(5)})
    assert member_payloads(data[: 512 * 5], ".msgpack") is None
