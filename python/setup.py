"""Bundles the shared library into the package when one is there to bundle.

`pip install ./python` (after `make`) copies ../target/release/libratelimit.so
into the installed package as libratelimit/_lib/libratelimit.so (stripped of
debug info when `strip` is on PATH), and the wheel is then tagged for this
platform, not as pure Python. RATELIMIT_BUNDLE=PATH bundles another build;
RATELIMIT_BUNDLE= (empty) bundles nothing, and the package then finds the
library through RATELIMIT_LIBRARY or the system's loader (see
libratelimit/_ffi.py).
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore

HERE = os.path.dirname(os.path.abspath(__file__))


def bundle_source():
    path = os.environ.get("RATELIMIT_BUNDLE")
    if path is None:
        path = os.path.join(HERE, "..", "target", "release", "libratelimit.so")
    return path if path and os.path.isfile(path) else None


class BuildPy(build_py):
    def run(self):
        super().run()
        src = bundle_source()
        if src is None:
            return
        dest_dir = os.path.join(self.build_lib, "libratelimit", "_lib")
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, "libratelimit.so")
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o755)
        strip = shutil.which(os.environ.get("STRIP", "strip"))
        if strip:
            subprocess.run([strip, "--strip-unneeded", dest], check=False)


class BdistWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        if bundle_source() is not None:
            self.root_is_pure = False

    def get_tag(self):
        python, abi, plat = super().get_tag()
        if not self.root_is_pure:
            # A C library, not an extension module: any CPython 3 will do.
            python, abi = "py3", "none"
        return python, abi, plat


setup(cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
