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


def test_a_broken_plugin_is_one_line_and_the_others_keep_working(tmp_path):
    """A third-party method module that fails to import must not take `uadbench list` down."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    (site / "uadbench_broken").mkdir(parents=True)
    (site / "uadbench_broken" / "__init__.py").write_text("import a_module_that_does_not_exist\n")
    dist = site / "uadbench_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uadbench-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[uadbench.methods]\nbroken = uadbench_broken\n")
    env = dict(os.environ, PYTHONPATH=str(site), MLFLOW_DISABLE_TELEMETRY="true")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "uadbench.cli", *args], env=env, capture_output=True, text=True, cwd=tmp_path)

    listing = run("list", "methods")
    assert listing.returncode == 0, listing.stderr
    assert {"ae", "cddpm", "mhd"} <= {line.split()[0] for line in listing.stdout.splitlines()}
    (warning,) = listing.stderr.strip().splitlines()
    assert "broken" in warning and "ModuleNotFoundError" in warning and "a_module_that_does_not_exist" in warning
    # asking for the broken one by name says why it is unavailable, on one line, exit 2
    grid = tmp_path / "g.toml"
    grid.write_text('train_dataset = "phantom-healthy-t2w"\n[[methods]]\nname = "broken"\n[[datasets]]\nname = "phantom-tumour-t2w"\n')
    proc = run("run", str(grid), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "could not load method plugin 'broken'" in proc.stderr
    assert not (tmp_path / "out").exists()
