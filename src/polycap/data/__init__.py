"""Caption manifests, datasets and the encoder feature cache."""
