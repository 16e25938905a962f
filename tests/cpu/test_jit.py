"""vmkit/cpu/jit.py: where the compiled core is cached, and that edits invalidate it."""

from pathlib import Path

from vmkit.cpu import jit


def test_cache_key_changes_with_any_cpu_source(tmp_path, monkeypatch):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(jit, "CPU_DIR", tmp_path)
    before = jit._sources_hash()
    (tmp_path / "b.py").write_text("# changed\n")
    assert jit._sources_hash() != before


def test_falls_back_to_user_cache_when_package_dir_is_read_only(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    monkeypatch.setattr(jit, "CPU_DIR", package)
    monkeypatch.delenv("VMKIT_JIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(jit, "_writable", lambda d: not str(d).startswith(str(package)))
    chosen = jit._cache_dir()
    assert chosen.parent == Path(tmp_path / "xdg" / "vmkit" / "jit")


def test_explicit_cache_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("VMKIT_JIT_CACHE", str(tmp_path / "mine"))
    assert jit._cache_dir().parent == tmp_path / "mine"
