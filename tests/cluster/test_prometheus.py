"""The Prometheus provider against a real Prometheus (built from its Go module, scraping a
metrics fixture whose gauges the tests set) and a VerificationTemplate and token Secret
stored in the real API server: the value the fixture sets is read back through the
template's filled-in query; a query with no data is no data (never a success); Prometheus's
own errors are named."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kubernetes
import prometheus as localprometheus
import pytest

from coordinator.api.common import GROUP, TEMPLATES, VERSION
from coordinator.api.verification import MeasurementPhase, VerificationTemplate
from coordinator.core import addresses, verification
from coordinator.core.verification import Reading
from coordinator.k8s.client import Client
from coordinator.providers.prometheus import Prometheus
from tests.support import builders, wait_for
from tests.support.verification import rec

Local = tuple[localprometheus.Prometheus, localprometheus.MetricsFixture]
GAUGE = "optiinfra_test_latency_seconds"


def store_template(
    api: kubernetes.client.ApiClient, namespace: str, address: str, **metric: Any
) -> VerificationTemplate:
    """A VerificationTemplate with one metric, created in the API server and read back."""
    kubernetes.client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "prom-token"},
            "data": {"token": base64.b64encode(b"t0ken\n").decode()},
        },
    )
    provider = {"address": address, "secretRef": {"name": "prom-token", "key": "token"}}
    p99 = builders.metric("p99", successCondition=None, failureCondition="result > 1.0", **metric)
    body = builders.template(
        "latency",
        provider={"prometheus": {**provider, "timeoutSeconds": 5}},
        selector={"actions": ["scale_down"]},
        metrics=[{k: v for k, v in p99.items() if v is not None}],
    )
    custom = kubernetes.client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, TEMPLATES, body)
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, TEMPLATES, "latency")
    return VerificationTemplate.model_validate(stored)


def measure(
    api: kubernetes.client.ApiClient,
    template: VerificationTemplate,
    namespace: str,
    *,
    query: str | None = None,
) -> Reading:
    """The template's one check for a scale_down of Deployment workers (or `query`),
    asked of Prometheus through the provider (the token read from the real Secret)."""
    recommendation = rec(namespace=namespace, action="scale_down")
    selection = verification.select([template], recommendation, risk=recommendation.spec.risk_level)
    assert selection.problems == ()
    (check,) = selection.checks

    async def main() -> Reading:
        client = Client(api)
        try:
            provider = Prometheus(client.read_secret_key, policy=addresses.LOCAL_TESTING)
            return await provider.query(
                check.provider, query or check.query, namespace=namespace, template=check.template
            )
        finally:
            await client.aclose()

    return asyncio.run(main())


@pytest.mark.timeout(180)
def measure_until(
    api: kubernetes.client.ApiClient,
    template: VerificationTemplate,
    namespace: str,
    accept: Callable[[Reading], bool],
    *,
    what: str,
) -> Reading:
    """`measure` again (Prometheus scrapes every second) until `accept` takes the reading."""
    last: list[Reading] = []

    def probe() -> bool:
        last.append(measure(api, template, namespace))
        return accept(last[-1])

    wait_for(probe, what=what, timeout=60)
    return last[-1]


def test_a_value_the_fixture_sets_is_read_back_through_the_template(
    api: kubernetes.client.ApiClient, own_namespace: str, prometheus: Local
) -> None:
    server, metrics = prometheus
    metrics.set(GAUGE, 0.42, namespace=own_namespace, deployment="workers")
    metrics.set(GAUGE, 9.0, namespace=own_namespace, deployment="other")  # not selected
    template = store_template(
        api,
        own_namespace,
        server.url,
        query=f'max({GAUGE}{{namespace="{{{{namespace}}}}",deployment="{{{{target.name}}}}"}})',
    )
    found = measure_until(
        api, template, own_namespace, lambda r: r.value is not None, what="the gauge scraped"
    )
    assert found == Reading(value=0.42)
    metrics.set(GAUGE, 1.5, namespace=own_namespace, deployment="workers")  # a regression
    regressed = measure_until(
        api, template, own_namespace, lambda r: r.value == 1.5, what="the new value scraped"
    )
    (check,) = verification.select(
        [template], rec(namespace=own_namespace), risk=rec().spec.risk_level
    ).checks
    judged = verification.measure(check, regressed, baseline=None, now=datetime.now(UTC))
    assert judged.phase is MeasurementPhase.FAILED


@pytest.mark.timeout(120)
def test_a_query_with_no_data_is_no_data_and_never_a_success(
    api: kubernetes.client.ApiClient, own_namespace: str, prometheus: Local
) -> None:
    server, metrics = prometheus
    metrics.set(GAUGE, 0.1, namespace="elsewhere", deployment="workers")
    template = store_template(
        api, own_namespace, server.url, query=f'max({GAUGE}{{namespace="{{{{namespace}}}}"}})'
    )
    elsewhere = f'max({GAUGE}{{namespace="elsewhere"}})'
    wait_for(  # Prometheus has scraped the fixture: the gauge exists, not in this namespace
        lambda: measure(api, template, own_namespace, query=elsewhere) == Reading(value=0.1),
        what="the fixture's gauge to be scraped",
        timeout=60,
    )
    found = measure(api, template, own_namespace)
    assert found == Reading()  # no data: no value, no error
    (check,) = verification.select(
        [template], rec(namespace=own_namespace), risk=rec().spec.risk_level
    ).checks
    judged = verification.measure(check, found, baseline=None, now=datetime.now(UTC))
    assert judged.phase is MeasurementPhase.ERROR
    assert judged.message == "no data"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"max({GAUGE}{{", "bad_data"),  # PromQL Prometheus refuses to parse
        (GAUGE, "series, a verification query must return one"),
    ],
)
def test_prometheus_errors_and_several_series_are_errors(
    api: kubernetes.client.ApiClient,
    own_namespace: str,
    prometheus: Local,
    query: str,
    expected: str,
) -> None:
    server, metrics = prometheus
    metrics.set(GAUGE, 1.0, namespace="a", deployment="x")
    metrics.set(GAUGE, 2.0, namespace="b", deployment="y")
    template = store_template(api, own_namespace, server.url, query=query)
    found = measure_until(
        api, template, own_namespace, lambda r: r.error is not None, what="an error"
    )
    assert found.value is None
    assert found.error is not None
    assert expected in found.error
