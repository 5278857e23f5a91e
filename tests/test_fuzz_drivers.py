"""Fuzz every driver's reply parser: whatever bytes a device answers, only qlab's typed errors escape.

Each wire-protocol driver first runs a short session against its simulator; the recorded replies are then
replayed through a ScriptedTransport with one or all replies replaced by arbitrary bytes, truncated or bit-flipped.
The SDK-level taggers get arbitrary stream buffers / FIFO records, the ID1000 arbitrary data-port messages.
Example counts are bounded so the whole file stays within a few seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlab.errors import QlabError
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import ScriptedTransport
from tests.transcripts import pairs_from_log

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class _Clock:
    """A clock whose sleeps only move its own time (a fuzzed driver never waits for real)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)


@dataclass
class Wire:
    """A wire-protocol driver: how to build it on a transport and its simulator, and what session to run."""

    driver: Callable[[Any], Any]
    simulator: Callable[[], Any]
    session: Callable[[Any], None]
    terms: tuple[bytes, bytes]  # write, read termination


def _itc(tr):
    from qlab.drivers.thorlabs.itc4001 import ITC4001

    return ITC4001("pump", transport=tr, limits=Limits("pump", {}), clock=_Clock())


def _itc_session(d) -> None:
    d.open()
    d.set_current(0.05)
    d.output(), d.current_setpoint(), d.measured_power(), d.protection(), d.current_limit()


def _dlc(tr):
    from qlab.drivers.toptica.dlcpro import DLCPro

    return DLCPro("laser", transport=tr, limits=Limits("laser", {}), clock=_Clock())


def _dlc_session(d) -> None:
    d.open()
    d.set_current(0.1)
    d.output(), d.current_setpoint(), d.measured_temperature(), d.protection()


def _id120(tr):
    from qlab.drivers.idquantique.id120 import ID120

    return ID120("spd", transport=tr, limits=Limits("spd", {}), clock=_Clock())


def _id120_session(d) -> None:
    d.open()
    d.set_dead_time(1000.0)
    d.bias_v(), d.enabled(), d.count_rate_hz(), d.status()


def _eos(tr):
    from qlab.drivers.singlequantum.eos import EosSNSPD

    return EosSNSPD("snspd", transport=tr, limits=Limits("snspd", {}), clock=_Clock(), options={"address": 2},
                    counts_transport=ScriptedTransport("snspd", []))


def _eos_session(d) -> None:
    d.open()
    d.set_bias_current(12.0)
    d.bias_current_ua(), d.enabled()


AXES3 = {"qwp1": {"address": 1}, "hwp": {"address": 2}}


def _ell14(tr):
    from qlab.drivers.thorlabs.ell14 import ELL14

    return ELL14("ell", transport=tr, limits=Limits("ell", {}), clock=_Clock(), options={"axes": AXES3})


def _motion_session(d) -> None:
    d.open()
    d.move_absolute(10.0, "hwp")
    d.position("hwp"), d.is_busy("qwp1"), d.status()


def _k10(tr):
    from qlab.drivers.thorlabs.k10cr1 import K10CR1

    return K10CR1("rot", transport=tr, limits=Limits("rot", {}), clock=_Clock(),
                  options={"axes": {"hwp": {"address": 1}}})


def _k10_session(d) -> None:
    _motion_session_one(d, "hwp")
    d.velocity_params("hwp")


def _motion_session_one(d, axis: str) -> None:
    d.open()
    d.move_absolute(10.0, axis)
    d.position(axis), d.is_busy(axis), d.status()


def _mpc(tr):
    from qlab.drivers.thorlabs.mpc320 import MPC320

    return MPC320("mpc", transport=tr, limits=Limits("mpc", {}), clock=_Clock(),
                  options={"axes": {"paddle1": {"address": 1}, "paddle2": {"address": 2}}})


def _mpc_session(d) -> None:
    _motion_session_one(d, "paddle2")
    d.set_velocity_percent(50)


def _epc(tr):
    from qlab.drivers.ozoptics.epc400 import EPC400

    return EPC400("epc", transport=tr, limits=Limits("epc", {}), clock=_Clock(),
                  options={"axes": {"ch1": {"address": 1}, "ch2": {"address": 2}}})


def _epc_session(d) -> None:
    d.open()
    d.move_absolute(30.0, "ch2")
    d.position("ch1"), d.status(), d.identify()


def _abacus(tr):
    from qlab.drivers.tausand.abacus import Abacus

    return Abacus("counter", transport=tr, limits=Limits("counter", {}), clock=_Clock())


def _abacus_session(d) -> None:
    d.open()
    d.set_coincidence_window(5000)
    d.sampling_time(), d.delay(2), d.read(wait_new=False)


