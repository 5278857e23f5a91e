"""Fuzz the readers of untrusted bytes with a bounded number of examples: run files (read in a time-limited
child first), PTU files, and the QKD classical channel's message decoder. Only the project's own typed errors
may escape (FileFormatError for files, AuthenticationError for QKD frames)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlab.errors import FileFormatError
from qlab.qkd.auth import AuthenticationError, HmacAuth
from qlab.qkd.cascade import cascade_alice
from qlab.qkd.channel import _HEAD, _SLOT, HELLO, NONCE_BYTES, AuthenticatedChannel
from qlab.storage.probe import check_run_file
from qlab.storage.ptu import iter_ptu_t2, read_ptu_header
from qlab.storage.reader import RunReader
from tests.corpora import make_good_ptu, make_good_run_file

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz-good")
    return {"run": make_good_run_file(d / "run.h5", n_tags=4000).read_bytes(),
            "ptu": make_good_ptu(d / "good.ptu", n_tags=4000).read_bytes()}


def _mutate(data: bytes, edits: list[tuple[float, int]], cut: float | None) -> bytes:
    b = bytearray(data)
    for where, value in edits:
        b[int(where * (len(b) - 1))] = value
    return bytes(b[: int(cut * len(b))] if cut is not None else b)


EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=40)
CUTS = st.none() | st.floats(0, 1)


@settings(FAST, max_examples=20)
@given(edits=EDITS, cut=CUTS)
def test_run_file_reader_on_mutated_bytes(good_files, tmp_path_factory, edits, cut):
    """The child probe (time-limited) refuses the file or, if it passed, the in-process reader reads it."""
    p = tmp_path_factory.mktemp("fuzz-run") / "run.h5"
    p.write_bytes(_mutate(good_files["run"], edits, cut))
    try:
        check_run_file(p)
        with RunReader(p) as r:
            r.summary()
            r.read_all()
    except FileFormatError as exc:
        assert str(p) in str(exc)


@settings(FAST, max_examples=150)
@given(edits=EDITS, cut=CUTS)
def test_ptu_reader_on_mutated_bytes(good_files, tmp_path_factory, edits, cut):
    p = tmp_path_factory.mktemp("fuzz-ptu") / "f.ptu"
    p.write_bytes(_mutate(good_files["ptu"], edits, cut))
    try:
        read_ptu_header(p)
        for chunk in iter_ptu_t2(p, chunk_records=1000, allow_truncated=True):
            assert chunk.timestamps.dtype == np.int64
    except FileFormatError as exc:
        assert str(p) in str(exc)


# -- QKD classical channel -------------------------------------------------------------------------------

class _FramePipe:
    """Delivers the given frames, then reports a closed channel (as SocketPipe does)."""

    def __init__(self, frames: list[bytes]):
        self.frames, self.sent = list(frames), []

    def send_frame(self, frame: bytes) -> None:
        self.sent.append(frame)

    def recv_frame(self) -> bytes:
        if not self.frames:
            raise AuthenticationError("the other party closed the channel")
        return self.frames.pop(0)


class _DeferringHmac(HmacAuth):
    """HMAC tags, but deferred sections as with Wegman–Carter: their messages arrive untagged."""

    defers = True


KEY = bytes(range(32))
HELLO_OK = HELLO + bytes([HmacAuth.mode_id]) + bytes(NONCE_BYTES)


def _body(seq: int, header: bytes, payload: bytes) -> bytes:
    return _SLOT.pack(0) + _HEAD.pack(seq, len(header)) + header + payload


# Frames near the format: valid hello + structured bodies with arbitrary headers, plus raw bytes.
VALUES = st.one_of(st.integers(-2**70, 2**70), st.text(max_size=8), st.lists(st.integers(-5, 5), max_size=4),
                   st.none(), st.booleans())
HEADERS = st.one_of(
    st.binary(max_size=64), st.just(b"[" * 5000), st.just(b'{"kind":"cascade"}'),
    st.builds(lambda kind, d: json.dumps({"kind": kind, **d}).encode(),
              st.sampled_from(["cascade_start", "cascade", "abort", "x"]),
              st.dictionaries(st.sampled_from(["seed", "passes", "done", "n", "reason"]), VALUES, max_size=3)))
# Cascade range requests: (pass, start, end) int64 triples, in range or not.
RANGES = st.lists(st.integers(-2**63, 2**63 - 1) | st.integers(0, 70), max_size=12).map(
    lambda v: np.array(v, np.int64).tobytes())
FRAMES = st.one_of(st.binary(max_size=200),
                   st.builds(_body, st.integers(0, 3), HEADERS, st.binary(max_size=96) | RANGES))


@settings(FAST, max_examples=200)
@given(hello=st.one_of(st.binary(max_size=40), st.just(HELLO_OK)), frames=st.lists(FRAMES, max_size=4))
def test_channel_decoder_on_arbitrary_frames(hello, frames):
    ch = AuthenticatedChannel(_FramePipe([hello, *frames]), KEY, "bob")
    with pytest.raises(AuthenticationError):
        for _ in range(5):
            ch.recv("cascade")


CASCADE_START = _body(0, b'{"kind":"cascade_start","seed":7,"passes":[0,1]}', b"")
CASCADE_REQUESTS = st.builds(_body, st.just(1), st.just(b'{"kind":"cascade"}'), st.binary(max_size=40) | RANGES)


@settings(FAST, max_examples=200)
@given(start=st.sampled_from([[], [CASCADE_START]]), frames=st.lists(FRAMES | CASCADE_REQUESTS, min_size=1, max_size=4))
def test_deferred_section_on_arbitrary_frames(start, frames):
    """Inside a deferred section messages carry no tag until the section's transcript check, so the
    decoder and Cascade's parsing of them see attacker-chosen bytes: they must end in AuthenticationError."""
    ch = AuthenticatedChannel(_FramePipe([HELLO_OK, *start, *frames]), _DeferringHmac(KEY), "alice")
    key = np.zeros(64, np.uint8)
    with pytest.raises(AuthenticationError), ch.deferred():
        cascade_alice(key, ch)


def test_oversized_frame_length_from_a_socket_peer_is_an_authentication_error():
    """A peer announcing a 2**63-byte frame must not make the reader allocate or overflow."""
    import socket

    from qlab.qkd.channel import SocketPipe

    a, b = socket.socketpair()
    try:
        a.sendall(struct.pack("<Q", 2**63) + b"x" * 16)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(AuthenticationError):
            SocketPipe(b, timeout_s=2.0).recv_frame()
    finally:
        a.close()
        b.close()
