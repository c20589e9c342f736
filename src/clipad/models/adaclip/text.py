"""Object-aware normal/abnormal prompt sentences (AdaCLIP's prompt ensemble)."""

from __future__ import annotations

from clipad.models.prompt_states import ABNORMAL_STATES, NORMAL_STATES

TEMPLATES = (
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
)
NUM_NORMAL_SENTENCES = len(NORMAL_STATES) * len(TEMPLATES)  # 28; the 20 abnormal ones follow them


def state_sentences(class_name: str) -> tuple[list[str], list[str]]:
    """The 28 normal and 20 abnormal sentences for one class name (state-major order, as the reference)."""

    def expand(states: tuple[str, ...]) -> list[str]:
        return [template.format(state.format(class_name)) for state in states for template in TEMPLATES]

    return expand(NORMAL_STATES), expand(ABNORMAL_STATES)
