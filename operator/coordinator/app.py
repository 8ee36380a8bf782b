"""The running operator: its configuration and the parts it wires together.

``coordinator run`` builds an ``Operator`` from its flags and hands it to kopf as the
memo; the handlers reach everything through it. It owns the API client, the Store and
the list/watch that fills it, the status writer, the event recorder, the reconciler
(customer groups, on one work queue), the plan runner, one daemon per started plan
(`_supervise`, `drive_plan`) and the admission server. A change in the Store becomes
queue keys, plan starts and daemons here (`_changed`), nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import kopf
import kubernetes

from coordinator import metrics
from coordinator import reconciler as reconciler_
from coordinator import runner as runner_
from coordinator import store as store_
from coordinator.api import defaults
from coordinator.api.common import (
    API_VERSION,
    APPROVALS,
    DECIDED_BY_ANNOTATION,
    ENDPOINTS,
    FINALIZER,
    PLANS,
    RECOMMENDATIONS,
    SUBMITTED_BY_ANNOTATION,
)
from coordinator.api.endpoint import AgentEndpoint, AgentEndpointSpec
from coordinator.api.plan import ExecutionPlan, Executor, PlanPhase, Step
from coordinator.api.recommendation import Recommendation
from coordinator.core import addresses, admission, catalogue
from coordinator.core import approval as policy_
from coordinator.core import namespaces as namespaces_
from coordinator.core import steps as steps_
from coordinator.executors.kubernetes import KubernetesExecutor
from coordinator.executors.notify import Notifier
from coordinator.executors.simulated import SimulatedExecutor
from coordinator.executors.webhook import (
    ClientResolver,
    EndpointError,
    WebhookExecutor,
    checked_post,
)
from coordinator.k8s import access as access_
from coordinator.k8s import admission as admission_
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import informer as informer_
from coordinator.k8s import lease as lease_
from coordinator.k8s import status as status_
from coordinator.k8s import webhooks as webhooks_

HOOKS: Final = webhooks_.HOOKS
"""The admission webhooks; each id names its hook in ``coordinator.handlers.admission``."""
STEP_GRACE_SECONDS: Final = 3.0
"""How long a step in flight may take to finish when the operator stops or stops leading;
then it is abandoned: it stays Running in status and is run again by whoever drives the
plan next (steps are idempotent: see the executors)."""
DELETION_GRACE_SECONDS: Final = 120.0
"""How long a plan deleted mid-run (its recommendation left Git) may take to roll back
before its daemon is cancelled and its finalizer taken off."""
DAEMON_RETRY_SECONDS: Final = 5.0
"""A plan daemon that failed (a bug, an error no retry covered) runs again after this."""
CLEANUP_SECONDS: Final = 3.0
"""The longest the clean-up at exit waits for the API server (webhooks, Lease)."""
WEBHOOK_CHECK_SECONDS: Final = 10.0
ADMISSION_PROBE_SECONDS: Final = 60.0
"""How long the start waits for the API server to apply the webhooks it registered."""
"""How often a local operator checks that its webhooks are still registered."""

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What `coordinator run` was told (flags or COORDINATOR_* environment variables); the
    defaults are the flags' (``api.defaults``)."""

    policy: policy_.ApprovalPolicy = dataclasses.field(default_factory=policy_.ApprovalPolicy)
    workers: int = defaults.WORKERS
    namespaces: tuple[str, ...] = ()
    webhooks: str = defaults.WEBHOOKS  # auto | local | service | off
    webhook_port: int = defaults.WEBHOOK_PORT  # 0: a free port (local) or 9443 (service)
    webhook_cert_dir: Path | None = None  # tls.crt, tls.key, ca.crt; generated when local
    webhook_service: str = defaults.WEBHOOK_SERVICE
    webhook_configuration: str = defaults.OPERATOR_NAME  # the two configurations' name
    webhook_namespace_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    lease: str | None = None  # leader election with this Lease; None: a single replica
    lease_namespace: str = defaults.LEASE_NAMESPACE
    lease_timing: lease_.Timing = dataclasses.field(default_factory=lease_.Timing.of)
    readiness_port: int = 0  # 0: no readiness endpoint
    readiness_host: str = "0.0.0.0"
    shutdown_timeout: float = defaults.SHUTDOWN_TIMEOUT_SECONDS  # then kopf ends the process
    notify_expiring_before: float = defaults.NOTIFY_EXPIRING_BEFORE_SECONDS
    endpoint_addresses: addresses.Policy = addresses.STRICT  # what AgentEndpoints may reach
    executor_kinds: frozenset[str] = steps_.DEFAULT_KINDS  # what kubernetes steps may touch


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


