"""The JSON objects of ETSI GS QKD 014 v1.1.1 (section 6) and the KME's typed errors.

Field names follow the spec exactly (``key_ID``, ``slave_SAE_ID`` ...). Extensions the KME does not define are
accepted when optional and refused with 400 when mandatory, as the spec requires.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from qlab.errors import QlabError


class Status(BaseModel):
    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int  # default key size, bits
    stored_key_count: int  # keys of key_size the store can still serve
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int  # additional slave SAEs per request (0: none supported)
    status_extension: dict[str, Any] | None = None


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int | None = None
    size: int | None = None
    additional_slave_SAE_IDs: list[str] | None = None
    extension_mandatory: list[dict[str, Any]] | None = None
    extension_optional: list[dict[str, Any]] | None = None


class KeyIdItem(BaseModel):
    key_ID: str
    key_ID_extension: dict[str, Any] | None = None


class KeyIDs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_IDs: list[KeyIdItem]
    key_IDs_extension: dict[str, Any] | None = None


class Key(BaseModel):
    key_ID: str  # UUID
    key_ID_extension: dict[str, Any] | None = None
    key: str  # base64
    key_extension: dict[str, Any] | None = None


class KeyContainer(BaseModel):
    keys: list[Key]
    key_container_extension: dict[str, Any] | None = None


class Error(BaseModel):
    message: str
    details: list[dict[str, Any]] | None = None


class KmeError(QlabError):
    """An ETSI 014 error response: HTTP ``status`` with an Error object."""

    status = 500

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        self.message, self.details = message, details
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return Error(message=self.message, details=self.details).model_dump(exclude_none=True)


class BadRequest(KmeError):
    status = 400


class Unauthorized(KmeError):
    status = 401


class Unavailable(KmeError):
    status = 503
