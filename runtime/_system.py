"""Entry points: ``ActorSystem`` (a program that spawns actors) and ``Worker`` (serves pools)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import anyio
import msgspec

from actors import Actor, ActorRef, Address, Restart, Terminated
from sandbox import DockerSandbox
from transports import ConnectOptions, NatsTransport, Transport
from transports.errors import redact_url

from ._config import PoolConfig, RuntimeConfig
from ._core.node import Node
from ._nats_server import NatsServer, port_answers
from ._sandbox_reaper import REAP_INTERVAL_S, reap_sandboxes_forever
from .errors import NodeFailed

log = logging.getLogger("heterarch")
A = TypeVar("A", bound=Actor)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def nats_urls(nats: str | Sequence[str] | None) -> list[str]:
    """The URLs to use: the argument, else ``$HETERARCH_NATS_URL``/``$NATS_URL``, else default."""
    if nats is None:
        env = os.environ.get("HETERARCH_NATS_URL") or os.environ.get("NATS_URL")
        nats = env or DEFAULT_NATS_URL
    urls = [nats] if isinstance(nats, str) else list(nats)
    return [u.strip() for url in urls for u in url.split(",") if u.strip()]


async def open_transport(
    *,
    transport: Transport | None,
    nats: str | Sequence[str] | None,
    options: ConnectOptions | None,
    namespace: str,
    embedded: bool | None,
) -> tuple[Transport, NatsServer | None]:
    """Connect to NATS; start an embedded nats-server when allowed and none answers."""
    if transport is not None:
        return transport, None
    server: NatsServer | None = None
    explicit = nats is not None or bool(
        os.environ.get("HETERARCH_NATS_URL") or os.environ.get("NATS_URL")
    )
    urls = nats_urls(nats)
    # Port probes and the server's start and cleanup block: they run in a worker thread.
    if embedded is True or (
        embedded is None and not explicit
        and not await anyio.to_thread.run_sync(_any_answers, urls)
    ):
        parsed = urlparse(DEFAULT_NATS_URL)
        port = parsed.port or 4222
        busy = await anyio.to_thread.run_sync(port_answers, "127.0.0.1", port)
        server = NatsServer(port=0 if busy else port)
        await anyio.to_thread.run_sync(server.start)
        log.warning("no NATS server answered at %s: started an embedded one at %s",
                    ", ".join(redact_url(u) for u in urls), server.url)
        urls = [server.url]
    opts = options or ConnectOptions()
    opts = _with_servers(opts, urls)
    t = NatsTransport(opts, namespace=namespace)
    try:
        await t.connect()
    except BaseException:
        if server is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.cleanup)
        raise
    return t, server


def _with_servers(options: ConnectOptions, urls: list[str]) -> ConnectOptions:
    return msgspec.structs.replace(options, servers=urls)


def _any_answers(urls: list[str]) -> bool:
    for url in urls:
        parsed = urlparse(url if "://" in url else f"nats://{url}")
        if port_answers(parsed.hostname or "127.0.0.1", parsed.port or 4222):
            return True
    return False


class _Host:
    """What ActorSystem and Worker share: a transport, maybe an embedded server, one node."""

    def __init__(
        self,
        *,
        transport: Transport | None,
        nats: str | Sequence[str] | None,
        options: ConnectOptions | None,
        namespace: str,
        embedded: bool | None,
        node_options: Mapping[str, Any],
    ) -> None:
        self._transport_arg = transport
        self._nats = nats
        self._options = options
        self._namespace = namespace
        self._embedded = embedded
        self._node_options = dict(node_options)
        self.embedded_server: NatsServer | None = None
        self._node: Node | None = None
        self._owns_transport = transport is None

    @property
    def node(self) -> Node:
        if self._node is None:
            raise RuntimeError("not started: use `async with` first")
        return self._node

    async def _open(self, **node_kwargs: Any) -> None:
        transport, self.embedded_server = await open_transport(
            transport=self._transport_arg, nats=self._nats, options=self._options,
            namespace=self._namespace, embedded=self._embedded,
        )
        self._transport = transport
        self._node = Node(transport, **{**self._node_options, **node_kwargs})
        try:
            await self._node.start()
        except BaseException:
            await self._shutdown_transport()
            raise

    async def _close(self) -> None:
        try:
            if self._node is not None:
                await self._node.close()
        finally:
            await self._shutdown_transport()

    async def _shutdown_transport(self) -> None:
        if self._owns_transport:
            with anyio.CancelScope(shield=True):
                await self._transport.close()
        if self.embedded_server is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.embedded_server.cleanup)


class ActorSystem(_Host):
    """A program's door into the actor system: spawn root actors, ask them, stop them.

    >>> async with ActorSystem() as system:  # doctest: +SKIP
    ...     ref = await system.spawn(Greeter, pool="cpu")
    ...     print(await ref.ask(Greet("world")))

    With no ``nats`` URL (and no ``$HETERARCH_NATS_URL``), it uses ``nats://127.0.0.1:4222`` or,
    if nothing answers there, starts an embedded nats-server and says so.
    """

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        nats: str | Sequence[str] | None = None,
        options: ConnectOptions | None = None,
        namespace: str = "heterarch",
        embedded: bool | None = None,
        services: Mapping[str, Any] | None = None,
        **node_options: Any,
    ) -> None:
        super().__init__(
            transport=transport, nats=nats, options=options, namespace=namespace,
            embedded=embedded, node_options={**node_options, "services": services or {}},
        )

    async def __aenter__(self) -> ActorSystem:
        await self._open(role="client")
        stats = getattr(self.node.services.get("route"), "stats", None)
        if stats is not None and stats.live is None:  # route only where a worker is alive
            stats.live = self.node.live_pools
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def spawn(
        self,
        actor_class: type[A],
        *args: Any,
        pool: str | None = None,
        name: str | None = None,
        supervision: Restart | str | None = None,
        **kwargs: Any,
    ) -> ActorRef[A]:
        """Start a root actor: in this process (``pool=None``) or on a worker of ``pool``."""
        return await self.node.spawn_child(
            None, actor_class, args, kwargs, pool=pool, name=name, supervision=supervision
        )

    async def stop(self, ref: ActorRef[Any]) -> None:
        record = self.node.guardian.children.get(ref.actor_id)
        if record is not None:
            self.node.guardian._remove_child(record)
        await self.node.stop_ref(ref, "stopped")

    def ref(self, address: Address) -> ActorRef[Any]:
        """A reference to an actor whose address you have."""
        return self.node.codec.ref(address)

    async def wait_stopped(self, ref: ActorRef[Any], *, timeout: float = 30.0) -> Terminated:
        """Wait until ``ref`` stops (death watch) and return the ``Terminated`` notice."""
        waiter_ref = await self.spawn(_DeathWaiter, supervision=Restart.TEMPORARY)
        waiter = self.node.cells[waiter_ref.actor_id].actor
        assert isinstance(waiter, _DeathWaiter)
        try:
            await self.node.watch(ref, waiter_ref.address)
            with anyio.fail_after(timeout):
                await waiter.seen.wait()
        finally:
            await self.stop(waiter_ref)
        assert waiter.notice is not None
        return waiter.notice


class _DeathWaiter(Actor):
    def __init__(self) -> None:
        self.seen = anyio.Event()
        self.notice: Terminated | None = None

    async def on_terminated(self, msg: Terminated) -> None:
        self.notice = msg
        self.seen.set()


async def watch_cluster_load(node: Node, stats: Any, interval: float = 2.0) -> None:
    """Feed ``stats.observe_cluster`` every ``interval`` seconds with each pool's model calls in
    flight per node, as the nodes' heartbeats last said (no request to any node)."""
    while True:
        loads = node.membership.pool_load()
        stats.observe_cluster({pool: sum(n) / len(n) for pool, n in loads.items()})
        await anyio.sleep(interval)


