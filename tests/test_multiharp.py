"""PicoQuant MultiHarp and HydraHarp: T2 FIFO records (with overflows) decoded by the driver; the lab runs on
both through their (simulated) vendor libraries."""

from __future__ import annotations

import numpy as np
import pytest

from qlab.errors import InstrumentError


def test_t2_decoder_matches_an_independent_encoder() -> None:
    from qlab.drivers.picoquant.multiharp import decode_t2

    from qlab.storage.ptu import encode_t2

    rng = np.random.default_rng(3)
    t = np.cumsum(rng.integers(1, 5 * 2**25, 5000)).astype(np.int64)  # gaps spanning several wraps
    ch = rng.integers(0, 8, 5000)
    records = encode_t2(t, ch)
    assert records.size > t.size  # overflow records are present
    # Decoding in arbitrary pieces carries the overflow count across reads.
    out_t, out_c, ofl = [], [], 0
    for part in np.array_split(records, 7):
        tt, cc, ofl = decode_t2(part, ofl)
        out_t.append(tt)
        out_c.append(cc)
    assert np.array_equal(np.concatenate(out_t), t) and np.array_equal(np.concatenate(out_c), ch)


def _picoquant(driver: str):
    def edit(cfg) -> None:
        from tests.simlab_helpers import ideal_fibres

        ideal_fibres(cfg)
        cfg["instruments"]["tagger"] = {"driver": f"picoquant.{driver}", "backend": "sim",
                                        "limits": {"delay_ps": {"min": -200000, "max": 200000}},
                                        "settings": {"trigger_levels_v": {i: 0.5 for i in range(1, 9)}}}
    return edit


MODELS = [("multiharp", "MultiHarp", 5), ("hydraharp", "HydraHarp", 1)]  # driver id, model name, base res. ps


@pytest.mark.parametrize(("driver", "model", "resolution_ps"), MODELS)
def test_lab_on_a_picoquant_tagger(make_lab, driver: str, model: str, resolution_ps: int) -> None:
    from qlab.procedures.delays import DelaysProcedure
    from qlab.procedures.engine import RunEngine

    lab = make_lab(_picoquant(driver), seed=81)
    lib = lab.sim.device_sims["tagger"]
    seen = {"records": 0, "overflows": 0}
    original = lib._encode

    def spy(*a):
        rec = original(*a)
        seen["records"] += rec.size
        seen["overflows"] += int(((rec >> 31) & 1).astype(bool).sum())
        return rec

    lib._encode = spy
    assert model in lab["tagger"].identify()
    r = RunEngine(lab).run(DelaysProcedure(), record=False)
    cable = {1: 0, 2: 1200, 3: 2500, 4: 3700, 5: 15200, 6: 16100, 7: 17400, 8: 18900}
    for ch, d in cable.items():
        assert abs(r["delays_ps"][str(ch)] - d) < 100
    assert seen["overflows"] > 0 and seen["records"] > 100_000
    lab["pump"].set_output(True)
    chunk = lab["tagger"].acquire(0.5)
    assert np.all(np.diff(chunk.timestamps) >= 0) and np.all(chunk.timestamps % resolution_ps == 0)
    assert resolution_ps == 1 or np.any(chunk.timestamps % 10 == 5)  # really on the model's own grid
    assert set(np.unique(chunk.channels)) == set(range(1, 9))


@pytest.mark.parametrize("prefix", ["MH", "HH"])
def test_vendor_error_codes_become_typed_errors(make_lab, prefix: str) -> None:
    lab = make_lab(_picoquant({"MH": "multiharp", "HH": "hydraharp"}[prefix]), seed=82)
    with pytest.raises(InstrumentError, match=f"{prefix}_SetInputChannelOffset failed: -5 {prefix}_ERROR_INVALID_ARG"):
        lab["tagger"].set_delay(1, 150_000)  # within qlab's limits, beyond the device's ±99999 ps


def test_hydraharp_library_conventions(make_lab) -> None:
    """What differs from the MultiHarp: calibration before measuring, CFD inputs, ReadFiFo's count."""
    import ctypes

    from qlab.drivers.picoquant.multiharp_sim import SimulatedHHLib

    lab = make_lab(_picoquant("hydraharp"), seed=83)
    lib = SimulatedHHLib(lab.sim, "tagger")
    assert lib.HH_Initialize(0, 2, 0) == 0
    assert lib.HH_StartMeas(0, 1000) == -37  # not calibrated
    assert lib.HH_Calibrate(0) == 0 and lib.HH_StartMeas(0, 1000) == 0
    buf, n = (ctypes.c_uint32 * 262_144)(), ctypes.c_int()
    assert lib.HH_ReadFiFo(0, buf, 262_144, ctypes.byref(n)) == -5  # above TTREADMAX (131072)
    assert lib.HH_ReadFiFo(0, buf, 1000, ctypes.byref(n)) == -5  # not a multiple of 128
    assert lib.HH_ReadFiFo(0, buf, 256, ctypes.byref(n)) == 0 and n.value <= 256
    assert lib.HH_SetInputCFD(0, 0, 1500, 10) == -5  # CFD level beyond 1000 mV
    with pytest.raises(InstrumentError, match="HH_SetInputCFD failed"):
        lab["tagger"].set_trigger_level(2, 1.2)  # the driver reports the library's refusal by name
