"""The one way noisyft talks to Ray: an optional import and a session (``noisyft tune``, ``bench --executor ray``).

Ray is an optional dependency (the ``dist`` extra), so it is imported here, lazily, and its absence
is a one-line UserError naming the install command. :func:`ray_session` joins the Ray the caller
already started (a test fixture, a notebook), else starts a local one or connects to ``address``
(``auto``: the cluster this machine belongs to; ``ray://host:10001``: a remote one) and shuts
down only what it started.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Optional

from noisyft.errors import UserError

log = logging.getLogger("noisyft")

INSTALL_HINT = 'pip install -e ".[dist]"'


def require_ray(what: str):
    """The ``ray`` module (with Tune importable); a one-line UserError naming ``what`` needs it otherwise."""
    try:
        import ray
        import ray.tune  # noqa: F401  (the extra installs ray[tune]; fail here, not halfway through a run)
    except ImportError:
        raise UserError(f"{what} needs Ray (Tune): install it with {INSTALL_HINT} (or pip install \"ray[tune]\")") from None
    return ray


def torch_threads(cpus: float) -> int:
    """Torch's intra-op threads for a Ray task or trial holding ``cpus`` CPUs (at least one)."""
    return max(1, int(cpus))


@contextmanager
def ray_session(address: Optional[str], what: str, *, option: str = "--address") -> Iterator:
    """Yield the ``ray`` module with a session open: the running one, a new local one, or ``address``'s cluster."""
    ray = require_ray(what)
    if ray.is_initialized():
        yield ray
        return
    kwargs = dict(include_dashboard=False, configure_logging=False)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)
    except (ConnectionError, TimeoutError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{option} {address or '(local)'}: could not start or reach Ray ({first})") from None
    try:
        yield ray
    finally:
        ray.shutdown()
