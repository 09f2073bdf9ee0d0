"""SDXL on several ranks (ourvidz.distributed): the job's images split across them, each rank with
the seeds it would have had in the one-rank run."""

from __future__ import annotations

from dataclasses import replace

import torch.distributed as dist

from ourvidz.distributed import ParallelContext, ParallelPlan


def generate(model, req, on_step, ctx: ParallelContext, plan: ParallelPlan):
    """SDXLFamily.generate on ctx.world ranks: each rank makes its share of the images (its seeds,
    one generator each, as in the one-process run); rank 0 gathers the bytes, in seed order."""
    import numpy as np
    from PIL import Image

    from ourvidz.families.base import GenerationOutput

    share = plan.shares(list(req.seeds))[ctx.rank] if ctx.rank < plan.image_split else []
    mine = model.generate(replace(req, seeds=share), on_step if ctx.is_main else None) if share else None
    payload = ([np.asarray(im) for im in mine.images], mine.phases) if mine else ([], {})
    gathered = [None] * ctx.world if ctx.is_main else None
    dist.gather_object(payload, gathered, dst=0)
    out = GenerationOutput(text_encoding=mine.text_encoding if mine else None)  # rank 0 always has a share
    if not ctx.is_main:
        out.phases = payload[1]
        return out
    for arrays, phases in gathered:
        out.images += [Image.fromarray(a) for a in arrays]
        for k, v in phases.items():  # the slowest rank's time is the job's
            out.phases[k] = max(out.phases.get(k, 0.0), v)
    return out
