"""Fixtures of the fault-injection suite (issue 9).

Knobs (environment):
  PICCHIO_FAULT_SEED     base seed of the randomized schedules (printed; schedule i uses seed+i)
  PICCHIO_FAULT_RUNS     randomized service-mode schedules (CI cut: 6; `make faults`: 200)
  PICCHIO_FAULT_CYCLES   SIGKILL cycles per embedded backend (CI cut: 8; `make faults`: 100)
  PICCHIO_FAULT_REPORT   where the per-nemesis JSON report goes (default: $TMPDIR/picchio-fault-report.json)

Netns, veth and tmpfs need root; a missing facility fails the test with the
reason (never a skip).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent / "integration"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from faultenv import Lab, LabError, lab_number  # noqa: E402
from faultknobs import CYCLES, DEADLINES, RUNS, SEED  # noqa: E402
from faultrun import REPORT  # noqa: E402
from nemesis import NemesisSet  # noqa: E402



def pytest_report_header(config):
    return f"picchio faults: PICCHIO_FAULT_SEED={SEED} PICCHIO_FAULT_RUNS={RUNS} PICCHIO_FAULT_CYCLES={CYCLES}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    data = REPORT.as_json()
    if not data:
        return
    out = {"seed": SEED, "runs": RUNS, "cycles": CYCLES, "deadlines_s": DEADLINES, "bound_factor": 3,
           "nemeses": data}
    path = Path(os.environ.get("PICCHIO_FAULT_REPORT") or Path(tempfile.gettempdir()) / "picchio-fault-report.json")
    try:
        path.write_text(json.dumps(out, indent=2) + "\n")
        where = str(path)
    except OSError as e:
        where = f"(not written: {e})"
    terminalreporter.section("fault-injection report (per nemesis)")
    terminalreporter.write_line(f"PICCHIO_FAULT_SEED={SEED} (schedule i used seed+i; replay one: "
                                f"PICCHIO_FAULT_SEED=<seed in its failure> PICCHIO_FAULT_RUNS=1)")
    terminalreporter.write_line(json.dumps(out, indent=1))
    terminalreporter.write_line(f"report written to {where}")


@pytest.fixture(scope="session")
def deadlines() -> dict[str, float]:
    return dict(DEADLINES)


@pytest.fixture(scope="session")
def lab(request):
    """One isolated service cluster for the whole fault session.  Its logs
    (LogStores, etcd, S3, toxiproxy) stay in $TMPDIR/picchio-faultlab-* when a
    test failed (or PICCHIO_KEEP_WORKDIR is set), else they are removed."""
    if os.geteuid() != 0:
        pytest.fail("the fault suite needs root (network namespaces, veth pairs, tmpfs mounts)", pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="picchio-faultlab-"))
    try:
        lb = Lab(workdir, lab_number(), DEADLINES).up()
    except LabError as e:
        pytest.fail(f"fault lab unavailable: {e} (logs: {workdir})", pytrace=False)
    yield lb
    lb.down()
    if request.session.testsfailed or os.environ.get("PICCHIO_KEEP_WORKDIR"):
        print(f"\nfault lab logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def nemeses(request):
    """Every nemesis made through this set is healed at teardown, even when
    the test failed; the lab is then checked back to full health."""
    ns = NemesisSet()
    yield ns
    errors = ns.heal_all()
    lb = request.getfixturevalue("lab") if "lab" in request.fixturenames else None
    if lb is not None:
        errors += lb.ensure_healthy()
    assert not errors, f"healing after the test: {errors}"


@pytest.fixture
def seed() -> int:
    return SEED