def _id1000(tr):
    from qlab.drivers.idquantique.id1000 import ID1000

    class NoData:
        def receive_all(self, wait_s: float = 0.0) -> list:
            return []

    return ID1000("tc", transport=tr, limits=Limits("tc", {}), clock=_Clock(), data_link=NoData())


def _id1000_session(d) -> None:
    d.open()
    d.set_delay(2, 1000)
    d.delay(2), d.trigger_level(1), d.snapshot()


def _sim(module: str, cls: str, options: dict | None = None) -> Callable[[], Any]:
    def make() -> Any:
        import importlib

        return getattr(importlib.import_module(f"qlab.drivers.{module}"), cls)(None, cls, options or {})
    return make


WIRES: dict[str, Wire] = {
    "itc4001": Wire(_itc, _sim("thorlabs.itc4001_sim", "ITC4001Simulator"), _itc_session, (b"\n", b"\n")),
    "dlcpro": Wire(_dlc, _sim("toptica.dlcpro_sim", "DLCProSimulator"), _dlc_session, (b"\n", b"\n> ")),
    "id120": Wire(_id120, _sim("idquantique.id120_sim", "ID120Simulator"), _id120_session, (b"\n", b"\n")),
    "eos": Wire(_eos, _sim("singlequantum.eos_sim", "EosSimulator", {"address": 2}), _eos_session, (b"", b"\x17")),
    "ell14": Wire(_ell14, _sim("thorlabs.ell14_sim", "ELL14Simulator", {"axes": AXES3}), _motion_session,
                  (b"", b"\r\n")),
    "k10cr1": Wire(_k10, _sim("thorlabs.k10cr1_sim", "K10CR1Simulator", {"axes": {"hwp": {"address": 1}}}),
                   _k10_session, (b"", b"")),
    "mpc320": Wire(_mpc, _sim("thorlabs.mpc320_sim", "MPC320Simulator",
                              {"axes": {"paddle1": {"address": 1}, "paddle2": {"address": 2}}}), _mpc_session,
                   (b"", b"")),
    "epc400": Wire(_epc, _sim("ozoptics.epc400_sim", "EPC400Simulator",
                              {"axes": {"ch1": {"address": 1}, "ch2": {"address": 2}}}), _epc_session,
                   (b"\r\n", b"\r\n")),
    "abacus": Wire(_abacus, _sim("tausand.abacus_sim", "AbacusSimulator"), _abacus_session, (b"", b"\n")),
}

_RECORDED: dict[str, list[bytes]] = {}


def _recorded_replies(model: str) -> list[bytes]:
    """The replies of a healthy session against the model's simulator (recorded once per test session)."""
    if model not in _RECORDED:
        w = WIRES[model]
        tr = SimLinkTransport(model, w.simulator(), write_termination=w.terms[0], read_termination=w.terms[1])
        tr.log = []
        w.session(w.driver(tr))
        _RECORDED[model] = [r for _, r in pairs_from_log(tr.log)]
    return _RECORDED[model]


def _run_scripted(model: str, replies: list[bytes]) -> None:
    w = WIRES[model]
    tr = ScriptedTransport(model, replies, write_termination=w.terms[0], read_termination=w.terms[1], timeout_s=0.01)
    with contextlib.suppress(QlabError):  # the only acceptable failure: a typed error naming the instrument
        w.session(w.driver(tr))


@st.composite
def _mutated(draw, replies: list[bytes]) -> list[bytes]:
    """The recorded replies with one (or every) reply replaced, truncated or bit-flipped."""
    out = list(replies)
    how = draw(st.sampled_from(["replace", "truncate", "flip", "all"]))
    if how == "all":
        return [draw(st.binary(max_size=64)) for _ in out]
    i = draw(st.integers(0, len(out) - 1))
    if how == "replace":
        out[i] = draw(st.binary(max_size=120))
    elif how == "truncate":
        out[i] = out[i][: draw(st.integers(0, max(len(out[i]) - 1, 0)))]
    elif out[i]:
        b = bytearray(out[i])
        j = draw(st.integers(0, len(b) - 1))
        b[j] ^= 1 << draw(st.integers(0, 7))
        out[i] = bytes(b)
    return out


@pytest.mark.parametrize("model", sorted(WIRES))
def test_wire_driver_replies_fuzzed(model: str) -> None:
    replies = _recorded_replies(model)
    _run_scripted(model, replies)  # the recorded session itself replays cleanly

    @FUZZ
    @given(_mutated(replies))
    def check(mutated: list[bytes]) -> None:
        _run_scripted(model, mutated)

    check()


