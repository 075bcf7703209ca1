"""Bundle the built extension into the package.

`pip install ./python` (from the repository's root, after `bash scripts/build.sh`)
copies build/release/lmm.duckdb_extension — or the file named by LMM_EXTENSION —
into the wheel, so the installed package carries the extension it was built with.
"""
import os
import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent


class BuildWithExtension(build_py):
    def run(self):
        super().run()
        source = pathlib.Path(os.environ.get("LMM_EXTENSION", HERE.parent / "build" / "release" / "lmm.duckdb_extension"))
        if not source.exists():
            raise SystemExit(f"lmm: {source} does not exist; run `bash scripts/build.sh` first (or set LMM_EXTENSION)")
        target = pathlib.Path(self.build_lib) / "lmm" / "lmm.duckdb_extension"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


setup(cmdclass={"build_py": BuildWithExtension})
