"""The `timm` and `transformers` exports of an image-classify run: the trained classifier in the layout those libraries build.

`timm`: config.json in timm's Hub layout (`architecture`, `num_classes`, `label_names`, `pretrained_cfg` with the
preprocessing, `model_args` for what the architecture name does not fix) + model.safetensors in timm's names, for
`timm.create_model("local-dir:FOLDER", pretrained=True)` (or `hf-hub:user/name` once pushed).
`transformers`: config.json (`ResNetForImageClassification`, `ViTForImageClassification` or
`Dinov2ForImageClassification`, id2label/label2id) + model.safetensors in Hugging Face names + preprocessor_config.json,
for `AutoModelForImageClassification.from_pretrained(FOLDER)` and `AutoImageProcessor.from_pretrained(FOLDER)`.

The names are the inverses of the renames in vision/resnet.py, vit.py and efficientnet.py; conv kernels go back from
MLX's OHWI to torch's OIHW by name (`Backbone.conv_weight_names`). BatchNorm is stored unfolded (ops.conv_bn scales
the kernel only while computing), so weight, bias and running statistics are written as trained: nothing is lossy.
A ViT's position embedding is written at the run's input grid, resized exactly as mlxft resized it in training, so
the exported model runs at the run's image size without interpolating anything.

What cannot be expressed is refused with the reason: the Caffe-style ResNet-50-1by2 (stride on the 1x1 conv, max-pool
padded bottom/right, BGR input) in either layout; EfficientNet-Lite in transformers (it has no such model: use timm);
a DINOv2-style "token+avg" head in timm (timm's ViT pools one way: use transformers).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlxft.errors import ModelError

WEIGHTS, CONFIG, PREPROCESSOR = "model.safetensors", "config.json", "preprocessor_config.json"
DTYPES = ("float32", "float16", "bfloat16")
PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}  # what transformers' `resample` holds
VIT_SIZES = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1536: "giant"}


@dataclass
class Exported:
    """One target's files: tensors in its names and layouts (numpy), config.json, other JSON files, notes."""

    weights: dict[str, np.ndarray]
    config: dict
    files: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write(run, recipe, folder: Path, options, target: str) -> list[str]:
    """Fill `folder` with the run's classifier in `target`'s layout ("timm" or "transformers"); returns the notes."""
    from mlxft.atomic import atomic_write_text
    from mlxft.export.mlx_copy import result_folder
    from mlxft.vision.predict import load_classifier

    dtype = _check_options(options, target)
    clf = load_classifier(result_folder(run, recipe))
    exported = (to_timm if target == "timm" else to_transformers)(clf.model, clf.config)
    save_weights(folder / WEIGHTS, exported.weights, dtype)
    atomic_write_text(folder / CONFIG, json.dumps(exported.config, indent=2) + "\n")
    for name, content in exported.files.items():
        atomic_write_text(folder / name, json.dumps(content, indent=2) + "\n")
    how = ('timm.create_model("local-dir:FOLDER", pretrained=True)' if target == "timm"
           else "AutoModelForImageClassification.from_pretrained(FOLDER) and AutoImageProcessor.from_pretrained(FOLDER)")
    return exported.notes + [f"{len(exported.weights)} tensors in {dtype}; load with {how}"]


def _check_options(options, target: str) -> str:
    if options.quantize is not None:
        raise ModelError(f"--quantize does not apply to a {target} export of an image classifier",
                         hint="it re-quantizes a fused language model; leave it out (or use --dtype float16)")
    if options.base is not None:
        raise ModelError(f"--base does not apply to a {target} export of an image classifier",
                         hint="the run's model folder holds every weight; leave --base out")
    dtype = options.dtype or "float32"
    if dtype not in DTYPES:
        raise ModelError(f"--dtype {dtype}: a {target} export is written in {', '.join(DTYPES)}",
                         hint="float32 (the default) keeps the trained weights exactly")
    return dtype


