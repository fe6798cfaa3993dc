"""The Ray connection of a search: joining or starting Ray, and what the cluster can hold."""

from __future__ import annotations

import logging
import os
import socket

import ray

from nas.errors import NasError
from nas.search.settings import SearchSettings


def check_address(address: str) -> None:
    """NasError unless a Ray cluster answers at `address` (host:port); a quick TCP probe."""
    if address == "auto" or address.startswith("local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise NasError(f"--address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by default), or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as err:
        raise NasError(f"--address {address}: no Ray cluster answers there ({err.strerror or err}); start one with `ray start --head` or drop --address") from None


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray. True when this call
    initialised Ray, so the caller shuts it down again (a local Ray stops; a cluster is only left)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    if address:
        check_address(address)
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as err:
            hint = ""
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # Ray 2.60 turns token authentication on for a head that has a token; a driver
                # without RAY_AUTH_MODE=token is then refused with nothing but retries.
                hint = "; if the cluster uses token authentication, set RAY_AUTH_MODE=token (and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
            raise NasError(f"--address {address}: {str(err).splitlines()[0]}{hint}") from None
        except Exception as err:  # token auth mismatch and the like
            if "auth" in type(err).__name__.lower() or "token" in str(err).lower():
                raise NasError(f"--address {address}: the cluster uses token authentication; set RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
            raise
        return True
    ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return True


def check_resources(settings: SearchSettings) -> None:
    """NasError when no node of the cluster can hold one trial's CPUs and GPUs (Tune would wait for ever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus, gpus = settings.cpus_per_trial, settings.gpus_per_trial
    largest = max((node.get("CPU", 0) for node in nodes), default=0)
    if gpus and not any(node.get("GPU", 0) for node in nodes):
        raise NasError(f"--gpus-per-trial {gpus:g}: the Ray cluster has no GPUs ({len(nodes)} node(s), CPUs only); "
                       "drop --gpus-per-trial, or join a cluster with GPU nodes (--address)")  # fmt: skip
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return
    if largest < cpus:
        raise NasError(f"--cpus-per-trial {cpus}: no Ray node has that many CPUs (the largest has {largest:g})")
    most = max(node.get("GPU", 0) for node in nodes)
    with_most = max(node.get("CPU", 0) for node in nodes if node.get("GPU", 0) == most)
    raise NasError(f"--cpus-per-trial {cpus} --gpus-per-trial {gpus:g}: no Ray node has both (the node with most GPUs "
                   f"has {most:g} GPU(s) and {with_most:g} CPUs)")  # fmt: skip


def concurrency(settings: SearchSettings) -> int:
    if settings.concurrency:
        return settings.concurrency
    if settings.gpus_per_trial:  # trials that fit on each node at once, counting its CPUs and its GPUs
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        fit = sum(int(min(n.get("CPU", 0) // settings.cpus_per_trial, n.get("GPU", 0) // settings.gpus_per_trial)) for n in nodes)
        return max(1, min(settings.trials, fit))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(settings.trials, cpus // settings.cpus_per_trial))
