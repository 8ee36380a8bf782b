"""optiinfra-coordinator: a Kubernetes operator that coordinates optimisation recommendations.

Read this first: the layers, from the bottom up. A module may import from its own
layer and the layers below it, never from a layer above. ``.importlinter`` at the
top of the repository enforces this with import-linter (``make lint``).

``coordinator.api``
    pydantic models of the kinds (Recommendation, Approval, ExecutionPlan, AgentEndpoint,
    ApprovalPolicy, VerificationTemplate), and ``defaults``: the operator's defaults
    and backoff policies, each named once.
    The single source of truth: the CRDs in ``crds/`` are generated from them.
``coordinator.core``
    The pure rules: conflicts and resolution, a recommendation's lifecycle (``lifecycle``;
    the Approvals it writes: ``approvalstatus``), approval policy (risk floors, who must
    decide), ApprovalPolicies (``policy``: most-restrictive merge, N-of-M votes, change
    windows in IANA zones, the per-customer budget, notification bodies), admission rules,
    the plan catalogue (default plans that do real work), the plan state machine (with its
    ``Verifying`` phase) and the Events of its transitions (``planevents``),
    ``verification`` (which VerificationTemplates apply, the measurements' state machine and
    schedule, realised savings, calibrated ranking) and ``cel`` (its conditions, checked and
    evaluated), step params (``steps``), the webhook protocol (``webhook``: signing,
    idempotency keys, bounded answers), ``backoff`` (the work queue's per-key failures),
    ``origin`` (where a change came from: listed, watched, own write), ``listings`` (when
    kopf's events show a kind listed, for ``--watch=kopf``), ``shards`` (the
    consistent-hash ring that assigns customers to shards) and ``handoff`` (when a shard
    may start driving a customer that moved to it), and
    ``text`` (agents' text cleaned of control characters before it reaches status, Events or
    a terminal). Plain functions over the api models. No I/O, no clock (``now`` is always
    passed in), no kopf, no kubernetes client.
``coordinator.check``, ``coordinator.crdgen``, ``coordinator.present``, ``coordinator.timeline``,
``coordinator.shardview``
    Offline tools over the core: ``coordinator check`` (what the operator will decide
    for a set of manifests, no cluster; ``manifests`` reads the files, ``policyflags``
    are the approval policy's flags it shares with ``run``), the CRD generator
    (``make manifests``), and what a person reads about objects (why a phase, the
    approval queue; ``timeline``: a plan's steps and verification; ``shardview``: which
    shard decided and drives a customer, a ring's shards; pure, over the objects as the
    API server returns them).
``coordinator.k8s`` and ``coordinator.executors``
    The only code that talks to the API server — ``client`` (reads, status patches,
    owned children; ``http`` makes its frequent calls from the event loop over aiohttp
    with the client's configuration), ``status`` (the one StatusWriter of every kind:
    diff, one merge patch, no-ops skipped, the answer returned to the writer),
    ``retrying`` (API calls tried again through transient errors until the caller stops),
    ``informer`` (the lean list/watch of the coordinator's kinds into the Store),
    ``kopfwatch`` (``--watch=kopf``: kopf's watching into the Store instead, measured),
    ``objects`` (any kind, for the kubernetes executor), ``events``, ``webhooks``
    (admission configurations; ``certificates`` to serve them with, ``registrar`` to
    register them), ``admission`` (the admission webhooks' HTTPS server:
    AdmissionReview in, verdict and JSON Patch out), ``lease`` (leader election),
    ``shardlease`` (a shard's own Lease and the ring of live ones),
    ``access`` (access reviews: the operator's own rights at start, a submitter's at
    admission), ``caller`` (reads and writes with a caller's own credentials, and the
    one way to build a caller's API client, for ``usecases``, the plugin and the
    gateway) — and what plan steps do
    (``kubernetes`` with ``waiting``, ``webhook`` with ``endpoints`` and ``post``,
    ``simulated``); ``notify`` sends the ApprovalPolicies'
    signed notifications from its own queue.
``coordinator.metrics``
    The Prometheus metrics; the state gauges read counts the Store keeps.

The shell, from the bottom up:

``coordinator.providers``
    Where verification's measurements come from: ``prometheus`` (instant queries of the
    HTTP API, a token from a Secret, bounded answers) answers a query filled in by
    ``core.verification`` with a Reading: a value, no data or an error.
``coordinator.store`` (its ``records`` in ``coordinator.records``)
    What the operator knows: one compact record per object (the fields looked up by,
    the rest as compact JSON; no pydantic models, no watch responses), the dependency
    maps, the counts for the metrics; it is also the version tracker of the operator's
    own writes. Models are materialised per reconcile, from a small cache.
``coordinator.workqueue``, ``coordinator.settled``, ``coordinator.outbox``
    The work queue of customer groups (its one ``enqueue``: a change of the Store, with
    its origin, ``core.origin``, becomes keys; requeue-after, per-key exponential
    backoff, a listing's keys behind the changes of now), the context of one reconcile
    (``Reconciling``: its own writes and their changes) and its ``Result``; which
    recommendations need no deciding (their inputs, as versions); the runner's and
    daemons' own writes, in the Store at once, waiting for dispatch (``outbox``).
``coordinator.reconciler``, ``coordinator.followup``
    A reconcile observes a group in the Store, asks ``core.lifecycle``, writes what
    changed through the StatusWriter and returns a ``Result``: when to run again and
    the plans to start (``followup``), and its writes' changes in the Store.
``coordinator.plangate``, ``coordinator.notifications``
    For the reconciler: whether a plan may start (dependencies, AgentEndpoints, change
    windows, the budget), and the ApprovalPolicies' notifications of what it decided.
``coordinator.runner``
    One plan: next move (``core.plan``) -> persist -> execute -> persist.
``coordinator.verifier``
    For the runner: the verification moves of a plan, with their I/O (the baseline before
    the first step, the measurements due after the last, the ``<plan>-verify`` approval);
    the decisions are ``core.verification``'s.
``coordinator.parts``
    The parts of the running operator, each one job with ``start`` and ``stop``:
    ``signals`` (the one owner of SIGTERM/SIGINT: they set the one stop event, kopf's
    stop flag), ``webhooks`` (the admission server, its registration, the start-up probe,
    the keep-alive), ``leadership`` (the Lease and whether this replica acts),
    ``readiness`` (/readyz), ``dispatch`` (what an event source delivers into the Store,
    each change it answers -> queue keys, plan starts, daemons; runs the reconciler's
    workers and dispatches their Results), ``starts`` (plan starts), ``daemons`` (one daemon per
    started plan from the Store, its finalizer on while it runs, so that a deletion waits
    for the rollback), ``facts`` (what the admission hooks look up), ``config``.
``coordinator.app``
    The Operator: builds the parts, starts them in order and, on the stop event, stops
    them in reverse order, each within its bound. It does nothing else.
``coordinator.handlers``
    Thin handlers: kopf's start and stop of the operator, and the five admission hooks
    (served by ``k8s.admission``). They decide nothing. kopf watches nothing.
``coordinator.usecases``
    What a person or an agent does, as the caller (through ``k8s.caller``): decide an
    Approval, start or abort a plan, and the bounded wait until the operator records a
    decision; typed results, which the plugin renders as text and the gateway as JSON.
    Like the plugin and the gateway, it knows the objects, never the operator's shell.
``coordinator.cli``, ``coordinator.run``, ``coordinator.gateway``
    The ``coordinator`` command: ``run`` (start-up checks, kopf; its flags are
    ``runflags``), ``check`` and ``gateway`` (the origin document's HTTP API and a
    read-only dashboard over the objects, acting as the caller; ``gateway.origin`` maps
    requests and responses, purely).
``coordinator.plugin``
    ``kubectl optiinfra`` (the ``kubectl-optiinfra`` executable): decide, start, abort
    (``usecases``), explain, as the user of the kubeconfig. It depends only on the
    objects' spec and status, never on the operator's shell.
``coordinator.agent``
    A reference agent (``python -m coordinator.agent``): the other side of the webhook
    executor, for tests and demos; it uses only ``core.webhook``.
``coordinator.refdocs``
    The docs site's API reference (``docs/reference/``, ``make manifests``), written from
    the same schemas as the CRDs.
"""
