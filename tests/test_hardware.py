"""Opt-in hardware checks for every supported model (skipped unless --hardware MODEL=RESOURCE is given).

Read-only: open, identify, snapshot, close. Lasers are never switched on here.
Example: pytest tests/test_hardware.py --hardware ell14=/dev/ttyUSB0 --hardware itc4001=USB0::0x1313::0x804A::M0::INSTR
"""

from __future__ import annotations

import pytest

from qlab.catalogue import SIM_MODELS


@pytest.mark.hardware
@pytest.mark.parametrize("model", sorted(SIM_MODELS))
def test_model_on_hardware(request, model: str) -> None:
    resources = dict(r.split("=", 1) for r in request.config.getoption("--hardware"))
    if model not in resources:
        pytest.skip(f"pass --hardware {model}=RESOURCE to run")
    from qlab.config.schema import InstrumentConfig
    from qlab.instruments.factory import create_instrument

    cfg = InstrumentConfig(driver=SIM_MODELS[model].driver_id, backend=resources[model])
    inst = create_instrument(f"hw_{model}", cfg, None)
    with inst:
        assert inst.identify()
        snap = inst.snapshot()
        assert all("value" in v and "unit" in v for v in snap.values())
