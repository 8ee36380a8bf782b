"""The Helm chart is generated from manifests/ and does not drift from it; the version is
written in one place (pyproject.toml) and everything else that names it agrees."""

from __future__ import annotations

from importlib.metadata import version as installed
from pathlib import Path

import pytest
import yaml
from hack import chartgen

CHART = chartgen.CHART


@pytest.mark.parametrize("relative", sorted(chartgen.render()))
def test_committed_chart_file_is_up_to_date(relative: str) -> None:
    committed = CHART / relative
    assert committed.exists(), f"{relative} is missing: run `make manifests` and commit"
    assert committed.read_text() == chartgen.render()[relative], (
        f"charts/optiinfra-coordinator/{relative} is stale: run `make manifests` and commit"
    )


def test_no_stale_generated_file_is_left_in_the_chart() -> None:
    generated = set(chartgen.render())
    stale = [
        str(path.relative_to(CHART))
        for path in CHART.rglob("*.yaml")
        if "Generated from manifests" in path.read_text()
        and str(path.relative_to(CHART)) not in generated
    ]
    assert stale == [], "generated from a manifest that no longer exists: delete them"


def test_every_manifest_is_in_the_chart_or_said_why_not() -> None:
    kustomization = yaml.safe_load((chartgen.MANIFESTS / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert resource in chartgen.SKIPPED or f"templates/{resource}" in chartgen.render()
    shards = yaml.safe_load((chartgen.SHARDS / "kustomization.yaml").read_text())
    for resource in shards["resources"]:
        assert resource == "../manifests" or f"templates/shards-{resource}" in chartgen.render()


def test_the_version_is_the_package_version_everywhere() -> None:
    version = chartgen.version()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (version, version)
    deployment = yaml.safe_load((chartgen.MANIFESTS / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"optiinfra/coordinator:{version}"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == version
    changelog = (Path(chartgen.ROOT) / "CHANGELOG.md").read_text()
    assert f"## [{version}]" in changelog, "CHANGELOG.md has no section for this version"
    assert installed("optiinfra-coordinator") == version, "reinstall: make install"
