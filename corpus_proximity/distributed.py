"""Ray for the stages that scale out (embedding, placement, ensemble runs): one way to start or join it.

``address`` None (and no ``RAY_ADDRESS``) starts a local, single-node Ray whose every server (GCS,
raylet, object manager, workers, runtime-env agent) listens on 127.0.0.1 only, shut down, its processes
killed, with this process (tests/test_reliability_ray.py); an address joins that cluster. The package
ships to the workers through ``runtime_env`` (a cluster's nodes need not have it installed).

Why the loopback needs more than ``_node_ip_address="127.0.0.1"``: Ray 2.60's ``ray.init`` replaces a
loopback node address by the host's own (``resolve_ip_for_localhost``), and its servers then bind
0.0.0.0 / ``::``. Ray keeps the node on the loopback only in its single-node mode (the one it uses on
macOS and Windows), chosen by ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: read when Ray is imported, so
it is set in the environment (for Ray's own processes) and on the imported constant (for this one).
A cluster (``address`` given) is left in Ray's default mode, where the driver needs a reachable address.
"""

from __future__ import annotations

import os

import corpus_proximity
from corpus_proximity.children import ray_started, watch_children
from corpus_proximity.errors import InputError

LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(address: str | None, num_cpus: int | None = None, field: str = "ray_address") -> None:
    """Start or join Ray once per process; ``num_cpus`` caps a local instance (None = all cores)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ[LOCAL_ONLY] = "0"
    try:
        import ray
    except ImportError:
        raise InputError("the ray engine needs Ray: pip install 'corpus-proximity[ray]' (or use the local engine)") from None
    if ray.is_initialized():
        return
    watch_children()
    local = {}
    if address is None:
        from ray._private import ray_constants  # Ray's own switch, read at its import (the test checks it holds)

        ray_constants.ENABLE_RAY_CLUSTER = False  # Ray may have been imported before the variable was set
        local = {"_node_ip_address": "127.0.0.1", "num_cpus": num_cpus}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"py_modules": [corpus_proximity]}, **local)
    except ConnectionError as e:
        raise InputError(f"{field}={address!r}: cannot reach a Ray cluster ({e}); start one with `ray start --head` "
                         f"or leave {field} unset for a local instance") from None
    if address is None:
        ray_started()
