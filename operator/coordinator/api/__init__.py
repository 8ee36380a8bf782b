"""The API of optiinfra.io/v1alpha1 as pydantic models: the single source of truth.

The CRDs in crds/ are generated from these models (``make manifests``); the core
computes over them; the operator parses what the API server sends into them.

Modules: ``common`` (base model, time, risk, conditions), ``meta`` (object
metadata), ``recommendation``, ``approval``, ``plan`` (ExecutionPlan and Step),
``endpoint`` (AgentEndpoint, where the webhook executor reaches an agent),
``policy`` (ApprovalPolicy), ``verification`` (VerificationTemplate, and the
verification's progress in a plan's status); ``defaults`` (not a kind: the operator's
defaults, each named once, such as every retry's backoff).
"""
