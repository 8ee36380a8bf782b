"""ApprovalPolicy rules: merge, votes, windows across daylight-saving changes, budget.

Examples first, then hypothesis properties of the pure rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.api.common import RiskLevel
from coordinator.api.policy import ApprovalPolicySpec, Approver, MaxRisk, Window, WindowKind
from coordinator.api.recommendation import RecommendationSpec
from coordinator.core import policy

SETTINGS = settings(max_examples=150, deadline=None)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def spec(**fields: object) -> ApprovalPolicySpec:
    return ApprovalPolicySpec.model_validate(fields)


def vote(user: str, decision: str = "Approved", *groups: str) -> policy.Vote:
    return policy.Vote(user, tuple(groups), decision, None, T0)


# --- merge ----------------------------------------------------------------------------


def test_no_policy_is_the_builtin_default() -> None:
    assert policy.merge([]) == policy.DEFAULT
    assert policy.DEFAULT.auto_approves(RiskLevel.LOW)
    assert not policy.DEFAULT.auto_approves(RiskLevel.MEDIUM)


def test_two_overlapping_policies_combine_most_restrictively() -> None:
    a = spec(
        approvals={"required": 2, "approvers": [{"group": "sre"}]},
        expiry={"critical": "2h", "high": "8h"},
        autoApprove={"maxRisk": "medium"},
        maxConcurrentPlans=3,
        windows=[{"name": "office", "kind": "Allow", "schedule": "0 9 * * 1-5", "duration": "8h"}],
    )
    b = spec(
        approvals={"required": 1, "approvers": [{"user": "cto"}]},
        expiry={"critical": "1h", "low": "1d"},
        autoApprove={"maxRisk": "none"},
        maxConcurrentPlans=1,
        windows=[{"name": "freeze", "kind": "Deny", "schedule": "0 18 * * 5", "duration": "2d"}],
    )
    merged = policy.merge([("b", b), ("a", a)])
    assert merged.policies == ("a", "b")
    assert merged.required == 2
    assert [s.policy for s in merged.approver_sets] == ["a", "b"]
    assert merged.expiry == {
        RiskLevel.CRITICAL: timedelta(hours=1),
        RiskLevel.HIGH: timedelta(hours=8),
        RiskLevel.LOW: timedelta(days=1),
    }
    assert merged.max_risk is MaxRisk.NONE
    assert not merged.auto_approves(RiskLevel.LOW)
    assert merged.max_concurrent_plans == 1
    assert [w.name for w in merged.windows] == ["office", "freeze"]


def test_selector_matches_every_list_given() -> None:
    rec = RecommendationSpec.model_validate(
        {
            "customerId": "c1",
            "agentId": "a",
            "agentType": "cost",
            "title": "t",
            "action": "scale_down",
            "riskLevel": "high",
        }
    )
    assert policy.selects(spec(), rec, risk=RiskLevel.HIGH)
    assert policy.selects(spec(selector={"customerIds": ["c1"]}), rec, risk=RiskLevel.HIGH)
    assert not policy.selects(
        spec(selector={"customerIds": ["c1"], "actions": ["x"]}), rec, risk=RiskLevel.HIGH
    )
    assert not policy.selects(spec(selector={"riskLevels": ["low"]}), rec, risk=RiskLevel.HIGH)


# --- votes ----------------------------------------------------------------------------

SRE = policy.ApproverSet("p", (Approver(group="sre"), Approver(user="alice")))


def test_two_of_three() -> None:
    sets = [SRE]
    assert policy.tally([vote("alice")], required=2, sets=sets, submitter="agent").outcome == (
        "Pending"
    )
    twice = [vote("alice"), vote("alice")]
    assert policy.tally(twice, required=2, sets=sets, submitter=None).outcome == "Pending"
    done = [vote("alice"), vote("bob", "Approved", "sre")]
    assert policy.tally(done, required=2, sets=sets, submitter=None).outcome == "Approved"
    outsider = [vote("alice"), vote("mallory")]
    assert policy.tally(outsider, required=2, sets=sets, submitter=None).outcome == "Pending"
    submitter = [vote("alice"), vote("bob", "Approved", "sre")]
    assert policy.tally(submitter, required=2, sets=sets, submitter="bob").outcome == "Pending"


def test_first_rejection_rejects() -> None:
    votes = [vote("alice"), vote("bob", "Rejected", "sre"), vote("carol", "Approved", "sre")]
    assert policy.tally(votes, required=2, sets=[SRE], submitter=None).outcome == "Rejected"


def test_every_approver_list_needs_a_member() -> None:
    cto = policy.ApproverSet("q", (Approver(user="cto"),))
    votes = [vote("alice"), vote("bob", "Approved", "sre")]
    result = policy.tally(votes, required=2, sets=[SRE, cto], submitter=None)
    assert result.outcome == "Pending"
    assert "user cto (policy q)" in result.missing
    votes.append(vote("cto"))
    assert policy.tally(votes, required=2, sets=[SRE, cto], submitter=None).outcome == "Approved"


USERS = ["alice", "bob", "carol", "dave", "eve"]
votes_st = st.lists(
    st.builds(
        lambda u, d, g: policy.Vote(u, g, d, None, T0),
        st.sampled_from(USERS),
        st.sampled_from(["Approved", "Approved", "Rejected"]),
        st.sampled_from([(), ("sre",), ("dev",)]),
    ),
    max_size=8,
)


@SETTINGS
@given(votes=votes_st, required=st.integers(1, 4), submitter=st.sampled_from([None, *USERS]))
def test_votes_approved_iff_enough_distinct_eligible_people(
    votes: list[policy.Vote], required: int, submitter: str | None
) -> None:
    result = policy.tally(votes, required=required, sets=[SRE], submitter=submitter)
    counted = [v for v in votes if v.user != submitter and policy.eligible(v.user, v.groups, [SRE])]
    first: dict[str, policy.Vote] = {}
    for v in counted:
        first.setdefault(v.user, v)
    assert submitter not in result.approvers
    assert len(set(result.approvers)) == len(result.approvers)
    if result.outcome == "Approved":
        assert len(result.approvers) >= required
        assert all(first[u].decision == "Approved" for u in result.approvers)
    if result.outcome == "Pending":
        assert not any(v.decision == "Rejected" for v in first.values())
    # Duplicates of a vote never change the outcome.
    assert policy.tally(
        [*votes, *votes], required=required, sets=[SRE], submitter=submitter
    ).outcome == result.outcome or any(v.decision == "Rejected" for v in counted)


@SETTINGS
@given(votes=votes_st, required=st.integers(1, 4), data=st.data())
def test_approvals_alone_count_in_any_order(
    votes: list[policy.Vote], required: int, data: st.DataObject
) -> None:
    approvals = [v for v in votes if v.decision == "Approved"]
    shuffled = data.draw(st.permutations(approvals))
    a = policy.tally(approvals, required=required, sets=[SRE], submitter=None)
    b = policy.tally(shuffled, required=required, sets=[SRE], submitter=None)
    assert a.outcome == b.outcome
    assert set(a.approvers) == set(b.approvers)


# --- windows --------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def window(kind: str, schedule: str, duration: str, tz: str = "Europe/Berlin") -> Window:
    return Window(name=f"{kind.lower()}-w", kind=WindowKind(kind), schedule=schedule,
                  duration=duration, time_zone=tz)  # fmt: skip


def test_allow_window_at_nine_local_across_dst() -> None:
    office = window("Allow", "0 9 * * *", "1h")
    # Before (CET, +01:00) and after (CEST, +02:00) the change of 2026-03-29.
    for day in (28, 29, 30):
        inside = datetime(2026, 3, day, 9, 30, tzinfo=BERLIN)
        assert policy.window_gate([office], now=inside) == policy.Go()
        outside = datetime(2026, 3, day, 10, 30, tzinfo=BERLIN)
        verdict = policy.window_gate([office], now=outside)
        assert isinstance(verdict, policy.Wait)
        assert verdict.until == datetime(2026, 3, day + 1, 9, 0, tzinfo=BERLIN)
        assert "Allow window allow-w opens at" in verdict.reason


def test_deny_beats_allow_and_says_until_when() -> None:
    allow = window("Allow", "0 0 * * *", "1d", tz="UTC")
    freeze = window("Deny", "0 18 * * 5", "62h", tz="UTC")  # Friday 18:00 to Monday 08:00
    friday_night = datetime(2026, 3, 6, 22, 0, tzinfo=UTC)
    verdict = policy.window_gate([allow, freeze], now=friday_night)
    assert verdict == policy.Wait(
        "inside Deny window deny-w until 2026-03-09T08:00:00Z",
        datetime(2026, 3, 9, 8, 0, tzinfo=UTC),
    )
    assert policy.window_gate([allow, freeze], now=datetime(2026, 3, 9, 8, 0, tzinfo=UTC)) == (
        policy.Go()
    )


def test_bad_window_waits_with_a_message() -> None:
    bad = window("Deny", "61 * * * *", "1h")
    assert policy.window_problem(bad)
    verdict = policy.window_gate([bad], now=T0)
    assert isinstance(verdict, policy.Wait)
    assert "window deny-w" in verdict.reason or "cannot be evaluated" in verdict.reason


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
windows_st = st.lists(
    st.builds(
        window,
        st.sampled_from(["Allow", "Deny"]),
        st.builds(
            lambda m, h, dow: f"{m} {h} * * {dow}",
            st.sampled_from(["0", "30", "*/20"]),
            st.sampled_from(["1", "2", "3", "9", "*/6"]),
            st.sampled_from(["*", "0", "1-5", "6"]),
        ),
        st.sampled_from(["30m", "1h", "2h30m", "1d"]),
        st.sampled_from(ZONES),
    ),
    min_size=1,
    max_size=3,
)
# Around the daylight-saving changes of 2026 in Europe and North America.
instants = st.sampled_from(
    [
        datetime(2026, 3, 8, tzinfo=UTC),
        datetime(2026, 3, 29, tzinfo=UTC),
        datetime(2026, 10, 25, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    ]
).flatmap(lambda d: st.integers(-3 * 86400, 3 * 86400).map(lambda s: d + timedelta(seconds=s)))


@SETTINGS
@given(windows=windows_st, now=instants, fraction=st.floats(0, 1, exclude_max=True))
def test_a_wait_holds_until_its_time_and_no_longer_than_needed(
    windows: list[Window], now: datetime, fraction: float
) -> None:
    verdict = policy.window_gate(windows, now=now)
    if isinstance(verdict, policy.Go):
        assert not any(w.kind is WindowKind.DENY and policy.open_until(w, now) for w in windows)
        return
    assert verdict.until is not None
    assert verdict.until > now
    # Anywhere before its time it still waits: nothing opens or closes earlier.
    between = min(now + (verdict.until - now) * fraction, verdict.until - timedelta(microseconds=1))
    assert isinstance(policy.window_gate(windows, now=between), policy.Wait)


@SETTINGS
@given(windows=windows_st, now=instants)
def test_an_open_window_is_open_for_exactly_its_duration(
    windows: list[Window], now: datetime
) -> None:
    for w in windows:
        end = policy.open_until(w, now)
        if end is not None:
            assert now < end <= now + policy.parse_duration(w.duration)
            assert policy.open_until(w, end - timedelta(seconds=1)) is not None


# --- budget ---------------------------------------------------------------------------


def test_budget_of_one_runs_plans_one_after_the_other() -> None:
    assert policy.budget_gate("a", running=[], waiting=["a", "b"], limit=1) == policy.Go()
    wait = policy.budget_gate("b", running=[], waiting=["a", "b"], limit=1)
    assert isinstance(wait, policy.Wait)
    assert "at most 1 plan" in wait.reason
    assert isinstance(policy.budget_gate("b", running=["a"], waiting=["b"], limit=1), policy.Wait)
    assert policy.budget_gate("b", running=[], waiting=["b"], limit=1) == policy.Go()
    assert policy.budget_gate("b", running=["a"], waiting=["b"], limit=None) == policy.Go()


@SETTINGS
@given(n=st.integers(0, 6), running=st.integers(0, 6), limit=st.integers(1, 4))
def test_budget_never_lets_more_than_the_limit_start(n: int, running: int, limit: int) -> None:
    waiting = [f"w{i}" for i in range(n)]
    busy = [f"r{i}" for i in range(running)]
    go = [w for w in waiting if policy.budget_gate(w, running=busy, waiting=waiting, limit=limit)
          == policy.Go()]  # fmt: skip
    assert len(go) == max(0, min(n, limit - running))
    assert go == waiting[: len(go)]  # in rank order


# --- merge properties -----------------------------------------------------------------

spec_st = st.builds(
    lambda required, approvers, expiry, max_risk, budget: ApprovalPolicySpec.model_validate(
        {
            **({"approvals": {"required": required, "approvers": approvers}} if required else {}),
            **({"expiry": {"high": expiry}} if expiry else {}),
            **({"autoApprove": {"maxRisk": max_risk}} if max_risk else {}),
            **({"maxConcurrentPlans": budget} if budget else {}),
        }
    ),
    st.sampled_from([None, 1, 2, 3]),
    st.sampled_from([[], [{"user": "alice"}], [{"group": "sre"}]]),
    st.sampled_from([None, "1h", "30m", "2d"]),
    st.sampled_from([None, "none", "low", "medium", "critical"]),
    st.sampled_from([None, 1, 2, 5]),
)
named_specs = st.lists(spec_st, max_size=4).map(
    lambda specs: [(f"p{i}", s) for i, s in enumerate(specs)]
)


@SETTINGS
@given(policies=named_specs, data=st.data())
def test_merge_is_independent_of_order(
    policies: list[tuple[str, ApprovalPolicySpec]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(policies))
    assert policy.merge(shuffled) == policy.merge(policies)


@SETTINGS
@given(policies=named_specs, extra=spec_st)
def test_another_policy_never_makes_it_less_restrictive(
    policies: list[tuple[str, ApprovalPolicySpec]], extra: ApprovalPolicySpec
) -> None:
    before = policy.merge(policies)
    after = policy.merge([*policies, ("zz", extra)])
    assert after.required >= before.required
    assert set(before.approver_sets) <= set(after.approver_sets)
    for risk, value in before.expiry.items():
        assert after.expiry[risk] <= value
    if any(s.auto_approve for _, s in policies):  # a policy that sets none has no say
        for risk in RiskLevel:
            assert before.auto_approves(risk) or not after.auto_approves(risk)
    if before.max_concurrent_plans is not None:
        assert after.max_concurrent_plans is not None
        assert after.max_concurrent_plans <= before.max_concurrent_plans
    # Each field is the most restrictive of the policies that set it.
    assert after.required == max(
        [1, *(s.approvals.required for _, s in [*policies, ("zz", extra)] if s.approvals)]
    )


def test_a_window_that_opens_in_the_hour_the_clock_turns_back_stays_open_its_duration() -> None:
    """02:00 Berlin on 25 October 2026 happens twice; the window opens at the first (00:00
    UTC) and is open until 01:00 UTC, including its last second."""
    w = window("Allow", "0 2 * * *", "1h", "Europe/Berlin")
    opened = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    end = opened + timedelta(hours=1)
    assert policy.open_until(w, opened) == end
    assert policy.open_until(w, end - timedelta(seconds=1)) == end
    assert policy.open_until(w, end) is None
