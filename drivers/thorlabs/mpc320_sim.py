"""Simulated Thorlabs MPC320: three paddles on bitmask channels, 0–170° travel, POL parameters."""

from __future__ import annotations

from qlab.drivers.thorlabs.apt import POL_GET_PARAMS, POL_REQ_PARAMS, POL_SET_PARAMS, PolParams
from qlab.drivers.thorlabs.apt_sim import AptSimulator
from qlab.drivers.thorlabs.mpc320 import STEPS_PER_DEG


class MPC320Simulator(AptSimulator):
    model_id = "mpc320"
    model_name = b"MPC320"
    hw_type = 38
    counts_per_deg = STEPS_PER_DEG
    travel_deg = (0.0, 170.0)
    completed_has_status = False
    bitmask_channels = True

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.params = PolParams(0, 50, 685, 25, 25, 25)
        self.speed_deg_per_s = 400 * self.params.velocity_percent / 100

    def _other(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        if msg_id == POL_SET_PARAMS and len(data) >= PolParams.size():
            params = PolParams.unpack(data)
            if not 10 <= params.velocity_percent <= 100:
                self._error(msg_id, 0x0D, "velocity must be 10-100 %")
                return
            self.params = params
            self.speed_deg_per_s = 400 * params.velocity_percent / 100
        elif msg_id == POL_REQ_PARAMS:
            self._send(self.params.frame(POL_GET_PARAMS))
        else:
            super()._other(msg_id, p1, p2, data)
