"""`make gpu-check`: its CPU mode end to end (so the GPU script cannot rot between GPU runs), and
the checks inside it, which must be able to fail."""

import importlib.util
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# A bare CUDA image has these (and what they require); the script may use nothing else.
BARE_IMAGE = ("torch", "transformers", "peft", "safetensors")
# Imported by those libraries when present, never required by them (transformers tries pillow and
# scipy, numpy.f2py charset-normalizer, httpcore sniffio): a bare image works without them.
OPPORTUNISTIC = {"pillow", "scipy", "charset-normalizer", "sniffio"}


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(names) -> set[str]:
    """The distributions ``names`` need, transitively (extras left out), as normalised names."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if _key(name) in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(_key(name))
        todo += [re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in dist.requires or [] if "extra ==" not in r]
    return seen


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    return done, json.loads(out.read_text()) if out.exists() else None


def test_the_cpu_mode_passes_every_check_in_under_two_minutes(cpu_run):
    done, result = cpu_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert result["benchmark"] == "gpu_check" and result["mode"] == "cpu" and result["passed"]
    checks = result["checks"]
    assert set(checks) == {"logits_small", "engine_greedy", "tiled_attention", "nf4"}
    assert checks["engine_greedy"]["identical"] == checks["engine_greedy"]["prompts"] == 4
    assert checks["nf4"].get("passed") or checks["nf4"]["skipped"]
    assert result["elapsed_s"] < 120, result["elapsed_s"]
    assert "all checks passed" in done.stdout


def test_the_cpu_mode_measures_every_run_against_the_roofline(cpu_run):
    perf = cpu_run[1]["performance"]
    assert perf["shape"] == "smollm2-135m" and perf["dtype"] == "float32"
    assert perf["roofline"]["bandwidth_gb_s"] > 0 and perf["roofline"]["matmul_tflops"] > 0
    assert set(perf["transformers"]) == {"batch_1", "static_16", "static_16_mixed"}
    assert set(perf["engine"]) == {"concurrent_1", "concurrent_4", "concurrent_16", "max_16_mixed"}
    for name, run in perf["engine"].items():
        expected = run["requests"] * 16 if name.startswith("concurrent") else None
        assert expected is None or run["output_tokens"] == expected
        assert run["tokens_per_s"] > 0
    assert perf["transformers"]["static_16_mixed"]["useful_tokens"] == perf["engine"]["max_16_mixed"]["output_tokens"]
    for g in perf["goals"].values():
        assert g["met"] == (g["measured"] >= g["goal"])
        assert g["missed_by"] == round(max(0, g["goal"] - g["measured"]), 3)
    assert 0 < perf["batch_1_bandwidth"]["engine_share"] < 1.5


def test_the_script_imports_only_what_a_bare_cuda_image_has(cpu_run):
    allowed = requirement_closure(BARE_IMAGE + ("bitsandbytes",)) | OPPORTUNISTIC  # bitsandbytes: optional, checked
    extra = {_key(d) for d in cpu_run[1]["third_party_imports"]} - allowed
    assert not extra, f"gpu_check.py needs packages a bare CUDA image lacks: {sorted(extra)}"


def test_a_model_that_differs_from_transformers_fails_the_checks(monkeypatch):
    gpu_check = _load_script()
    hf = gpu_check.random_transformers_model("smollm2-135m", "cpu", 0)
    original = gpu_check.Llama.from_hf

    def off_by_a_little(model):
        course = original(model)
        with torch.no_grad():
            course.layers[3].mlp.down_proj.weight.mul_(1.05)  # one matrix 5% off
        return course

    monkeypatch.setattr(gpu_check.Llama, "from_hf", off_by_a_little)
    ids = torch.tensor(gpu_check.random_prompts(2, 48, hf.config.vocab_size, 1))
    report, course = gpu_check.check_logits(hf, ids, torch.float32)
    assert not report["fp32"]["passed"] and not report["passed"]
    with torch.no_grad():
        course.layers[0].self_attn.o_proj.weight.mul_(3.0)  # now far enough off to change greedy tokens
    prompts = gpu_check.random_prompts(2, 16, hf.config.vocab_size, 2)
    greedy = gpu_check.check_engine_greedy(hf, course, gpu_check.numbered_tokenizer(hf.config.vocab_size), prompts, 12)
    assert not greedy["passed"] and greedy["first_difference_at"] is not None


def test_asking_for_cuda_without_it_is_one_clear_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "no CUDA device" in done.stderr.strip().splitlines()[-1]
