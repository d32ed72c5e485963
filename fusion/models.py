"""Explicit list of the built-in fusion models; importing this module registers them all."""

# Each import registers its models with affectflow.fusion.registry. Add new model modules here.
from affectflow.fusion import baselines  # noqa: F401  late_fusion, early_fusion, mult
from affectflow.fusion import sdumc  # noqa: F401  sdumc
from affectflow.fusion import mculora  # noqa: F401  mculora
from affectflow.fusion import cmarr  # noqa: F401  cmarr
from affectflow.fusion import dqf  # noqa: F401  dqf
from affectflow.fusion import momke  # noqa: F401  momke
