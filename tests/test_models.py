"""The embedded model loads offline; any folder loads too; the layer description adds up."""
import pytest
import torch

from helpers import models as M


@pytest.fixture(scope="module")
def model():
    return M.load_model(device="cpu")


def test_embedded_model_is_minilm_l6(model):
    assert M.n_layers(model) == 6
    assert M.count_parameters(model) == 22_713_216
    emb = model.encode(["A plane is taking off."])
    assert emb.shape == (1, 384)


def test_describe_layers_adds_up(model):
    rows = M.describe_layers(model)
    parts = [r["part"] for r in rows]
    assert parts[:7] == ["embeddings"] + [f"layer {i}" for i in range(6)]
    assert sum(r["parameters"] for r in rows) == M.count_parameters(model)
    assert rows[0]["parameters"] == 11_918_592  # word + position + type embeddings and LayerNorm
    assert {r["parameters"] for r in rows[1:7]} == {1_774_464}
    table = M.layer_table(model)
    assert table.iloc[-1]["parameters"] == 22_713_216


def test_any_local_folder_loads(model, tmp_path):
    model.save(str(tmp_path / "copy"))
    again = M.load_model(tmp_path / "copy", device="cpu", max_seq_length=32)
    assert again.max_seq_length == 32 and M.n_layers(again) == 6


def test_folder_without_model_files_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="neither modules.json nor config.json"):
        M.load_model(tmp_path, device="cpu")


def test_unknown_hub_id_offline_fails_clearly():
    with pytest.raises(ValueError, match="embedded all-MiniLM-L6-v2"):
        M.load_model("no-such-org/no-such-model-xyz", device="cpu")


def test_half_copy_is_half_the_size_and_loads_as_fp32(tmp_path, monkeypatch):
    """The fp16 copy that travels to a GPU machine (tools/gpu_pack.py; its full STS-B test check: README)."""
    from safetensors import safe_open

    half = M.write_half_copy(tmp_path / "half")
    src = __import__("pathlib").Path(M.default_model_path())
    assert (half / M.HALF_COPY_MARKER).exists() and (half / "modules.json").exists()
    size, full = (half / "model.safetensors").stat().st_size, (src / "model.safetensors").stat().st_size
    assert 0.45 < size / full < 0.55
    with safe_open(str(half / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16, torch.int64}  # int: position ids
    monkeypatch.setenv(M.MODEL_DIR_ENV, str(half))  # what tools/gpu_check.sh sets without the model package
    model, ref = M.load_model(device="cpu"), M.load_model(str(src), device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    texts = ["A man is playing a guitar.", "The cat sits on the mat.", "Stocks fell sharply on Monday."]
    a, b = model.encode(texts, convert_to_tensor=True), ref.encode(texts, convert_to_tensor=True)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.9999
