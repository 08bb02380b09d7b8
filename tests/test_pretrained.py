"""The committed zoos in pretrained/ (issue: the folder must stay at most 60 MB; what is dropped is rebuilt on demand,
with a notice saying how long that takes). Reads manifests and git's index only: no model is loaded."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ipguard_tf.zoo.store import MANIFEST, missing_members, read_manifest, rebuild_note, seconds_of

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"
LIMIT_BYTES = 60e6
ZOOS = sorted(p.parent for p in PRETRAINED.glob(f"*/{MANIFEST}"))
GITIGNORE_HEADER = "# models too large for the repository: rebuilt on demand by `ipguard zoo build`\n"


def _tracked(under: Path):
    """Files of ``under`` in git's index that are in the working tree (a file deleted here but not yet
    committed is not counted: on a clean checkout, as in CI, this is exactly what ``git ls-files`` lists); None
    outside a git checkout."""
    try:
        ls = subprocess.run(["git", "ls-files", "-z", str(under)], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {ROOT / f for f in ls.stdout.decode().split("\0") if f and (ROOT / f).is_file()}


def test_zoos_are_found():
    assert {z.name for z in ZOOS} >= {"fashion_mnist", "sac_fashion_mnist"}


def test_pretrained_tracked_size_is_within_the_limit():
    # what the manifests keep in the repository, plus the manifests and .gitignore files themselves
    kept = sum(
        r["size_bytes"] for z in ZOOS for r in read_manifest(z)["models"] if r.get("file") and r.get("in_repo", True)
    )
    kept += sum(p.stat().st_size for z in ZOOS for p in (z / MANIFEST, z / ".gitignore") if p.exists())
    assert kept <= LIMIT_BYTES, f"pretrained/ keeps {kept / 1e6:.1f} MB of models, more than {LIMIT_BYTES / 1e6:.0f} MB"
    tracked = _tracked(PRETRAINED)
    if tracked is None:
        pytest.skip("not a git checkout")
    size = sum(p.stat().st_size for p in tracked)
    assert size <= LIMIT_BYTES, f"git tracks {size / 1e6:.1f} MB under pretrained/"


@pytest.mark.parametrize("zoo", ZOOS, ids=lambda z: z.name)
def test_members_not_in_the_repository_are_ignored_and_untracked(zoo):
    recs = [r for r in read_manifest(zoo)["models"] if r.get("file")]
    dropped = sorted(r["file"] for r in recs if not r.get("in_repo", True))
    # the .gitignore the builder writes (store.write_manifest): every record with in_repo false, sorted
    assert (zoo / ".gitignore").read_text() == GITIGNORE_HEADER + "".join(f"{f}\n" for f in dropped)
    tracked = _tracked(zoo)
    if tracked is None:
        pytest.skip("not a git checkout")
    names = {p.name for p in tracked}
    assert not names & set(dropped), f"tracked although in_repo is false: {sorted(names & set(dropped))}"
    kept = {r["file"] for r in recs if r.get("in_repo", True)}
    assert kept <= names, f"in_repo true but not tracked: {sorted(kept - names)}"


@pytest.mark.parametrize("zoo", ZOOS, ids=lambda z: z.name)
def test_rebuild_note_of_a_fresh_clone_names_the_absent_members_and_a_time(zoo, tmp_path):
    """A fresh clone has the manifest and the in_repo members (empty stand-ins here) but not the others: the
    notice names them and says how long rebuilding takes (recorded, or estimated from their families)."""
    folder = tmp_path / zoo.name
    folder.mkdir()
    shutil.copy(zoo / MANIFEST, folder / MANIFEST)
    recs = [r for r in read_manifest(folder)["models"] if r.get("file")]
    for r in recs:
        if r.get("in_repo", True):
            (folder / r["file"]).touch()
    missing = missing_members(folder)
    assert {r["name"] for r in missing} == {r["name"] for r in recs if not r.get("in_repo", True)}
    if not missing:
        pytest.skip(f"{zoo.name} keeps every member")
    note = rebuild_note(folder, missing)
    assert f"{len(missing)} members absent, rebuilt before use (" in note
    assert all(r["name"] in note for r in missing[:8])
    timed = {r["family"] for r in recs if seconds_of(r) is not None}
    untimed = [r for r in missing if seconds_of(r) is None and r["family"] not in timed]
    assert not untimed, f"the notice cannot say how long these take: {[r['name'] for r in untimed]}"
    if len(untimed) < len(missing):
        assert "about " in note and ("as recorded" in note or "estimated" in note), note
    assert ("time not recorded" in note) == bool(untimed), note


def test_rebuild_note_estimates_from_the_family_and_says_so(tmp_path):
    def rec(name, family, arch="a", seconds=None):
        r = {
            "name": name,
            "role": "negative",
            "family": family,
            "architecture": arch,
            "file": f"{name}.keras",
            "in_repo": False,
        }
        return r if seconds is None else dict(r, build_seconds=seconds)

    models = [
        rec("x1", "X", seconds=100.0),
        rec("x2", "X", seconds=300.0),
        rec("x3", "X"),
        rec("x4", "X", arch="b", seconds=40.0),
        rec("y1", "Y"),
        rec("q1", "Q", seconds=6.0),
    ]
    (tmp_path / MANIFEST).write_text(json.dumps({"schema": "ipguard_tf.zoo/2", "dataset": "d", "models": models}))
    by = {r["name"]: r for r in models}
    # recorded only
    assert "(about 6 s as recorded)" in rebuild_note(tmp_path, [by["q1"]])
    # x3: the mean of its family's members of its architecture (x1, x2: 200 s), labelled as an estimate
    note = rebuild_note(tmp_path, [by["x3"]])
    assert "(about 3 min estimated for 1 from their families' recorded times)" in note
    # no time anywhere in its family: said plainly
    assert "(time not recorded)" in rebuild_note(tmp_path, [by["y1"]])
    mixed = rebuild_note(tmp_path, [by["q1"], by["x3"], by["y1"]])
    assert "about 6 s as recorded for 1; 3 min estimated for 1" in mixed and "time not recorded for 1" in mixed
    assert mixed.endswith(": q1, x3, y1")
