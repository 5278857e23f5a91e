"""Key delivery to applications: an ETSI GS QKD 014 v1.1.1 key management entity (KME) per node.

Modules: ``config`` (KmeConfig, YAML loading), ``models`` (the spec's JSON objects), ``journal`` (write-ahead
journal), ``manager`` (KeyManager: reservations over committed key-store ranges, the master/slave protocol
between two KMEs, crash recovery), ``peer`` (PeerLink interface, HMAC-authenticated TCP link and its server,
in-process loopback link), ``app`` (the FastAPI app), ``server`` (uvicorn over mutual TLS, client certificate
to SAE ID), ``service`` (one KME assembled from a config), ``pki`` (a small CA and certificates), ``cli``
(``qlab pki init``, ``qlab kme serve``), ``netconfig`` (the ``kme:`` section of a node in network.yaml).
A network node serves its KME with qlab.network.kme_node (``qlab node NAME --kme``).
"""
