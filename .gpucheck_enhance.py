"""Scratch GPU check of the Qwen enhancer (deleted after use)."""
import json, subprocess, sys, time, torch
from ourvidz.enhancement import load_settings
from ourvidz.model_cache import ModelCache

s = load_settings()
cache = ModelCache(demo=True)
print("device", cache.device, "dtype", cache.dtype, "budget GB", cache.budget / 1e9)
q, times = cache.get("qwen")
print("load", times, "dtype", next(q.model.parameters()).dtype, "device", q.device)
a = q.enhance("two dancers on a rooftop", seed=11, settings=s)
b = q.enhance("two dancers on a rooftop", seed=11, settings=s)
print("deterministic on cuda:", a.text == b.text, a.fallback, a.new_tokens, round(a.seconds, 3))
q.to(torch.device("cpu")); q.to(cache.device)
c = q.enhance("two dancers on a rooftop", seed=11, settings=s)
print("same after cpu round trip:", c.text == a.text)
t = q.enhance("two dancers on a rooftop", seed=11, settings=s.model_copy(update={"timeout_seconds": 1e-6}))
print("timeout fallback:", t.fallback, t.warning[:120])
long = " ".join(["a slow cinematic shot of a city street at night with neon lights and rain"] * 200)
l = q.enhance(long, seed=1, settings=s)
print("long:", l.truncated, l.input_tokens, l.prompt_tokens, l.fallback)
print("peak GB", torch.cuda.max_memory_allocated() / 1e9)
