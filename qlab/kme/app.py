"""The ETSI GS QKD 014 v1.1.1 REST interface as a FastAPI app over a KeyManager.

The calling SAE is the one whose client certificate the TLS layer verified: the server (qlab.kme.server)
puts the certificate into the ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``) and
this app maps its SHA-256 fingerprint (or, for KMEs configured by subject, its subject common name: the TLS
layer already verified it was issued by the configured CA) to an SAE ID; a CA-signed certificate that maps to
no SAE gets 401.
Errors are the spec's Error object: 400 (bad request), 401 (SAE not allowed), 503 (cannot serve).
"""

from __future__ import annotations

import ssl
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from qlab.kme.config import cert_fingerprint
from qlab.kme.manager import KeyManager
from qlab.kme.models import BadRequest, KeyIDs, KeyRequest, KmeError, Status, Unauthorized

PREFIX = "/api/v1/keys"


def subject_common_name(der: bytes) -> str | None:
    """The subject CN of a DER certificate (None if it has none or does not parse)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    return str(names[0].value) if len(names) == 1 else None


def caller_sae(request: Request, manager: KeyManager) -> str:
    """SAE ID of the client certificate of this connection. Raises Unauthorized."""
    tls = request.scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") or []
    if not chain:
        raise Unauthorized("no client certificate")
    der = ssl.PEM_cert_to_DER_cert(chain[0])
    sae = manager.config.sae_by_fingerprint.get(cert_fingerprint(der))
    if sae is None and manager.config.sae_by_subject:
        sae = manager.config.sae_by_subject.get(subject_common_name(der) or "")
    if sae is None:
        raise Unauthorized(f"the client certificate is not registered as an SAE at {manager.config.kme_id}")
    return sae


def _container(delivered: list) -> dict:
    return {"keys": [d.as_json() for d in delivered]}


def _check_extensions(req: KeyRequest) -> None:
    if req.additional_slave_SAE_IDs:
        raise BadRequest("additional_slave_SAE_IDs are not supported (max_SAE_ID_count is 0)")
    if req.extension_mandatory:
        raise BadRequest("mandatory extension not supported",
                         [{"extension_mandatory": sorted(k for e in req.extension_mandatory for k in e)}])


def create_app(manager: KeyManager) -> FastAPI:
    app = FastAPI(title=f"qlab KME {manager.config.kme_id} (ETSI GS QKD 014 v1.1.1)", docs_url=None,
                  redoc_url=None, openapi_url=None)

    @app.exception_handler(KmeError)
    async def _kme_error(request: Request, exc: KmeError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"location": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")}
                   for e in exc.errors()]
        return JSONResponse({"message": "bad request", "details": details}, status_code=400)

    # sync handlers: FastAPI runs them in its thread pool (they fsync and may wait for the peer KME)
    @app.get(PREFIX + "/{slave_SAE_ID}/status", response_model=Status, response_model_exclude_none=True)
    def status(slave_SAE_ID: str, request: Request) -> dict:  # noqa: N803 (the spec's names)
        return manager.status(caller_sae(request, manager), slave_SAE_ID)

    @app.get(PREFIX + "/{slave_SAE_ID}/enc_keys")
    def enc_keys_get(slave_SAE_ID: str, request: Request, number: int | None = None,  # noqa: N803
                     size: int | None = None) -> dict:
        return _container(manager.enc_keys(caller_sae(request, manager), slave_SAE_ID, number, size))

    @app.post(PREFIX + "/{slave_SAE_ID}/enc_keys")
    def enc_keys_post(slave_SAE_ID: str, body: KeyRequest, request: Request) -> dict:  # noqa: N803
        sae = caller_sae(request, manager)
        _check_extensions(body)
        return _container(manager.enc_keys(sae, slave_SAE_ID, body.number, body.size))

    @app.get(PREFIX + "/{master_SAE_ID}/dec_keys")
    def dec_keys_get(master_SAE_ID: str, request: Request,  # noqa: N803
                     key_ID: Annotated[list[str], Query()]) -> dict:  # noqa: N803
        return _container(manager.dec_keys(caller_sae(request, manager), master_SAE_ID, key_ID))

    @app.post(PREFIX + "/{master_SAE_ID}/dec_keys")
    def dec_keys_post(master_SAE_ID: str, body: KeyIDs, request: Request) -> dict:  # noqa: N803
        sae = caller_sae(request, manager)
        return _container(manager.dec_keys(sae, master_SAE_ID, [k.key_ID for k in body.key_IDs]))

    return app
