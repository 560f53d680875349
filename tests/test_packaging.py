"""A wheel built from the checkout, installed into a fresh venv, finds the study presets from any folder.

The wheel is built offline (`pip wheel --no-build-isolation` with this venv's setuptools) from a copy of
pyproject.toml, README.md and src/, so nothing is written into the checkout. The fresh venv borrows
this venv's third-party packages through a `.pth` line naming its site-packages: such a line only
appends the folder to sys.path, without processing the `.pth` files inside it, so the editable
install of vlpeft (a `.pth` naming src/) stays inactive and `import vlpeft` must find the wheel's copy.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds and installs a wheel

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "src" / "vlpeft" / "configs"


def run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: no wheel can be built offline (--no-build-isolation needs it)")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "--disable-pip-version-check", "-w", tmp / "dist", source], cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list((tmp / "dist").glob("vlpeft-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_ships_exactly_the_presets_of_the_checkout(wheel):
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("vlpeft/configs/"): z.read(n) for n in z.namelist()
                   if n.startswith("vlpeft/configs/") and not n.endswith("/")}
    here = {str(p.relative_to(PRESETS)): p.read_bytes() for p in PRESETS.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    assert {"quick.yaml", "full.yaml", "paper-blip.yaml"} <= set(here)
    assert sorted(shipped) == sorted(here)
    assert shipped == here


def test_the_wheel_ships_the_tiny_checkpoint_byte_for_byte(wheel):
    shipped_dir = ROOT / "src" / "vlpeft" / "checkpoints" / "tiny"
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("vlpeft/checkpoints/tiny/"): z.read(n) for n in z.namelist()
                   if n.startswith("vlpeft/checkpoints/tiny/")}
    here = {p.name: p.read_bytes() for p in shipped_dir.iterdir() if p.is_file()}
    assert sorted(here) == ["config.json", "evaluation.json", "model.safetensors", "pretrain.json", "shipped.json",
                            "tokenizer.json"]
    assert shipped == here
    assert wheel.stat().st_size < 20 * 2**20  # the checkpoint is most of it


def test_an_installed_wheel_finds_its_presets_from_another_folder(wheel, tmp_path):
    from vlpeft.study.spec import expand, load_spec

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path, env=env)
    fresh_site = Path(site.stdout.strip())
    assert site.returncode == 0 and fresh_site.is_dir() and venv in fresh_site.parents, site.stdout + site.stderr
    borrowed = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
    (fresh_site / "borrowed-site-packages.pth").write_text("".join(f"{p}\n" for p in borrowed))
    installed = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                     "--target", fresh_site, wheel], cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([python, "-c", "import vlpeft, vlpeft.study.spec as s; print(vlpeft.__file__); print(s.PRESET_DIR)"],
                cwd=elsewhere, env=env)
    assert where.returncode == 0, where.stderr
    module, preset_dir = (Path(line) for line in where.stdout.split())
    assert fresh_site in module.parents and ROOT not in module.parents  # the wheel's copy, not src/
    assert fresh_site in preset_dir.parents

    # --out is a relative folder: a dry run must not create it: the cwd stays empty
    listed = run(
        [python, "-m", "vlpeft.cli", "study", "quick", "--dry-run", "--out", "runs/quick"], cwd=elsewhere, env=env
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    cells = [line.split()[0] for line in listed.stdout.splitlines() if line.endswith("training examples)")]
    assert cells == [c.id for c in expand(load_spec("quick"))]
    checks = [line.split()[0] for line in listed.stdout.splitlines() if "length check: after the grid" in line]
    assert len(checks) == 20 and all(c.endswith(".x2") for c in checks)  # 2 tasks x 5 methods x 2 sizes
    assert f"{len(cells)} cells and 20 length-check cells" in listed.stdout.splitlines()
    assert "validation noise not checked" not in listed.stdout  # the shipped checkpoint is there to measure it
    assert list(elsewhere.iterdir()) == []
    loaded = run([python, "-c", "import vlpeft; print(vlpeft.load_model('tiny').source)"], cwd=elsewhere, env=env)
    assert loaded.returncode == 0 and fresh_site in Path(loaded.stdout.strip()).parents, loaded.stdout + loaded.stderr

    unknown = run(
        [python, "-m", "vlpeft.cli", "study", "nosuch", "--dry-run", "--out", "runs/x"], cwd=elsewhere, env=env
    )
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    named = re.search(r"'nosuch' is neither a YAML file nor a preset.*\(presets: ([^)]*)\)", unknown.stderr)
    assert named, unknown.stderr
    assert named.group(1).split(", ") == sorted(p.stem for p in PRESETS.glob("*.yaml"))
    assert list(elsewhere.iterdir()) == []
