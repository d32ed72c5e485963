"""The pipeline around the models, one subpackage per job (layers point down only):

- `core`: records, manifests, errors, devices, atomic file writes, split and modality names, the registry.
- `media`: decoding (frames, 16 kHz audio), face detection (batched MTCNN) and crops, transcripts and ASR.
- `train`: dataset and collation, schedules, protocols, trainer, experiments and folds, evaluation,
  metrics, reports, checkpoint bundles.
- `label`: labelling recordings: evidence, the run loop, labellers (default model, checkpoint), output, plots, Ray.
- `cli`: the `affectflow` command, a thin parser over the library functions.
- `testing`: factories for tests (tiny media, features, models, fake corpora).

`affectflow.extractors`, `affectflow.fusion` and `affectflow.datasets` sit between `media` and `train`.
"""
