"""Which Python runs the server: this one where it can, else the one named by DAD_EDGE_SERVE_PYTHON.

nvidia-pytriton 0.7 (the current release) ships its Triton Python-backend stub compiled against numpy 1's
C layout of a dtype (pybind11 before 2.12): under numpy 2 it reads an output's item size where numpy 2
keeps the dtype's flags, 0 for every dtype we send, so each answer has the right shapes and no bytes
(tritonclient: "cannot reshape array of size 0"). No choice of output dtype avoids it, and the stub
imports the numpy of the server's own environment (sys.exec_prefix; it ignores PYTHONPATH). So the
server needs an environment with numpy<2: either this one, or another whose interpreter is named by
DAD_EDGE_SERVE_PYTHON (`.ci/run` builds one). There `dad-edge serve` re-executes itself, importing
this same dad_edge from where it is imported here, so that Python needs only numpy<2, nvidia-pytriton,
onnxruntime and OpenCV (torch too for a .safetensors model), not dad_edge. Clients (tritonclient, the
remote Detector) run under numpy 2.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

SERVE_PYTHON_ENV = "DAD_EDGE_SERVE_PYTHON"

# Run by the other interpreter: dad_edge, dad_edge.kernels and dad_edge.export imported from the folders
# they come from here (an editable install maps kernels/ and export/ under dad_edge), then the CLI.
_BOOTSTRAP = """\
import importlib.util, sys
packages = {packages!r}
class DadEdgeFromCaller:
    @staticmethod
    def find_spec(name, path=None, target=None):
        folder = packages.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, folder + "/__init__.py",
                                                      submodule_search_locations=[folder])
sys.meta_path.insert(0, DadEdgeFromCaller)
from dad_edge.cli import main
sys.exit(main({argv!r}))
"""


def why_not_here() -> Optional[str]:
    """None when this Python can run the server, else why not (one sentence)."""
    if int(np.__version__.split(".")[0]) >= 2:
        return (f"nvidia-pytriton 0.7 needs numpy<2 (its Triton backend stub answers with empty outputs under "
                f"numpy 2; this Python has numpy {np.__version__})")
    if importlib.util.find_spec("pytriton") is None:
        return "nvidia-pytriton is not installed here (Linux, glibc >= 2.35)"
    return None


def why_not_in(python: str) -> Optional[str]:
    """None when `python` (another interpreter) can run the server, else why not."""
    import subprocess

    script = ("import importlib.util, numpy\n"
              "major = int(numpy.__version__.split('.')[0])\n"
              "print(f'it has numpy {numpy.__version__}' if major >= 2 else\n"
              "      '' if importlib.util.find_spec('pytriton') else 'nvidia-pytriton is not installed there')\n")
    try:
        proc = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        return f"{python} does not run ({exc.strerror})"
    if proc.returncode != 0:
        return f"{python} fails: {(proc.stderr.strip().splitlines() or ['no message'])[-1]}"
    return proc.stdout.strip() or None


def serve_python() -> Optional[str]:
    """The interpreter named by DAD_EDGE_SERVE_PYTHON, or None when the variable is unset or empty."""
    return os.environ.get(SERVE_PYTHON_ENV) or None


def package_folders() -> Dict[str, str]:
    """Where dad_edge and its two mapped sub-packages are imported from in this process."""
    import dad_edge

    folders = {"dad_edge": str(Path(dad_edge.__path__[0]).resolve())}
    for name in ("dad_edge.kernels", "dad_edge.export"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders[name] = str(Path(list(spec.submodule_search_locations)[0]).resolve())
    return folders


def command(python: str, argv: List[str]) -> List[str]:
    """`python -c BOOTSTRAP`: the dad-edge CLI with `argv`, run by `python` on this process's dad_edge."""
    return [python, "-c", _BOOTSTRAP.format(packages=package_folders(), argv=list(argv))]


def exec_in(python: str, argv: List[str]) -> None:
    """Replace this process with the CLI under `python` (same pid: signals and process groups are unchanged).

    The variable is dropped from the new process's environment: if that Python cannot serve either,
    it says why instead of re-executing itself."""
    from dad_edge.errors import BackendError

    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise BackendError(f"{SERVE_PYTHON_ENV}={python} is not an executable file")
    env = {k: v for k, v in os.environ.items() if k != SERVE_PYTHON_ENV}
    cmd = command(python, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, cmd, env)
