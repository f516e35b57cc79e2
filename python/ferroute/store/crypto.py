"""`reasoning.encrypted_content` for clients that store nothing (`store: false`).

The router seals a reasoning item's text (raw `content` and `summary`, and the upstream's own
`encrypted_content` where it gave one, such as Anthropic's thinking signature) with AES-256-GCM under its
own key, bound to the tenant (the associated data), and opens it again when the item comes back as
input, so the upstream sees the reasoning although the router kept nothing. A changed byte, a blob
from another key (another deployment) or from another tenant fails authentication: a 400.

The key: `[store] encryption_key_env` names a variable (default `FERROUTE_ENCRYPTION_KEY`) holding
any string, hashed to 32 bytes. Every router process that may receive a blob back (all instances
behind one load balancer) must have the same value. Unset, `ferroute serve` generates one at start
and hands it to its own workers (they agree with each other), with a warning: blobs then stop
opening when the server restarts and are not understood by other hosts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ferroute import _core

_MAGIC = _core.SEALED_PREFIX
_AAD = b"ferroute reasoning v1\0"
# A compaction's summary (`POST /v1/responses/compact`): its own prefix, and its own associated data, so that a
# reasoning blob never opens as a compaction nor a compaction as reasoning (each fails authentication as the other).
COMPACTION_PREFIX = "ferroute-cmp1."
_COMPACTION_AAD = b"ferroute compaction v1\0"


class SealError(ValueError):
    """The blob is not one this router sealed for this tenant (tampered, foreign, or malformed)."""


class ReasoningCipher:
    def __init__(self, secret: str) -> None:
        self.aead = AESGCM(hashlib.sha256(b"ferroute-reasoning-key\0" + secret.encode()).digest())

    @staticmethod
    def generate_secret() -> str:
        return secrets.token_urlsafe(32)

    @classmethod
    def from_env(cls, name: str) -> tuple[ReasoningCipher, bool]:
        """The cipher keyed from `$name`, and whether the key was generated here (not configured)."""
        secret = os.environ.get(name)
        if secret:
            return cls(secret), False
        return cls(cls.generate_secret()), True

    def seal(self, tenant: str, item: dict[str, Any]) -> str:
        sealed_item: dict[str, Any] = {"content": item.get("content") or [], "summary": item.get("summary") or []}
        upstream = item.get("encrypted_content")
        if isinstance(upstream, str) and upstream and not upstream.startswith(_MAGIC):
            sealed_item["upstream"] = upstream  # the upstream's own (Anthropic's signature): it needs it back
        return self.seal_payload(tenant, json.dumps(sealed_item, separators=(",", ":")).encode())

    def seal_payload(self, tenant: str, payload: bytes, origin: str | None = None) -> str:
        """`seal` of a payload already serialised: `{"content": [...], "summary": [...], "upstream": ...}` as JSON,
        as the Rust writer builds it for a translator made with `reasoning="seal"` (its `seal=` callable).
        `origin`: the provider whose `upstream` blob it holds (where it opens: `ferroute.routing.reasoning`)."""
        if origin is not None and b'"upstream":' in payload and payload.endswith(b"}"):
            payload = payload[:-1] + b',"origin":' + json.dumps(origin).encode() + b"}"
        nonce = secrets.token_bytes(12)
        sealed = self.aead.encrypt(nonce, payload, _AAD + tenant.encode())
        return _MAGIC + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, tenant: str, blob: str) -> dict[str, Any]:
        """`{"content": [...], "summary": [...]}`, and `"upstream"`: the upstream's own encrypted_content, where
        there was one; raises SealError."""
        return self._open(tenant, blob, _MAGIC, _AAD)

    def seal_compaction(self, tenant: str, summary: str) -> str:
        """A compaction item's `encrypted_content`: the summary of the history it stands for."""
        payload = json.dumps({"summary": summary}, separators=(",", ":"), ensure_ascii=False).encode()
        nonce = secrets.token_bytes(12)
        sealed = self.aead.encrypt(nonce, payload, _COMPACTION_AAD + tenant.encode())
        return COMPACTION_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open_compaction(self, tenant: str, blob: str) -> str:
        """The summary a compaction item's `encrypted_content` holds; raises SealError."""
        data = self._open(tenant, blob, COMPACTION_PREFIX, _COMPACTION_AAD)
        summary = data.get("summary")
        if not isinstance(summary, str):
            raise SealError("encrypted_content is malformed")
        return summary

    def _open(self, tenant: str, blob: str, prefix: str, aad: bytes) -> dict[str, Any]:
        if not blob.startswith(prefix):
            raise SealError("encrypted_content was not produced by this router")
        text = blob[len(prefix) :]
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise SealError("encrypted_content is malformed") from None
        if len(raw) < 12 + 16:
            raise SealError("encrypted_content is malformed")
        try:
            payload = self.aead.decrypt(raw[:12], raw[12:], aad + tenant.encode())
        except InvalidTag:
            raise SealError("encrypted_content failed authentication (changed, or sealed by another key)") from None
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise SealError("encrypted_content is malformed")
        return data


def seal_item(cipher: ReasoningCipher, tenant: str, item: Any, cache: dict[str, str]) -> bool:
    if not isinstance(item, dict) or item.get("type") != "reasoning":
        return False
    key = str(item.get("id"))
    blob = cache.get(key)
    if blob is None:  # the item's `output_item.done` and the terminal event carry the same blob
        blob = cache[key] = cipher.seal(tenant, item)
    item["encrypted_content"] = blob
    return True
