"""Explicit list of the built-in fusion models; importing this module registers them all."""

# Each import registers its models with affectflow.fusion.registry. Add new model modules here.
from . import baselines  # noqa: F401  late_fusion, early_fusion, mult
from . import sdumc  # noqa: F401  sdumc
from . import mculora  # noqa: F401  mculora
from . import cmarr  # noqa: F401  cmarr
from . import dqf  # noqa: F401  dqf
from . import momke  # noqa: F401  momke
