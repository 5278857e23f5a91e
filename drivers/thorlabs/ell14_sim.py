"""Simulated Thorlabs Elliptec bus: one ELL14 per configured axis, replies byte-for-byte as the manual
shows; positions drive waveplates in the simulated lab."""

from __future__ import annotations

from typing import Any

from qlab.drivers.thorlabs.ell14 import PULSES_PER_REV, from_hex32, to_hex32

from qlab.sim.device import DeviceSimulator


class _Mount:
    def __init__(self, serial: str):
        self.serial = serial
        self.pulses = 0
        self.target = 0
        self.move_start = 0.0
        self.move_end = 0.0
        self.from_pulses = 0
        self.error = 0
        self.velocity = 100
        self.jog = 0x00000B33  # ~ 1 deg... vendor default jog step, in pulses
        self.home_offset = 0


class ELL14Simulator(DeviceSimulator):
    """An Elliptec bus with one ELL14 per configured axis; positions drive waveplates in the SimLab."""

    model_id = "ell14"
    frame_end = b"\r\n"
    speed_deg_per_s = 430.0  # full speed (100 %) rotation

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        axes = self.options.get("axes") or {"0": {"address": 0}}
        self.mounts: dict[str, _Mount] = {}
        self.axis_of: dict[str, str] = {}
        for i, (ax, spec) in enumerate(axes.items()):
            addr = spec.get("address", i)
            addr = f"{int(addr, 16) if isinstance(addr, str) else int(addr):X}"
            self.mounts[addr] = _Mount(f"1140{0x500 + i:04X}")
            self.axis_of[addr] = ax
        for addr in self.mounts:
            self._couple(addr)

    def _deg(self, m: _Mount) -> float:
        return m.pulses * 360.0 / PULSES_PER_REV

    def _couple(self, addr: str) -> None:
        if self.lab is not None:
            self.lab.set_waveplate(self.name, self.axis_of[addr], self._deg(self.mounts[addr]))

    def _settle(self, m: _Mount) -> None:
        if m.move_end and self.clock.now() >= m.move_end:
            m.pulses = m.target
            m.move_end = 0.0

    def _busy(self, m: _Mount) -> bool:
        self._settle(m)
        return bool(m.move_end)

    def _start_move(self, addr: str, target: int) -> None:
        m = self.mounts[addr]
        if self._busy(m):
            # Quirk of the real device: a move sent while moving is ignored (reported as busy).
            self.reply(f"{addr}GS09\r\n".encode())
            return
        speed = self.speed_deg_per_s * max(m.velocity, 10) / 100.0
        duration = 0.05 + abs(target - m.pulses) * 360.0 / PULSES_PER_REV / speed
        m.from_pulses, m.target = m.pulses, target
        m.move_start, m.move_end = self.clock.now(), self.clock.now() + duration
        # The optics follow the final position; the reply arrives when the move completes.
        m.pulses = target
        self._couple(addr)
        m.pulses = m.from_pulses
        self.reply(f"{addr}PO{to_hex32(target)}\r\n".encode(), duration)

    def handle(self) -> None:
        buf = self.inbuf
        while len(buf) >= 3:
            addr, cmd = chr(buf[0]).upper(), bytes(buf[1:3]).decode("ascii", "replace")
            need = {"ma": 8, "mr": 8, "sj": 8, "so": 8, "sv": 2, "ho": 1, "ca": 1}.get(cmd, 0)
            if len(buf) < 3 + need:
                return
            data = bytes(buf[3:3 + need]).decode("ascii", "replace")
            del buf[:3 + need]
            m = self.mounts.get(addr)
            if m is None:
                continue  # no device at that address: silence, as on a real bus
            if self.device_error_active:
                self.reply(f"{addr}GS0B\r\n".encode())  # status 11: motor error (fault injection)
                continue
            self._command(addr, m, cmd, data)

    def _command(self, addr: str, m: _Mount, cmd: str, data: str) -> None:
        ok = f"{addr}GS00\r\n".encode()
        try:
            if cmd == "in":
                self.reply(f"{addr}IN0E{m.serial}20231701{360:04X}{PULSES_PER_REV:08X}\r\n".encode())
            elif cmd == "gs":
                code = 9 if self._busy(m) else m.error
                m.error = 0
                self.reply(f"{addr}GS{code:02X}\r\n".encode())
            elif cmd == "gp":
                self._settle(m)
                pos = m.pulses
                if m.move_end:
                    frac = (self.clock.now() - m.move_start) / (m.move_end - m.move_start)
                    pos = round(m.from_pulses + frac * (m.target - m.from_pulses))
                self.reply(f"{addr}PO{to_hex32(pos)}\r\n".encode())
            elif cmd == "ma":
                self._start_move(addr, from_hex32(data))
            elif cmd == "mr":
                self._settle(m)
                self._start_move(addr, m.pulses + from_hex32(data))
            elif cmd == "ho":
                if data not in "01":
                    raise ValueError(data)
                self._settle(m)
                self._start_move(addr, m.home_offset)
            elif cmd in ("fw", "bw"):
                self._settle(m)
                self._start_move(addr, m.pulses + (m.jog if cmd == "fw" else -m.jog))
            elif cmd == "gv":
                self.reply(f"{addr}GV{m.velocity:02X}\r\n".encode())
            elif cmd == "sv":
                v = int(data, 16)
                if not 0 < v <= 100:
                    m.error = 4
                    self.reply(f"{addr}GS04\r\n".encode())
                    return
                m.velocity = v
                self.reply(ok)
            elif cmd == "gj":
                self.reply(f"{addr}GJ{to_hex32(m.jog)}\r\n".encode())
            elif cmd == "sj":
                m.jog = from_hex32(data)
                self.reply(ok)
            elif cmd == "go":
                self.reply(f"{addr}HO{to_hex32(m.home_offset)}\r\n".encode())
            elif cmd == "so":
                m.home_offset = from_hex32(data)
                self.reply(ok)
            elif cmd == "ca":
                new = data.upper()
                int(new, 16)
                self.mounts[new] = self.mounts.pop(addr)
                self.axis_of[new] = self.axis_of.pop(addr)
                self.reply(f"{new}GS00\r\n".encode())
            elif cmd == "us":
                self.reply(ok)
            else:
                m.error = 3
                self.reply(f"{addr}GS03\r\n".encode())
                self.inbuf.clear()  # the device drops the rest of a command it does not know
        except ValueError:
            m.error = 4
            self.reply(f"{addr}GS04\r\n".encode())

    # -- test hooks ------------------------------------------------------------------------------------------
    def position_deg(self, axis_address: str = "0") -> float:
        m = self.mounts[axis_address]
        self._settle(m)
        return self._deg(m)
