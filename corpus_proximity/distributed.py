"""Ray for the stages that scale out (embedding, placement, ensemble runs): one way to start or join it.

``address`` None (and no ``RAY_ADDRESS``) starts a local Ray with node address 127.0.0.1, shut down,
its processes killed, with this process (Ray 2.60's agents still listen on the host's address and on
"::": tests/test_reliability.py, slow, checks only that they die with the parent); an address joins that cluster. The package ships
to the workers through ``runtime_env`` (a cluster's nodes need not have it installed).
"""

from __future__ import annotations

import os

import corpus_proximity
from corpus_proximity.children import ray_started, watch_children
from corpus_proximity.errors import InputError


def init_ray(address: str | None, num_cpus: int | None = None, field: str = "ray_address") -> None:
    """Start or join Ray once per process; ``num_cpus`` caps a local instance (None = all cores)."""
    try:
        import ray
    except ImportError:
        raise InputError("the ray engine needs Ray: pip install 'corpus-proximity[ray]' (or use the local engine)") from None
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    watch_children()
    local = {"_node_ip_address": "127.0.0.1", "num_cpus": num_cpus} if address is None else {}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"py_modules": [corpus_proximity]}, **local)
    except ConnectionError as e:
        raise InputError(f"{field}={address!r}: cannot reach a Ray cluster ({e}); start one with `ray start --head` "
                         f"or leave {field} unset for a local instance") from None
    if address is None:
        ray_started()
