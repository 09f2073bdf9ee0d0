"""Qwen 2.5 7B (base model): rewrites a short prompt into a detailed one before generation."""

from ourvidz.families.spec import Family

FAMILY = Family(
    name="qwen",
    title="Qwen",
    role="enhancer",
    components=("model", "tokenizer"),
    hub_id="Qwen/Qwen2.5-7B",
    marker_file="config.json",
    fetch_patterns=("*.json", "*.safetensors", "merges.txt", "vocab.json"),
    pipeline="ourvidz.families.qwen.enhancer:QwenEnhancer",
    demo_builder="ourvidz.families.qwen.build:build_demo",
    user_files="ourvidz.families.qwen.build:write_user_files",
    random_builder="ourvidz.families.qwen.build:RandomQwen",
)
