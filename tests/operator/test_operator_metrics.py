"""The metrics registry renders valid Prometheus text and counts errors."""
from __future__ import annotations

import pytest
from picchio_operator.metrics import Metrics


def test_counters_and_summary_render() -> None:
    m = Metrics()
    m.inc("picchio_operator_gc_bytes_total", 1234)
    with m.reconcile("WoodpeckerLog"):
        pass
    with pytest.raises(RuntimeError), m.reconcile("WoodpeckerLog"):
        raise RuntimeError("boom")
    text = m.render()
    assert "picchio_operator_gc_bytes_total 1234" in text
    assert 'picchio_operator_reconciles_total{kind="WoodpeckerLog",result="ok"} 1' in text
    assert 'picchio_operator_reconciles_total{kind="WoodpeckerLog",result="error"} 1' in text
    assert 'picchio_operator_reconcile_seconds_count{kind="WoodpeckerLog"} 2' in text
    assert "# TYPE picchio_operator_reconcile_seconds summary" in text
    assert m.value("picchio_operator_reconciles_total", kind="WoodpeckerLog", result="ok") == 1


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(KeyError):
        Metrics().inc("nope")


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.inc("picchio_operator_errors_total", kind='a"b\nc', reason="X")
    assert 'kind="a\\"b\\nc"' in m.render()
