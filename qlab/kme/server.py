"""uvicorn over HTTPS with mutual TLS, in a background thread or in the foreground.

The TLS layer requires a client certificate signed by the configured CA (``ssl.CERT_REQUIRED``): a client
without one, or with one from another CA, fails the handshake and never reaches the app. uvicorn's ASGI scope
does not carry the peer certificate, so the HTTP protocol class here (a subclass of uvicorn's h11 protocol;
it relies on its ``app`` attribute, present since uvicorn 0.13) adds the ASGI TLS extension
``scope["extensions"]["tls"] = {"client_cert_chain": [PEM], "tls_version": ...}`` per connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from qlab.kme.config import TlsFiles


class ClientCertH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
               "tls_version": ssl_object.version() if ssl_object is not None else None}
        app = self.app

        async def app_with_tls(scope: Any, receive: Any, send: Any) -> None:
            scope = dict(scope)
            scope["extensions"] = {**scope.get("extensions", {}), "tls": tls}
            await app(scope, receive, send)

        self.app = app_with_tls


class HttpsServer:
    """One uvicorn server for ``app`` on ``host:port`` (port 0: any free port; ``address`` tells which)."""

    def __init__(self, app: Any, host: str, port: int, tls: TlsFiles):
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it every response
        # (headers and body are separate TLS records) waits ~40 ms for the client's delayed ACK
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                                   socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", http=ClientCertH11Protocol,
                                ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key), ssl_ca_certs=str(tls.ca),
                                ssl_cert_reqs=ssl.CERT_REQUIRED, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 15.0) -> HttpsServer:
        """Serve in a daemon thread; returns once it accepts connections. Raises RuntimeError on timeout."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="kme-https", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the KME HTTPS server on {self.address[0]}:{self.address[1]} did not start")
            time.sleep(0.02)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (SIGINT/SIGTERM)."""
        self._server.run(sockets=[self._sock])

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._sock.close()
