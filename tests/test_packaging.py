"""A non-editable install: build the wheel, install it in a fresh venv, use it from outside the source tree.

The fresh venv reuses the project's installed dependencies through a ``.pth`` line that names the project
venv's site-packages (a plain path line, so the editable install's finder there is not run), and gets the
wheel with ``pip install --no-deps``. Everything then runs from a temporary folder, so nothing can be found
relative to the repository. About 30 s on 2 CPU cores, most of it ``vla-record --help`` importing Isaac Lab.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("vla-record", "vla-train", "vla-eval", "vla-play", "vla-serve")
BUILD_INPUTS = ("pyproject.toml", "README.md", "source", "exts", "config")  # what the wheel is built from


def _run(cmd, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel of this checkout installed (not editable); returns its bin/ folder."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"  # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src], cwd=root)
    (wheel,) = dist.glob("vla_isaac-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=root).stdout.strip())
    (site / "project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], cwd=root)
    return venv / "bin"


def _python(bin_dir: Path, code: str, cwd: Path) -> str:
    return _run([bin_dir / "python", "-c", code], cwd=cwd).stdout


def test_installed_package_lives_in_the_new_venv(installed, tmp_path):
    code = "import json, vla, vla.configs; print(json.dumps([vla.__file__, str(vla.configs.config_dir('model'))]))"
    out = json.loads(_python(installed, code, tmp_path))
    venv = installed.parent.resolve()
    for path in out:
        assert Path(path).resolve().is_relative_to(venv), f"{path} is not inside the installed venv {venv}"
        assert not Path(path).resolve().is_relative_to(REPO), f"{path} comes from the source tree"


def test_installed_package_ships_the_presets_and_key_mappings(installed, tmp_path):
    code = """
import json
from vla.configs import available, config_file
from vla.config import VLAConfig
from vla.data.key_mapping import KeyMapping
import yaml
tiny = VLAConfig.from_dict(yaml.safe_load(config_file("model", "tiny").read_text()))
mapping = KeyMapping.load("isaaclab_lift")
print(json.dumps({"kinds": {k: available(k) for k in ("model", "training", "key_mappings", "accelerate")},
                  "tiny_d_model": tiny.d_model, "mapping": mapping.name, "proprio": [k for k, _ in mapping.proprio]}))
"""
    out = json.loads(_python(installed, code, tmp_path))
    for kind, suffix in (("model", ".yaml"), ("training", ".yaml"), ("key_mappings", ".json"), ("accelerate", ".yaml")):
        assert out["kinds"][kind] == sorted(p.stem for p in (REPO / "config" / kind).glob(f"*{suffix}")), kind
    assert "tiny" in out["kinds"]["model"] and "lift_tiny_cpu" in out["kinds"]["training"]
    assert out["mapping"] == "isaaclab_lift" and "eef_pos" in out["proprio"]
    assert out["tiny_d_model"] > 0


def test_installed_loaders_find_presets_by_name(installed, tmp_path):
    code = """
from vla.config import load_model_preset
from vla.training.config import load_train_config
assert load_model_preset("tiny").d_model > 0
assert load_train_config("lift_tiny_cpu").model == "tiny"
"""
    _python(installed, code, tmp_path)
    assert "lift_tiny_cpu" in _run([installed / "vla-train", "--help"], cwd=tmp_path).stdout  # listed in --config's help


def test_installed_entry_points_run(installed, tmp_path):
    for name in ENTRY_POINTS:
        assert (installed / name).is_file(), f"{name} is not installed"
    _run([installed / "vla-train", "--help"], cwd=tmp_path)
    _run([installed / "vla-serve", "--help"], cwd=tmp_path)
    out = _run([installed / "vla-record", "--help"], cwd=tmp_path).stdout  # Isaac Lab's launcher flags included
    assert "--num_demos" in out and "--device" in out
