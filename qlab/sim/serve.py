"""`qlab sim serve`: expose a simulated device on a pseudo-terminal or a loopback TCP port.

Any program (a terminal, the vendor's software, another library) can then talk to the simulator as if
it were hardware. The device is coupled to a simulated lab built from the given config, in real time.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import threading
import time
import tty
from typing import Any

from qlab.errors import QlabError
from qlab.transport.listen import accepted, free_port_pair


def _device(model: str, config: str | None, name: str | None) -> tuple[Any, Any]:
    """The device simulator of ``model`` (a catalogue `qlab sim` id), coupled to the instrument of that
    driver in the config (``name`` picks one) or standalone. QlabError for an unknown model or one
    simulated only at the API level."""
    from qlab.catalogue import sim_model
    from qlab.config import load_config
    from qlab.sim.model import SimLab
    from qlab.sim.registry import enable_sim_urls

    try:
        found = sim_model(model)
        sim_cls = found.load_simulator()
    except (KeyError, ValueError) as exc:
        raise QlabError(str(exc.args[0])) from None
    enable_sim_urls()
    loaded = load_config(config)
    lab = SimLab(loaded, realtime=True)
    candidates = [n for n, i in loaded.config.instruments.items()
                  if i.driver == found.driver_id and (name is None or n == name)]
    if candidates:
        inst = candidates[0]
        options = {"axes": {k: a.model_dump() for k, a in loaded.config.instruments[inst].axes.items()}}
        dev = sim_cls(lab, inst, options)
    else:
        dev = sim_cls(None, model, {})
    lab.device_sims[getattr(dev, "name", model)] = dev
    return dev, lab


def _pump(dev: Any, read_fn, write_fn, stop: threading.Event) -> None:
    while not stop.is_set():
        data = read_fn()
        if data is None:
            return
        if data:
            dev.receive(data)
        out = dev.read_due()
        if out:
            write_fn(out)


def serve_connection(dev: Any, conn: socket.socket, stop: threading.Event) -> None:
    """Talk to one connected TCP client until it leaves, the device drops it (an injected disconnect) or
    ``stop`` is set; closes the connection."""
    conn.settimeout(0.005)

    def read_sock() -> bytes | None:
        try:
            data = conn.recv(4096)
        except TimeoutError:
            return b""
        except OSError:
            return None
        return data if data else None

    with conn, contextlib.suppress(OSError):  # client gone, or an injected disconnect drops it
        dev.read_due()  # nothing queued for an earlier client reaches this one
        dev.connect()
        _pump(dev, read_sock, conn.sendall, stop)


def serve(model: str, config: str | None = None, pty: bool = False, tcp_port: int | None = None,
          name: str | None = None, ready: threading.Event | None = None,
          stop: threading.Event | None = None, fault: tuple[str, float | None] | None = None) -> int:
    """Serve ``model`` until ``stop`` or Ctrl-C. ``fault``: (kind, seconds or None) from ``--fault KIND[@SECONDS]``,
    started that many seconds after the first client connects. Raises QlabError for an unknown model or a
    missing/invalid way to serve it."""
    dev, lab = _device(model, config, name)
    stop = stop or threading.Event()
    if fault is not None:
        kind, after_s = fault
        try:
            dev.inject(kind, after_s, from_connect=True)
        except ValueError as exc:
            raise QlabError(f"--fault: {exc}") from None
        print(f"fault {kind} armed: {'at once' if not after_s else f'{after_s:g} s'} after the first client "
              "connects", file=sys.stderr)
    own_server = getattr(dev, "serve_tcp", None)  # message-framed devices (ZeroMQ) serve their own sockets
    if own_server is not None:
        if pty or tcp_port is None:
            raise QlabError(f"{model} is a network device: give --tcp PORT")
        tcp_port = tcp_port or free_port_pair("127.0.0.1")  # port 0: any free pair (control, data on +1)
        print(f"127.0.0.1:{tcp_port}", flush=True)
        print(f"simulated {model} on tcp 127.0.0.1:{tcp_port} (data on {tcp_port + 1}); Ctrl-C to stop",
              file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            own_server(tcp_port, stop, ready)
        return 0
    if pty:
        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        print(path, flush=True)
        print(f"simulated {model} on {path}; Ctrl-C to stop", file=sys.stderr)
        if ready:
            ready.set()

        def read_pty() -> bytes:
            r, _, _ = select.select([master], [], [], 0.005)
            return os.read(master, 4096) if r else b""

        try:
            _pump(dev, read_pty, lambda b: os.write(master, b), stop)
        except KeyboardInterrupt:
            pass
        except ConnectionError as exc:  # an injected disconnect: the device goes away
            print(f"{exc}; closing {path}", file=sys.stderr)
        finally:
            os.close(master)
            os.close(slave)
        return 0
    if tcp_port is None:
        raise QlabError("give --pty or --tcp PORT")
    second = getattr(dev, "serve_second_port", None)
    if second is not None and tcp_port == 0:
        tcp_port = free_port_pair("127.0.0.1")  # the second line goes on PORT + 1: both must be free
    srv = socket.create_server(("127.0.0.1", tcp_port))
    srv.settimeout(0.2)
    if second is not None:  # DLC pro monitoring line, Eos counts: PORT + 1
        threading.Thread(target=second, args=(srv.getsockname()[1] + 1, stop), daemon=True).start()
    print(f"127.0.0.1:{srv.getsockname()[1]}", flush=True)
    extra = f" (second line on {srv.getsockname()[1] + 1})" if second is not None else ""
    print(f"simulated {model} on tcp 127.0.0.1:{srv.getsockname()[1]}{extra}; Ctrl-C to stop", file=sys.stderr)
    if ready:
        ready.set()
    try:
        for conn in accepted(srv, stop):
            serve_connection(dev, conn, stop)
            time.sleep(0.01)
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
    return 0


def serve_clients(port: int, stop: threading.Event, session) -> None:
    """Accept connections on 127.0.0.1:``port`` until ``stop``; each runs ``session(conn, stop)`` in a thread."""
    srv = socket.create_server(("127.0.0.1", port))
    srv.settimeout(0.2)
    with srv:
        for conn in accepted(srv, stop):
            threading.Thread(target=session, args=(conn, stop), daemon=True).start()
