"""optiinfra-coordinator: a Kubernetes operator that coordinates optimisation recommendations.

Read this first: the layers, from the bottom up. A module may import from its own
layer and the layers below it, never from a layer above. ``.importlinter`` at the
top of the repository enforces this with import-linter (``make lint``).

``coordinator.api``
    pydantic models of the kinds (Recommendation, Approval, ExecutionPlan, AgentEndpoint).
    The single source of truth: the CRDs in ``crds/`` are generated from them.
``coordinator.core``
    The pure rules: conflicts and resolution, approval policy, the plan catalogue
    and the plan state machine. Plain functions over the api models. No I/O, no
    clock (``now`` is always passed in), no kopf, no kubernetes client.
``coordinator.check``, ``coordinator.crdgen``
    Offline tools over the core: ``coordinator check`` (what the operator will decide
    for a set of manifests, no cluster) and the CRD generator (``make manifests``).
``coordinator.k8s`` and ``coordinator.executors``
    The only code that talks to the API server (reads, status patches, events,
    owned children) and what plan steps do (simulated, kubernetes).
``coordinator.handlers``
    Thin kopf handlers: parse the object, call the core, write one status patch.
``coordinator.cli``
    The ``coordinator`` command: ``run`` and ``check``.
"""
