"""Explicit list of built-in extractor modules; importing this module registers them all."""

# Each import registers its extractors with affectflow.extractors.base. Add new modules here.
