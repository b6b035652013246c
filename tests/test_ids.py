from muse_eval.config import RunConfig, derive_seed
from muse_eval.orchestrator import pushback_unit_id, sample_unit_id


def test_unit_ids_are_readable_and_distinct() -> None:
    assert sample_unit_id("mmlu/anatomy/3") == "mmlu/anatomy/3#sample"
    assert pushback_unit_id("mmlu/anatomy/3", "expert/plausible") == (
        "mmlu/anatomy/3#pushback/expert/plausible"
    )
    assert sample_unit_id("mmlu/anatomy/3") != pushback_unit_id("mmlu/anatomy/3", "x")


def test_seeds_are_reproducible_and_differ_per_unit() -> None:
    first = derive_seed(0, "mmlu/anatomy/3#sample")
    assert first == derive_seed(0, "mmlu/anatomy/3#sample")
    seeds = {derive_seed(0, f"mmlu/anatomy/{i}#sample") for i in range(1000)}
    assert len(seeds) == 1000
    assert derive_seed(1, "mmlu/anatomy/3#sample") != first
    assert all(0 <= s < 2**31 for s in seeds)


def test_run_id_ignores_limit_and_concurrency_but_not_sampling() -> None:
    base = RunConfig(model="qwen2.5-coder-1.5b", limit=10, max_concurrency=4)
    same = RunConfig(model="qwen2.5-coder-1.5b", limit=50, max_concurrency=1)
    other = RunConfig(model="qwen2.5-coder-1.5b", temperature=0.7)
    assert base.run_id("fp") == same.run_id("fp")
    assert base.run_id("fp") != other.run_id("fp")
    assert base.run_id("fp") != base.run_id("edited-template")
    assert base.run_id("fp").startswith("mmlu-qwen2.5-coder-1.5b-")
