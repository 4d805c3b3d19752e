"""Power-loss tests: the ``lazyfs`` fixture (tests/conftest.py) gives file
systems that forget what was not synced; the crash writer and the
exactly-once check are shared with tests/integration."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))  # crash_writer, crashcheck
