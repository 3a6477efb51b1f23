"""Shared options of the benchmark suite (run with `python -m pytest benchmarks/`)."""
import platform

import pytest


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="also run the slow cases (e.g. the 160 M-parameter paper preset on a CPU)")


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
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
