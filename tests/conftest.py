"""Suite-wide test configuration for dpustack.

* Skip policy: every skipped test is listed at the end of the run, and any
  skip makes the run fail unless DPUSTACK_ALLOW_SKIPS=1 (a skip almost always
  means a required component, e.g. PostgreSQL or OVS, is missing).
* ``pg_cluster`` / ``database_url``: database tests run against both SQLite
  and a throwaway PostgreSQL cluster (see tests/pgcluster.py).
* ``free_port``: free loopback TCP ports for tests that start real servers.
* ``host_image`` / ``libvirt_cache`` / ``timings``: the lab host's boot disk and libvirt's capabilities cache,
  made once a session for every module that boots a host; the seconds those modules measured.

See docs/testing.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:  # `import pgcluster` must work in any --import-mode
    sys.path.insert(0, _TESTS_DIR)
from pgcluster import PgCluster, PgUnavailable, free_port as _free_port  # noqa: E402

from dpustack.lab.host_image import HostImage, build_host_image  # noqa: E402

ALLOW_SKIPS_ENV = "DPUSTACK_ALLOW_SKIPS"


# --------------------------------------------------------------------------
# Skip policy
# --------------------------------------------------------------------------

_skipped: list[tuple[str, str]] = []  # (nodeid, reason)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _record(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):  # xfail is not a skip
        _skipped.append((report.nodeid or "<collection>", _skip_reason(report)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record(report)  # module-level pytest.skip() / importorskip()


def _skips_allowed() -> bool:
    return os.environ.get(ALLOW_SKIPS_ENV) == "1"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and not _skips_allowed() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _skipped:
        return
    tr = terminalreporter
    tr.section(f"SKIPPED TESTS ({len(_skipped)})", sep="!", red=not _skips_allowed(), yellow=_skips_allowed(), bold=True)
    for nodeid, reason in _skipped:
        tr.line(f"SKIPPED {nodeid}: {reason}")
    if _skips_allowed():
        tr.line(f"{len(_skipped)} test(s) skipped; tolerated because {ALLOW_SKIPS_ENV}=1", yellow=True)
    else:
        tr.line(
            f"FAILING THE RUN: {len(_skipped)} test(s) were skipped, which means a required "
            f"component is missing (see the reasons above; `make sysdeps` as root installs "
            f"the system packages). Set {ALLOW_SKIPS_ENV}=1 to allow skips.",
            red=True, bold=True,
        )


# --------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the whole session (unix socket only)."""
    try:
        cluster = PgCluster.start()
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgresql"],
)
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database; every test using it runs twice,
    once against SQLite (file in tmp_path) and once against PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dpustack.db'}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    yield url
    try:
        cluster.drop_database(url)  # keeps the temp dir small; forces out leaked connections
    except Exception as exc:  # pragma: no cover - best effort
        import warnings

        warnings.warn(f"could not drop test database {url}: {exc}")


# --------------------------------------------------------------------------
# Networking
# --------------------------------------------------------------------------


@pytest.fixture
def free_port() -> Callable[..., int]:
    """Callable returning a free loopback TCP port: ``port = free_port()``.

    Never returns the same port twice within a session."""
    return _free_port


# --------------------------------------------------------------------------
# Lab hosts: one host image, one libvirt capabilities cache, one timings table per session
# --------------------------------------------------------------------------

_lab_timings: dict[str, float] = {}


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, float]]:
    """Seconds measured by the lab-host tests (name -> seconds), printed at the end of the session."""
    yield _lab_timings
    if _lab_timings:
        print("\nLAB-HOST-TIMINGS " + ", ".join(f"{name}: {seconds:.2f} s" for name, seconds in _lab_timings.items()))


@pytest.fixture(scope="session")
def host_image(tmp_path_factory: pytest.TempPathFactory, timings: dict[str, float]) -> HostImage:
    """The lab host's boot disk, built once a session and shared by every module that boots a host."""
    started = time.monotonic()
    image = build_host_image(tmp_path_factory.mktemp("hostimage") / "host.img")
    timings["image build"] = time.monotonic() - started
    return image


@pytest.fixture(scope="session")
def libvirt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """QEMU's capabilities as libvirt probed them, shared by every LibvirtDaemon of the session (probed once,
    about 8 s)."""
    return tmp_path_factory.mktemp("libvirt-cache")
