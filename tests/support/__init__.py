"""What the tests are made of, in one place; test modules and conftest files import from
here and never from each other.

- kube: kubectl as a user, Objects read back, `wait_for` a condition with a deadline
- cluster: the e2e cluster's identities and an admin's set-up of a tenant namespace
- builders: one builder per kind (recommendation, approval, plan, endpoint, policy,
  template), wire dicts with keyword overrides
- fakeapi: the one fake API server client of the narrow shell unit tests
- processes: `coordinator run` and the reference agent as processes; net: a free port
- gateway, examples, surface, health: the gateway process, examples/, the API surface,
  the GitOps health scripts
- answers, callers, conflicts, plans, verification: harnesses of the unit tests
"""

from tests.support.kube import Kubectl, wait_for

__all__ = ["Kubectl", "wait_for"]
