"""One job over N GPUs (or CPU processes) of one host through torch.distributed.

ParallelPlan: Wan = guidance branches on different ranks (cfg 2) x diffusers' context parallelism
(Ulysses where the head count divides, ring for the rest); SDXL = the images split across ranks.
launch(n, fn, *args) starts the ranks (or runs under torchrun) and returns rank 0's result; a rank
that raises or dies ends the job with one error. wan_generate / sdxl_generate run a family's
generate on N ranks, rank 0 gets the outputs. The CFG split is WanPipeline.__call__'s arithmetic
(diffusers 0.42.1) with the two predictions exchanged by all_gather: the one-process latents.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from ourvidz.errors import BadInput, GenerationFailed, OurvidzError

# NVLink multicast (NVLS / symmetric-memory multicast) stays off in every rank: KINDS.md.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
DEFAULT_TIMEOUT_S = float(os.environ.get("OURVIDZ_DIST_TIMEOUT", 600))  # any one collective
KILL_GRACE_S = 3.0


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ParallelPlan:
    world: int
    family: str
    cfg_degree: int = 1  # wan: 2 = the conditional and unconditional branches on different ranks
    ulysses_degree: int = 1  # wan: diffusers' Ulysses attention (must divide the head count)
    ring_degree: int = 1  # wan: diffusers' ring attention, for what Ulysses cannot take
    image_split: int = 1  # sdxl: ranks that share the job's images
    solo: bool = False  # the job runs on rank 0 alone (the family says it does not scale: parallel_min_frames)

    @classmethod
    def make(cls, n: int, family: str, *, heads: int = 12, guidance: float = 5.0,
             frames: int | None = None) -> ParallelPlan:
        """The split the family declares (its registry entry's parallel_split), for n ranks; a job
        of fewer frames than its parallel_min_frames on rank 0 alone."""
        from ourvidz import families

        if n < 1:
            raise ValueError(f"--gpus must be at least 1 (got {n})")
        spec = families.get(family)
        if n > 1 and frames is not None and spec.parallel_min_frames and frames < spec.parallel_min_frames:
            return cls(n, family, solo=True)
        split = spec.parallel_split
        if split == "images":
            return cls(n, family, image_split=n)
        if split != "guidance_context":
            raise ValueError(f"no multi-GPU plan for the {family} family")
        cfg = 2 if guidance > 1.0 and n % 2 == 0 else 1
        cp = n // cfg
        ulysses = max(d for d in range(1, cp + 1) if cp % d == 0 and heads % d == 0)
        return cls(n, family, cfg_degree=cfg, ulysses_degree=ulysses, ring_degree=cp // ulysses)

    @property
    def cp_degree(self) -> int:  # context parallelism: ranks that share one forward's tokens
        return self.ulysses_degree * self.ring_degree

    def shares(self, seeds: list[int]) -> list[list[int]]:
        """sdxl: the seeds of each rank, in order (contiguous, sizes differ by at most one)."""
        n, k = self.image_split, len(seeds)
        bounds = [r * k // n for r in range(n + 1)]
        return [seeds[bounds[r]:bounds[r + 1]] for r in range(n)]

    def describe(self) -> str:
        if self.solo:
            return f"rank 0 alone of {self.world} ranks"
        if self.image_split > 1 or self.cfg_degree * self.cp_degree == 1 and self.world > 1:
            return f"{self.world} ranks: images split {self.image_split} ways"
        return f"{self.world} ranks: cfg {self.cfg_degree} x ulysses {self.ulysses_degree} x ring {self.ring_degree}"

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- one rank's view
@dataclass
class ParallelContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None = None  # None: one process, no process group
    plan: ParallelPlan | None = None  # None: ParallelPlan.make's choice for the job
    _meshes: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.world > 1 and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mesh(self, plan: ParallelPlan):
        """The (cfg, ring, ulysses) device mesh of a wan plan, built once per shape (a collective:
        every rank calls it in the same order)."""
        key = (plan.cfg_degree, plan.ring_degree, plan.ulysses_degree)
        if key not in self._meshes:
            from torch.distributed.device_mesh import init_device_mesh

            self._meshes[key] = init_device_mesh(self.device.type, key, mesh_dim_names=("cfg", "ring", "ulysses"))
        return self._meshes[key]


def _init_rank(rank: int, world: int, local_rank: int, device_type: str, init_method: str | None,
               timeout_s: float) -> ParallelContext:
    os.environ.update(NO_MULTICAST)
    if device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend, extra = "nccl", {"device_id": device}
    else:
        device, backend, extra = torch.device("cpu"), "gloo", {}
        if world > 1:  # the host's cores shared between the ranks, not oversubscribed
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s), **extra)
    return ParallelContext(rank, world, local_rank, device, backend if world > 1 else None)


# ---------------------------------------------------------------- the launcher
def launch(n: int, fn: Callable[..., Any], *args, device_type: str | None = None,
           timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Run fn(ctx, *args) on n ranks; return rank 0's result. Under torchrun this process is one
    rank and returns its own result; n == 1 runs here; n > 1 spawns n ranks (file-store
    rendezvous). A rank that raises or exits: GenerationFailed naming it (an OurvidzError it
    raised keeps its class), the other ranks terminated, then killed."""
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if all(v in os.environ for v in TORCHRUN_VARS):  # torchrun started this process
        ctx = _init_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]),
                         device_type, "env://", timeout_s)
        try:
            return fn(ctx, *args)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    if device_type == "cuda" and n > torch.cuda.device_count():
        raise BadInput(f"--gpus {n}: only {torch.cuda.device_count()} CUDA GPUs are visible")
    if n == 1:
        return fn(_init_rank(0, 1, 0, device_type, None, timeout_s), *args)

    import torch.multiprocessing as mp
    from multiprocessing.connection import wait

    spawn = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="ourvidz-ranks-")
    init_method = f"file://{tmp}/store"
    procs = []
    try:
        for r in range(n):
            p = spawn.Process(target=_rank_main, name=f"ourvidz-rank{r}", daemon=True,
                              args=(r, n, device_type, init_method, timeout_s, tmp, os.getpid(), fn, args))
            p.start()
            procs.append(p)
        pending = {p.sentinel: r for r, p in enumerate(procs)}
        failures: list[tuple[int, float, int, str, BaseException | None]] = []
        deadline = None  # after the first failure: one more second for the other ranks' errors
        while pending and (deadline is None or time.monotonic() < deadline):
            for s in wait(list(pending), timeout=None if deadline is None else max(0, deadline - time.monotonic())):
                r = pending.pop(s)
                procs[r].join()
                if procs[r].exitcode != 0:
                    failures.append(_failure(tmp, r, procs[r].exitcode))
                    deadline = deadline or time.monotonic() + 1.0
        if failures:
            # A failing rank makes its peers fail in their collectives a moment later: report the
            # cause, not the echoes. A rank that died silently (killed, os._exit) comes first,
            # then the earliest exception.
            _, _, r, text, exc = min(failures)
            if isinstance(exc, OurvidzError):
                exc.args = (f"rank {r} of {n}: {exc}",)
                raise exc
            raise GenerationFailed(f"rank {r} of {n} failed: {text}")
        with open(os.path.join(tmp, "result-0.pkl"), "rb") as f:
            return pickle.load(f)
    finally:
        _stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def _failure(tmp: str, rank: int, exitcode: int | None) -> tuple[int, float, int, str, BaseException | None]:
    """(0 for a silent death else 1, when, rank, message, exception): min() is the cause."""
    try:
        with open(os.path.join(tmp, f"error-{rank}.pkl"), "rb") as f:
            when, text, blob = pickle.load(f)
    except Exception:
        how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        return 0, time.time(), rank, f"the process died ({how})", None
    try:
        exc = pickle.loads(blob) if blob else None
    except Exception:
        exc = None
    return 1, when, rank, text, exc


