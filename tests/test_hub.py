"""Hub downloads through huggingface_hub's real client, served by a mock transport (no network)."""

import hashlib
from pathlib import Path

import httpx2 as httpx  # huggingface_hub 2.x speaks httpx2
import pytest

from mlxft.errors import ModelError

SHA = "0123456789abcdef0123456789abcdef01234567"


def _mock_hub(files: dict[str, bytes], repo: str, log: list):
    def handler(request: httpx.Request) -> httpx.Response:
        log.append((request.method, request.url.path))
        path = request.url.path
        if path.startswith(f"/api/models/{repo}/tree/"):
            tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()} for name, data in files.items()]
            return httpx.Response(200, json=tree)
        if path.startswith(f"/api/models/{repo}"):
            siblings = [{"rfilename": name, "size": len(data)} for name, data in files.items()]
            return httpx.Response(200, json={"id": repo, "sha": SHA, "siblings": siblings, "private": False})
        if path.startswith("/api/models/"):
            return httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "Repository not found"})
        prefix = f"/{repo}/resolve/"
        if path.startswith(prefix):
            name = path[len(prefix):].split("/", 1)[1]
            if name not in files:
                return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"})
            data = files[name]
            headers = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Content-Length": str(len(data))}
            return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)
        return httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"})

    return handler


@pytest.fixture
def hub(tmp_path, monkeypatch, tiny_llama):
    import huggingface_hub
    from huggingface_hub.utils import _http

    files = {p.name: p.read_bytes() for p in Path(tiny_llama).iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"a pickle that must never be fetched"
    log: list = []
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    transport = httpx.MockTransport(_mock_hub(files, "acme/tiny-llama", log))
    huggingface_hub.set_client_factory(lambda: httpx.Client(transport=transport))
    yield log
    huggingface_hub.set_client_factory(_http.default_client_factory)


def test_a_hub_model_downloads_safetensors_only_and_loads(hub):
    from mlxft.llm.loading import load_model

    loaded = load_model("acme/tiny-llama")
    assert (loaded.path / "model.safetensors").is_file() and (loaded.path / "tokenizer.json").is_file()
    assert not (loaded.path / "pytorch_model.bin").exists()
    assert not any(path.endswith(".bin") for _method, path in hub)


def test_an_unknown_hub_repo_is_a_clear_error(hub):
    from mlxft.llm.loading import download_model

    with pytest.raises(ModelError) as err:
        download_model("acme/does-not-exist")
    assert "acme/does-not-exist" in err.value.message


@pytest.mark.hub
def test_the_catalogue_default_downloads_from_the_real_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    from mlxft.llm.loading import load_model

    loaded = load_model("smollm2-135m-instruct")
    assert loaded.config["model_type"] == "llama"
