"""optiinfra-coordinator: a Kubernetes operator that coordinates optimisation recommendations.

Read this first: the layers, from the bottom up. A module may import from its own
layer and the layers below it, never from a layer above. ``.importlinter`` at the
top of the repository enforces this with import-linter (``make lint``).

``coordinator.api``
    pydantic models of the kinds (Recommendation, Approval, ExecutionPlan, AgentEndpoint,
    ApprovalPolicy).
    The single source of truth: the CRDs in ``crds/`` are generated from them.
``coordinator.core``
    The pure rules: conflicts and resolution, approval policy (risk floors, who must
    decide), ApprovalPolicies (``policy``: most-restrictive merge, N-of-M votes, change
    windows in IANA zones, the per-customer budget, notification bodies), admission
    rules, the plan catalogue (default plans that do real work), the plan state machine,
    step params (``steps``) and the webhook protocol (``webhook``: signing, idempotency
    keys). Plain functions over the api models. No I/O, no clock
    (``now`` is always passed in), no kopf, no kubernetes client.
``coordinator.check``, ``coordinator.crdgen``
    Offline tools over the core: ``coordinator check`` (what the operator will decide
    for a set of manifests, no cluster) and the CRD generator (``make manifests``).
``coordinator.k8s`` and ``coordinator.executors``
    The only code that talks to the API server — ``client`` (reads, status patches,
    owned children), ``objects`` (any kind, for the kubernetes executor), ``events``,
    ``webhooks`` (admission configurations), ``lease`` (leader election), ``access``
    (access reviews: the operator's own rights at start, a submitter's at admission) —
    and what plan steps do (``kubernetes``, ``webhook``, ``simulated``); ``notify`` sends
    the ApprovalPolicies' signed notifications from its own queue.
``coordinator.reconciler``, ``coordinator.runner``, ``coordinator.app``
    The shell: customer groups reconciled from the watched view, plans driven step by
    step, and the running operator that wires them (leadership, readiness, clean-up).
``coordinator.handlers``
    Thin kopf handlers: parse the object, call the core, write one status patch.
``coordinator.cli``, ``coordinator.run``
    The ``coordinator`` command: ``run`` and ``check``.
``coordinator.agent``
    A reference agent (``python -m coordinator.agent``): the other side of the webhook
    executor, for tests and demos; it uses only ``core.webhook``.
"""
