"""AdaptCLIP: visual, textual and prompt-query adapters on a frozen CLIP (arXiv 2505.09926)."""

from clipad.models.adaptclip.module import (
    AdaptCLIPAdapters,
    AdaptCLIPModule,
    AdapterChoice,
    NormalPromptSource,
)
from clipad.models.adaptclip.prompt_query import PromptQueryAdapter
from clipad.models.adaptclip.textual_adapter import TextualAdapter
from clipad.models.adaptclip.visual_adapter import VisualAdapter

__all__ = [
    "AdaptCLIPAdapters",
    "AdaptCLIPModule",
    "AdapterChoice",
    "NormalPromptSource",
    "PromptQueryAdapter",
    "TextualAdapter",
    "VisualAdapter",
]