def test_id1000_control_replies_fuzzed() -> None:
    from qlab.drivers.idquantique.id1000_sim import ID1000Simulator

    from qlab.transport.message import SimMessageTransport

    tr = SimMessageTransport("tc", ID1000Simulator(None, "tc"), read_termination=b"\n")
    tr.log = []
    _id1000_session(_id1000(tr))
    replies = [r for _, r in pairs_from_log(tr.log)]

    @FUZZ
    @given(_mutated(replies))
    def check(mutated: list[bytes]) -> None:
        # message framing: every reply is one line; arbitrary bytes stand for an arbitrary message
        scripted = ScriptedTransport("tc", [m.replace(b"\n", b"") + b"\n" for m in mutated], timeout_s=0.01)
        with contextlib.suppress(QlabError):
            _id1000_session(_id1000(scripted))

    check()


_frames = st.lists(st.binary(max_size=40), min_size=1, max_size=3)


@FUZZ
@given(st.lists(st.one_of(_frames, st.tuples(st.sampled_from([b"1", b"4", b"9", b"O", b"T", b"-1", b"x"]),
                                              st.binary(max_size=48)).map(list)), max_size=6))
def test_id1000_stream_fuzzed(messages: list[list[bytes]]) -> None:
    from qlab.drivers.idquantique.id1000 import ID1000

    class Data:
        def receive_all(self, wait_s: float = 0.0) -> list:
            return messages

    d = ID1000("tc", transport=ScriptedTransport("tc", [b"ID Quantique,ID1000,1,7\n"] + [b"\n"] * 20),
               limits=Limits("tc", {}), clock=_Clock(), data_link=Data())
    try:
        d.open()
        d.read_chunk()
    except QlabError:
        pass


_i64 = st.integers(-(1 << 63), (1 << 63) - 1)


@FUZZ
@given(st.integers(0, 12).flatmap(lambda n: st.tuples(
    st.lists(_i64, min_size=n, max_size=n), st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=n, max_size=n),
    st.lists(st.integers(0, 255), min_size=n, max_size=n),
    st.integers(0, 3), _i64, _i64)))
def test_swabian_stream_fuzzed(buf: tuple) -> None:
    from qlab.drivers.swabian.timetagger import SwabianTimeTagger

    ts, ch, types, cut, t0, t1 = buf

    class Buffer:
        size = len(ts)
        tStart, tGetData = t0, t1  # noqa: N815 - vendor names

        def getTimestamps(self):  # noqa: N802
            return np.array(ts, np.int64)

        def getChannels(self):  # noqa: N802
            return np.array(ch[: len(ch) - cut] if cut else ch, np.int32)

        def getEventTypes(self):  # noqa: N802
            return np.array(types, np.uint8)

        def getMissedEvents(self):  # noqa: N802
            return np.zeros(len(ts), np.uint16)

    class Stream:
        def start(self) -> None: ...

        def stop(self) -> None: ...

        def getData(self):  # noqa: N802
            return Buffer()

    class Tagger:
        def getChannelList(self, edge):  # noqa: N802
            return [1, 2, 3, 4]

    class SDK:
        ChannelEdge = type("E", (), {"Rising": 1})

        def createTimeTagger(self, serial):  # noqa: N802
            return Tagger()

        def freeTimeTagger(self, t):  # noqa: N802
            pass

        def TimeTagStream(self, tt, n, channels):  # noqa: N802
            return Stream()

    d = SwabianTimeTagger("tagger", limits=Limits("tagger", {}), clock=_Clock(), sdk=SDK(), options={"backend": "sim"})
    d.open()
    with contextlib.suppress(QlabError):
        d.read_chunk()


@FUZZ
@given(st.lists(st.integers(0, (1 << 32) - 1), max_size=64), st.integers(-5, 200))
def test_multiharp_fifo_fuzzed(records: list[int], reported: int) -> None:
    import ctypes

    from qlab.drivers.picoquant.multiharp import PicoQuantMultiHarp

    class Lib:
        def __getattr__(self, name: str):
            def call(*args):
                if name.endswith("GetBaseResolution"):
                    args[1]._obj.value = 5.0
                elif name.endswith("GetNumOfInputChannels"):
                    args[1]._obj.value = 4
                elif name.endswith("ReadFiFo"):
                    arr = np.array(records, np.uint32)
                    ctypes.memmove(args[1], arr.ctypes.data, 4 * arr.size)
                    args[2]._obj.value = reported
                return 0
            return call

    d = PicoQuantMultiHarp("tagger", limits=Limits("tagger", {}), clock=_Clock(), lib=Lib(), options={"backend": "sim"})
    d._buf = (ctypes.c_uint32 * 128)()  # a small FIFO buffer keeps the example fast
    d.open()
    try:
        d.read_chunk()
        d.read_chunk()
    except QlabError:
        pass
