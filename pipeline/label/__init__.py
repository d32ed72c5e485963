"""Labelling recordings: evidence per clip, the run loop, labellers (default model, checkpoint), output, report, Ray."""
