"""Test factories: tiny media, feature stores, random-weight models and fake corpora (tests and benchmarks only)."""
