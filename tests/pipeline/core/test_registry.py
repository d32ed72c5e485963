"""`Registry[T]`: registering (decorator and plain call), aliases, duplicates, filtering, unknown names."""

from __future__ import annotations

import pytest

from affectflow.pipeline.core.registry import Registry, UnknownNameError


class Animal:
    legs = 4


def _registry() -> Registry[type[Animal]]:
    registry: Registry[type[Animal]] = Registry("animal")

    @registry.register("dog", "hound")
    class Dog(Animal):
        pass

    @registry.register("duck")
    class Duck(Animal):
        legs = 2

    registry.register("cat", entry=type("Cat", (Animal,), {}))
    return registry


def test_decorator_and_plain_call_register_and_aliases_resolve():
    registry = _registry()
    assert registry.get("dog").__name__ == "Dog"
    assert registry.get("hound") is registry.get("dog")
    assert registry.get("cat").__name__ == "Cat"
    assert registry.canonical("hound") == "dog"
    assert registry.aliases() == {"hound": "dog"} and registry.aliases("duck") == {}
    assert "hound" in registry and "dog" in registry and "cow" not in registry and 3 not in registry
    assert list(registry) == ["cat", "dog", "duck"] and len(registry) == 3


def test_decorator_returns_the_object_unchanged():
    registry: Registry = Registry("function")

    @registry.register("double")
    def double(x):
        return 2 * x

    assert double(3) == 6 and registry.get("double") is double


def test_duplicates_are_refused_naming_the_existing_entry():
    registry = _registry()
    with pytest.raises(ValueError, match="'dog' is already registered.*Dog"):
        registry.register("dog", entry=Animal)
    with pytest.raises(ValueError, match="'hound' is already registered"):
        registry.register("wolf", "hound", entry=Animal)
    with pytest.raises(ValueError, match="'duck' is already registered"):
        registry.register("goose", "duck", entry=Animal)
    with pytest.raises(ValueError, match="repeats"):
        registry.register("cow", "cow", entry=Animal)
    assert "wolf" not in registry and "goose" not in registry  # a refused entry leaves no trace


def test_names_filter_by_pattern_and_predicate():
    registry = _registry()
    assert registry.names("d*") == ["dog", "duck"]
    assert registry.names(predicate=lambda cls: cls.legs == 2) == ["duck"]
    assert registry.names("c*", predicate=lambda cls: cls.legs == 2) == []


def test_unknown_name_is_a_key_and_value_error_with_close_matches():
    registry = _registry()
    with pytest.raises(UnknownNameError) as caught:
        registry.get("dgo")
    error = caught.value
    assert isinstance(error, KeyError) and isinstance(error, ValueError)
    message = str(error)
    assert message.startswith("unknown animal 'dgo'") and "did you mean 'dog'" in message
    assert "registered: cat, dog, duck" in message and "hound=dog" in message
    assert error.close_matches[0] == "dog"
    with pytest.raises(KeyError):
        registry.get("zebra")
    with pytest.raises(ValueError, match="unknown animal 'zebra'; registered"):
        registry.get("zebra")


def test_case_insensitive_registry_and_checks():
    seen = []

    def only_animals(name, entry):
        if not (isinstance(entry, type) and issubclass(entry, Animal)):
            raise TypeError(f"{name}: not an Animal")

    registry: Registry[type[Animal]] = Registry("animal", case_sensitive=False, check=only_animals,
                                                on_register=lambda name, entry: seen.append(name))
    registry.register("Dog", "HOUND", entry=Animal)
    assert registry.get("dog") is Animal and registry.get(" hound ") is Animal and "DOG" in registry
    assert registry.names() == ["dog"] and seen == ["dog"]
    with pytest.raises(TypeError, match="not an Animal"):
        registry.register("rock", entry=object)
    assert "rock" not in registry
    with pytest.raises(ValueError, match="non-empty"):
        registry.register("", entry=Animal)


def test_class_registries_check_the_base_class_and_stamp_the_name():
    class Base:
        name = ""

    registry: Registry[type] = Registry("widget", subclass_of=Base, name_attribute="name")

    @registry.register("knob")
    class Knob(Base):
        pass

    assert Knob.name == "knob" and registry.get("knob") is Knob
    with pytest.raises(TypeError, match="is not a subclass of Base"):
        registry.register("stray", entry=int)
    assert "stray" not in registry
