"""What Tollgate knows about each provider type before any configuration: its wire family,
default base URL and the environment variable local mode reads its key from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tollgate.providers.base import Capability

#: What every chat API Tollgate speaks to offers.
CHAT = frozenset(
    {Capability.CHAT, Capability.STREAM, Capability.TOOLS, Capability.VISION, Capability.JSON_MODE}
)
EMBEDDINGS = frozenset({Capability.EMBEDDINGS})
IMAGES = frozenset({Capability.IMAGES})


class Family(StrEnum):
    FAKE = "fake"
    OPENAI_COMPATIBLE = "openai_compatible"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    BEDROCK = "bedrock"


@dataclass(frozen=True, slots=True)
class Preset:
    type: str
    family: Family
    label: str
    base_url: str | None
    key_env: str | None
    needs_key: bool = True
    #: What the vendor's API serves (``/embeddings``, ``/images/generations``...).
    capabilities: frozenset[Capability] = CHAT
    #: Whether the upstream honours ``stream_options.include_usage``.
    stream_usage_option: bool = True


PRESETS: dict[str, Preset] = {
    preset.type: preset
    for preset in (
        Preset(
            "fake",
            Family.FAKE,
            "Fake (deterministic, for tests)",
            None,
            None,
            needs_key=False,
            capabilities=frozenset({Capability.CHAT, Capability.STREAM}) | EMBEDDINGS | IMAGES,
        ),
        Preset(
            "openai",
            Family.OPENAI_COMPATIBLE,
            "OpenAI",
            "https://api.openai.com/v1",
            "OPENAI_API_KEY",
            capabilities=CHAT | EMBEDDINGS | IMAGES,
        ),
        Preset(
            "deepseek",
            Family.OPENAI_COMPATIBLE,
            "DeepSeek",
            "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY",
        ),
        Preset(
            "xai",
            Family.OPENAI_COMPATIBLE,
            "xAI",
            "https://api.x.ai/v1",
            "XAI_API_KEY",
            capabilities=CHAT | IMAGES,
        ),
        Preset(
            "openrouter",
            Family.OPENAI_COMPATIBLE,
            "OpenRouter",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
        ),
        Preset(
            "doubao",
            Family.OPENAI_COMPATIBLE,
            "Doubao (Volcengine Ark)",
            "https://ark.cn-beijing.volces.com/api/v3",
            "ARK_API_KEY",
            capabilities=CHAT | EMBEDDINGS | IMAGES,
        ),
        Preset("poe", Family.OPENAI_COMPATIBLE, "Poe", "https://api.poe.com/v1", "POE_API_KEY"),
        Preset(
            "ollama",
            Family.OPENAI_COMPATIBLE,
            "Ollama",
            "http://127.0.0.1:11434/v1",
            None,
            needs_key=False,
            capabilities=CHAT | EMBEDDINGS,
        ),
        # The generic type may front anything, so it offers every endpoint and lets the upstream say no.
        Preset(
            "openai_compatible",
            Family.OPENAI_COMPATIBLE,
            "Any OpenAI-compatible API",
            None,
            None,
            needs_key=False,
            capabilities=CHAT | EMBEDDINGS | IMAGES,
        ),
        Preset("anthropic", Family.ANTHROPIC, "Anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        Preset(
            "gemini",
            Family.GEMINI,
            "Google Gemini",
            "https://generativelanguage.googleapis.com",
            "GEMINI_API_KEY",
            capabilities=CHAT | EMBEDDINGS | IMAGES,
        ),
        # Bedrock authenticates with the function's IAM role; base_url only overrides the endpoint.
        Preset(
            "bedrock",
            Family.BEDROCK,
            "Amazon Bedrock",
            None,
            None,
            needs_key=False,
            capabilities=CHAT | EMBEDDINGS | IMAGES,
        ),
    )
}
