"""LightningModules: the shared base, the training-free CLIP baseline, AdaCLIP and AdaptCLIP."""
