"""Builds the adapter for a configured provider. Vendor modules are imported only when a provider
of their family is first used, so a function that never talks to Gemini never imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollgate.errors import ServiceUnavailableError
from tollgate.providers.fake import FakeProvider
from tollgate.providers.presets import PRESETS, Family

if TYPE_CHECKING:
    from tollgate.providers.base import Provider
    from tollgate.providers.http import HttpClient
    from tollgate.store.records import ProviderRecord


def build_adapter(record: ProviderRecord, api_key: str | None, http: HttpClient) -> Provider:
    """The adapter for ``record``. Its ``timeout_seconds``, when set, becomes the adapter's read
    timeout: how long to wait for the answer's first byte, then for each next chunk."""
    preset = PRESETS.get(record.type)
    if preset is None:
        raise ServiceUnavailableError(f"Provider '{record.name}' has an unknown type.")
    if preset.family is Family.FAKE:
        return FakeProvider(record.name)
    if preset.needs_key and api_key is None:
        raise ServiceUnavailableError(f"Provider '{record.name}' has no credential configured.")
    base_url = record.base_url or preset.base_url
    if preset.family is Family.BEDROCK:
        from tollgate.providers.bedrock import BedrockProvider

        if record.timeout_seconds is not None:
            return BedrockProvider(
                record.name,
                region=record.region,
                endpoint_url=record.base_url,
                url_check=http.check_url,
                address_check=http.check_resolved,
                read_timeout=float(record.timeout_seconds),
            )
        return BedrockProvider(
            record.name,
            region=record.region,
            endpoint_url=record.base_url,
            url_check=http.check_url,
            address_check=http.check_resolved,
        )
    if base_url is None:
        raise ServiceUnavailableError(f"Provider '{record.name}' has no base URL configured.")
    read_timeout = float(record.timeout_seconds) if record.timeout_seconds is not None else None
    if preset.family is Family.ANTHROPIC:
        from tollgate.providers.anthropic import AnthropicProvider

        return AnthropicProvider(record.name, preset, base_url, api_key, http, read_timeout=read_timeout)
    if preset.family is Family.GEMINI:
        from tollgate.providers.gemini import GeminiProvider

        return GeminiProvider(record.name, preset, base_url, api_key, http, read_timeout=read_timeout)
    from tollgate.providers.openai_compat import OpenAICompatibleProvider

    return OpenAICompatibleProvider(record.name, preset, base_url, api_key, http, read_timeout=read_timeout)
