"""--webhook-configuration: an operator installed under another name (a Helm release with
its own namePrefix) keeps its webhooks in the configurations of that name, never in
optiinfra-coordinator."""

from __future__ import annotations

import argparse
from typing import Any

import kubernetes
import pytest

from coordinator import app, run
from coordinator.k8s import registrar as registrar_
from coordinator.k8s import webhooks as webhooks_

NAME = "it-abc123-coordinator"


class FakeAdmission:
    """The two configurations' calls, over an empty cluster."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.created: list[dict[str, Any]] = []

    def __getattr__(self, call: str) -> Any:
        if call.startswith("read_"):

            def read(name: str, **_: Any) -> Any:
                self.read.append(name)
                raise kubernetes.client.ApiException(status=404)

            return read
        if call.startswith("create_"):
            return lambda body, **_: self.created.append(body)
        return lambda *_, **__: pytest.fail(f"{call} on an empty cluster")


def _bodies(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    endpoint = webhooks_.Endpoint(ca_pem=b"", url="https://127.0.0.1:9443")
    return webhooks_.configurations(hooks=app.HOOKS, endpoint=endpoint, selector=None, name=name)


def test_the_flag_reaches_the_config() -> None:
    parser = argparse.ArgumentParser()
    run.configure(parser)
    assert parser.parse_args([f"--webhook-configuration={NAME}"]).webhook_configuration == NAME


def test_the_registrar_reads_and_creates_the_configurations_of_its_name() -> None:
    registrar = registrar_.Registrar(kubernetes.client.ApiClient(), name=NAME)
    fake = FakeAdmission()
    registrar._api = fake
    registrar.apply(*_bodies(NAME))
    assert fake.read == [NAME, NAME]
    assert [body["metadata"]["name"] for body in fake.created] == [NAME, NAME]


def test_in_a_cluster_a_missing_configuration_is_named_in_the_error() -> None:
    registrar = registrar_.Registrar(kubernetes.client.ApiClient(), name=NAME, create=False)
    registrar._api = FakeAdmission()
    with pytest.raises(registrar_.MissingConfigurationError, match=NAME):
        registrar.apply(*_bodies(NAME))