def _exit_after(seconds: float) -> None:
    """The bound of a shutdown: if the process still runs `seconds` after the stop began,
    say what was still running (threads) and leave."""
    time.sleep(seconds)
    logger.warning("the stop did not finish within %.0f s; leaving now", seconds)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(0)


def _dump_tasks() -> None:
    """`kill -USR2 PID`: every asyncio task and where it waits, on stderr (what a hung
    process is doing; `kill -USR1` prints the threads)."""
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task!r}"[:300], file=sys.stderr)
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()


@dataclasses.dataclass(frozen=True, slots=True)
class _Daemon:
    task: asyncio.Task[None]
    stop: asyncio.Event
    """Set when the operator stops, or the plan is being deleted."""


class Operator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.api = api_client(config.workers)
        self.client = client_.Client(self.api, workers=config.workers)
        self.recorder = events_.Recorder(self.client)
        self.store = store_.Store(loader=self.client.get)
        """What the operator knows of its kinds (filled by `informer`, and by its writes)."""
        self.store.listeners.append(self._changed)
        self.writer = status_.StatusWriter(self.client, self.store.apply)
        self.informer = informer_.Informer(
            self.api,
            plurals=tuple(store_.KINDS),
            namespaces=config.namespaces,
            deliver=self._deliver,
            resync=self.store.resync,
        )
        self.reconciler = reconciler_.Reconciler(
            client=self.client,
            recorder=self.recorder,
            # Unstamped recommendations are not trusted with the webhooks on; with them
            # off, plans that act need a person (core.approval.unchecked_reason).
            policy=dataclasses.replace(config.policy, admission=self.webhooks_mode() != "off"),
            store=self.store,
            workers=config.workers,
        )
        self.endpoints = ClientResolver(self.client, self._cached_endpoint)
        post = checked_post(config.endpoint_addresses)
        self.notifier = Notifier(self.endpoints, post=post)
        """The ApprovalPolicies' notifications, sent from their own queue (never waited for)."""
        self.reconciler.notify = self.notifier.send
        self.reconciler.notify_lead = timedelta(seconds=config.notify_expiring_before)
        self.recorder.yield_to = self.reconciler.queue.idle
        self.runner = runner_.PlanRunner(
            client=self.client,
            submitter=self._submitter_of,
            writer=self.writer,
            recorder=self.recorder,
            executors={
                Executor.SIMULATED: SimulatedExecutor(),
                Executor.KUBERNETES: KubernetesExecutor(self.client, kinds=config.executor_kinds),
                Executor.WEBHOOK: WebhookExecutor(self.endpoints, post=post),
            },
        )
        self._wakers: dict[tuple[str, str], asyncio.Event] = {}
        """One per plan being driven: set when its object changed (suspend, abort)."""
        self._starting: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        """Customer groups with a plan start in flight (one at a time per customer: a
        budget counts the plans its starts wrote), and how many wait."""
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._listing = False
        """Set while a listing's objects go into the Store (see `_deliver`)."""
        self._daemons: dict[str, _Daemon] = {}
        """One per started plan (by uid): see `_supervise`."""
        self._resources = access_.Resources(self.api)
        self._webhooks: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._webhook_url = ""
        self._webhooks_local = False
        self.admission_hooks: dict[str, admission_.Hook] = {}
        """The admission hooks by id (``coordinator.handlers.admission``), served by
        `_admission` once the operator starts, when the webhooks are on."""
        self._admission: admission_.Server | None = None
        self._register_webhooks: Callable[[], Awaitable[None]] | None = None
        self.elector = (
            lease_.Elector(
                self.api,
                namespace=config.lease_namespace,
                name=config.lease,
                timing=config.lease_timing,
            )
            if config.lease
            else None
        )
        self.leading = self.reconciler.acting
        """Set while this replica may act: it holds the Lease (always, without election).
        The reconciler's own flag: its workers wait for it."""
        self.following = asyncio.Event()
        """Set while it may not: the complement of `leading`, to wait for a loss."""
        self.started = False
        self.stop_flag = asyncio.Event()
        """Set on SIGTERM/SIGINT: kopf's stop flag (``coordinator run`` passes it). An
        asyncio one: kopf waits for a threading.Event in an executor thread, which then
        holds up the exit of the event loop (measured: a 10 s hang at every stop)."""

    def configure(self, settings: kopf.OperatorSettings) -> None:
        settings.posting.enabled = False  # our own Events, not kopf's log lines
        # A bounded shutdown: the plan daemons leave their step within
        # STEP_GRACE_SECONDS, the clean-up gives up after CLEANUP_SECONDS, and
        # whatever else hangs, `_exit_after` ends the process at --shutdown-timeout. Before
        # the operator's signal handlers are in place (during start-up), kopf's own last
        # resort applies: it kills the process at the same timeout.
        settings.process.ultimate_exiting_timeout = self.config.shutdown_timeout
        self._setup_webhooks()

    def webhooks_mode(self) -> str:
        """auto: local against a control plane on 127.0.0.1, service in a cluster, else off."""
        mode = self.config.webhooks
        if mode != "auto":
            return mode
        host = urllib.parse.urlsplit(self.api.configuration.host).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            return "local"
        if os.environ.get("KUBERNETES_SERVICE_HOST") and self.config.webhook_cert_dir:
            return "service"
        return "off"

    def _setup_webhooks(self) -> None:
        mode = self.webhooks_mode()
        if mode == "off":
            logger.warning(
                "admission webhooks are off: decisions are recorded as decided by 'unknown', "
                "self-approval is not prevented, and every plan with kubernetes or webhook "
                "steps needs a person's approval (see --webhooks)"
            )
            return
        config = self.config
        if mode == "local":
            port = config.webhook_port or webhooks_.free_port()
            directory = config.webhook_cert_dir or Path(
                tempfile.mkdtemp(prefix="optiinfra-webhook-")
            )
            certs = webhooks_.generate(directory, hosts=["127.0.0.1", "localhost"])
            endpoint = webhooks_.Endpoint(
                ca_pem=certs.ca.read_bytes(), url=f"https://127.0.0.1:{port}"
            )
            addr = "127.0.0.1"
            selector = webhooks_.namespace_selector(
                config.namespaces, config.webhook_namespace_labels
            )
            scope = webhooks_.local_scope(config.namespaces, selector)
            self._webhook_url = endpoint.url or ""
        else:
            assert config.webhook_cert_dir is not None, "--webhook-cert-dir is required"
            port = config.webhook_port or 9443
            certs = webhooks_.Certificates(config.webhook_cert_dir)
            target, _, service_port = config.webhook_service.partition(":")
            namespace, _, name = target.partition("/")
            endpoint = webhooks_.Endpoint(
                ca_pem=certs.ca.read_bytes(), service=(namespace, name, int(service_port or 443))
            )
            addr = "0.0.0.0"
            selector = webhooks_.namespace_selector((), config.webhook_namespace_labels)
            scope = ""
        validating, mutating = webhooks_.configurations(
            hooks=HOOKS,
            endpoint=endpoint,
            selector=selector,
            scope=scope,
            name=config.webhook_configuration,
        )
        self._webhooks = (validating, mutating)

        async def register() -> None:
            registrar = webhooks_.Registrar(
                self.api, create=mode == "local", name=config.webhook_configuration
            )
            await asyncio.to_thread(registrar.apply, validating, mutating)
            in_force = await self._admission_in_force()
            logger.info(
                "admission webhooks registered in %s (%s%s)%s",
                registrar.name,
                mode,
                f", scope {scope}" if scope else "",
                in_force,
            )
            if self._webhooks_local:
                self._tasks.append(asyncio.create_task(self._keep_webhooks(), name="webhooks"))

        self._admission = admission_.Server(
            self.admission_hooks, addr=addr, port=port, certfile=certs.cert, keyfile=certs.key
        )
        self._register_webhooks = register
        self._webhooks_local = mode == "local"

    async def _admission_in_force(self) -> str:
        """Wait until the API server applies the webhooks just registered: it reads webhook
        configurations through its own watch, so for a moment after the write it may admit
        objects without them (unstamped recommendations were seen for seconds after a
        start). A server-side dry-run create of an Approval that claims a decider must come
        back without the claim (the mutating webhook strips it). Returns how long it took,
        for the log; raises WebhooksNotInForceError after ADMISSION_PROBE_SECONDS."""
        namespaces = namespaces_.plain(self.config.namespaces)
        if self.config.webhook_namespace_labels:
            return " (not probed: the webhooks select namespaces by label)"
        probe = _admission_probe()
        began = time.monotonic()
        pauses, attempts, last = defaults.ADMISSION_PROBE.delays(), 0, ""
        while time.monotonic() - began < ADMISSION_PROBE_SECONDS:
            missing = 0
            for namespace in namespaces or ["default"]:
                attempts += 1
                try:
                    answer = await self.client.create(APPROVALS, namespace, probe, dry_run=True)
                except client_.ApiException as exc:
                    last = f"({exc.status}) {exc.reason}"
                    missing += exc.status == 404  # the namespace does not exist (yet)
                    continue
                annotations = (answer.get("metadata") or {}).get("annotations") or {}
                if DECIDED_BY_ANNOTATION not in annotations:
                    took = time.monotonic() - began
                    return f"; in force after {took * 1000:.0f} ms ({attempts} dry-run probes)"
                last = "a dry-run create came back unstamped"
            if missing == len(namespaces or ["default"]):
                return " (not probed: no watched namespace exists yet)"
            await asyncio.sleep(next(pauses))
        raise WebhooksNotInForceError(
            f"the API server did not apply the admission webhooks within "
            f"{ADMISSION_PROBE_SECONDS:.0f} s (probed with dry-run creates of an Approval in "
            f"{', '.join(namespaces or ['default'])}; last: {last})"
        )

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._take_signals(), name="signals"))
        self.recorder.start()
        self.notifier.start()
        self._tasks.append(asyncio.create_task(self.informer.run(), name="informer"))
        self._tasks.append(asyncio.create_task(self._act_once_listed(), name="reconciler"))
        if self.elector is None:
            self._lead(True)
        else:
            self._lead(False)
            self._tasks.append(asyncio.create_task(self.elector.run(), name="lease"))
            self._tasks.append(asyncio.create_task(self._follow_lease(), name="leadership"))
        if self.config.readiness_port:
            self._tasks.append(asyncio.create_task(self._serve_readiness(), name="readiness"))
        if self._admission is not None and self._register_webhooks is not None:
            await self._admission.start()  # listen first: the API server is sent where we answer
            await self._register_webhooks()
        self.started = True

    async def _take_signals(self) -> None:
        """Handle SIGTERM/SIGINT ourselves (and SIGUSR2: dump the tasks).

        kopf installs its own SIGTERM/SIGINT handlers right after the startup handlers
        begin, and they end the process by a SIGKILL of itself at its timeout. Ours replace
        them once kopf's are in place: they set kopf's stop flag and bound the exit with a
        clean one (`_exit_after`). A hook for this would belong upstream in kopf."""
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # main thread only
            loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._terminate, sig)

    def _terminate(self, sig: signal.Signals) -> None:
        """SIGTERM/SIGINT: ask kopf to stop (its stop flag), and make sure the process is
        gone within --shutdown-timeout whatever hangs: all state is in the API server,
        so leaving is always safe (a step in flight is run again by the next driver)."""
        if self.stop_flag.is_set():
            return
        timeout = self.config.shutdown_timeout
        logger.info("%s received: stopping, within %.0f s", sig.name, timeout)
        self.stop_flag.set()
        threading.Thread(
            target=_exit_after, args=(timeout,), name="shutdown-deadline", daemon=True
        ).start()

    def state(self) -> metrics.Counts:
        """Recommendations by phase, conflicts by type, objects by kind and whether held
        (for the metrics thread: copies of small counters of the Store, never a walk
        over it)."""
        store = self.store
        return metrics.Counts(dict(store.phases), dict(store.conflicts), dict(store.counts))

    def ready(self) -> tuple[bool, str]:
        """Readiness: started, the initial listing of every kind in the Store, and acting —
        or standing by while another replica holds the Lease and renews it (a standby serves
        the admission webhooks from the same watched view, and a rolling update needs the
        new replica ready before the old one goes)."""
        if not self.started or not self.informer.listed.is_set():
            return False, "starting: listing and indexing the objects"
        elector = self.elector
        if elector is None or self.leading.is_set():
            return True, "acting"
        lease = f"lease {elector.namespace}/{elector.name}"
        if elector.held():
            return True, f"standing by: {lease} is held by {elector.holder}"
        return False, f"nobody acts: {lease} is neither held by another replica nor taken yet"

    def _lead(self, leading: bool) -> None:
        (self.leading if leading else self.following).set()
        (self.following if leading else self.leading).clear()

    async def _follow_lease(self) -> None:
        """Act while the Lease is held; on taking it, look at everything afresh."""
        assert self.elector is not None
        while True:
            await self.elector.changed.wait()
            self.elector.changed.clear()
            leading = self.elector.leading
            if leading == self.leading.is_set():
                continue
            self._lead(leading)
            if leading:
                await self._resync()

    async def _act_once_listed(self) -> None:
        """Reconcile once every kind is listed (a decision from half a listing would
        create approvals that exist, or say a plan waits for a dependency not yet seen):
        the groups queued meanwhile, and the pending plans, then every change."""
        began = time.monotonic()
        await self.informer.listed.wait()
        logger.info(
            "listed %d objects in %.1f s; acting", len(self.store), time.monotonic() - began
        )
        if self.leading.is_set():  # beside the reconciles, not before them
            self._spawn(self._start_pending())
        await self.reconciler.run(self.start_plan)

    async def _resync(self) -> None:
        """Taking over: every group is reconciled, every pending plan considered, every
        ended plan's finalizer taken off."""
        await self.informer.listed.wait()
        for record in self.store.plans():
            self._supervise(record, False)
        for key in self.store.groups():
            self.reconciler.queue.add(key, backlog=True)
        await self._start_pending()

    async def _start_pending(self) -> None:
        """Start the pending plans that may start; post again the lost events of plans
        that ended lately (see `start_plan`). Evicted plans are passed over: they ended,
        and their recommendation was found settled since (reading each one again would
        be a GET per ended plan, thousands after a takeover; a crash's lost Events of one
        that ended in that short time are not posted again)."""
        began, count = time.monotonic(), 0
        for record in self.store.plans():
            if record.phase not in STARTED and record.body is not None:
                await self.start_plan(self.store.model(PLANS, record))
                count += 1
                if count % 50 == 0:
                    await asyncio.sleep(0)  # let the reconciles and the webhooks in
        logger.info("considered %d plans in %.1f s", count, time.monotonic() - began)

    async def _serve_readiness(self) -> None:
        """GET /readyz: 200 while this process acts on the cluster, 503 (with why) otherwise."""
        from aiohttp import web  # noqa: PLC0415 - kopf's dependency, needed only here

        async def readyz(_: web.Request) -> web.Response:
            ready, why = self.ready()
            return web.Response(status=200 if ready else 503, text=why + "\n")

        app = web.Application()
        app.router.add_get("/readyz", readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.readiness_host, self.config.readiness_port)
        await site.start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _keep_webhooks(self) -> None:
        """Local webhooks: put ours back if they went missing (another local process of the
        same scope stopped and took them out, or somebody deleted them)."""
        assert self._webhooks is not None
        validating, mutating = self._webhooks
        registrar = webhooks_.Registrar(self.api, name=self.config.webhook_configuration)
        while True:
            await asyncio.sleep(WEBHOOK_CHECK_SECONDS)
            try:
                gone = await asyncio.to_thread(
                    registrar.missing, validating, mutating, url_prefix=self._webhook_url
                )
                if gone:
                    await asyncio.to_thread(registrar.apply, validating, mutating)
                    logger.warning("admission webhooks were missing; registered them again")
            except Exception as exc:  # the next round tries again
                logger.warning("could not check the admission webhooks: %s", exc)

    async def stop(self) -> None:
        """Let go, within CLEANUP_SECONDS whatever the API server answers: stop acting,
        release the Lease, take local webhooks out. A failure is logged, never waited on."""
        self._lead(False)
        await self._stop_daemons()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        cleanups = []
        if self.elector is not None:
            cleanups.append(("release the lease", asyncio.to_thread(self.elector.release)))
        if self._webhooks_local and self._webhooks is not None:
            registrar = webhooks_.Registrar(
                self.api, timeout=CLEANUP_SECONDS, name=self.config.webhook_configuration
            )
            names = webhooks_.names(*self._webhooks)
            remove = asyncio.to_thread(registrar.remove, names, url_prefix=self._webhook_url)
            cleanups.append(("take the admission webhooks out", remove))
        for what, call in cleanups:
            try:
                await asyncio.wait_for(call, CLEANUP_SECONDS)
            except Exception as exc:  # never block the exit
                logger.warning("could not %s at exit: %s", what, exc or type(exc).__name__)
        if self._admission is not None:
            await self._admission.stop()
        self.informer.close()
        await self.recorder.stop()
        await self.notifier.stop()
        await self.client.aclose()

    # --- from the Store to the queue and the plans ------------------------------------

    def _deliver(self, plural: str, raw: Mapping[str, Any], deleted: bool, listed: bool) -> None:
        self._listing = listed  # what a listing shows waits behind what changes now
        try:
            self.store.apply(plural, raw, deleted=deleted)
        finally:
            self._listing = False

    def _changed(self, plural: str, record: store_.Record, deleted: bool) -> None:
        """A change in the Store: the groups to reconcile, the plans to start, wake, hold
        or let go."""
        self.reconciler.changed(plural, record, deleted, backlog=self._listing)
        if plural == PLANS:
            self._supervise(record, deleted)
        if not self.informer.listed.is_set():  # see _act_once_listed
            return
        key = record.key
        if plural == RECOMMENDATIONS:
            if record.phase == "Succeeded" and not deleted:  # plans may wait for it
                self._spawn(self.start_waiting_plans(key))
        elif plural == ENDPOINTS:
            if not deleted:  # registered or changed: the plans that waited for it may start
                self._spawn(self.start_pending_plans(record.namespace))
        elif plural == PLANS:
            waker = self._wakers.get(key)
            if waker is not None:
                waker.set()
            if not deleted and record.phase not in STARTED and self.leading.is_set():
                self._spawn(self._start_recorded(key))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("plan start failed", exc_info=task.exception())

    async def _start_recorded(self, key: tuple[str, str]) -> None:
        record = self.store.record(PLANS, key)
        plan = None if record is None else await self.store.fetch(PLANS, record)
        if plan is not None:
            await self.start_plan(plan)

    # --- one daemon per started plan ------------------------------------------------

    def _supervise(self, record: store_.Record, deleted: bool) -> None:
        """A plan changed: run its daemon while it is started (Running, RollingBack), tell
        it when the plan is being deleted, take the finalizer off once it has ended.

        The daemon holds the plan with a finalizer, so that a plan whose recommendation
        is deleted mid-run is rolled back before it goes; pending and ended plans never
        hold up a deletion. (Driven from the Store: kopf's processing of the plans' events,
        for its daemons, was about 11 % of the operator's CPU at 20/s, profiled.)"""
        daemon = self._daemons.get(record.uid)
        if deleted:
            if daemon is not None:
                daemon.stop.set()
            return
        if daemon is not None:
            if record.deleting and not daemon.stop.is_set():
                self._deleting(daemon)
            return
        if record.phase in STARTED:
            stop = asyncio.Event()
            task = asyncio.create_task(
                self._daemon(record.key, record.uid, stop),
                name=f"plan {record.namespace}/{record.name}",
            )
            daemon = self._daemons[record.uid] = _Daemon(task, stop)
            if record.deleting:
                self._deleting(daemon)
        elif FINALIZER in record.finalizers and self.leading.is_set():
            self._spawn(self._finalizer(record.key, record.uid, present=False))

    def _deleting(self, daemon: _Daemon) -> None:
        daemon.stop.set()  # it rolls back (see drive_plan), within the grace
        asyncio.get_running_loop().call_later(DELETION_GRACE_SECONDS, daemon.task.cancel)

    async def _daemon(self, key: store_.ObjectKey, uid: str, stop: asyncio.Event) -> None:
        """Drive started plan `key` (see `drive_plan`) until it ends, is deleted, or the
        operator stops; then let it go."""
        try:
            while True:
                plan = self.store.held(PLANS, key)
                if plan is None or plan.metadata.uid != uid:
                    return  # gone, another object, or ended and evicted
                try:
                    if not stop.is_set() and await _first(self.leading.wait(), stop.wait()):
                        await self._finalizer(key, uid, present=True)
                    await self.drive_plan(
                        plan,
                        stopped=stop.is_set,
                        deleted=lambda: self._is_deleting(key, uid),
                        wait_stopped=stop.wait,
                    )
                    return
                except Exception:
                    logger.exception(
                        "%s/%s: driving the plan failed; again in %.0fs", *key, DAEMON_RETRY_SECONDS
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), DAEMON_RETRY_SECONDS)
                        return
        finally:
            self._daemons.pop(uid, None)
            record = self.store.record(PLANS, key)
            if (
                record is not None
                and record.uid == uid
                and FINALIZER in record.finalizers
                and (record.deleting or record.phase not in STARTED)
                and self.leading.is_set()
            ):
                self._spawn(self._finalizer(key, uid, present=False))

    def _is_deleting(self, key: store_.ObjectKey, uid: str) -> bool:
        record = self.store.record(PLANS, key)
        return record is None or record.uid != uid or record.deleting

    async def _finalizer(self, key: store_.ObjectKey, uid: str, *, present: bool) -> None:
        """Put the finalizer on plan `key` (`present`) or take it off; only on the object
        `uid`, only at the version the Store holds (409: read it again)."""
        namespace, name = key
        for _ in range(5):
            record = self.store.record(PLANS, key)
            if record is None or record.uid != uid or (FINALIZER in record.finalizers) == present:
                return
            if present and record.deleting:
                return  # being deleted already: nothing may be added
            others = [f for f in record.finalizers if f != FINALIZER]
            body = {
                "metadata": {
                    "finalizers": [*others, FINALIZER] if present else others,
                    "resourceVersion": str(record.rv),
                }
            }
            try:
                self.store.apply(PLANS, await self.client.patch(PLANS, namespace, name, body))
                return
            except client_.ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
            raw = await self.client.get(PLANS, namespace, name)
            if raw is None:
                return
            self.store.apply(PLANS, raw)

    async def _stop_daemons(self) -> None:
        """At exit: each daemon finishes or leaves its step (STEP_GRACE_SECONDS); running
        plans keep their finalizer, for whoever drives them next."""
        daemons = list(self._daemons.values())
        for daemon in daemons:
            daemon.stop.set()
        if daemons:
            tasks = [d.task for d in daemons]
            _, pending = await asyncio.wait(tasks, timeout=STEP_GRACE_SECONDS + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def start_plan(self, plan: ExecutionPlan) -> None:
        """Start `plan` if it is pending and may start; its daemon takes it from there."""
        key = (plan.metadata.namespace, plan.metadata.name)
        if not self.leading.is_set():
            return
        if plan.status_phase.ended:  # a crash right after its last write lost no event
            self.runner.replay_if_recent(plan)
        if plan.status_phase is not PlanPhase.PENDING:
            return
        group = (plan.metadata.namespace, plan.spec.customer_id)
        lock, users = self._starting.get(group) or (asyncio.Lock(), 0)
        self._starting[group] = (lock, users + 1)
        try:
            async with lock:
                latest = self.store.held(PLANS, key)
                if latest is None or latest.metadata.uid != plan.metadata.uid:
                    latest = plan
                if latest.status_phase is PlanPhase.PENDING:
                    ready, why, until = self.reconciler.plan_gate(key)
                    await self.runner.start(latest, dependencies=(ready, why))
                    if until is not None:  # a window opens or ends: ask again then
                        self.reconciler.recheck_at(group, until)
        finally:
            lock, users = self._starting[group]
            if users <= 1:
                del self._starting[group]
            else:
                self._starting[group] = (lock, users - 1)

    async def start_waiting_plans(self, succeeded: tuple[str, str]) -> None:
        """Recommendation `succeeded` did: the pending plans that waited for it may start."""
        for key in self.store.dependents(succeeded):
            record = self.store.record(PLANS, key)
            if record is None or record.phase not in (None, PlanPhase.PENDING.value):
                continue
            plan = self.store.plan(key)
            if plan is not None and plan.status_phase is PlanPhase.PENDING:
                await self.start_plan(plan)

    async def start_pending_plans(self, namespace: str) -> None:
        """An AgentEndpoint of `namespace` was registered or changed: its pending plans may
        start (those that do not wait for it decide the same again: no write)."""
        for record in list(self.store.plans()):
            if record.namespace != namespace or record.phase not in (None, PlanPhase.PENDING.value):
                continue
            plan = self.store.plan(record.key)
            if plan is not None and plan.status_phase is PlanPhase.PENDING:
                await self.start_plan(plan)

    async def drive_plan(
        self,
        plan: ExecutionPlan,
        *,
        stopped: Callable[[], bool],
        deleted: Callable[[], bool],
        wait_stopped: Callable[[], Awaitable[object]],
    ) -> None:
        """Drive a started plan while this replica leads; stop at once when the operator
        stops or loses the lead (the step in flight gets STEP_GRACE_SECONDS); roll it back
        when it was deleted mid-run. `stopped`, `deleted`, `wait_stopped`: its daemon's
        (see `_daemon`)."""
        key = (plan.metadata.namespace, plan.metadata.name)
        waker = self._wakers.setdefault(key, asyncio.Event())

        def latest() -> ExecutionPlan:
            known: ExecutionPlan | None = self.store.held(PLANS, key)
            if known is None or known.metadata.uid != plan.metadata.uid:
                return plan
            return known

        async def wake(seconds: float) -> None:
            waits = [asyncio.ensure_future(waker.wait()), asyncio.ensure_future(wait_stopped())]
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                waker.clear()

        def halted() -> bool:
            return stopped() or not self.leading.is_set()

        try:
            while not stopped():
                if not await _first(self.leading.wait(), wait_stopped()):
                    break  # stopped before it led
                if not self.informer.listed.is_set():  # dependencies are in the Store
                    await _first(self.informer.listed.wait(), wait_stopped())
                    continue
                drive = asyncio.ensure_future(
                    self.runner.drive(
                        latest(),
                        latest=latest,
                        dependencies=lambda: self.store.dependencies_succeeded(key),
                        stopped=halted,
                        wake=wake,
                    )
                )
                await _first(drive, self.following.wait(), wait_stopped())
                if not drive.done() and deleted():
                    await drive  # the rollback below follows the move in flight
                elif not drive.done():  # exiting or no longer leading: finish the step, or leave it
                    await asyncio.wait([drive], timeout=STEP_GRACE_SECONDS)
                    if not drive.done():
                        drive.cancel()
                        logger.warning("%s/%s: left the step in flight to the next driver", *key)
                    await asyncio.gather(drive, return_exceptions=True)
                    continue
                if drive.done() and not drive.cancelled() and drive.exception() is not None:
                    raise drive.exception()  # type: ignore[misc]
                if not stopped() and drive.result() in (PlanPhase.RUNNING, PlanPhase.ROLLING_BACK):
                    # Another writer moved the plan (a former leader's late write): look
                    # again once the watch has shown it, rather than leave it until a restart.
                    await wake(STEP_GRACE_SECONDS)
                    continue
                break
            if deleted() and latest().status_phase in (PlanPhase.RUNNING, PlanPhase.ROLLING_BACK):
                # Deleted while running (its recommendation left Git): roll back before it goes.
                await self.runner.drive(
                    latest(),
                    latest=latest,
                    dependencies=lambda: (True, ""),
                    stopped=lambda: not self.leading.is_set(),
                    wake=wake,
                    abort=True,
                )
        finally:
            self._wakers.pop(key, None)

    async def submitter(self, namespace: str, name: str) -> str | None:
        """Who submitted (or last changed) recommendation `name`, as recorded at admission."""
        rec = self.store.recommendation((namespace, name))
        if rec is not None:
            return rec.metadata.annotations.get(SUBMITTED_BY_ANNOTATION)
        raw = await self.client.get(RECOMMENDATIONS, namespace, name)
        annotations = (raw or {}).get("metadata", {}).get("annotations") or {}
        submitter: str | None = annotations.get(SUBMITTED_BY_ANNOTATION)
        return submitter

    async def submitter_may_not(self, user: Mapping[str, Any], rec: Recommendation) -> str | None:
        """What of the plan's cluster changes the submitter (`user`, from the admission
        request) may not make themselves, or None (see k8s.access)."""
        try:
            steps = catalogue.plan_steps(rec.spec)
        except catalogue.NoDefaultPlanError:
            return None  # refused by the validating webhook
        accesses = admission.cluster_accesses(steps)
        if not accesses:
            return None
        return await asyncio.to_thread(
            access_.submitter_may_not,
            self.api,
            self._resources,
            user=user,
            namespace=rec.metadata.namespace,
            accesses=accesses,
        )

    async def endpoints_of(
        self, namespace: str, steps: Sequence[Step]
    ) -> dict[str, AgentEndpointSpec | None]:
        """The AgentEndpoints the webhook steps of `steps` name, None for those missing
        (from the Store; one GET for a name it does not hold: the endpoint may have been
        applied a moment ago and not reached the watch yet)."""
        found: dict[str, AgentEndpointSpec | None] = {}
        for name in sorted(admission.webhook_endpoints(steps)):
            try:
                endpoint = await self.endpoints.endpoint(namespace, name)
            except EndpointError:  # stored before a rule existed: as good as missing
                endpoint = None
            found[name] = endpoint.spec if endpoint is not None else None
        return found

    def _submitter_of(self, namespace: str, name: str) -> tuple[str | None, tuple[str, ...]]:
        """Who submitted recommendation `name`, and their groups, as stamped at admission
        (from the Store: a plan runs while its recommendation is held)."""
        rec = self.store.recommendation((namespace, name))
        if rec is None:
            return None, ()
        annotations = rec.metadata.annotations
        user = annotations.get(SUBMITTED_BY_ANNOTATION)
        return user, tuple(admission.submitter_groups(annotations))

    def _cached_endpoint(self, namespace: str, name: str) -> AgentEndpoint | None:
        return self.store.endpoint((namespace, name))

    def names_in(self, namespace: str) -> set[str]:
        """The names of the recommendations of `namespace` this process knows of."""
        return self.store.names_in(namespace)


STARTED: Final = frozenset({PlanPhase.RUNNING.value, PlanPhase.ROLLING_BACK.value})


class WebhooksNotInForceError(Exception):
    """The API server did not apply the registered webhooks: the message says what was tried."""


def _admission_probe() -> dict[str, Any]:
    """A valid Approval that claims a decider: the mutating webhook strips the claim."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Approval",
        "metadata": {
            "name": "optiinfra-admission-probe",
            "annotations": {DECIDED_BY_ANNOTATION: "admission-probe"},
        },
        "spec": {
            "recommendation": "optiinfra-admission-probe",
            "recommendationGeneration": 1,
            "customerId": "admission-probe",
            "riskLevel": "low",
            "expiresAt": "2099-01-01T00:00:00Z",
        },
    }


async def _first(*waits: Any) -> bool:
    """Wait until the first of `waits` is done; whether it was the first one given. The
    waits given as coroutines are cancelled; futures given are left running."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait, task in zip(waits, tasks, strict=True):
            if task is not wait and not task.done():
                task.cancel()
    return tasks[0] in done
