"""WinCLIP's compositional prompt ensemble: object states x templates, averaged per state group.

The lists are anomalib's (its 21 templates keep "a jpeg corrupted photo of the {}." twice and lack the "a"
variant): the default, as the only maintained implementation of the method. The 4 anomalous states are
WinCLIP's own; clipad's shared ABNORMAL_STATES also holds "broken {}", which WinCLIP does not use.
"""
from __future__ import annotations

import torch

from clipad.backbone import ClipBackbone
from clipad.models.prompt_states import NORMAL_STATES, WINCLIP_ANOMALOUS_STATES, WINCLIP_TEMPLATES

ANOMALOUS_STATES = WINCLIP_ANOMALOUS_STATES
TEMPLATES = WINCLIP_TEMPLATES


def state_sentences(states: tuple[str, ...], class_name: str) -> list[str]:
    """Every template filled with every state of the object: len(states) * len(TEMPLATES) sentences."""
    return [template.format(state.format(class_name)) for state in states for template in TEMPLATES]


def state_text_embeddings(backbone: ClipBackbone, class_name: str) -> torch.Tensor:
    """[2, D] (normal, anomalous): the mean of the group's sentence embeddings, NOT normalised per sentence
    (as anomalib and caoyunkang's WinCLIP; the cosine normalises the mean later)."""
    groups = (NORMAL_STATES, ANOMALOUS_STATES)
    return torch.stack([backbone.text_embeddings(state_sentences(g, class_name)).mean(dim=0) for g in groups])
