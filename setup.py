"""The card's top-level setup.py: a shim; all metadata lives in pyproject.toml."""

from setuptools import setup

setup()
