"""Model files: validated JSON metadata, safetensors checkpoints, the .plan container, atomic writes (no torch at import)."""
