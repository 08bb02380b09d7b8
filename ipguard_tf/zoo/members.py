"""Loading zoo members by name, whatever the kind of zoo: a member whose file is absent (not kept in the
repository) is rebuilt by a builder of its zoo's kind (:class:`~ipguard_tf.zoo.builder.ZooBuilder` or
:class:`~ipguard_tf.zoo.sac.SACZooBuilder`), from its record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from ipguard_tf.core import registry
from ipguard_tf.core.errors import DataError
from ipguard_tf.zoo.builder import PROFILES, ZooBuilder
from ipguard_tf.zoo.sac import SAC_PROFILES, SACProfile, SACZooBuilder
from ipguard_tf.zoo.store import ENSEMBLE_ROLES, is_zoo, members, missing_members, read_manifest, rebuild_note

log = logging.getLogger(__name__)


def load_member(
    folder: Path, name: str, builder: Optional[ZooBuilder] = None, data_dir: Optional[str] = None, dataset: Any = None
) -> Any:
    """Load zoo member ``name`` from ``folder``; rebuild it if its file is missing (models not kept in the repo)."""
    if builder is None:
        folder = Path(folder)
        builder = builder_for(folder, read_manifest(folder), data_dir=data_dir, dataset=dataset)
        builder._load_state()
    return builder.load(name)


def builder_for(
    folder: Path, manifest: Dict[str, Any], data_dir: Optional[str] = None, dataset: Any = None
) -> "ZooBuilder":
    """A builder for an existing zoo (its kind and profile from its manifest), e.g. to rebuild a member."""
    if manifest.get("kind") == "sac":
        prof = manifest.get("profile_spec")
        profile = (
            SACProfile(**{k: tuple(v) if isinstance(v, list) else v for k, v in prof.items()})
            if prof
            else SAC_PROFILES["quick"]
        )
        return SACZooBuilder(manifest["dataset"], folder, profile, data_dir=data_dir, dataset=dataset, verbose=0)
    return ZooBuilder(
        manifest["dataset"],
        folder,
        PROFILES.get(manifest.get("profile", "quick"), PROFILES["quick"]),
        data_dir=data_dir,
        dataset=dataset,
        verbose=0,
    )


def cae_ensemble(folder: Any, data_dir: Optional[str] = None) -> Tuple[Dict[str, Any], Dict[str, Any], Optional[str]]:
    """CAE's defender ensemble kept in a zoo (members of roles ``surrogate`` and ``reference``), loaded (rebuilt
    when absent): (surrogates, references, the zoo target's weights SHA-256), each a mapping name -> model."""
    zoo = Path(folder)
    if not is_zoo(zoo):
        raise DataError(f"CAE zoo {zoo}: not a zoo folder (no manifest.json)")
    recs = members(zoo)
    want = {role: [r for r in recs if r["role"] == role] for role in ENSEMBLE_ROLES}
    if not want["surrogate"] or not want["reference"]:
        raise DataError(
            f"CAE zoo {zoo} has {len(want['surrogate'])} surrogate and {len(want['reference'])} "
            "reference members; it needs both (ipguard zoo build --kind sac builds them)"
        )
    sha = next((r.get("weights_sha256") for r in recs if r["role"] == "target"), None)
    load = {
        role: {r["name"]: load_member(zoo, r["name"], data_dir=data_dir) for r in want[role]} for role in ENSEMBLE_ROLES
    }
    return load["surrogate"], load["reference"], sha


def method_inputs(method: str, params: Dict[str, Any], data_dir: Optional[str] = None) -> Dict[str, Any]:
    """The runtime options a method built from ``params`` needs from a zoo: the surrogates and references of the
    zoo its ensemble parameter names (:attr:`~ipguard_tf.core.registry.MethodSpec.ensemble_param`, CAE's
    ``zoo``); nothing for a method without one or when it is not given."""
    key = registry.get(method).ensemble_param
    if key is None or not params.get(key):
        return {}
    surrogates, references, sha = cae_ensemble(params[key], data_dir)
    return {"surrogates": surrogates, "references": references, "ensemble_target_sha256": sha}


def zoo_members(
    folder: Any,
    roles: Optional[Sequence[str]] = None,
    *,
    rebuild: bool = True,
    notice: Callable[[str], None] = log.warning,
    what: str = "members",
) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(``folder/name``, record) of each member of a zoo whose role is in ``roles`` (default: every role but CAE's
    ensemble, which is no suspect), absent members left out when ``rebuild`` is False; ``notice`` hears once
    about the absent ones (rebuilt before use, with the time that takes, or skipped), calling them ``what``."""
    wanted = (lambda role: role not in ENSEMBLE_ROLES) if roles is None else (lambda role: role in roles)
    missing = [r for r in missing_members(folder) if wanted(r["role"])]
    absent = {r["name"] for r in missing}
    if absent and not rebuild:
        notice(f"{folder}: {len(absent)} absent {what} skipped (--no-rebuild): {', '.join(sorted(absent))}")
    elif absent:
        notice(f"{rebuild_note(Path(folder), missing)}; --no-rebuild skips them")
    for rec in members(folder):
        if wanted(rec["role"]) and (rebuild or rec["name"] not in absent):
            yield f"{str(folder).rstrip('/')}/{rec['name']}", rec
