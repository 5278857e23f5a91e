"""Simulated Thorlabs K10CR1: the APT frames of the stage, including its refusal to move before velocity
parameters are set."""

from __future__ import annotations

from qlab.drivers.thorlabs.apt import MOT_GET_VELPARAMS, MOT_REQ_VELPARAMS, MOT_SET_VELPARAMS, VelocityParams
from qlab.drivers.thorlabs.apt_sim import AptSimulator
from qlab.drivers.thorlabs.k10cr1 import COUNTS_PER_DEG, VEL_PER_DEG_S


class K10CR1Simulator(AptSimulator):
    model_id = "k10cr1"
    model_name = b"K10CR1"
    hw_type = 44
    counts_per_deg = COUNTS_PER_DEG
    speed_deg_per_s = 0.0  # until velocity parameters are set: the stage's known "no move" quirk

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.vel = {c: VelocityParams(c, 0, 0, 0) for c in self.axis_of}

    def _start_move(self, chan: int, target: int, completion: int) -> None:
        vmax = self.vel[chan].max_velocity / VEL_PER_DEG_S
        if vmax <= 0:
            return  # the real stage sits still and never reports completion
        self.speed_deg_per_s = vmax
        super()._start_move(chan, target, completion)

    def _other(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        if msg_id == MOT_SET_VELPARAMS and len(data) >= VelocityParams.size():
            params = VelocityParams.unpack(data)
            if params.channel in self.axis_of:
                self.vel[params.channel] = params
        elif msg_id == MOT_REQ_VELPARAMS:
            c = p1 if p1 in self.axis_of else next(iter(self.axis_of))
            current = self.vel[c]
            reply = VelocityParams(c, current.min_velocity, current.acceleration, current.max_velocity)
            self._send(reply.frame(MOT_GET_VELPARAMS))
        else:
            super()._other(msg_id, p1, p2, data)
