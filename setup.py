"""Packaging: `kernels/` and `export/` install as `dad_edge.kernels` / `dad_edge.export`."""
import re
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "dad_edge" / "version.py").read_text()).group(1)


def subpackages(prefix: str, folder: str) -> list:
    """Every folder with an __init__.py below `folder`, named under `prefix`."""
    found = []
    for init in sorted((ROOT / folder).rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT / folder)
        found.append(".".join([prefix, *rel.parts]) if rel.parts else prefix)
    return found


setup(
    version=VERSION,
    packages=subpackages("dad_edge", "dad_edge") + subpackages("dad_edge.kernels", "kernels")
    + subpackages("dad_edge.export", "export"),
    package_dir={"dad_edge": "dad_edge", "dad_edge.kernels": "kernels", "dad_edge.export": "export"},
    package_data={"dad_edge.kernels": ["*.cu", "*.cuh", "csrc/*.c", "csrc/*.h"]},
)
