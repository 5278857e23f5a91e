"""Procedures run by the run engine: calibration runs and measurements."""

from __future__ import annotations

from qlab.procedures.chsh import ChshProcedure
from qlab.procedures.darkcounts import DarkCountsProcedure
from qlab.procedures.delays import DelaysProcedure
from qlab.procedures.demo import DemoProcedure
from qlab.procedures.engine import Procedure
from qlab.procedures.polarization import PolarizationProcedure
from qlab.procedures.qkd import QkdProcedure
from qlab.procedures.tomography import TomographyProcedure

PROCEDURES: dict[str, type[Procedure]] = {p.name: p for p in (
    DelaysProcedure, DarkCountsProcedure, PolarizationProcedure, ChshProcedure, TomographyProcedure, QkdProcedure,
    DemoProcedure)}
