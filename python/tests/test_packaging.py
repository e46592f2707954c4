"""How the package finds the shared library, and that it is the installed one."""

import os
import subprocess
import sys

import libratelimit
from libratelimit import _ffi

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILT = os.path.join(ROOT, "target", "release", "libratelimit.so")


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("RATELIMIT_LIBRARY", None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=60)


def test_the_tests_run_the_installed_package_with_its_bundled_library():
    # `pip install ./python` after `make` bundles the library into the package.
    assert "site-packages" in libratelimit.__file__
    r = run("from libratelimit import _ffi; print(_ffi.path)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(os.path.join("libratelimit", "_lib", "libratelimit.so"))


def test_ratelimit_library_names_the_library_to_load():
    r = run("from libratelimit import _ffi; print(_ffi.path)", RATELIMIT_LIBRARY=BUILT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == BUILT


def test_a_wrong_ratelimit_library_is_an_error_naming_it_not_a_fallback():
    r = run("import libratelimit", RATELIMIT_LIBRARY="/nonexistent/libratelimit.so")
    assert r.returncode != 0
    assert "LibraryNotFound" in r.stderr and "/nonexistent/libratelimit.so" in r.stderr
    assert "RATELIMIT_LIBRARY" in r.stderr


def test_versions_agree_and_py_typed_ships():
    assert libratelimit.version() == libratelimit.__version__ == "0.1.0"
    assert tuple(int(x) for x in libratelimit.version().split(".")[:2]) == _ffi.HEADER_VERSION
    assert os.path.exists(os.path.join(os.path.dirname(libratelimit.__file__), "py.typed"))


def test_strerror_and_last_error():
    assert libratelimit.strerror(_ffi.RL_ERR_CONFIG)
    assert libratelimit.strerror(_ffi.RL_ERR_CONFIG) != libratelimit.strerror(_ffi.RL_ERR_BACKEND)
    libratelimit.version()
    try:
        libratelimit.Limiter("rate=1/s burts=2")
    except libratelimit.ConfigError:
        pass
    assert "burts" in libratelimit.last_error()