class Worker(_Host):
    """A process that serves one or more pools: it hosts the actors spawned onto them.

    >>> config = load_config("pools.toml")  # doctest: +SKIP
    >>> async with Worker(config, pools=["gpu"]) as worker:  # doctest: +SKIP
    ...     await worker.wait_closed()
    """

    def __init__(
        self,
        config: RuntimeConfig | Mapping[str, PoolConfig],
        pools: Sequence[str] | None = None,
        *,
        transport: Transport | None = None,
        nats: str | Sequence[str] | None = None,
        options: ConnectOptions | None = None,
        namespace: str | None = None,
        services: Mapping[str, Any] | None = None,
        pool_services: Mapping[str, Mapping[str, Any]] | None = None,
        sandbox_reap_interval: float = REAP_INTERVAL_S,
        **node_options: Any,
    ) -> None:
        if isinstance(config, RuntimeConfig):
            all_pools = config.pools
            namespace = namespace or config.namespace
            if nats is None and config.nats:
                nats = config.nats
            if options is None and transport is None:  # the config's [connect] credentials
                options = config.connect_options()
        else:
            all_pools = dict(config)
        names = list(pools) if pools is not None else list(all_pools)
        missing = [p for p in names if p not in all_pools]
        if missing:
            from .errors import RuntimeConfigError

            raise RuntimeConfigError(
                f"pools {missing} are not in the config (it has: {sorted(all_pools)})"
            )
        self.served = {p: all_pools[p] for p in names}
        self.declared = sorted(all_pools)
        # With Docker sandboxes, it removes the ones whose owner died (at start, periodically).
        factory = (services or {}).get("sandbox_factory")
        self._reaps_sandboxes = getattr(factory, "func", factory) is DockerSandbox
        self._reap_interval = sandbox_reap_interval
        super().__init__(
            transport=transport, nats=nats, options=options,
            namespace=namespace or "heterarch", embedded=False,
            node_options={
                **node_options, "services": services or {}, "pool_services": pool_services or {},
            },
        )

    async def __aenter__(self) -> Worker:
        await self._open(role="worker", pools=self.served, declared_pools=self.declared)
        if self._reaps_sandboxes:
            self.node.task_group.start_soon(reap_sandboxes_forever, self._reap_interval)
        stats = getattr(self.node.services.get("route"), "stats", None)
        if stats is not None:  # the router here sees the cluster's load, not only its own
            stats.live = self.node.live_pools  # and routes only where a worker is alive
            self.node.task_group.start_soon(watch_cluster_load, self.node, stats)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def wait_closed(self) -> None:
        """Wait until the node closes; ``NodeFailed`` if it closed because it failed."""
        await self.node.closed.wait()
        if self.node.failure is not None:
            raise NodeFailed(self.node.node_id, self.node.failure)
