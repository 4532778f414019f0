"""Shared test set-up: offline by construction, one model load per worker."""

import os
import socket

# Before anything imports transformers or huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two pytest workers, each possibly running a notebook kernel, share two cores. OpenMP threads
# that spin while they wait then steal each other's cores: two concurrent generate() calls took
# 22 s each with the default policy and 6.5 s each with PASSIVE on this machine. Before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

_real_connect = socket.socket.connect


def _loopback_only(sock, address):
    """Tests may talk to servers on this machine, never to the network (no hub access)."""
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and sock.family in (socket.AF_INET, socket.AF_INET6):
        if not (host.startswith("127.") or host in {"localhost", "::1"}):
            raise OSError(f"network access attempted during tests: {address!r}")
    return _real_connect(sock, address)


socket.socket.connect = _loopback_only


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the embedded model on CPU, loaded once per test worker."""
    from course_utils.models import DEFAULT_MODEL, load_model

    return load_model(DEFAULT_MODEL, device="cpu")
