"""Packaging detail pyproject.toml cannot express together with automatic package discovery.

The data manifests live in the top-level ``data_manifests/`` folder (easy to find and edit in the repository) and are
installed inside the package as ``tutorseg.data_manifests``, so ``tutorseg download NAME`` finds them in any install.
Everything else about the package is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["tutorseg", "tutorseg.*"]) + ["tutorseg.data_manifests"],
    package_dir={"tutorseg.data_manifests": "data_manifests"},
)
