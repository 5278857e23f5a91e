"""One KME assembled from its configuration: key store, journal, key manager, peer link (server and client)
and the HTTPS server. Used by ``qlab kme serve`` and the tests; a network node builds the same pieces over its
link key store in qlab.network.kme_node (``qlab node NAME --kme``)."""

from __future__ import annotations

from typing import Any

from qlab.kme.app import create_app
from qlab.kme.config import KmeConfig
from qlab.kme.journal import Journal
from qlab.kme.manager import KeyManager
from qlab.kme.peer import PeerServer, TcpPeerLink, load_psk
from qlab.kme.server import HttpsServer
from qlab.qkd.keystore import KeyStore


class KmeService:
    """``store``: the key store to deliver from (default: ``config.key_store`` opened as a KeyStore; a node
    passes its link store's view); ``psk``: the KME link key (default: read from ``config.peer.psk_file``)."""

    def __init__(self, config: KmeConfig, store: Any = None, psk: bytes | None = None):
        self.config = config
        self.psk = psk
        store = store if store is not None else KeyStore(config.key_store)
        self.manager = KeyManager(config, store, Journal(config.journal))
        self.app = create_app(self.manager)
        self.peer_server: PeerServer | None = None
        self.https: HttpsServer | None = None

    def start(self, flush_now: bool = True) -> KmeService:
        """Start the peer link and the HTTPS server in background threads; returns once HTTPS accepts
        connections. With ``flush_now``, releases the peer has not acknowledged are sent now if it is up (else
        with the next request). Raises PeerUnavailable (link key unreadable), OSError (port in use),
        RuntimeError."""
        c = self.config
        try:
            if c.peer is not None:
                psk = self.psk if self.psk is not None else load_psk(c.peer.psk_file)
                self.peer_server = PeerServer(self.manager.handle_peer, *c.peer.listen, psk).start()
                self.manager.peer = TcpPeerLink(*c.peer.connect, psk, c.peer.timeout_s)
            self.https = HttpsServer(self.app, *c.listen, c.tls).start()
        except BaseException:
            self.stop()  # what did start (the peer server) stops: nothing keeps its port or threads
            raise
        if flush_now:
            self.manager.flush_releases()
        return self

    def stop(self) -> None:
        if self.https is not None:
            self.https.stop()
        if self.peer_server is not None:
            self.peer_server.stop()
        if self.manager.peer is not None:
            self.manager.peer.close()
