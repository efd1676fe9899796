"""python -m train.photo_set --out data/photos

Builds a ``photos`` dataset (``train/`` and ``test/`` folders of photos) from the
photographs in Debian's desktop wallpaper packages: 39 photos of 1.3 to 20 megapixels
(landscapes, plants, animals, water, objects, a street, a room) under CC-BY, CC-BY-SA,
CC0 and GPL-2+ licences, 34 for training and 5 held out for testing. The packages'
drawings, renders and gradients are left out. These photos are not the benchmarks' photo
suite (scikit-image's), which no shipped model trains on.

The packages come from ``apt-get download`` (any Debian or Ubuntu machine with its package
lists; no root needed) or from a folder of ``.deb`` files (``--debs``). Only the listed
files are read from each package (``dpkg-deb --fsys-tarfile``). The output folder also
gets ``SOURCES.json`` (each photo's package, version, path, size and SHA-256) and the
packages' copyright files under ``licenses/``, which credit each photo's author.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# (package, path inside it, split); the test photos: one or two of each package
_TEST = ("EveningGlow", "friends_by", "picosdeeuropa_by", "Kleiber_by", "LadyBird")
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_LOMIRI = "usr/share/backgrounds/{}.jpg"
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"


def _split(name: str) -> str:
    return "test" if name.startswith(_TEST) else "train"


_NAMES = {
    ("plasma-workspace-wallpapers", _PLASMA): """BytheWater ColdRipple ColorfulCups DarkestHour
        EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am""",
    ("lomiri-wallpapers-16.04", _LOMIRI): """Bridge_by_Sander_Klootwijk Dragonfly_by_Bolly
        Picture_0B_by_freespace Picture_1A_by_freespace Wine_by_Jakkub_Mede
        aitzgorri_by_Aitzol_Berasategi analogpattern_by_Peter_Nerlich free_by_Peter_Nerlich
        friends_by_Aitzol_Berasategi greentock_by_Peter_Nerlich life_by_Aitzol_Berasategi
        picosdeeuropa_by_Aitzol_Berasategi seeding_by_Clements_Engelhardt
        sunset_by_Aitzol_Berasategi""",
    ("lomiri-wallpapers-20.04", _LOMIRI): "Infinite-Sea_by_Aury88 Kleiber_by_Lukas_Baubkus",
    ("mate-backgrounds", _MATE): """Aqua Blinds Dune FreshFlower Garden GreenMeadow LadyBird
        RainDrops Storm TwoWings Wood YellowFlower""",
}
PHOTOS: tuple[tuple[str, str, str], ...] = tuple(
    (package, pattern.format(n), _split(n))
    for (package, pattern), names in _NAMES.items()
    for n in names.split()
)
PACKAGES = tuple(dict.fromkeys(p for p, _, _ in PHOTOS))


class PhotoSetError(RuntimeError):
    """A package cannot be fetched or read, or lacks a listed photo."""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, **kw)
    except FileNotFoundError as e:
        raise PhotoSetError(
            f"{cmd[0]} not found: building the photo set needs Debian's package tools "
            f"(or pass --debs with the .deb files, on a machine with dpkg-deb)"
        ) from e
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace").strip()[-500:] if e.stderr else ""
        raise PhotoSetError(f"{' '.join(cmd)} failed ({e.returncode}): {err}") from e


def fetch_debs(dest: Path) -> None:
    """``apt-get download`` every package of :data:`PACKAGES` into ``dest``."""
    _run(["apt-get", "download", *PACKAGES], cwd=dest)


def find_deb(debs: Path, package: str) -> Path:
    hits = sorted(debs.glob(f"{package}_*.deb"))
    if not hits:
        raise PhotoSetError(f"{debs}: no {package}_*.deb (run without --debs to download it)")
    return hits[-1]


def read_members(deb: Path, wanted: set[str]) -> dict[str, bytes]:
    """The files ``wanted`` (paths without the leading ``./``) from the package ``deb``."""
    tar = _run(["dpkg-deb", "--fsys-tarfile", str(deb)]).stdout
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if name in wanted and m.isfile():
                found[name] = tf.extractfile(m).read()
    missing = sorted(wanted - found.keys())
    if missing:
        raise PhotoSetError(f"{deb.name} lacks {', '.join(missing)}")
    return found


def build(out: Path, debs: Path | None = None) -> dict:
    """Write the photo set to ``out`` (replacing nothing: ``out`` must not exist yet).
    Returns the SOURCES.json record."""
    out = Path(out)
    if out.exists():
        raise PhotoSetError(f"{out} exists: choose a new --out, or remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if debs is None:
            debs = tmp / "debs"
            debs.mkdir()
            fetch_debs(debs)
        record = {"packages": {}, "photos": []}
        for package in PACKAGES:
            deb = find_deb(Path(debs), package)
            version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.decode().strip()
            copyright_path = f"usr/share/doc/{package}/copyright"
            listed = [(path, split) for p, path, split in PHOTOS if p == package]
            files = read_members(deb, {path for path, _ in listed} | {copyright_path})
            (tmp / "licenses").mkdir(exist_ok=True)
            (tmp / "licenses" / f"{package}.copyright").write_bytes(files[copyright_path])
            record["packages"][package] = {"version": version, "deb": deb.name}
            for path, split in listed:
                data = files[path]
                name = Path(path).name
                if package == "plasma-workspace-wallpapers":  # named by its folder
                    name = f"{Path(path).parts[3]}{Path(path).suffix}"
                (tmp / split).mkdir(exist_ok=True)
                (tmp / split / name).write_bytes(data)
                record["photos"].append(
                    dict(file=f"{split}/{name}", package=package, version=version, path=path,
                         bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
                )  # fmt: skip
        shutil.rmtree(tmp / "debs", ignore_errors=True)
        (tmp / "SOURCES.json").write_text(json.dumps(record, indent=1) + "\n")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m train.photo_set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="data/photos", help="the folder to create")
    p.add_argument("--debs", help="a folder of the packages' .deb files (default: apt-get them)")
    a = p.parse_args(argv)
    try:
        rec = build(Path(a.out), Path(a.debs) if a.debs else None)
    except PhotoSetError as e:
        sys.exit(f"error: {e}")
    n = {s: sum(ph["file"].startswith(s) for ph in rec["photos"]) for s in ("train", "test")}
    print(f"wrote {a.out}: {n['train']} training and {n['test']} test photos "
          f"from {len(rec['packages'])} packages")  # fmt: skip


if __name__ == "__main__":
    main()
