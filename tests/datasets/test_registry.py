"""The recipe registry: names, per-corpus options from the recipes' signatures, clear errors."""

from __future__ import annotations

import pytest

from affectflow.datasets import RECIPES, corpora_taking, get_recipe, list_recipes, prepare_corpus, recipe_options
from affectflow.datasets.meld import prepare_meld


def test_builtin_recipes_are_registered_case_insensitively():
    assert list_recipes() == ["iemocap", "meld", "mosei", "mosi", "ravdess"] == list(RECIPES)
    assert get_recipe("MELD") is prepare_meld and " Meld " in RECIPES


def test_options_come_from_the_recipe_signatures():
    assert "splits" in recipe_options("meld") and "label_set" in recipe_options("iemocap")
    assert corpora_taking("labels") == ["mosei", "mosi"] and corpora_taking("segment_times") == ["mosi"]


def test_unknown_corpus_and_foreign_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'meldd' \\(did you mean 'meld'"):
        prepare_corpus("meldd", tmp_path)
    with pytest.raises(ValueError, match="'label_set' applies to iemocap, ravdess only, not meld"):
        prepare_corpus("meld", tmp_path, label_set="6")
    with pytest.raises(ValueError, match="'colour' is not a recipe option"):
        prepare_corpus("mosi", tmp_path, colour="red")
