"""The per-user pipeline: private adapters, their recipe, evaluation, profiles, variants."""
