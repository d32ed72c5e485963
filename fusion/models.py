"""Explicit list of the built-in fusion models; importing this module registers them all."""

# Each import registers its models with affectflow.fusion.registry. Add new model modules here.
