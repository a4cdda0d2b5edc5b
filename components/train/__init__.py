"""Model training: shards -> a fitted, calibrated, evaluated and quality-gated model version in the registry."""
