"""The only code that talks to the API server.

``client``: typed async access to the three kinds (create with an owner, merge-patch
status when it changed, delete with a uid precondition) over the official kubernetes
client, run in a small thread pool; ``objects``: any object by apiVersion and kind
(the dynamic client with cached discovery), for the kubernetes executor. ``events``:
Kubernetes Events, posted in the background so that a reconcile never waits for them.
``config``: where the cluster is (in-cluster or KUBECONFIG).
"""
