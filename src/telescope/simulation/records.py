"""What a store records about its campaign, and opening a store for a campaign.

The store's metadata names the prior and the simulators by fingerprints (:func:`prior_info`,
:func:`simulator_info`), with the seed and the plan (``n``, ``batch_size`` and seed per level).  A campaign
that finds a store checks that it holds the same campaign and refuses to mix two, listing every difference;
the same call resumes it, simulating only the missing batches.
"""

from __future__ import annotations

import datetime
import hashlib
import json

import numpy as np

from .batches import _RNG_LOCK, Level
from .simulators import Simulator, _canon, seeded
from .store.database import Store
from .store.schema import SCHEMA_VERSION, _guard, _version

__all__ = ["prior_info", "simulator_info"]


def prior_info(prior) -> dict:
    """Type, repr, event shape and fingerprints of a prior.

    ``fingerprint`` hashes 64 seeded draws (what every store compares); ``state_fingerprint`` also hashes
    the prior's parameters and its log density at those draws (compared when the store has it), so two
    priors that sample alike but differ in their density or support are not mixed either.
    """
    with _RNG_LOCK, seeded(0x7E1E5C0):
        draws = prior.sample((64,)).float()
    h = hashlib.sha256(type(prior).__qualname__.encode() + np.ascontiguousarray(draws.numpy(), "<f4").tobytes())
    h2 = hashlib.sha256(h.digest())
    _canon(prior, h2, {}, 0)
    try:
        lp = prior.log_prob(draws).detach().double().cpu().numpy()
        h2.update(np.ascontiguousarray(np.round(lp, 5)).tobytes())
    except Exception as e:  # noqa: BLE001 - a prior without log_prob: its draws and parameters only
        h2.update(type(e).__name__.encode())
    return {"type": type(prior).__qualname__, "repr": repr(prior)[:400], "event_shape": list(prior.event_shape),
            "fingerprint": h.hexdigest()[:16], "state_fingerprint": h2.hexdigest()[:16]}


def simulator_info(sim: Simulator) -> dict:
    """Name, fingerprints and configuration of a simulator, as the store records them.

    ``fingerprint`` hashes the code *and* the values it captures (:meth:`Simulator.fingerprint`);
    ``code_fingerprint`` the name, configuration and source only (what stores of earlier versions compared).
    """
    return {"name": sim.name, "fingerprint": sim.fingerprint(), "code_fingerprint": sim.code_fingerprint(),
            "config": _jsonable(sim.config), "generator": sim.is_generator}


def _same_simulator(stored: dict, now: dict) -> bool:
    if (stored.get("name"), stored.get("config")) != (now["name"], now["config"]):
        return False
    if "code_fingerprint" in stored:
        return stored.get("fingerprint") == now["fingerprint"]
    # a store of an earlier version: only its code fingerprint can be compared
    return stored.get("fingerprint") in (now["code_fingerprint"], now["fingerprint"])


def _jsonable(obj):
    """``obj`` as the store records it: a JSON round trip, with ``repr`` for what JSON cannot hold.

    This is the store's canonical form of a simulator's config (compared on resume with what an earlier run
    stored), so it must stay as it is; it is not a general JSON sanitiser (numpy values become their repr).
    """
    return json.loads(json.dumps(obj, default=repr))


def _open_store(path, kind: str, seed: int, levels: list[Level], prior, sims_info: list[dict]):
    """The store at ``path`` opened for writing this campaign: created with its metadata, or checked to hold the
    same campaign (a ValueError lists every difference) and its plan extended to the larger ``n``."""
    p_info = prior_info(prior)
    plan = [{"level": lv.level, "n": lv.n, "batch_size": lv.batch_size, "seed": lv.seed} for lv in levels]
    store = Store(path, write=True)
    with _guard(store.file, close=store.close):
        meta = store.meta
        if not meta:
            store.set_meta(format="telescope-simulations", schema=SCHEMA_VERSION, kind=kind, seed=int(seed),
                           prior=p_info, simulators=sims_info, levels=plan, x_event_shape=None,
                           telescope_version=_version(), created=datetime.datetime.now().isoformat(timespec="seconds"),
                           seed_scheme=2)
            return store
        diffs, pin = _differences(meta, kind, seed, p_info, sims_info, plan)
        if diffs:
            raise ValueError(f"store {str(path)!r} holds simulations of a different campaign and cannot be mixed with "
                             f"this one:\n  - " + "\n  - ".join(diffs) +
                             "\nStart a new store path (another store=), or repeat the store's settings to resume it."
                             + (f" If the simulator changed in a way that does not change its simulations (a "
                                f"refactor, a renamed variable) and you mean to append to this store anyway, pin its "
                                f"fingerprint: Simulator(fn, name=..., config=..., fingerprint={pin[0]!r})"
                                if pin else ""))
        _check_batch_sizes(store, path, kind, levels)
        old_plan = {p["level"]: p for p in meta.get("levels", [])}
        new_plan = [dict(p, n=max(p["n"], old_plan.get(p["level"], p)["n"])) for p in plan]
        if new_plan != meta.get("levels"):
            store.set_meta(levels=new_plan)
        return store


