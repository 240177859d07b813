"""Packaging for atom_plugin (robust OOD detection on top of torchattacks)."""
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
HOOK_PTH = "atom_plugin_import_hook.pth"


class build_py_with_pth(build_py):
    """Also put the import-order hook's .pth at the wheel root (site-packages); see atom_plugin/_compat.py."""

    def run(self):
        super().run()
        self.copy_file(str(HERE / HOOK_PTH), str(Path(self.build_lib) / HOOK_PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib) / HOOK_PTH)]


CMDCLASS = {"build_py": build_py_with_pth}
try:  # editable installs (pip install -e) build their own wheel: put the .pth at its root too
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
            out = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            shutil.copyfile(HERE / HOOK_PTH, Path(unpacked_wheel) / HOOK_PTH)
            return out

    CMDCLASS["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # old setuptools: atom_plugin._compat.install_import_hook() does it
    pass

VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "atom_plugin" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="atom_plugin",
    version=VERSION,
    description="Robust out-of-distribution detection for torchattacks: OOD attacks, detectors, ATOM training, evaluation",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["atom_plugin", "atom_plugin.*"]),
    py_modules=["_atom_plugin_import_hook"],  # torchvision import-order fix, loaded by HOOK_PTH
    cmdclass=CMDCLASS,
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "torchattacks>=3.5.1",
        "timm>=0.9",
        "scikit-learn>=1.2",
        "scikit-image>=0.21",
        "imagecorruptions-imaug>=1.1.5",
        "numpy>=1.23",
        "scipy>=1.9",
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require={
        # robustbench 1.1.1 imports pkg_resources, which setuptools>=81 no longer ships.
        "robustbench": ["robustbench==1.1.1", "setuptools<81"],
        "tensorboard": ["tensorboard"],
        # pytorch-ood: the third-party-detector example and its test use the real library
        "test": ["pytest>=7", "hypothesis>=6", "pytorch-ood>=0.2"],
    },
    entry_points={"console_scripts": ["atom-ood=atom_plugin.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "License :: OSI Approved :: MIT License",
    ],
)
