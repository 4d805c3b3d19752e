"""The product does not depend on its test harness: an installed ``picchio``
(``picchio bench``, ``picchio dev``) must work without ``e2e/``.  The harness
builds on ``logstore.dev`` instead; ``picchio dev cluster`` comes back in as a
``picchio.dev`` entry point that the harness registers itself."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_no_module_of_the_product_imports_the_test_harness():
    """Mutation caught: putting back ``from picchio_harness.cli import main``
    in logstore/cli/main.py (any import, at any depth of a function)."""
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "picchio_harness")
                 for p in (ROOT / "logstore").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_harness_registers_dev_cluster_as_an_entry_point():
    """pyproject's ``picchio.dev`` entry point names a real service of the
    harness (a typo there would only show as `invalid choice: 'cluster'`)."""
    import importlib
    import tomllib

    from logstore.dev.cli import DevService

    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["picchio.dev"]
    module, _, attr = eps["cluster"].partition(":")
    svc = getattr(importlib.import_module(module), attr)
    assert isinstance(svc, DevService) and svc.name == "cluster"
