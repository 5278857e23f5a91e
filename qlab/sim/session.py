"""What a ``Lab`` holds of its simulation: the simulated lab, its clock, the truth report and the few
simulation-only services. The factory builds it (``qlab.instruments.factory.create_simulation``); the lab
talks to the simulation only through these methods, so nothing outside ``qlab/sim`` imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qlab.config.loader import LoadedConfig
from qlab.errors import QlabError


def _bb84_transmitter(sim: Any) -> Any:
    from qlab.sim.wcp import SimulatedBb84Transmitter

    return SimulatedBb84Transmitter(sim)


# Equipment qlab has no driver for and that exists only in simulation; name -> builder taking the SimLab.
SERVICES: dict[str, Callable[[Any], Any]] = {"bb84_transmitter": _bb84_transmitter}


class SimulationSession:
    def __init__(self, loaded: LoadedConfig, realtime: bool | None = None, seed: int | None = None):
        from qlab.sim.model import SimLab

        self.lab = SimLab(loaded, realtime=realtime, seed=seed)
        self._services: dict[str, Any] = {}

    @property
    def clock(self) -> Any:
        """The simulated clock (simulated seconds; follows the wall clock only in realtime mode)."""
        return self.lab.clock

    def service(self, name: str) -> Any:
        """The simulation-only equipment ``name`` (one instance per session). Raises QlabError naming the
        known services for an unknown name."""
        if name not in self._services:
            if name not in SERVICES:
                raise QlabError(f"the simulated lab has no service {name!r}; it has {sorted(SERVICES)}")
            self._services[name] = SERVICES[name](self.lab)
        return self._services[name]

    def report(self) -> dict[str, Any]:
        """The simulation's truth now, plus each used service's own truth under its name."""
        from qlab.sim.truth import simulation_truth

        out = simulation_truth(self.lab)
        for name, svc in self._services.items():
            truth = getattr(svc, "truth", None)
            extra = truth() if truth is not None else {}
            if extra:
                out[name] = extra
        return out

    def close(self) -> None:
        """The closed lab's devices leave the qlabsim:// registry (a later lab could reuse the names)."""
        from qlab.sim.registry import unregister_lab

        unregister_lab(self.lab)
