"""Scenario physics for the network emulator: the sim-side API that changes a running SimLab's link.

The emulator's scenario runner (``qlab.network.scenario``) calls these; nodes never do (they only see the
consequences through their instruments). Every change first generates the physics up to now with the old
settings (``SimLab._catch_up``), like the device-facing setters. Losses in dB, angles in radians inside,
rates in Hz.
"""

from __future__ import annotations

import math

import numpy as np

from qlab.sim.model import SimLab


class NetworkPhysics:
    """Link-level knobs of one SimLab: the far node's fibre (loss, cut, polarization), detectors, source, Eve."""

    def __init__(self, sim: SimLab, far_party: str):
        self.sim = sim
        self.far = far_party
        self.base_transmission = float(sim.optics.fibre_transmission[far_party])
        self.base_pairs_per_mw = float(sim.optics.source.pairs_per_mw)
        self.base_efficiency = {n: float(d.efficiency) for n, d in sim.detectors.items()}
        self.extra_loss_db = 0.0
        self.cut = False

    def _change(self) -> None:
        self.sim.streams.dirty = True

    def _apply_transmission(self) -> None:
        t = 0.0 if self.cut else self.base_transmission * 10 ** (-self.extra_loss_db / 10)
        self.sim.optics.fibre_transmission[self.far] = t

    def set_extra_loss_db(self, db: float) -> None:
        """Loss added to the link fibre (≥ 0 dB) on top of its configured transmission."""
        with self.sim._lock:  # noqa: SLF001 - the sim-side owner of the lab's lock
            self.sim._catch_up()  # noqa: SLF001
            self.extra_loss_db = max(0.0, float(db))
            self._apply_transmission()
            self._change()

    def set_cut(self, cut: bool) -> None:
        """The link fibre is cut (no photon reaches the far node) or whole again."""
        with self.sim._lock:  # noqa: SLF001
            self.sim._catch_up()  # noqa: SLF001
            self.cut = bool(cut)
            self._apply_transmission()
            self._change()

    def set_drift_rate(self, rad_per_sqrt_s: float) -> None:
        """The link fibre's polarization random-walk rate (rad/√s on the Poincaré sphere)."""
        with self.sim._lock:  # noqa: SLF001
            self.sim._catch_up()  # noqa: SLF001
            self.sim.optics.fibre_drift[self.far] = max(0.0, float(rad_per_sqrt_s))
            self._change()

    def rotate(self, axis: list[float], angle_rad: float) -> None:
        """Turn the link fibre's polarization by ``angle_rad`` about ``axis`` (Poincaré sphere; σx, σy, σz)."""
        a = np.asarray(axis, float)
        n = np.linalg.norm(a)
        if n == 0:
            raise ValueError("rotation axis must not be zero")
        with self.sim._lock:  # noqa: SLF001
            self.sim._catch_up()  # noqa: SLF001
            self.sim.optics.fibre_walk[self.far] = self.sim.optics.fibre_walk[self.far] + a / n * float(angle_rad)
            self._change()

    def set_detector(self, name: str, efficiency_scale: float | None = None,
                     dark_count_hz: float | None = None) -> None:
        """Scale a detector's efficiency (relative to its configured value) or set its dark-count rate.
        Raises KeyError for an unknown detector."""
        with self.sim._lock:  # noqa: SLF001
            self.sim._catch_up()  # noqa: SLF001
            det = self.sim.detectors[name]
            if efficiency_scale is not None:
                det.efficiency = self.base_efficiency[name] * float(efficiency_scale)
            if dark_count_hz is not None:
                det.p = det.p.model_copy(update={"dark_count_hz": float(dark_count_hz)})
            self._change()

    def set_source_scale(self, scale: float) -> None:
        """Pair rate relative to the configured source (pump power change)."""
        with self.sim._lock:  # noqa: SLF001
            self.sim._catch_up()  # noqa: SLF001
            self.sim.optics.source.pairs_per_mw = self.base_pairs_per_mw * max(0.0, float(scale))
            self._change()

    def set_eavesdropper(self, on: bool) -> None:
        """An intercept-resend eavesdropper on the link (random bases) on or off."""
        self.sim.eavesdropper = "intercept_resend" if on else "none"

    def describe(self) -> dict[str, float | bool]:
        return {"extra_loss_db": self.extra_loss_db, "cut": self.cut,
                "transmission": float(self.sim.optics.fibre_transmission[self.far]),
                "drift_rad_per_sqrt_s": float(self.sim.optics.fibre_drift[self.far]),
                "walk_angle_rad": float(math.fsum(self.sim.optics.fibre_walk[self.far] ** 2) ** 0.5),
                "eavesdropper": self.sim.eavesdropper}
