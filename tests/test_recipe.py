"""Recipes: schema errors with locations, YAML numbers, overrides, and every shipped recipe validates."""

from pathlib import Path

import pytest
import yaml

from mlxft.errors import RecipeError
from mlxft.recipe import KINDS, load_recipe, parse_overrides, recipe_from_dict

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
    assert recipe.kind in KINDS


BASE = {"kind": "lm-lora", "model": "m", "data": {"path": "d"}}


def _problems(overrides: list[str]) -> dict[str, str]:
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(dict(BASE), overrides=overrides)
    return dict(err.value.problems)


@pytest.mark.parametrize("written, value", [("1e9", 1_000_000_000), ("2.5e3", 2500), ("8", 8), ("1.0e1", 10)])
def test_whole_numbers_in_exponent_form_are_accepted_as_counts(written, value):
    assert recipe_from_dict(dict(BASE), overrides=[f"train.batch_size={written}"]).train.batch_size == value


@pytest.mark.parametrize("written, says", [("2.5", "whole number, got 2.5"), ("yes", "yes/no"), ("abc", "valid integer")])
def test_a_count_that_is_not_whole_says_why(written, says):
    assert says in _problems([f"train.batch_size={written}"])["train.batch_size"]


@pytest.mark.parametrize("override", ["lora.layers=0", "lora.layers=-3", "lora.targets=[]"])
def test_adapters_on_nothing_are_refused_before_training(override):
    key = override.split("=")[0]
    assert key in _problems([override])


@pytest.mark.parametrize("name", ["a/b/c", "../../x", "/abs/path", "..", ".hidden", "a\\b", "x\x1b[2J", ""])
def test_a_run_name_is_one_folder_name(name):
    problems = _problems([f"name={name!r}" if name else "name=''"])
    assert "one folder name" in problems["name"]


def test_a_binary_file_as_recipe_names_the_file_and_line(tmp_path):
    p = tmp_path / "weights.yaml"
    p.write_bytes(b"kind: lm-lora\n\xff\xfe\x00\x01garbage")
    with pytest.raises(RecipeError) as err:
        load_recipe(p)
    assert err.value.problems == [("line 2", "not UTF-8 text (a binary file?)")]


def test_a_folder_as_recipe_says_it_is_a_folder(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path)
    assert "is a folder" in err.value.problems[0][1]


@pytest.mark.parametrize("kind", ["lm-lora", "lm-full", "lm-dpo", "lm-orpo", "lm-classify"])
def test_a_saved_recipe_validates_back_to_itself(kind):
    r = recipe_from_dict({"kind": kind, "model": "m", "data": {"path": "d"}})
    again = recipe_from_dict(yaml.safe_load(r.to_yaml()))
    assert again == r and recipe_from_dict(r.to_dict()) == r
