"""Thorlabs MPC320 motorized fibre polarization controller (three paddles, APT over serial).

Paddles are addressed by the bitmask 0x01/0x02/0x04; positions are 1370 steps per 170°, range 0–170°.
Moves are reported complete by a header-only MOVE_COMPLETED.

Config block::

    bob_compensator:
      driver: thorlabs.mpc320
      backend: sim
      axes: {paddle1: {address: 1, plate: quarter}, paddle2: {address: 2, plate: half},
             paddle3: {address: 4, plate: quarter}}
      optics: {party: bob, stage: compensator}
      limits: {position_deg: {min: 0, max: 170}}
"""

from __future__ import annotations

import struct

from qlab.drivers.thorlabs.apt import POL_GET_PARAMS, POL_REQ_PARAMS, POL_SET_PARAMS, AptController, AptSimulator, Frame

STEPS_PER_DEG = 1370 / 170


class MPC320(AptController):
    model = "Thorlabs MPC320"
    counts_per_deg = STEPS_PER_DEG
    model_prefix = "MPC"

    def _configure(self) -> None:
        self.pol_params = self.query(Frame(POL_REQ_PARAMS), POL_GET_PARAMS).data

    def set_velocity_percent(self, percent: int) -> None:
        _, _, home, j1, j2, j3 = struct.unpack("<HHHHHH", self.pol_params[:12])
        self.send(Frame(POL_SET_PARAMS, data=struct.pack("<HHHHHH", 0, int(percent), home, j1, j2, j3)))
        self.pol_params = self.query(Frame(POL_REQ_PARAMS), POL_GET_PARAMS).data


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
        self.params = [0, 50, 685, 25, 25, 25]  # velocity % of 400 °/s, home position, jog steps
        self.speed_deg_per_s = 400 * self.params[1] / 100

    def _other(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        if msg_id == POL_SET_PARAMS and len(data) >= 12:
            values = list(struct.unpack("<HHHHHH", data[:12]))
            if not 10 <= values[1] <= 100:
                self._error(msg_id, 0x0D, "velocity must be 10-100 %")
                return
            self.params = values
            self.speed_deg_per_s = 400 * values[1] / 100
        elif msg_id == POL_REQ_PARAMS:
            self._send(Frame(POL_GET_PARAMS, data=struct.pack("<HHHHHH", *self.params)))
        else:
            super()._other(msg_id, p1, p2, data)


MPC320.simulator_class = MPC320Simulator
