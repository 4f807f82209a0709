"""Tracing: one OpenTelemetry span per invoke, the chain steps as its events."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kernel.helpers import CHAIN, OpenKernel, audit_events, make_agent
from underlay import errors


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("underlay-tests")


async def test_one_span_per_invoke_with_the_chain_as_events(
    open_kernel: OpenKernel, tracer: Any, exporter: InMemorySpanExporter
) -> None:
    k = await open_kernel(tracer=tracer)
    exporter.clear()
    await k.invoke("system.noop", {}, token=k.admin_token())
    [span] = exporter.get_finished_spans()
    assert span.name == "underlay system.noop"
    assert [e.name for e in span.events] == CHAIN
    assert span.attributes is not None
    assert span.attributes["underlay.syscall"] == "system.noop"
    assert span.attributes["underlay.org_id"] == k.bootstrap_info.org_id  # type: ignore[union-attr]
    assert span.status.is_ok


async def test_a_nested_invoke_is_a_child_span_and_the_audit_shares_the_trace(
    open_kernel: OpenKernel, tracer: Any, exporter: InMemorySpanExporter
) -> None:
    k = await open_kernel(tracer=tracer)
    exporter.clear()
    agent: Any = await k.invoke(
        "agents.create", {"name": "traced", "budget": "1.00 USD"}, token=k.admin_token()
    )
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"underlay agents.create", "underlay budget.fund"}
    outer, inner = spans["underlay agents.create"], spans["underlay budget.fund"]
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert inner.context.trace_id == outer.context.trace_id
    [event] = await audit_events(k, syscall="agents.create")
    assert event["trace_id"] == format(outer.context.trace_id, "032x")
    assert event["detail"]["result"]["agent_id"] == agent.id


async def test_a_failed_call_records_its_error_code_and_where_it_stopped(
    open_kernel: OpenKernel, tracer: Any, exporter: InMemorySpanExporter
) -> None:
    k = await open_kernel(tracer=tracer)
    nobody = await make_agent(k, "nobody")
    exporter.clear()
    with pytest.raises(errors.PermissionDenied):
        await k.invoke("agents.list", {}, token=nobody.token)
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["underlay.error_code"] == "permission_denied"
    assert span.attributes["underlay.principal"] == nobody.id
    assert [e.name for e in span.events if e.name != "exception"] == CHAIN[:4]
    assert not span.status.is_ok


async def test_without_a_tracer_nothing_is_emitted(
    open_kernel: OpenKernel, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel uses only the tracer it was given, never the global one."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(otel_trace, "_TRACER_PROVIDER", provider)
    with otel_trace.get_tracer("control").start_as_current_span("control"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["control"]  # the global works
    exporter.clear()
    k = await open_kernel()
    await k.invoke("agents.create", {"name": "quiet", "budget": "1.00 USD"}, token=k.admin_token())
    assert exporter.get_finished_spans() == ()
    [event] = await audit_events(k, syscall="agents.create")
    assert len(event["trace_id"]) == 32 and int(event["trace_id"], 16)  # still correlated
