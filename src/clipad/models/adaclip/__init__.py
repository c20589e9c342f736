"""AdaCLIP: hybrid (static + dynamic) learnable prompts on a frozen CLIP, with hybrid semantic fusion."""
