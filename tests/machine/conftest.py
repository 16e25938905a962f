"""Fixtures for guest tests: a private data directory for the default VM."""

import pytest

from vmkit.images import store


@pytest.fixture
def vm_data_dir(tmp_path, monkeypatch):
    """A data directory ($VMKIT_DATA_DIR) whose images and package cache are the
    user's (symlinked, so nothing is pulled twice) but whose vms/ is empty: the
    default VM gets a fresh disk, and the user's own VM disk is never touched."""
    real = store.data_dir()
    path = tmp_path / "data"
    path.mkdir()
    for name in ("images", "cache"):
        (real / name).mkdir(parents=True, exist_ok=True)
        (path / name).symlink_to((real / name).absolute())
    monkeypatch.setenv(store.DATA_ENV, str(path))
    return path
