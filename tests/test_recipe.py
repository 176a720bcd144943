"""Recipes: schema errors with locations, YAML numbers, overrides, and every shipped recipe validates."""

from pathlib import Path

import pytest

from mlxft.errors import RecipeError
from mlxft.recipe import load_recipe, parse_overrides, recipe_from_dict

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_scientific_notation_in_yaml_is_a_number(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("kind: lm-lora\nmodel: m\ndata: {path: d}\ntrain: {learning_rate: 1e-5}\n")
    assert load_recipe(p).train.learning_rate == pytest.approx(1e-5)


def test_every_problem_is_reported_at_once_with_its_location():
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({"kind": "lm-lora", "modle": "x", "data": {"path": "d", "fromat": "chat"}, "train": {"batch_size": 0}})
    locations = [loc for loc, _ in err.value.problems]
    assert {"modle", "model", "data.fromat", "train.batch_size"} <= set(locations)
    assert "unknown key" in dict(err.value.problems)["data.fromat"]
    assert "greater than 0" in dict(err.value.problems)["train.batch_size"]


def test_bad_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kind: lm-lora\nmodel: [unclosed\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(p)
    assert str(p) in str(err.value) and "line" in err.value.problems[0][0]


def test_overrides_set_nested_fields_with_yaml_values():
    r = recipe_from_dict({"kind": "lm-lora", "model": "m", "data": {"path": "d"}}, overrides=["train.steps=50", "lora.targets=[q_proj,v_proj]", "train.learning_rate=3e-4"])
    assert r.train.steps == 50 and r.lora.targets == ["q_proj", "v_proj"] and r.train.learning_rate == pytest.approx(3e-4)


def test_an_override_without_equals_is_an_error():
    with pytest.raises(RecipeError):
        parse_overrides(["train.steps"])


def test_qlora_kind_quantizes_by_default_and_full_refuses_quantization():
    assert recipe_from_dict({"kind": "lm-qlora", "model": "m", "data": {"path": "d"}}).quantize.bits == 4
    with pytest.raises(RecipeError):
        recipe_from_dict({"kind": "lm-full", "model": "m", "data": {"path": "d"}, "quantize": {"bits": 4}})


def test_lora_scale_is_alpha_over_rank():
    r = recipe_from_dict({"kind": "lm-lora", "model": "m", "data": {"path": "d"}, "lora": {"rank": 8, "alpha": 32}})
    assert r.lora.scale == 4.0


def test_there_are_shipped_recipes():
    assert len(RECIPES) >= 4


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    text = path.read_text().splitlines()
    assert text[0].startswith("#") and any("mlxft train" in line for line in text[:5]), "a recipe opens with what it does and the command that runs it"
    assert recipe.kind.startswith("lm-")
