"""Few-shot normal references chosen on the page: uploaded files or the first k images of a server folder.

The prompt memory (the references' patch features) is built by the model on first use and cached per prompt
source; a new source is attached only when the chosen files' bytes differ from the current ones, so the
memory is rebuilt only when the references change.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from clipad.app.models import AppModel
from clipad.cli.predict_inputs import FolderPrompts, list_input_images
from clipad.errors import ConfigError


def chosen_reference_files(uploads: list[Path], folder: str, count: int | None) -> list[Path]:
    """Uploaded references win; else the first `count` images (all when None) of `folder`; else none."""
    if uploads:
        return list(uploads)
    if folder.strip():
        paths = list_input_images(folder.strip()).paths
        if count is not None and count > len(paths):
            raise ConfigError(f"references: {count} images asked, {folder} holds {len(paths)}")
        return paths if count is None else paths[:count]
    return []


def files_digest(paths: list[Path]) -> str:
    """Identity of a reference set: the files' contents, in order (the same files re-uploaded are the same)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class ReferenceKeeper:
    """The reference set attached to each few-shot model; `scratch` holds copies of uploaded files."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.attached: dict[str, str] = {}  # model label -> digest of the references the page attached
        self.builds = 0  # reference sets attached since start-up (each builds a prompt memory on first use)

    def use(self, model: AppModel, paths: list[Path]) -> bool:
        """Attach `paths` as the model's normal prompts unless they are the ones attached; True when attached.

        No paths keep what the model has (shots_dir's images from start-up, or zero-shot).
        """
        if not paths:
            return False
        digest = files_digest(paths)
        if self.attached.get(model.label) == digest:
            return False
        # FolderPrompts reads a folder: the set is copied under names that keep the chosen order
        folder = self.scratch / digest[:16]
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for index, path in enumerate(paths):
                shutil.copyfile(path, folder / f"{index:04d}_{path.name}")
        prompts = FolderPrompts(folder, model.transform)
        model.module.prompt_source = prompts  # clears the previous memory
        model.module.shots = prompts.shots
        self.builds += 1
        self.attached[model.label] = digest
        return True
