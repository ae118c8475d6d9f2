"""Where a study's files live for optuna-dashboard: the artifact folder beside
the storage (or ``--artifact-dir`` / ``NAS_ARTIFACTS``) and Optuna's
artifact store in it; uploads and look-ups by file name."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna

from ..errors import NasError
from .backends import DEFAULT_STORAGE, is_journal, is_sqlite

#: environment variable naming the artifact folder (as --artifact-dir)
ARTIFACT_DIR_ENV = "NAS_ARTIFACTS"
#: for storages that are not a local file (PostgreSQL, the gRPC proxy)
DEFAULT_ARTIFACT_DIR = "studies/artifacts"
#: Optuna's system-attr prefix of artifact metadata (optuna.artifacts._upload)
_ARTIFACT_PREFIX = "artifacts:"


def artifact_dir(storage: str | None, override: str | None = None) -> Path:
    """The artifact folder of ``storage``: ``override`` (``--artifact-dir``),
    else $NAS_ARTIFACTS, else beside a local storage file
    (``studies/nas.db`` -> ``studies/nas-artifacts``), else
    :data:`DEFAULT_ARTIFACT_DIR`."""
    if override:
        return Path(override)
    if os.environ.get(ARTIFACT_DIR_ENV):
        return Path(os.environ[ARTIFACT_DIR_ENV])
    url = storage or DEFAULT_STORAGE
    path = None
    if is_journal(url):
        path = Path(url)
    elif is_sqlite(url) and url[len("sqlite:///"):] not in ("", ":memory:"):
        path = Path(url[len("sqlite:///"):])
    if path is None:
        return Path(DEFAULT_ARTIFACT_DIR)
    return path.with_name(path.stem + "-artifacts")


def check_artifact_dir(folder: Path) -> None:
    """A one-line error if ``folder`` could not hold artifacts, without
    creating it (a run refused for another reason leaves nothing behind):
    it, or the nearest folder above it that exists, must be a writable
    folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not a folder" if not existing.is_dir() else "is not writable"
        raise NasError(f"--artifact-dir: cannot write artifacts to {folder}: {existing} {what} (choose another "
                       f"with --artifact-dir DIR or $NAS_ARTIFACTS)")


def artifact_store(folder: Path) -> optuna.artifacts.FileSystemArtifactStore:
    """The store in ``folder``, created and checked writable (a one-line
    error otherwise, before anything is trained)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise NasError(f"--artifact-dir: cannot write artifacts to {folder}: {exc.strerror or exc} (choose another "
                       f"with --artifact-dir DIR or $NAS_ARTIFACTS)") from None
    return optuna.artifacts.FileSystemArtifactStore(str(folder))


# --------------------------------------------------------------------------- artifacts


def _artifacts(system_attrs: dict[str, Any]) -> dict[str, str]:
    """filename -> artifact id of the artifacts in these system attrs
    (entries the dashboard deleted are JSON null)."""
    found = {}
    for key, value in system_attrs.items():
        if key.startswith(_ARTIFACT_PREFIX):
            meta = json.loads(value)
            if meta:
                found[meta["filename"]] = meta["artifact_id"]
    return found


def put_artifact(store, study: optuna.Study, path: Path) -> str:
    """Attach ``path`` to the study by its file name; an artifact of that
    name already there is rewritten in place."""
    existing = study_artifacts(study)
    if path.name in existing:
        with open(path, "rb") as f:
            store.write(existing[path.name], f)
        return existing[path.name]
    return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)




def trial_artifacts(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """filename -> artifact id of a trial's artifacts."""
    return _artifacts(study._storage.get_trial_system_attrs(trial._trial_id))


def study_artifacts(study: optuna.Study) -> dict[str, str]:
    return _artifacts(study._storage.get_study_system_attrs(study._study_id))
