"""`ExtractorSpec`: the typed spec reads and writes exactly the JSON shape stores and bundles hold."""

from __future__ import annotations

import pytest

from affectflow.extractors.spec import ExtractorSpec

RECORD = {"name": "logmel", "modality": "a", "config": {"n_mels": 8}, "config_hash": "abc123", "output_dim": 8}


def test_round_trip_keeps_the_json_shape():
    spec = ExtractorSpec.from_dict(RECORD)
    assert spec.name == "logmel" and spec.config == {"n_mels": 8} and spec.output_dim == 8
    assert spec.extractor_id == "logmel-abc123" and spec.to_dict() == RECORD
    assert ExtractorSpec.coerce(spec) is spec and ExtractorSpec.coerce(RECORD) == spec


def test_older_record_without_hash_is_accepted():
    old = {key: value for key, value in RECORD.items() if key != "config_hash"}
    spec = ExtractorSpec.from_dict(old)
    assert spec.config_hash is None and spec.to_dict() == old


@pytest.mark.parametrize("record, message", [
    ({"modality": "a"}, "lacks \\['name'\\]"),
    ({**RECORD, "colour": "red"}, "unknown keys \\['colour'\\]"),
    ({**RECORD, "modality": "x"}, "modality must be"),
    ([1, 2], "JSON object"),
])
def test_bad_records_raise_naming_the_source(record, message):
    with pytest.raises(ValueError, match=message):
        ExtractorSpec.from_dict(record, source="store/spec.json")


def test_importing_the_package_registers_builtins_without_transformers():
    """The explicit import list fills the registry; model libraries load only when a model is built."""
    import subprocess
    import sys

    code = ("import sys, affectflow.extractors as e; "
            "assert {'hf_audio', 'hf_text', 'hf_vision', 'logmel', 'prosody', 'fer'} <= set(e.list_extractors()); "
            "assert 'transformers' not in sys.modules, 'importing affectflow.extractors imported transformers'")
    subprocess.run([sys.executable, "-c", code], check=True)
