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
from clipad.models.prompt_states import ABNORMAL_STATES, NORMAL_STATES

# AdaptCLIP's anomalous states are AdaCLIP's without "broken {}".
ANOMALOUS_STATES = tuple(state for state in ABNORMAL_STATES if state != "broken {}")
TEMPLATES = (
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)
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
