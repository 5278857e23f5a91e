"""Registers the ``qlabsim://`` pyserial URL handler (imported by the serial and VISA transports)."""

import serial

if "qlab.sim.urlhandlers" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("qlab.sim.urlhandlers")