def _differences(meta: dict, kind: str, seed: int, p_info: dict, sims_info: list[dict],
                 plan: list[dict]) -> tuple[list[str], list[str]]:
    """What differs between the campaign a store holds (``meta``) and this one: the lines of the error, and the
    stored fingerprints of the simulators that differ (to pin)."""
    diffs: list[str] = []
    pin: list[str] = []
    if meta.get("kind") != kind:
        diffs.append(f"kind: the store holds a {meta.get('kind')}() campaign, this call is {kind}()")
    if meta.get("seed") != int(seed):
        diffs.append(f"seed: the store has seed={meta.get('seed')}, this call has seed={seed}")
    elif "seed_scheme" not in meta and not 0 <= int(seed) < 2**32:
        diffs.append(f"seed: the store was written by an earlier telescope, which used seed={seed} modulo 2**32; "
                     f"its stored batches and the ones simulated now would come from different streams")
    old_prior = meta.get("prior", {})
    if old_prior.get("fingerprint") != p_info["fingerprint"] or (
            "state_fingerprint" in old_prior and old_prior["state_fingerprint"] != p_info["state_fingerprint"]):
        old_p = meta.get("prior", {})
        diffs.append(f"prior: the store has {old_p.get('repr')} (fingerprint {old_p.get('fingerprint')}, state "
                     f"{old_p.get('state_fingerprint')}), this call has {p_info['repr']} (fingerprint "
                     f"{p_info['fingerprint']}, state {p_info['state_fingerprint']}); the fingerprints hash the "
                     f"prior's draws, parameters and log density")
    old_sims = meta.get("simulators", [])
    if len(old_sims) != len(sims_info):
        diffs.append(f"simulators: the store has {len(old_sims)} level(s), this call has {len(sims_info)}")
    else:
        for lv, (a, b) in enumerate(zip(old_sims, sims_info)):
            if not _same_simulator(a, b):
                where = f"simulator of level {lv}" if kind == "levels" else "simulator"
                diffs.append(f"{where}: the store has {a['name']!r} (fingerprint {a['fingerprint']}, config "
                             f"{a.get('config')}), this call has {b['name']!r} (fingerprint {b['fingerprint']}, "
                             f"config {b['config']}); the fingerprint hashes the name, config, source code and "
                             f"the values the simulator captures (closure variables, default arguments, "
                             f"module-level values it uses, attributes of a callable object)")
                pin.append(a["fingerprint"])
    old_plan = {p["level"]: p for p in meta.get("levels", [])}
    for p in plan:
        old = old_plan.get(p["level"])
        if old is not None and old["batch_size"] != p["batch_size"]:
            diffs.append(f"batch_size{' of level %d' % p['level'] if kind == 'levels' else ''}: the store has "
                         f"{old['batch_size']}, this call has {p['batch_size']} (batches are seeded by index)")
    return diffs, pin


def _check_batch_sizes(store: Store, path, kind: str, levels: list[Level]) -> None:
    """Refuse a campaign whose ``n`` would change the size of a batch already stored (batches are seeded by
    index and size)."""
    for lv in levels:
        stored = store.stored(lv.level)
        for b, size in enumerate(lv.sizes):
            if b in stored and stored[b] != size:
                raise ValueError(
                    f"store {str(path)!r} holds batch {b}{' of level %d' % lv.level if kind == 'levels' else ''} "
                    f"with {stored[b]} simulations, but n={lv.n} with batch_size={lv.batch_size} puts {size} in "
                    f"it; batches are seeded by index and size, so it cannot be reused. Choose n so that every "
                    f"stored batch keeps its size (for example n={sum(stored.values())} or a multiple of "
                    f"batch_size), or use a new store")
