"""WinCLIP / WinCLIP+ (Jeong et al., CVPR 2023): training-free zero-/few-shot CLIP with window features."""
from clipad.models.winclip.module import WinCLIPModule

__all__ = ["WinCLIPModule"]
