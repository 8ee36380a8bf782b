"""The running operator: it builds its parts, starts them in order and stops them in
reverse order. Nothing else.

``coordinator run`` builds an ``Operator`` from its flags and hands it to kopf as the
memo; kopf's start-up and clean-up handlers (``coordinator.handlers``) start and stop
it. Each part (``coordinator.parts``) does one thing and has ``start`` and ``stop``;
the Operator holds no domain code: what a part does is in its module. The one stop
event is set by the one signal handler (``parts.signals``) and is kopf's stop flag;
kopf then runs the clean-up, which stops the parts in reverse order, each within its
``stop_seconds`` (whatever still hangs, the process leaves at --shutdown-timeout).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta

import kopf
import kubernetes

from coordinator import metrics
from coordinator import outbox as outbox_
from coordinator import reconciler as reconciler_
from coordinator import runner as runner_
from coordinator import store as store_
from coordinator.api.plan import Executor
from coordinator.executors.endpoints import ClientResolver
from coordinator.executors.kubernetes import KubernetesExecutor
from coordinator.executors.notify import Notifier
from coordinator.executors.post import checked_post
from coordinator.executors.simulated import SimulatedExecutor
from coordinator.executors.webhook import WebhookExecutor
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import handoff, kopfwatch, shardlease
from coordinator.k8s import informer as informer_
from coordinator.k8s import lease as lease_
from coordinator.k8s import status as status_
from coordinator.parts import CLEANUP_SECONDS, Background, Calls, Part, Task
from coordinator.parts import daemons as daemons_
from coordinator.parts import dispatch as dispatch_
from coordinator.parts import facts as facts_
from coordinator.parts import leadership as leadership_
from coordinator.parts import readiness as readiness_
from coordinator.parts import shards as shards_
from coordinator.parts import signals as signals_
from coordinator.parts import starts as starts_
from coordinator.parts import webhooks as webhooks_
from coordinator.parts.config import Config
from coordinator.parts.webhooks import HOOKS, WebhooksNotInForceError
from coordinator.providers.prometheus import Prometheus
from coordinator.verifier import Verifier

__all__ = ["CLEANUP_SECONDS", "HOOKS", "Config", "Operator", "WebhooksNotInForceError"]

logger = logging.getLogger(__name__)


def api_client(connections: int, *, config_file: str | None = None) -> kubernetes.client.ApiClient:
    """A client for the cluster of `config_file` (default: the in-cluster config, else the
    current KUBECONFIG) that keeps up to `connections` connections open."""
    configuration = kubernetes.client.Configuration()
    loaded = False
    if config_file is None:
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
            loaded = True
        except kubernetes.config.ConfigException:
            pass
    if not loaded:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = connections
    return kubernetes.client.ApiClient(configuration)


class Operator:
    """The parts, built from a Config; started in order, stopped in reverse order."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.api = api_client(config.workers)
        self.client = client_.Client(self.api, workers=config.workers)
        self.signals = signals_.Signals(shutdown_timeout=config.shutdown_timeout)
        self.stop_flag = self.signals.stop_event
        """Set on SIGTERM/SIGINT (``parts.signals``): kopf's stop flag."""
        self.recorder = events_.Recorder(self.client)
        self.store = store_.Store(loader=self.client.get)
        """What the operator knows of its kinds (filled by `informer`, and by its writes)."""
        self.outbox = outbox_.Outbox(self.store)
        """The runner's and daemons' own writes: in the Store at once, dispatched after."""
        self.writer = status_.StatusWriter(self.client, self.outbox.own_write)
        self.webhooks = webhooks_.Webhooks(config, self.api, self.client)
        self.admission_hooks = self.webhooks.hooks
        self.identity = config.identity or lease_.default_identity()
        self.reconciler = reconciler_.Reconciler(
            client=self.client,
            recorder=self.recorder,
            # Unstamped recommendations are not trusted with the webhooks on; with them
            # off, plans that act need a person (core.approval.unchecked_reason).
            policy=dataclasses.replace(
                config.policy,
                admission=self.webhooks_mode() != "off",
                shard=self.identity if config.shard else None,
            ),
            store=self.store,
            workers=config.workers,
        )
        self.endpoints = ClientResolver(self.client, self.store.endpoint_in)
        self.facts = facts_.Facts(
            config=config,
            api=self.api,
            client=self.client,
            store=self.store,
            endpoints=self.endpoints,
        )
        post = checked_post(config.endpoint_addresses)
        self.notifier = Notifier(self.endpoints, post=post)
        """The ApprovalPolicies' notifications, sent from their own queue (never waited for)."""
        self.reconciler.notifications.send = self.notifier.send
        self.reconciler.notifications.lead = timedelta(seconds=config.notify_expiring_before)
        self.recorder.yield_to = self.reconciler.queue.idle
        prometheus = Prometheus(self.client.read_secret_key, policy=config.endpoint_addresses)
        self.runner = runner_.PlanRunner(
            client=self.client,
            verifier=Verifier(
                client=self.client,
                query=lambda p, q, ns, t: prometheus.query(p, q, namespace=ns, template=t),
            ),
            submitter=self.facts.submitter_of,
            writer=self.writer,
            recorder=self.recorder,
            executors={
                Executor.SIMULATED: SimulatedExecutor(),
                Executor.KUBERNETES: KubernetesExecutor(self.client, kinds=config.executor_kinds),
                Executor.WEBHOOK: WebhookExecutor(self.endpoints, post=post),
            },
        )
        self.runner.on_events = lambda plan, events: self.reconciler.notifications.plan_events(
            self.store, plan, events
        )
        self.elector = (
            lease_.Elector(
                self.api,
                namespace=config.lease_namespace,
                name=config.lease,
                timing=config.lease_timing,
                identity=self.identity,
            )
            if config.lease
            else None
        )
        self.leading = self.reconciler.acting
        """Set while this replica may act (``parts.leadership``); the reconciler's own flag."""
        self.following = asyncio.Event()
        """Set while it may not (``parts.leadership``)."""
        self.listed = asyncio.Event()
        """Set once the event source listed every kind into the Store."""
        background = Background(logger)
        self.daemons = daemons_.Daemons(
            store=self.store,
            outbox=self.outbox,
            client=self.client,
            runner=self.runner,
            leading=self.leading,
            following=self.following,
            listed=self.listed,
            background=background,
        )
        self.starts = starts_.Starts(
            store=self.store, runner=self.runner, reconciler=self.reconciler, leading=self.leading
        )
        self.dispatch = dispatch_.Dispatch(
            store=self.store,
            outbox=self.outbox,
            reconciler=self.reconciler,
            daemons=self.daemons,
            starts=self.starts,
            leading=self.leading,
            listed=self.listed,
            background=background,
        )
        self.leadership = leadership_.Leadership(
            self.elector, leading=self.leading, following=self.following, taken=self.dispatch.resync
        )
        self.shards: shards_.Shards | None = None
        """With --shard: the customers this replica drives (``parts.shards``)."""
        lease: Part = leadership_.Lease(self.elector)
        leader: Part = self.leadership
        if config.shard:
            shard_lease = shardlease.ShardLease(
                self.api,
                namespace=config.lease_namespace,
                ring=config.ring,
                identity=self.identity,
                timing=config.lease_timing,
            )
            records = handoff.Records(
                self.api,
                namespace=config.lease_namespace,
                ring=config.ring,
                identity=self.identity,
                clock=shardlease.now,
            )
            leader = self.shards = shards_.Shards(
                shard_lease,
                records,
                client=self.client,
                store=self.store,
                queue=self.reconciler.queue,
                daemons=self.daemons,
                starts=self.starts,
                deliver=self.dispatch.deliver,
                leading=self.leading,
                following=self.following,
            )
            lease = shards_.ShardLease(self.shards)
        self.source: informer_.Informer | kopfwatch.KopfSource
        """What lists and watches the kinds into the Store (``--watch``; kopf's only to be
        measured against the informer: docs/design.md)."""
        source: Part
        if config.watch == "kopf":  # kopf's watching, its event handlers (handlers.registry)
            self.source = source = kopfwatch.KopfSource(
                self.client.http,
                plurals=tuple(store_.KINDS),
                namespaces=config.namespaces,
                sink=self.dispatch,
                listed=self.listed,
            )
        else:
            self.source = informer_.Informer(
                self.api,
                plurals=tuple(store_.KINDS),
                namespaces=config.namespaces,
                sink=self.dispatch,
                listed=self.listed,
            )
            source = Task("informer", self.source.run, close=self.source.close)
        self.parts: list[Part] = [
            # Started in this order, stopped in the reverse: acting stops (leadership)
            # before the reconciler and the plans' daemons, which leave their steps before
            # the Lease is released; the admission server answers until the end.
            self.signals,
            Calls("api client", stop=self.client.aclose),
            Calls("events", start=self.recorder.start, stop=self.recorder.stop),
            Calls("notifications", start=self.notifier.start, stop=self.notifier.stop),
            Calls("admission server", start=self.webhooks.serve, stop=self.webhooks.close),
            lease,
            self.daemons,
            self.dispatch,
            leader,
            source,
            readiness_.Readiness(config.readiness_host, config.readiness_port, self.ready),
            self.webhooks,
        ]
        self._started: list[Part] = []
        self.started = False

    def configure(self, settings: kopf.OperatorSettings) -> None:
        """kopf's settings, and what is built before the start (the webhooks' certificates)."""
        settings.posting.enabled = False  # our own Events, not kopf's log lines
        # kopf's last resort when it stops without the stop flag (a failed start): it
        # kills the process at the same timeout as ours (see parts.signals).
        settings.process.ultimate_exiting_timeout = self.config.shutdown_timeout
        if isinstance(self.source, kopfwatch.KopfSource):
            kopfwatch.tune(settings)
        self.webhooks.configure()

    def webhooks_mode(self) -> str:
        """auto: local against a control plane on 127.0.0.1, service in a cluster, else off."""
        return webhooks_.mode(self.config, self.api.configuration.host)

    async def start(self) -> None:
        """Start each part in order (a failure is the start's: kopf stops the operator)."""
        for part in self.parts:
            self._started.append(part)
            await part.start()
        self.started = True

    async def stop(self) -> None:
        """Stop the started parts in reverse order, each within its stop_seconds; a
        failure is logged, never waited on."""
        while self._started:
            part = self._started.pop()
            try:
                await asyncio.wait_for(part.stop(), part.stop_seconds or None)
            except Exception as exc:
                logger.warning(
                    "could not stop the %s at exit: %s", part.name, exc or type(exc).__name__
                )

    def state(self) -> metrics.Counts:
        """Recommendations by phase, conflicts by type, objects by kind and whether held
        (for the metrics thread: copies of small counters of the Store, never a walk
        over it)."""
        store = self.store
        return metrics.Counts(dict(store.phases), dict(store.conflicts), dict(store.counts))

    def ready(self) -> tuple[bool, str]:
        """Readiness (``parts.readiness``)."""
        if self.shards is not None and self.started and self.listed.is_set():
            return self.shards.ready()
        return readiness_.ready(
            started=self.started,
            listed=self.listed.is_set(),
            leading=self.leading.is_set(),
            elector=self.elector,
        )