def save_weights(path: Path, weights: dict[str, np.ndarray], dtype: str) -> None:
    """Safetensors with torch's metadata (`format: pt`), floating tensors cast to `dtype`, integers as they are."""
    import mlx.core as mx

    from mlxft.atomic import atomic_save_safetensors

    target = getattr(mx, dtype)
    arrays = {}
    for name, value in weights.items():
        a = mx.array(np.asarray(value, order="C"))  # (ascontiguousarray would make a 0-d counter 1-d)
        arrays[name] = a.astype(target) if mx.issubdtype(a.dtype, mx.floating) else a
    atomic_save_safetensors(path, arrays, metadata={"format": "pt"})


# -- shared pieces ---------------------------------------------------------------------------------------------


def torch_tensors(model) -> dict[str, np.ndarray]:
    """Every weight of `model` in our names, conv kernels transposed OHWI -> OIHW (torch's layout), and the
    `num_batches_tracked` counter torch's BatchNorm keeps (0: unused in eval mode; written so loaders find every buffer)."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    conv = model.conv_weight_names()
    out = {}
    for name, value in tree_flatten(model.parameters()):
        a = np.array(value)
        out[name] = np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if name in conv and a.ndim == 4 else a
    for path, module in model.named_modules():
        if isinstance(module, nn.BatchNorm):
            out[f"{path}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return out


def head_tensors(tensors: dict[str, np.ndarray], to: str) -> dict[str, np.ndarray]:
    """The classifier head (ours: head.linear.*, from the job's ClassifierHead) renamed to `to` + weight/bias."""
    out = {}
    for name, value in tensors.items():
        m = re.match(r"head\.(?:linear\.)?(weight|bias)$", name)
        out[f"{to}{m[1]}" if m else name] = value
    return out


def labels(config: dict) -> list[str]:
    return [str(config["id2label"][str(i)]) for i in range(int(config["num_classes"]))]


def _preprocess(config: dict) -> dict:
    p = dict(config["preprocess"])
    if p.get("channels", "RGB") != "RGB":
        raise ModelError(f"the model expects {p['channels']} input, which neither timm's nor transformers' preprocessing states",
                         hint="export it in the mlx format (`--format mlx`)")
    return p


def timm_crop_pct(size: int, resize: int) -> float:
    """crop_pct such that timm's floor(size / crop_pct) is `resize` again (as timm_preprocess reads it back)."""
    pct = size / resize
    for digits in range(6, 12):
        candidate = round(pct, digits)
        if math.floor(size / candidate) == resize:
            return candidate
    return size / (resize + 0.5)


def _unsupported(model) -> ModelError:
    return ModelError(f"no export layout for a {type(model).__name__} backbone", hint="export it in the mlx format (`--format mlx`)")


# -- timm --------------------------------------------------------------------------------------------------------


def to_timm(model, config: dict) -> Exported:
    """The classifier in timm's names, with timm's Hub config.json (see the module docstring)."""
    from mlxft.vision.efficientnet import EfficientNetLite
    from mlxft.vision.resnet import ResNet
    from mlxft.vision.vit import VisionTransformer

    pre = _preprocess(config)
    if isinstance(model, ResNet):
        weights, arch, args, extra = _timm_resnet(model)
    elif isinstance(model, VisionTransformer):
        weights, arch, args, extra = _timm_vit(model, pre["size"])
    elif isinstance(model, EfficientNetLite):
        weights, arch, args, extra = _timm_efficientnet(model)
    else:
        raise _unsupported(model)
    names = labels(config)
    pretrained_cfg = {
        "tag": "mlxft", "custom_load": False, "input_size": [3, pre["size"], pre["size"]],
        "fixed_input_size": isinstance(model, VisionTransformer), "interpolation": pre["interpolation"],
        "crop_pct": timm_crop_pct(pre["size"], pre["resize"]), "crop_mode": "center" if pre.get("keep_aspect", True) else "squash",
        "mean": [m / 255 for m in pre["mean"]], "std": [s / 255 for s in pre["std"]], "num_classes": len(names),
        **extra,
    }
    out = {"architecture": arch, "num_classes": len(names), "num_features": int(model.num_features), "label_names": names,
           "pretrained_cfg": pretrained_cfg}
    if args:
        out["model_args"] = args
    notes = [f"timm architecture {arch}" + (f" with model_args {json.dumps(args)}" if args else "")]
    half = (pre["resize"] - pre["size"]) / 2
    if round(half) != math.floor(half):  # torchvision's CenterCrop: int(round(margin / 2)); mlxft's centre_crop: margin // 2
        notes.append(f"timm's centre crop rounds the {half:g} px margin up where mlxft's rounds it down: timm's {pre['size']} px crop "
                     f"of a {pre['resize']} px side sits 1 px further right/down than the crops this model was trained on")
    if isinstance(model, VisionTransformer) and abs(model.layers[0].norm1.eps - 1e-6) > 1e-9:
        notes.append(f"timm's ViT LayerNorm eps is 1e-6; this model's is {model.layers[0].norm1.eps:g} (a difference far below "
                     "float32 logit noise, but the transformers format keeps it exactly)")
    return Exported(weights, out, notes=notes)


def _resnet_shape(model) -> tuple[str, list[int], int]:
    from mlxft.vision.resnet import Bottleneck

    if model.caffe:
        raise ModelError("this ResNet is the Caffe-style variant (Yahoo Open-NSFW: stride on the 1x1 conv, max-pool padded "
                         "bottom/right, BGR input), which neither timm nor transformers builds",
                         hint="export it in the mlx format (`--format mlx`), which mlxft and mlx load")
    stages = [getattr(model, f"layer{i + 1}") for i in range(model.num_stages)]
    kind = "bottleneck" if isinstance(stages[0][0], Bottleneck) else "basic"
    width = int(stages[0][0].conv1.weight.shape[0])
    return kind, [len(s) for s in stages], width


def _timm_resnet(model):
    from mlxft.vision.resnet import DEPTHS

    kind, layers, width = _resnet_shape(model)
    if len(layers) != 4:
        raise ModelError(f"a ResNet with {len(layers)} stages has no timm layout (timm's have 4)", hint="export it in the mlx format")
    depth = next((d for d, (k, ls) in DEPTHS.items() if k == kind and list(ls) == layers), None)
    arch = f"resnet{depth}" if depth else ("resnet50" if kind == "bottleneck" else "resnet18")
    args = {} if depth else {"layers": layers}
    if width != 64:
        args["channels"] = [width * 2 ** i for i in range(4)]  # timm's planes per stage; bottlenecks widen x4 as ours do
    return head_tensors(torch_tensors(model), "fc."), arch, args, {"first_conv": "conv1", "classifier": "fc"}


def _vit_shape(model) -> dict:
    block = model.layers[0]
    dim = int(model.cls_token.shape[-1])
    hidden = int(block.mlp.fc1.weight.shape[0])
    return {"dim": dim, "depth": len(model.layers), "heads": int(block.attn.heads), "patch": int(model.patch),
            "hidden": hidden, "eps": float(block.norm1.eps), "layer_scale": "ls1" in block,
            "qkv_bias": "bias" in block.attn.query, "pool": model.pool}


def _vit_tensors(model, size: int) -> dict[str, np.ndarray]:
    """Our ViT tensors (torch layout), with pos_embed at the grid of `size` px inputs (the CLS position first)."""
    import mlx.core as mx

    grid = size // model.patch
    t = torch_tensors(model)
    pos = model.position_embedding(grid, grid)
    mx.eval(pos)
    t["pos_embed"] = np.array(pos)
    return t


def _timm_vit(model, size: int):
    s = _vit_shape(model)
    if s["pool"] == "token+avg":
        raise ModelError("this ViT's head reads the CLS token and the mean patch token together (DINOv2's classifier), "
                         "which timm's VisionTransformer does not pool", hint="export it with --format transformers (Dinov2ForImageClassification)")
    out = {}
    for name, value in head_tensors(_vit_tensors(model, size), "head.").items():
        name = name.replace("patch_embed.", "patch_embed.proj.", 1) if name.startswith("patch_embed.") else name
        name = re.sub(r"^layers\.", "blocks.", name)
        name = re.sub(r"\.ls([12])$", r".ls\1.gamma", name)
        out[name] = value
    for i in range(s["depth"]):
        for part in ("weight", "bias"):
            pieces = [out.pop(f"blocks.{i}.attn.{n}.{part}", None) for n in ("query", "key", "value")]
            if all(p is not None for p in pieces):
                out[f"blocks.{i}.attn.qkv.{part}"] = np.concatenate(pieces, axis=0)
    size_name = VIT_SIZES.get(s["dim"], "base")
    arch = f"vit_{size_name}_patch14_dinov2" if s["patch"] == 14 and s["layer_scale"] else f"vit_{size_name}_patch16_224"
    args = {"img_size": size, "patch_size": s["patch"], "embed_dim": s["dim"], "depth": s["depth"], "num_heads": s["heads"],
            "mlp_ratio": s["hidden"] / s["dim"], "qkv_bias": s["qkv_bias"], "init_values": 1.0 if s["layer_scale"] else None,
            "global_pool": s["pool"], "class_token": True}
    if int(s["dim"] * args["mlp_ratio"]) != s["hidden"]:
        raise ModelError(f"the MLP width {s['hidden']} is not a whole multiple timm can rebuild from embed_dim {s['dim']}", hint="export it in the mlx format")
    return out, arch, args, {"first_conv": "patch_embed.proj", "classifier": "head"}


def _efficientnet_variant(model) -> str:
    from mlxft.vision.efficientnet import VARIANTS, block_table

    table = [(m.depthwise_conv.kernel, m.depthwise_conv.stride, _expand(m), _cin(m), int(m.project_conv.weight.shape[0]))
             for m in model.layers]
    variant = next((v for v in VARIANTS if block_table(v) == table), None)
    if variant is None:
        raise ModelError("this EfficientNet-Lite has a block table none of Lite0-4 has, which timm cannot rebuild by name",
                         hint="export it in the mlx format (`--format mlx`)")
    return variant


def _cin(block) -> int:
    if "expand_conv" in block:
        return int(block.expand_conv.weight.shape[-1])
    return int(block.depthwise_conv.weight.shape[0])


def _expand(block) -> int:
    return int(block.depthwise_conv.weight.shape[0]) // _cin(block)


def efficientnet_block_names(variant: str) -> list[str]:
    """timm's `blocks.<stage>.<index>` for each of our `layers.<i>`, stage by stage as the Lite block table lays them out."""
    from mlxft.vision.efficientnet import STAGES, VARIANTS

    _, depth, _ = VARIANTS[variant]
    names = []
    for i, (r, *_rest) in enumerate(STAGES):
        repeats = r if i in (0, len(STAGES) - 1) else int(math.ceil(r * depth))
        names += [f"blocks.{i}.{j}" for j in range(repeats)]
    return names


def _timm_efficientnet(model):
    variant = _efficientnet_variant(model)
    blocks = efficientnet_block_names(variant)
    fixed = {"stem.conv.": "conv_stem.", "stem.bn.": "bn1.", "top.conv.": "conv_head.", "top.bn.": "bn2."}
    # timm's depthwise-separable block (expand 1) and inverted residual name the same convs differently
    ds = {"depthwise_conv": "conv_dw", "bn1": "bn1", "project_conv": "conv_pw", "bn2": "bn2"}
    ir = {"expand_conv": "conv_pw", "bn0": "bn1", "depthwise_conv": "conv_dw", "bn1": "bn2", "project_conv": "conv_pwl", "bn2": "bn3"}
    out = {}
    for name, value in head_tensors(torch_tensors(model), "classifier.").items():
        m = re.match(r"layers\.(\d+)\.(\w+)\.(\w+)$", name)
        if m:
            table = ir if "expand_conv" in model.layers[int(m[1])] else ds
            name = f"{blocks[int(m[1])]}.{table[m[2]]}.{m[3]}"
        else:
            name = next((new + name[len(old):] for old, new in fixed.items() if name.startswith(old)), name)
        out[name] = value
    return out, f"tf_efficientnet_{variant}", {}, {"first_conv": "conv_stem", "classifier": "classifier"}


# -- transformers ----------------------------------------------------------------------------------------------


def to_transformers(model, config: dict) -> Exported:
    """The classifier in Hugging Face names, with its config.json and preprocessor_config.json."""
    from mlxft.vision.efficientnet import EfficientNetLite
    from mlxft.vision.resnet import ResNet
    from mlxft.vision.vit import VisionTransformer

    pre = _preprocess(config)
    if isinstance(model, ResNet):
        weights, hf = _hf_resnet(model)
    elif isinstance(model, VisionTransformer):
        weights, hf = _hf_vit(model, pre["size"])
    elif isinstance(model, EfficientNetLite):
        raise ModelError("transformers has no EfficientNet-Lite model (its EfficientNet is B0-B7, with squeeze-excitation and swish)",
                         hint="export it with --format timm (tf_efficientnet_lite0..4, the same weights and padding)")
    else:
        raise _unsupported(model)
    names = labels(config)
    hf.update({"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
               "num_channels": 3, "torch_dtype": "float32"})
    files = {PREPROCESSOR: hf_preprocessor(pre)}
    return Exported(weights, hf, files, notes=[f"transformers {hf['architectures'][0]}"])


def hf_preprocessor(pre: dict) -> dict:
    """preprocessor_config.json for mlxft's pipeline: shorter side (or both sides) to `resize`, centre crop, normalise."""
    keep = pre.get("keep_aspect", True)
    return {"image_processor_type": "BitImageProcessor", "do_convert_rgb": True, "do_resize": True,
            "size": {"shortest_edge": pre["resize"]} if keep else {"height": pre["resize"], "width": pre["resize"]},
            "resample": PIL_RESAMPLE.get(pre["interpolation"], 3), "do_center_crop": True,
            "crop_size": {"height": pre["size"], "width": pre["size"]}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": [m / 255 for m in pre["mean"]], "image_std": [s / 255 for s in pre["std"]]}


def hf_resnet_name(name: str) -> str:
    """Our (torchvision) ResNet name -> Hugging Face ResNetForImageClassification's: the inverse of resnet.rename_hf."""
    name = re.sub(r"^conv1\.", "embedder.embedder.convolution.", name)
    name = re.sub(r"^bn1\.", "embedder.embedder.normalization.", name)
    name = re.sub(r"^head\.(?:linear\.)?", "classifier.1.", name)
    m = re.match(r"layer(\d+)\.(\d+)\.(.*)$", name)
    if m:
        rest = m[3].replace("downsample.0.", "shortcut.convolution.").replace("downsample.1.", "shortcut.normalization.")
        rest = re.sub(r"^conv(\d+)\.", lambda g: f"layer.{int(g[1]) - 1}.convolution.", rest)
        rest = re.sub(r"^bn(\d+)\.", lambda g: f"layer.{int(g[1]) - 1}.normalization.", rest)
        name = f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.{rest}"
    return name if name.startswith("classifier.") else "resnet." + name


def _hf_resnet(model):
    kind, layers, width = _resnet_shape(model)
    expansion = 4 if kind == "bottleneck" else 1
    weights = {hf_resnet_name(k): v for k, v in torch_tensors(model).items()}
    hf = {"architectures": ["ResNetForImageClassification"], "model_type": "resnet", "embedding_size": int(model.conv1.weight.shape[0]),
          "hidden_sizes": [width * 2 ** i * expansion for i in range(len(layers))], "depths": layers, "layer_type": kind,
          "hidden_act": "relu", "downsample_in_first_stage": False, "downsample_in_bottleneck": False}
    return weights, hf


VIT_HF = [("attn.query.", "attention.attention.query."), ("attn.key.", "attention.attention.key."),
          ("attn.value.", "attention.attention.value."), ("attn.proj.", "attention.output.dense.")]
VIT_HF_VIT = [("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."), ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")]
VIT_HF_DINOV2 = [("ls1", "layer_scale1.lambda1"), ("ls2", "layer_scale2.lambda1")]


def hf_vit_name(name: str, layout: str) -> str:
    """Our ViT name -> Hugging Face ViTForImageClassification's (layout "vit") or Dinov2ForImageClassification's ("dinov2")."""
    prefix = "vit." if layout == "vit" else "dinov2."
    if re.match(r"head\.(?:linear\.)?(weight|bias)$", name):
        return "classifier." + name.rsplit(".", 1)[1]
    fixed = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings", "mask_token": "embeddings.mask_token"}
    if name in fixed:
        return prefix + fixed[name]
    if name.startswith("patch_embed."):
        return prefix + "embeddings.patch_embeddings.projection." + name[len("patch_embed."):]
    if name.startswith("norm."):
        return prefix + "layernorm." + name[len("norm."):]
    m = re.match(r"layers\.(\d+)\.(.*)$", name)
    if not m:
        raise ModelError(f"{name}: no Hugging Face ViT name for this tensor", hint="export it with --format timm or mlx")
    rest = m[2]
    for ours, theirs in VIT_HF + (VIT_HF_VIT if layout == "vit" else VIT_HF_DINOV2):
        if rest.startswith(ours) or rest == ours:
            rest = theirs + rest[len(ours):]
            break
    return f"{prefix}encoder.layer.{m[1]}.{rest}"


def _hf_vit(model, size: int):
    s = _vit_shape(model)
    tensors = _vit_tensors(model, size)
    if s["pool"] == "token+avg":
        layout = "dinov2"
        dim = s["dim"]
        if not s["layer_scale"]:  # Dinov2's blocks always scale their residual branches: a scale of one is none
            for i in range(s["depth"]):
                tensors[f"layers.{i}.ls1"] = tensors[f"layers.{i}.ls2"] = np.ones((dim,), np.float32)
        tensors["mask_token"] = np.zeros((1, dim), np.float32)  # used only for masked pre-training; Dinov2Model holds one
        if s["hidden"] % dim:  # Dinov2Config.mlp_ratio is an integer
            raise ModelError(f"the MLP width {s['hidden']} is not a whole multiple of hidden_size {dim}, which Dinov2 cannot rebuild",
                             hint="export it with --format timm or mlx")
        ratio = s["hidden"] // dim
        hf = {"architectures": ["Dinov2ForImageClassification"], "model_type": "dinov2", "hidden_size": dim,
              "num_hidden_layers": s["depth"], "num_attention_heads": s["heads"], "mlp_ratio": ratio, "hidden_act": "gelu",
              "layer_norm_eps": s["eps"], "image_size": size, "patch_size": s["patch"], "qkv_bias": s["qkv_bias"],
              "layerscale_value": 1.0, "use_swiglu_ffn": False, "drop_path_rate": 0.0}
    elif s["pool"] == "token" and not s["layer_scale"]:
        layout = "vit"
        hf = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": s["dim"],
              "num_hidden_layers": s["depth"], "num_attention_heads": s["heads"], "intermediate_size": s["hidden"],
              "hidden_act": "gelu", "layer_norm_eps": s["eps"], "image_size": size, "patch_size": s["patch"], "qkv_bias": s["qkv_bias"]}
    else:
        what = "mean-pooled (fc_norm)" if s["pool"] == "avg" else "CLS-pooled with layer scale"
        raise ModelError(f"this ViT is {what}, which neither ViTForImageClassification nor Dinov2ForImageClassification computes",
                         hint="export it with --format timm")
    return {hf_vit_name(k, layout): v for k, v in tensors.items()}, hf
