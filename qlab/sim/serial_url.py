"""Registers the ``qlabsim://`` pyserial URL handler on import (``qlab.sim.registry.enable_sim_urls``).

pyvisa-py opens ASRL resources through pyserial, so ``ASRLqlabsim://MODEL::INSTR`` works too.
"""

import serial

if "qlab.sim.urlhandlers" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("qlab.sim.urlhandlers")
