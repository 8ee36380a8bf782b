"""``coordinator check``: reading manifests, the JSON and table output, invalid input."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from coordinator import check, cli, policyflags
from tests.support import builders

Capture = pytest.CaptureFixture[str]


def manifest(
    name: str,
    *resources: str,
    namespace: str | None = None,
    customer: str = "customer-1",
    **spec: Any,
) -> dict[str, Any]:
    """A medium-risk rightsize by agent-1 of `customer` affecting `resources`."""
    defaults = {
        "customerId": customer,
        "agentId": "agent-1",
        "action": "rightsize",
        "affectedResources": list(resources),
    }
    return builders.recommendation(name, namespace=namespace, **(defaults | spec))


def yaml_documents(*documents: Any) -> str:
    return "---\n".join(json.dumps(document) + "\n" for document in documents)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_json(capsys: Capture, *args: str | Path) -> list[dict[str, Any]]:
    assert check.main([*map(str, args), "-o", "json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert list(document) == ["recommendations"]
    entries: list[dict[str, Any]] = document["recommendations"]
    return entries


def run_invalid(capsys: Capture, *args: str | Path) -> list[str]:
    """The problem lines on stderr; nothing on stdout, exit status 1."""
    assert check.main(list(map(str, args))) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    *problems, summary = captured.err.splitlines()
    assert summary == f"{len(problems)} problem(s) found; nothing was checked"
    return problems


# -- Output ---------------------------------------------------------------------------------


def test_json_has_exactly_the_shape_of_the_api(tmp_path: Path, capsys: Capture) -> None:
    steps = [
        {"name": "snap", "action": "take_snapshot", "executor": "simulated", "reversible": True},
        {
            "name": "check",
            "action": "validate_quality",
            "executor": "simulated",
            "critical": False,
            "reversible": False,
        },
    ]
    path = write(
        tmp_path / "recs.yaml",
        yaml_documents(
            manifest("rec-003", "i-1", "i-2", priority=10, estimatedSavings=2000),
            manifest("rec-004", "i-2", action="scale_down", riskLevel="low", steps=steps),
        ),
    )
    assert run_json(capsys, "-f", path) == [
        {
            "namespace": "default",
            "name": "rec-003",
            "customerId": "customer-1",
            "phase": "AwaitingApproval",
            "supersededBy": None,
            "conflicts": [
                {
                    "type": "resource",
                    "with": ["rec-004"],
                    "resources": ["i-2"],
                    "severity": "medium",
                    "description": "Both recommendations affect resources: [i-2]",
                    "resolution": "Kept recommendation rec-003 (priority: 10, savings: 2000.00), "
                    "discarded rec-004",
                }
            ],
            "approval": {"required": True, "expiresAfterSeconds": 172800},
            "plan": {
                "steps": [
                    {
                        "name": "record_capacity",
                        "action": "record_capacity",
                        "critical": True,
                        "reversible": True,
                    },
                    {
                        "name": "resize_workload",
                        "action": "resize_workload",
                        "critical": True,
                        "reversible": True,
                    },
                    {
                        "name": "validate_quality",
                        "action": "validate_quality",
                        "critical": True,
                        "reversible": False,
                    },
                ]
            },
        },
        {
            "namespace": "default",
            "name": "rec-004",
            "customerId": "customer-1",
            "phase": "Superseded",
            "supersededBy": "rec-003",
            "conflicts": [
                {
                    "type": "resource",
                    "with": ["rec-003"],
                    "resources": ["i-2"],
                    "severity": "medium",
                    "description": "Both recommendations affect resources: [i-2]",
                    "resolution": "Kept recommendation rec-003 (priority: 10, savings: 2000.00), "
                    "discarded rec-004",
                }
            ],
            "approval": {"required": False, "expiresAfterSeconds": 259200},
            "plan": {
                "steps": [
                    {
                        "name": "snap",
                        "action": "take_snapshot",
                        "critical": True,
                        "reversible": True,
                    },
                    {
                        "name": "check",
                        "action": "validate_quality",
                        "critical": False,
                        "reversible": False,
                    },
                ]
            },
        },
    ]


def test_table_for_people(tmp_path: Path, capsys: Capture) -> None:
    path = write(
        tmp_path / "recs.yaml",
        yaml_documents(
            manifest("rec-005", "cluster-a", action="scale_up", priority=8, riskLevel="low"),
            manifest("rec-006", "cluster-a", action="scale_down", priority=10),
            manifest("rec-007", "db", riskLevel="high", autoApprove=False),
            manifest("rec-009", "x", namespace="team-b", riskLevel="low", dependsOn=["rec-009"]),
        ),
    )
    assert check.main(["-f", str(path)]) == 0
    assert capsys.readouterr().out == textwrap.dedent(
        """\
        NAMESPACE   NAME      CUSTOMER     PHASE              SUPERSEDED-BY   CONFLICTS                      APPROVAL
        default     rec-005   customer-1   Superseded         rec-006         resource,action with rec-006   auto (policy)
        default     rec-006   customer-1   AwaitingApproval   <none>          resource,action with rec-005   required, expires after 48h
        default     rec-007   customer-1   AwaitingApproval   <none>          <none>                         required, expires after 24h
        team-b      rec-009   customer-1   Blocked            <none>          dependency with itself         auto (policy)
        """  # noqa: E501
    )


def test_output_is_sorted_by_namespace_customer_and_name(tmp_path: Path, capsys: Capture) -> None:
    write(tmp_path / "a.yaml", yaml_documents(manifest("b", namespace="ns-2")))
    write(tmp_path / "b.yaml", yaml_documents(manifest("z", customer="c-1"), manifest("a")))
    write(tmp_path / "c.yaml", yaml_documents(manifest("c", customer="c-1")))
    entries = run_json(capsys, "-f", tmp_path)
    assert [(e["namespace"], e["customerId"], e["name"]) for e in entries] == [
        ("default", "c-1", "c"),
        ("default", "c-1", "z"),
        ("default", "customer-1", "a"),
        ("ns-2", "customer-1", "b"),
    ]


def test_empty_input_prints_an_empty_list_or_says_so(tmp_path: Path, capsys: Capture) -> None:
    path = write(tmp_path / "empty.yaml", "")
    assert run_json(capsys, "-f", path) == []
    assert check.main(["-f", str(path)]) == 0
    assert capsys.readouterr().err == "No recommendations found.\n"


def test_expiry_flags_change_the_policy(tmp_path: Path, capsys: Capture) -> None:
    path = write(
        tmp_path / "r.yaml",
        yaml_documents(
            manifest("m", "1"),
            manifest("h", "2", riskLevel="high"),
            manifest("c", "3", riskLevel="critical"),
            manifest("lo", "4", riskLevel="low"),
        ),
    )
    flags = ["--expiry-medium", "90m", "--expiry-high", "2d", "--expiry-critical", "45s"]
    entries = run_json(capsys, "-f", path, *flags, "--expiry-low", "1h")
    assert {e["name"]: e["approval"]["expiresAfterSeconds"] for e in entries} == {
        "c": 45,
        "h": 172800,
        "lo": 3600,
        "m": 5400,
    }
    assert check.main(["-f", str(path), "--expiry-medium", "1h30m"]) == 0
    assert "required, expires after 1h30m" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "invalid duration 'soon': expected whole numbers"),
        ("0s", "invalid duration '0s': must be more than 0s"),
    ],
)
def test_a_bad_expiry_flag_is_a_usage_error(
    tmp_path: Path, capsys: Capture, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        check.main(["-f", str(tmp_path), "--expiry-high", value])
    assert exited.value.code == 2
    assert f"argument --expiry-high: {message}" in capsys.readouterr().err


def test_the_coordinator_command_dispatches_to_check(tmp_path: Path, capsys: Capture) -> None:
    path = write(tmp_path / "r.yaml", yaml_documents(manifest("a", "i-1")))
    assert cli.main(["check", "-f", str(path), "-o", "json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)["recommendations"]] == ["a"]
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    assert exited.value.code == 2


# -- Reading --------------------------------------------------------------------------------


def test_folders_are_searched_recursively_for_yaml_yml_and_json(
    tmp_path: Path, capsys: Capture
) -> None:
    write(tmp_path / "top.yaml", yaml_documents(manifest("a")))
    write(tmp_path / "deep" / "er" / "more.yml", yaml_documents(manifest("b")))
    write(tmp_path / "deep" / "c.json", json.dumps(manifest("c")))
    write(tmp_path / "notes.txt", "not: [valid")
    write(tmp_path / "README.md", "# not a manifest")
    single = write(tmp_path.parent / f"{tmp_path.name}-alone.manifest", json.dumps(manifest("d")))
    entries = run_json(capsys, "-f", tmp_path, "-f", single)
    assert [e["name"] for e in entries] == ["a", "b", "c", "d"]


def test_multi_document_yaml_skips_empty_documents_and_other_kinds(
    tmp_path: Path, capsys: Capture
) -> None:
    other_version = {**manifest("old"), "apiVersion": "optiinfra.io/v1beta1"}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
    text = yaml_documents(manifest("a"), config_map, other_version, manifest("b"))
    path = write(tmp_path / "all.yaml", "---\n# only a comment\n---\n" + text + "---\n")
    assert [e["name"] for e in run_json(capsys, "-f", path)] == ["a", "b"]


def test_a_list_as_kubectl_writes_it_is_read_item_by_item(tmp_path: Path, capsys: Capture) -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": [manifest("a"), manifest("b")]}
    path = write(tmp_path / "list.json", json.dumps(listed))
    assert [e["name"] for e in run_json(capsys, "-f", path)] == ["a", "b"]


def test_a_manifest_without_namespace_is_in_default(tmp_path: Path, capsys: Capture) -> None:
    path = write(
        tmp_path / "r.yaml",
        yaml_documents(manifest("a", "i-1"), manifest("b", "i-1", namespace="default")),
    )
    entries = run_json(capsys, "-f", path)
    assert [(e["namespace"], e["phase"]) for e in entries] == [
        ("default", "AwaitingApproval"),
        ("default", "Superseded"),
    ]


def test_namespaces_and_customers_do_not_conflict(tmp_path: Path, capsys: Capture) -> None:
    path = write(
        tmp_path / "r.yaml",
        yaml_documents(
            manifest("a", "i-1"),
            manifest("a", "i-1", namespace="other"),
            manifest("b", "i-1", customer="customer-2"),
        ),
    )
    entries = run_json(capsys, "-f", path)
    assert [(e["namespace"], e["name"], e["conflicts"]) for e in entries] == [
        ("default", "a", []),
        ("default", "b", []),
        ("other", "a", []),
    ]


def test_status_in_a_file_is_ignored_everything_starts_pending(
    tmp_path: Path, capsys: Capture
) -> None:
    executing = {**manifest("a", "i-1"), "status": {"phase": "Executing", "bogus": 1}}
    path = write(tmp_path / "r.yaml", yaml_documents(executing, manifest("b", "i-1", priority=5)))
    entries = run_json(capsys, "-f", path)
    assert [(e["name"], e["phase"]) for e in entries] == [
        ("a", "Superseded"),
        ("b", "AwaitingApproval"),
    ]


def test_only_cycles_and_missing_names_block(tmp_path: Path, capsys: Capture) -> None:
    path = write(
        tmp_path / "r.yaml",
        yaml_documents(
            manifest("a", dependsOn=["b"]),
            manifest("b", dependsOn=["a"]),
            manifest("c", dependsOn=["gone"]),
            manifest("d", dependsOn=["e"]),
            manifest("e", customer="customer-2"),
        ),
    )
    entries = {e["name"]: e for e in run_json(capsys, "-f", path)}
    assert {name: e["phase"] for name, e in entries.items()} == {
        "a": "Blocked",
        "b": "Blocked",
        "c": "Blocked",
        "d": "AwaitingApproval",
        "e": "AwaitingApproval",
    }
    assert entries["a"]["conflicts"] == [
        {
            "type": "dependency",
            "with": ["b"],
            "resources": [],
            "severity": "high",
            "description": "Circular dependency: a -> b -> a",
            "resolution": "",
        }
    ]
    assert entries["c"]["conflicts"] == []


def test_a_self_dependency_is_a_cycle_with_no_other_member(tmp_path: Path, capsys: Capture) -> None:
    path = write(tmp_path / "r.yaml", yaml_documents(manifest("a", dependsOn=["a"])))
    (entry,) = run_json(capsys, "-f", path)
    assert entry["phase"] == "Blocked"
    assert entry["conflicts"] == [
        {
            "type": "dependency",
            "with": [],
            "resources": [],
            "severity": "high",
            "description": "Circular dependency: a -> a",
            "resolution": "",
        }
    ]


# -- Invalid input ----------------------------------------------------------------------------


def test_every_problem_names_the_file_the_object_and_the_field(
    tmp_path: Path, capsys: Capture
) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        yaml_documents(
            manifest("rec-9", riskLevel="extreme"),
            manifest("rec-10", action="Scale-Up", affectedResources=["x", "x"], surprise=1),
            manifest(
                "rec-11", steps=[{"name": "Bad Name", "action": "a", "executor": "simulated"}]
            ),
            {**manifest("ignored"), "metadata": {"namespace": "team"}},
        ),
    )
    single = write(tmp_path / "single.json", json.dumps(manifest("rec-12", priority=1001)))
    nested = write(
        tmp_path / "ns.yaml", yaml_documents(manifest("rec-13", namespace="t", title=""))
    )
    problems = run_invalid(capsys, "-f", bad, "-f", single, "-f", nested)
    assert problems == [
        f"{bad} (document 1): Recommendation default/rec-9: spec.riskLevel: "
        "Input should be 'low', 'medium', 'high' or 'critical'",
        f"{bad} (document 2): Recommendation default/rec-10: spec.action: "
        "String should match pattern '^[a-z][a-z0-9_]{0,62}$'",
        f"{bad} (document 2): Recommendation default/rec-10: spec.affectedResources: "
        "Value error, duplicate entry 'x': the list is a set",
        f"{bad} (document 2): Recommendation default/rec-10: spec.surprise: "
        "Extra inputs are not permitted",
        f"{bad} (document 3): Recommendation default/rec-11: spec.steps[0].name: "
        "String should match pattern '^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$'",
        f"{bad} (document 4): Recommendation without a name: metadata.name: Field required",
        f"{single}: Recommendation default/rec-12: spec.priority: "
        "Input should be less than or equal to 1000",
        f"{nested}: Recommendation t/rec-13: spec.title: String should have at least 1 character",
    ]


def test_a_problem_in_a_list_names_the_item(tmp_path: Path, capsys: Capture) -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [manifest("a"), manifest("b", "i", priority=-1)],
    }
    path = write(tmp_path / "list.yaml", yaml_documents(listed))
    assert run_invalid(capsys, "-f", path) == [
        f"{path} (document 1, item 2): Recommendation default/b: spec.priority: "
        "Input should be greater than or equal to 0"
    ]


def test_a_name_defined_twice_is_a_problem(tmp_path: Path, capsys: Capture) -> None:
    first = write(tmp_path / "a.yaml", yaml_documents(manifest("rec-1")))
    second = write(tmp_path / "b.yaml", yaml_documents(manifest("x"), manifest("rec-1")))
    third = write(tmp_path / "c.yaml", yaml_documents(manifest("rec-1", namespace="default")))
    write(tmp_path / "d.yaml", yaml_documents(manifest("rec-1", namespace="other")))
    assert run_invalid(capsys, "-f", tmp_path) == [
        f"{second} (document 2): Recommendation default/rec-1: metadata.name: "
        f"defined twice, also in {first}",
        f"{third}: Recommendation default/rec-1: metadata.name: defined twice, also in {first}",
    ]


def test_syntax_errors_name_the_file_and_the_line(tmp_path: Path, capsys: Capture) -> None:
    broken_yaml = write(
        tmp_path / "broken.yaml",
        yaml_documents(manifest("fine")) + "---\nkind: Recommendation\nspec: [unclosed\n",
    )
    broken_json = write(tmp_path / "broken.json", '{\n  "kind": "Recommendation",\n  oops\n}')
    tab = write(tmp_path / "tab.yml", "kind: Recommendation\nmetadata:\n\tname: x\n")
    problems = run_invalid(capsys, "-f", broken_json, broken_yaml, tab)
    assert problems == [
        f"{broken_json}: line 3, column 3: invalid JSON: "
        "Expecting property name enclosed in double quotes",
        f"{broken_yaml}: line 5, column 1: invalid YAML: while parsing a flow sequence "
        "expected ',' or ']', but got '<stream end>'",
        f"{tab}: line 3, column 1: invalid YAML: while scanning for the next token "
        "found character '\\t' that cannot start any token",
    ]


def test_a_path_that_does_not_exist_is_a_problem(tmp_path: Path, capsys: Capture) -> None:
    fine = write(tmp_path / "fine.yaml", yaml_documents(manifest("a")))
    missing = tmp_path / "nowhere"
    assert run_invalid(capsys, "-f", fine, missing) == [f"{missing}: no such file or folder"]


def test_a_file_that_is_not_text_is_a_problem(tmp_path: Path, capsys: Capture) -> None:
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    (problem,) = run_invalid(capsys, "-f", binary)
    assert problem.startswith(f"{binary}: cannot read: ")


def test_step_params_are_checked_as_admission_checks_them(tmp_path: Path, capsys: Capture) -> None:
    steps = [
        {"name": "ok", "action": "wait", "executor": "kubernetes", "params": {"x": 1}},
        {
            "name": "scale",
            "action": "scale",
            "executor": "kubernetes",
            "params": {"target": {"apiVersion": "apps/v1", "name": "web"}, "replicas": 2},
        },
    ]
    bad = write(tmp_path / "steps.yaml", yaml_documents(manifest("rec-20", steps=steps)))
    assert run_invalid(capsys, "-f", bad) == [
        f"{bad}: Recommendation default/rec-20: spec.steps[0].params.target: required "
        "({apiVersion, kind, name} of an object in the namespace)",
        f"{bad}: Recommendation default/rec-20: spec.steps[0].params.condition: required "
        "({type, status}), or params.jsonPath with value",
        f"{bad}: Recommendation default/rec-20: spec.steps[1].params.target.kind: required",
    ]


def test_policies_among_the_inputs_apply(capsys: Capture, tmp_path: Path) -> None:
    path = write(
        tmp_path / "all.yaml",
        yaml_documents(
            manifest("rec-1", "i-1"),
            manifest("rec-2", "i-2", riskLevel="low"),
            manifest("rec-3", "i-3", customer="other"),
            builders.policy(
                "strict",
                selector={"customerIds": ["customer-1"]},
                approvals={"required": 2, "approvers": [{"group": "sre"}]},
                expiry={"medium": "2h"},
                autoApprove={"maxRisk": "none"},
                windows=[
                    {"name": "weekend-freeze", "kind": "Deny", "schedule": "0 18 * * 5",
                     "duration": "62h", "timeZone": "Europe/Berlin"}
                ],
            ),
        ),
    )  # fmt: skip
    entries = run_json(capsys, "-f", path, "--at", "2026-03-07T12:00:00Z")  # a Saturday
    by_name = {entry["name"]: entry for entry in entries}
    assert by_name["rec-1"]["policies"] == ["strict"]
    assert by_name["rec-1"]["approval"]["approvals"] == 2
    assert by_name["rec-1"]["approval"]["expiresAfterSeconds"] == 7200
    assert by_name["rec-1"]["approval"]["approvers"] == "group sre (policy strict)"
    assert by_name["rec-2"]["phase"] == "AwaitingApproval"  # maxRisk none: low needs a person
    assert by_name["rec-1"]["start"] == {
        "waits": "inside Deny window weekend-freeze until 2026-03-09T07:00:00Z",
        "until": "2026-03-09T07:00:00Z",
    }
    assert "policies" not in by_name["rec-3"]
    assert by_name["rec-3"]["approval"]["expiresAfterSeconds"] == 48 * 3600
    assert check.main(["-f", str(path), "--at", "2026-03-07T12:00:00Z"]) == 0
    table = capsys.readouterr().out
    assert "POLICIES" in table
    assert "required, expires after 2h, 2 approvals" in table
    assert "inside Deny window weekend-freeze" in table


def test_a_bad_policy_is_refused_naming_the_field(capsys: Capture, tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        yaml_documents(
            manifest("rec-1", "i-1"),
            builders.policy("bad", windows=[{"name": "w", "kind": "Deny", "schedule": "61 * * * *",
                                        "duration": "1h", "timeZone": "Mars/Olympus"}]),
        ),
    )  # fmt: skip
    problems = run_invalid(capsys, "-f", path)
    assert any("ApprovalPolicy bad: spec.windows[0]: window w:" in p for p in problems), problems


def test_the_templates_that_would_verify_each_recommendation_are_listed(
    capsys: Capture, tmp_path: Path
) -> None:
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    shrink: dict[str, Any] = {
        "action": "scale_down",
        "parameters": {"replicas": 1},
        "target": target,
    }
    path = write(
        tmp_path / "all.yaml",
        yaml_documents(
            manifest("rec-1", "i-1", **shrink),
            manifest("rec-2", "i-2", customer="other", **shrink,
                     verification={"templates": ["extra", "missing"]}),
            builders.template("latency", selector={"customerIds": ["customer-1"]}),
            builders.template("extra", selector={"customerIds": ["nobody"]},
                              metrics=[builders.metric("errors")]),
        ),
    )  # fmt: skip
    by_name = {entry["name"]: entry for entry in run_json(capsys, "-f", path)}
    assert by_name["rec-1"]["verification"] == {
        "templates": ["latency"],
        "metrics": ["latency/latency"],
        "problems": [],
    }
    second = by_name["rec-2"]["verification"]
    assert second["templates"] == ["extra"]  # named by the recommendation, not selecting it
    assert second["problems"] == [
        "VerificationTemplate missing (spec.verification.templates) does not exist"
    ]
    assert check.main(["-f", str(path)]) == 0
    table = capsys.readouterr().out
    assert "VERIFIED-BY" in table
    assert "extra (problems: see -o json)" in table
    # Without templates in the input, neither the field nor the column.
    alone = write(tmp_path / "one" / "rec.yaml", yaml_documents(manifest("rec-1", "i-1")))
    assert "verification" not in run_json(capsys, "-f", alone)[0]


def test_a_template_admission_would_refuse_is_refused_naming_the_field(
    capsys: Capture, tmp_path: Path
) -> None:
    bad = builders.metric(successCondition="result <=", query="up{x='{{target.nme}}'}")
    path = write(
        tmp_path / "t.yaml",
        yaml_documents(manifest("rec-1", "i-1"), builders.template("bad", metrics=[bad])),
    )
    problems = run_invalid(capsys, "-f", path)
    assert any(
        "VerificationTemplate bad: spec.metrics[0].query: unknown placeholder {{target.nme}}" in p
        for p in problems
    ), problems
    assert any("VerificationTemplate bad: spec.metrics[0].successCondition:" in p for p in problems)


def test_the_calibrate_savings_flag_turns_calibration_on_for_run_and_check() -> None:
    parser = argparse.ArgumentParser()
    policyflags.add_policy_arguments(parser)
    assert policyflags.policy_from(parser.parse_args(["--calibrate-savings"])).calibrate_savings
    assert not policyflags.policy_from(parser.parse_args([])).calibrate_savings
