"""The package as pip installs it (not editable): the wheel carries the shipped models as
package data, and vqvae loads them by name from the installed copy, far from the checkout."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SHIPPED = sorted(p.name for p in (ROOT / "pretrained").iterdir() if p.is_dir())


@pytest.mark.slow
def test_a_wheel_install_loads_the_shipped_models_by_name(tmp_path):
    pytest.importorskip("setuptools")  # the build backend, used without build isolation
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("vqvae-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")  # what pip install puts in site-packages
    for name in SHIPPED:
        # every file of the shipped folder (a model, its priors, its card and codebook data)
        for f in (ROOT / "pretrained" / name).iterdir():
            assert f"vqvae/pretrained/{name}/{f.name}" in names
    assert not any(n.startswith(("tests/", "app.py", "benchmarks/")) for n in names)
    code = (
        "import vqvae\n"
        "m = vqvae.VQVAE.from_pretrained('mnist')\n"
        "p = vqvae.load_prior('mnist', model=m)\n"
        "print(vqvae.__file__)\n"
        "print(vqvae.checkpoint.PRETRAINED_DIR)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # no pretrained/ here, and not the checkout
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    module, shipped = out.stdout.split()
    assert Path(module).is_relative_to(tmp_path / "site")
    assert Path(shipped) == tmp_path / "site" / "vqvae" / "pretrained"
