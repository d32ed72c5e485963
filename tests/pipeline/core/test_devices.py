"""Device helpers: the Ray actor-pool size both engines use."""

from affectflow.pipeline.core.devices import default_actor_count


def test_default_actor_count():
    assert default_actor_count(False, {"CPU": 8.0, "GPU": 2.0}) == 4  # half the CPUs
    assert default_actor_count(False, {"CPU": 1.0}) == 1  # never an empty pool
    assert default_actor_count(True, {"CPU": 8.0, "GPU": 2.0}) == 2  # one per GPU
    assert default_actor_count(True, {"CPU": 8.0, "GPU": 2.0}, actors=3) == 3  # asked for
    assert default_actor_count(False, {}) == 1
