import json
import sys
import time
from pathlib import Path

import pytest
import torch

from course_utils import models
from course_utils.chat import generate

FINGERPRINT = Path(__file__).parent / "data" / "smollm2_fingerprint.json"
PROMPT = "The quick brown fox jumps over the lazy dog because"
PROBE_IDS = [0, 1, 2, 100, 1000, 10000, 49151]


def fingerprint(model, tokenizer) -> dict:
    """Logits of the embedded model on a fixed prompt, reduced to a few hundred numbers."""
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0].float()  # (T, V)
    last = logits[-1]
    top = torch.topk(last, 10)
    return {
        "prompt": PROMPT,
        "input_ids": ids[0].tolist(),
        "top10_ids": top.indices.tolist(),
        "top10_logits": top.values.tolist(),
        "logsumexp_per_position": torch.logsumexp(logits, -1).tolist(),
        "probe_logits": logits[:, PROBE_IDS].tolist(),
    }


def test_logits_match_the_stored_fingerprint(smollm2):
    expected = json.loads(FINGERPRINT.read_text())
    actual = fingerprint(*smollm2)
    assert actual["input_ids"] == expected["input_ids"]
    assert actual["top10_ids"] == expected["top10_ids"]
    for key in ("top10_logits", "logsumexp_per_position", "probe_logits"):
        diff = (torch.tensor(actual[key]) - torch.tensor(expected[key])).abs().max().item()
        assert diff < 1e-4, f"{key} differs by {diff}"


def test_greedy_answer_names_paris(smollm2):
    model, tokenizer = smollm2
    [answer] = generate(model, tokenizer, "What is the capital of France?", max_new_tokens=30)
    assert "Paris" in answer.text


def test_embedded_model_is_the_expected_architecture(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert tokenizer.chat_template


def test_unknown_name_lists_the_available_models():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        models.load_model("smollm-9000")


def test_hub_id_without_network_says_how_to_get_the_weights():
    with pytest.raises(models.ModelNotAvailableError, match="hf download some-org/some-model"):
        models.load_model("some-org/some-model")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        models.load_model(tmp_path)


def test_bad_device_and_dtype_are_rejected_before_loading():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            models.load_model(device="cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        models.load_model(device="tpu9")
    with pytest.raises(TypeError, match="torch.dtype"):
        models.load_model(dtype="float32")
    with pytest.raises(ValueError, match="load_in_4bit needs a CUDA device.*prepare_qlora"):
        models.load_model(device="cpu", load_in_4bit=True)


def test_best_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.best_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert models.best_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.best_device() == "cpu"


def test_seed_everything_repeats_random_draws():
    import random

    import numpy as np

    models.seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(3))
    models.seed_everything(7)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    with pytest.raises(ValueError):
        models.seed_everything(-1)


def test_conversion_cache_detects_a_modified_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path))
    folder = models.converted_dir("smollm2-135m-instruct")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    from course_utils.assets import get_asset, sha256_file

    manifest = {"source_sha256": get_asset("smollm2-135m-instruct").sha256,
                "files": {"model.safetensors": sha256_file(folder / "model.safetensors")}}
    (folder / "course_manifest.json").write_text(json.dumps(manifest))
    assert models._conversion_is_valid("smollm2-135m-instruct", folder)
    (folder / "model.safetensors").write_bytes(b"weightz")
    assert not models._conversion_is_valid("smollm2-135m-instruct", folder)


if __name__ == "__main__" and "--write-fingerprint" in sys.argv:
    # Regenerate only after a deliberate change of the embedded model or its conversion.
    FINGERPRINT.write_text(json.dumps(fingerprint(*models.load_model(device="cpu")), indent=1) + "\n")
    print(f"wrote {FINGERPRINT}")


def _raised_from(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as err:
            raise outer from err
    except Exception as caught:
        return caught


@pytest.mark.parametrize(("inner", "offline", "says"), [
    ("gated", False, "gated: accept its licence"),
    ("missing", False, "no model by that name"),
    ("network", False, "cannot be reached from this machine (no network)"),
    ("network", True, "HF_HUB_OFFLINE=1 is set"),
])
def test_a_hub_failure_says_why(inner, offline, says, monkeypatch):
    import socket

    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from course_utils.models import hub_failure_reason

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", offline)
    cause = {"gated": GatedRepoError.__new__(GatedRepoError),
             "missing": RepositoryNotFoundError.__new__(RepositoryNotFoundError),
             "network": socket.gaierror(-2, "Name or service not known")}[inner]
    assert says in hub_failure_reason(_raised_from(OSError("transformers' wrapper"), cause))


def test_a_hub_id_fails_in_one_line_naming_the_cause():
    from course_utils.models import ModelNotAvailableError, load_tokenizer

    with pytest.raises(ModelNotAvailableError) as caught:  # the tests run with HF_HUB_OFFLINE=1
        load_tokenizer("someone/no-such-model-for-the-course")
    message = str(caught.value)
    assert "\n" not in message and "hf download someone/no-such-model-for-the-course" in message
    assert "HF_HUB_OFFLINE=1 is set" in message


def test_a_hub_id_with_no_network_says_no_network():
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DOWNLOAD_TIMEOUT": "2"}  # every request goes to a closed port on this machine
    code = "from course_utils.models import load_tokenizer\nload_tokenizer('someone/no-such-model-for-the-course')"
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - start < 30  # one quick probe, not a minute of the hub library's retries
    assert run.returncode != 0
    assert "cannot be reached from this machine (no network)" in run.stderr.strip().splitlines()[-1]
