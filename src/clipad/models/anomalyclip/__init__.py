"""AnomalyCLIP (ICLR 2024): object-agnostic learnable text prompts on a frozen CLIP with v-v attention."""
