"""Thorlabs MPC320 motorized fibre polarization controller (three paddles, APT over serial): driver
(simulator in ``mpc320_sim.py``).

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

import dataclasses

from qlab.drivers.thorlabs.apt import POL_GET_PARAMS, POL_REQ_PARAMS, POL_SET_PARAMS, AptController, Frame, PolParams

STEPS_PER_DEG = 1370 / 170


class MPC320(AptController):
    model = "Thorlabs MPC320"
    counts_per_deg = STEPS_PER_DEG
    model_prefix = "MPC"

    def _configure(self) -> None:
        self.pol_params = self.query(Frame(POL_REQ_PARAMS), POL_GET_PARAMS).data  # raw POL_GET_PARAMS data

    def set_velocity_percent(self, percent: int) -> None:
        """Paddle speed in % of 400 °/s (the device takes 10–100). A refused value raises InstrumentError
        (reported with the next reply); ProtocolError, InstrumentTimeout on a bad or missing reply."""
        current = self.decode(PolParams, Frame(POL_GET_PARAMS, data=self.pol_params))
        self.send(dataclasses.replace(current, unused=0, velocity_percent=int(percent)).frame(POL_SET_PARAMS))
        self.pol_params = self.query(Frame(POL_REQ_PARAMS), POL_GET_PARAMS).data
