import pytest

import uadbench
from uadbench.registry import Registry, RegistryError


def test_decorator_registers_and_describes():
    reg = Registry("widget", "uadbench.test-widgets")

    @reg.register("alpha")
    class Alpha:
        """The first widget.

        More text that is not shown."""

    assert reg.get("alpha") is Alpha
    assert reg.describe("alpha") == "The first widget"
    assert reg.names() == ["alpha"]
    assert Alpha.registered_name == "alpha"


def test_duplicate_name_raises():
    reg = Registry("widget", "uadbench.test-widgets")
    reg.register("a", object())
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", object())

    class First:
        pass

    reg.register("b", First)
    reg.register("b", First)  # the same class again is not a conflict

    def make():
        class First:  # same name, another class
            pass

        return First

    with pytest.raises(RegistryError, match="choose another name"):
        reg.register("b", make())


def test_unknown_name_suggests_close_matches():
    reg = Registry("widget", "uadbench.test-widgets")
    for name in ("cddpm", "ddpm", "pddpm", "ae"):
        reg.register(name, type(name, (), {"__doc__": name}))
    with pytest.raises(RegistryError) as err:
        reg.get("cdpm")
    msg = str(err.value)
    assert "did you mean" in msg and "'cddpm'" in msg
    assert "available: ae, cddpm, ddpm, pddpm" in msg


def test_wildcards():
    reg = Registry("widget", "uadbench.test-widgets")
    for name in ("cddpm", "ddpm", "pddpm", "ae", "vae"):
        reg.register(name, type(name, (), {}))
    assert reg.names("*ddpm*") == ["cddpm", "ddpm", "pddpm"]
    assert reg.names("?ae") == ["vae"]


def test_first_party_methods_come_from_entry_points():
    names = uadbench.list_methods()
    assert {"thresh", "ae"} <= set(names)
    assert uadbench.METHODS.describe("thresh")
    assert "none" in uadbench.list_shifts() and "gamma" in uadbench.list_shifts()


def test_create_method_rejects_unknown_keys_listing_valid_ones():
    from uadbench.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        uadbench.create_method("thresh", preset="smoke", not_a_key=1)
    assert "not_a_key" in str(err.value) and "valid keys: invert" in str(err.value)
    with pytest.raises(ConfigError, match="unknown preset 'fast'.*available: cpu, paper, smoke"):
        uadbench.create_method("thresh", preset="fast")


def test_every_method_has_required_presets():
    for name in uadbench.list_methods():
        cls = uadbench.METHODS.get(name)
        assert {"paper", "cpu", "smoke"} <= set(cls.presets), name
