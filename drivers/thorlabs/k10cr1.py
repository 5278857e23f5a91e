"""Thorlabs K10CR1 motorized rotation stage (APT over serial): driver and simulator.

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

import struct

from qlab.drivers.thorlabs.apt import (
    MOD_SET_CHANENABLESTATE,
    MOT_GET_VELPARAMS,
    MOT_REQ_VELPARAMS,
    MOT_SET_VELPARAMS,
    AptController,
    AptSimulator,
    Frame,
)

COUNTS_PER_DEG = 409600 / 3
VEL_PER_DEG_S = 7329109
ACC_PER_DEG_S2 = 1502


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
            data = struct.pack("<Hiii", ch, 0, int(self.acceleration_deg_s2 * ACC_PER_DEG_S2),
                               int(self.velocity_deg_s * VEL_PER_DEG_S))
            self.send(Frame(MOT_SET_VELPARAMS, data=data))

    def velocity_params(self, axis: str | None = None) -> tuple[float, float]:
        """(max velocity °/s, acceleration °/s²) as the stage reports them."""
        f = self.query(Frame(MOT_REQ_VELPARAMS, p1=self._chan(self._axis(axis))), MOT_GET_VELPARAMS)
        _, _, acc, vmax = struct.unpack("<Hiii", f.data[:14])
        return vmax / VEL_PER_DEG_S, acc / ACC_PER_DEG_S2


class K10CR1Simulator(AptSimulator):
    model_id = "k10cr1"
    model_name = b"K10CR1"
    hw_type = 44
    counts_per_deg = COUNTS_PER_DEG
    speed_deg_per_s = 0.0  # until velocity parameters are set: the stage's known "no move" quirk

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.vel = {c: (0, 0, 0) for c in self.axis_of}

    def _start_move(self, chan: int, target: int, completion: int) -> None:
        vmax = self.vel[chan][2] / VEL_PER_DEG_S
        if vmax <= 0:
            return  # the real stage sits still and never reports completion
        self.speed_deg_per_s = vmax
        super()._start_move(chan, target, completion)

    def _other(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        if msg_id == MOT_SET_VELPARAMS and len(data) >= 14:
            chan, vmin, acc, vmax = struct.unpack("<Hiii", data[:14])
            if chan in self.axis_of:
                self.vel[chan] = (vmin, acc, vmax)
        elif msg_id == MOT_REQ_VELPARAMS:
            c = p1 if p1 in self.axis_of else next(iter(self.axis_of))
            self._send(Frame(MOT_GET_VELPARAMS, data=struct.pack("<Hiii", c, *self.vel[c])))
        else:
            super()._other(msg_id, p1, p2, data)


K10CR1.simulator_class = K10CR1Simulator
