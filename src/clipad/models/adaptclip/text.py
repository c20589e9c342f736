"""The fixed hand-made text prompts the visual adapter is scored against.

The state and template lists are WinCLIP's compositional prompt ensemble (7 normal states, 4
anomalous states, 21 templates) as anomalib publishes it for WinCLIP. That list holds
"a jpeg corrupted photo of the {}." twice; the AdaptCLIP sheet says one template appears twice in
the reference's list too, but that it is this one is unverified (the reference's list itself was not
read). The object word is always "object": AdaptCLIP uses no class names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipad.backbone import ClipBackbone
from clipad.models.prompt_states import NORMAL_STATES, WINCLIP_ANOMALOUS_STATES, WINCLIP_TEMPLATES

ANOMALOUS_STATES = WINCLIP_ANOMALOUS_STATES
TEMPLATES = WINCLIP_TEMPLATES
OBJECT_WORD = "object"


def state_sentences(states: tuple[str, ...], object_word: str = OBJECT_WORD) -> list[str]:
    """Every template filled with every state of the object (state-major order)."""
    return [template.format(state.format(object_word)) for state in states for template in TEMPLATES]


@torch.no_grad()
def hand_made_text_embeddings(backbone: ClipBackbone) -> torch.Tensor:
    """[2, D] unit vectors (normal, anomalous): the mean sentence embedding of each state, normalised.

    The sheet averages the raw sentence features and normalises the mean (no per-sentence
    normalisation before averaging).
    """
    normal = state_sentences(NORMAL_STATES)
    anomalous = state_sentences(ANOMALOUS_STATES)
    embeddings = backbone.text_embeddings(normal + anomalous)
    means = torch.stack([embeddings[: len(normal)].mean(dim=0), embeddings[len(normal) :].mean(dim=0)])
    return F.normalize(means, dim=-1)
