"""Shared options, fixtures and the closing tables of the benchmark suite.

    python -m pytest benchmarks/                 # the default run (under 10 minutes on a 2-core CPU)
    python -m pytest benchmarks/ --full          # also the slow cases, and more rounds

The suite is not under the project's `testpaths`, so a plain `pytest` (CI) never runs it.
"""
import os
import platform
from pathlib import Path

import pytest

import harness

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DAD_EDGE_BENCH_DATA", REPO.parent / "shared" / "data" / "magnetic_tile"))


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="also run the slow cases (e.g. the 160 M-parameter paper preset on a CPU), with more rounds")


def pytest_configure(config):
    config.addinivalue_line("markers", "full: slow benchmark, runs only with --full")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="slow case: run with --full")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def machine():
    """A description of the device printed beside every figure."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Give every benchmark torch's thread count as the session found it: a test that sets it
    (test_distill_comparison's short case runs on one thread) must not slow the ones after it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Model files of the latency benchmarks (artifacts.py), built on first use, once per session."""
    from artifacts import Artifacts

    calib = DATA / "train" / "good"
    return Artifacts(tmp_path_factory.mktemp("bench_models"), calib if calib.is_dir() else None)


def pytest_terminal_summary(terminalreporter):
    for title, lines in (("latency and throughput", harness.latency_table()),
                         ("AUROC parity against torch fp32", harness.parity_table())):
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)
