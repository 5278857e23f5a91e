"""Thorlabs K10CR1 motorized rotation stage (APT over serial): driver (simulator in ``k10cr1_sim.py``).

409600/3 ≈ 136533 encoder counts per degree. The stage may not move until velocity parameters are set
explicitly, so the driver sets them on open.

Config block::

    bob_analyzer:
      driver: thorlabs.k10cr1
      backend: /dev/serial/by-id/usb-Thorlabs_K10CR1-if00-port0    # or sim
      axes: {hwp: {address: 1, plate: half}}
      optics: {party: bob, stage: analyzer}
"""

from __future__ import annotations

from qlab.drivers.thorlabs.apt import (
    MOD_SET_CHANENABLESTATE,
    MOT_GET_VELPARAMS,
    MOT_REQ_VELPARAMS,
    MOT_SET_VELPARAMS,
    AptController,
    Frame,
    VelocityParams,
)

COUNTS_PER_DEG = 409600 / 3
VEL_PER_DEG_S = 7329109  # device velocity units per °/s
ACC_PER_DEG_S2 = 1502  # device acceleration units per °/s²


class K10CR1(AptController):
    model = "Thorlabs K10CR1"
    counts_per_deg = COUNTS_PER_DEG
    model_prefix = "K10CR1"
    velocity_deg_s = 10.0
    acceleration_deg_s2 = 10.0

    def _configure(self) -> None:
        for ax in self.axes():
            ch = self._chan(ax)
            self.send(Frame(MOD_SET_CHANENABLESTATE, p1=ch, p2=1))
            params = VelocityParams(ch, 0, int(self.acceleration_deg_s2 * ACC_PER_DEG_S2),
                                    int(self.velocity_deg_s * VEL_PER_DEG_S))
            self.send(params.frame(MOT_SET_VELPARAMS))

    def velocity_params(self, axis: str | None = None) -> tuple[float, float]:
        """(max velocity °/s, acceleration °/s²) as the stage reports them. Raises InstrumentError (device
        error, unknown axis), ProtocolError, InstrumentTimeout."""
        f = self.query(Frame(MOT_REQ_VELPARAMS, p1=self._chan(self._axis(axis))), MOT_GET_VELPARAMS)
        params = self.decode(VelocityParams, f)
        return params.max_velocity / VEL_PER_DEG_S, params.acceleration / ACC_PER_DEG_S2
