"""Explicit list of the built-in corpus recipes; importing this module registers them all."""

# Each import registers its recipe with affectflow.datasets.registry. Add new corpus modules here.
from affectflow.datasets import meld  # noqa: F401  meld
from affectflow.datasets import iemocap  # noqa: F401  iemocap
from affectflow.datasets import mosei  # noqa: F401  mosei
from affectflow.datasets import mosi  # noqa: F401  mosi
from affectflow.datasets import ravdess  # noqa: F401  ravdess