def _stop(procs) -> None:
    for p in [p for p in procs if p.is_alive()]:
        p.terminate()
    deadline = time.monotonic() + KILL_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _rank_main(rank, world, device_type, init_method, timeout_s, tmp, parent_pid, fn, args):
    """A spawned rank: join the group, run fn, leave rank 0's result or this rank's error in tmp."""
    threading.Thread(target=_orphan_watch, args=(parent_pid,), daemon=True).start()
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    try:
        ctx = _init_rank(rank, world, rank, device_type, init_method, timeout_s)
        result = fn(ctx, *args)
        if rank == 0:
            with open(os.path.join(tmp, "result-0.pkl.part"), "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(os.path.join(tmp, "result-0.pkl.part"), os.path.join(tmp, "result-0.pkl"))
        if dist.is_initialized():
            dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the parent
        from ourvidz.errors import one_line

        when = time.time()
        text = str(exc) if isinstance(exc, OurvidzError) else one_line(exc)
        try:
            blob = pickle.dumps(exc)
        except Exception:
            blob = None
        with open(os.path.join(tmp, f"error-{rank}.pkl"), "wb") as f:
            pickle.dump((when, text, blob), f)
        if os.environ.get("OURVIDZ_DEBUG"):
            traceback.print_exc()
        os._exit(1)  # not sys.exit: a wedged collective thread must not keep the process alive


def _orphan_watch(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


# ---------------------------------------------------------------- wan
def enable_context_parallel(transformer, ctx: ParallelContext, plan: ParallelPlan) -> bool:
    """diffusers' own context parallelism on the (ring, ulysses) dimensions of the plan's mesh;
    once per transformer. False when the plan has none."""
    if plan.cp_degree == 1:
        return False
    if getattr(transformer, "_ourvidz_cp", None) is not None:
        if transformer._ourvidz_cp != plan:
            raise ValueError("the transformer already runs under another parallel plan")
        return True
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ulysses_degree=plan.ulysses_degree, ring_degree=plan.ring_degree,
                                   mesh=ctx.mesh(plan))
    import diffusers

    level, count = diffusers.utils.logging.get_verbosity(), torch.accelerator.device_count
    diffusers.utils.logging.set_verbosity_error()  # "experimental feature" warning on every rank
    if ctx.device.type == "cpu" and count() == 0:
        # diffusers takes the rank's device as rank % device_count(), 0 on a CPU-only torch (and
        # does not use that device on the CPU).
        torch.accelerator.device_count = lambda: 1
    try:
        transformer.enable_parallelism(config=config)
    finally:
        torch.accelerator.device_count = count
        diffusers.utils.logging.set_verbosity(level)
    transformer._ourvidz_cp = plan
    return True


def share_from_main(ctx: ParallelContext | None, obj):
    """rank 0's obj on every rank (e.g. the enhanced prompt, made once on rank 0)."""
    if ctx is None or not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parallel_generate(model, req, on_step, ctx: ParallelContext, plan: ParallelPlan | None = None):
    """The family pipelines' hook: generate one request on all ranks of ctx, the family's way
    (its registry entry's parallel_generate)."""
    from ourvidz import families

    spec = families.get(model.family)
    if not spec.parallel_generate:
        raise ValueError(f"no multi-GPU generate for the {model.family} family")
    transformer = getattr(model.pipe, "transformer", None)
    heads = getattr(getattr(transformer, "config", None), "num_attention_heads", 12)
    plan = plan or ctx.plan or ParallelPlan.make(ctx.world, model.family, heads=heads, guidance=req.guidance,
                                                 frames=None if split_for_good(transformer) else req.frames)
    if plan.solo:  # rank 0 runs the one-process job; the others have nothing to do
        if not ctx.is_main:
            from ourvidz.families.base import GenerationOutput

            return GenerationOutput()
        return model.generate(req, on_step)
    return spec.parallel_generate_function()(model, req, on_step, ctx, plan)


def split_for_good(transformer) -> bool:
    """Whether diffusers' context parallelism is on in this transformer (an earlier job enabled it;
    diffusers cannot turn it off): its every call is then a collective, so no rank may run a job
    alone."""
    cp = getattr(transformer, "_ourvidz_cp", None)
    return getattr(transformer, "_parallel_config", None) is not None or (cp is not None and cp.cp_degree > 1)
