import dataclasses
from pathlib import Path

import jsonschema
import pytest
import yaml

from msprior import config as C

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())
PRESETS = sorted((REPO / "config/presets").glob("*.yaml"))


def merged(base, update):
    out = dict(base)
    for k, v in update.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and k in base else v
    return out


def test_schema_and_dataclasses_name_the_same_keys():
    props = SCHEMA["properties"]
    assert set(props) == {f.name for f in dataclasses.fields(C.Config)}
    for name, cls in C._SECTIONS.items():
        assert set(props[name]["properties"]) == {
            f.name for f in dataclasses.fields(cls)
        }


def test_default_config_is_complete_valid_and_builds():
    jsonschema.Draft202012Validator(SCHEMA).validate(DEFAULT)
    for name, cls in C._SECTIONS.items():
        assert set(DEFAULT[name]) == {f.name for f in dataclasses.fields(cls)}, name
    cfg = C.from_dict(DEFAULT)
    assert cfg.run_dir == Path("results/default")
    assert cfg.evaluate.sigmas_255 == pytest.approx(
        C.EvaluateConfig().sigmas_255, rel=1e-4
    )


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_is_valid(preset):
    cfg = merged(DEFAULT, yaml.safe_load(preset.read_text()))
    jsonschema.Draft202012Validator(SCHEMA).validate(cfg)
    C.from_dict(cfg)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="train.btach_size"):
        C.from_dict({"train": {"btach_size": 3}})
    with pytest.raises(ValueError, match="unknown config key.*colour"):
        C.from_dict({"colour": "red"})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"data": {"size": 30}, "wavelet": {"levels": 2}}, "not divisible"),
        ({"data": {"source": "imagenet"}}, "data.source"),
        ({"data": {"split_fractions": [0.5, 0.5, 0.5]}}, "split_fractions"),
        ({"sample": {"beta": 0}}, "sample.beta"),
        (
            {"networks": {"depth": 3, "receptive_fields": [9]}},
            "networks.receptive_fields: .*largest field at this depth is 7",
        ),
        ({"networks": {"receptive_fields": [6, 9]}}, "must be odd and >= 5, got 6"),
        ({"networks": {"lowpass_rf": 99}}, "networks.lowpass_rf: .*needs 49"),
        ({"networks": {"lowpass_rf": 3}}, "networks.lowpass_rf: .*got 3"),
        ({"wavelet": {"name": "foo"}}, "wavelet.name: unknown wavelet 'foo'"),
        ({"wavelet": {"name": "bior2.2"}}, "wavelet.name: .*not orthogonal"),
        ({"wavelet": {"name": "db20"}}, "'db20': its filters \\(40 taps\\)"),
        ({"sample": {"sigma_min": 5.0}}, "sigma_min \\(5.0\\) must be below"),
        ({"evaluate": {"flat_rfs": [99]}}, "evaluate.flat_rfs"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_inconsistent_values_are_refused(override, message):
    cfg = merged(DEFAULT, override)
    with pytest.raises(ValueError, match=message):
        C.from_dict(cfg)


def test_a_whole_float_is_taken_as_the_integer_it_is():
    cfg = C.from_dict(merged(DEFAULT, {"data": {"size": 32.0}}))
    assert cfg.data.size == 32 and isinstance(cfg.data.size, int)


def test_published_conventions_cannot_be_contradicted():
    preset = yaml.safe_load((REPO / "config/presets/published160.yaml").read_text())
    good = merged(DEFAULT, preset)
    C.from_dict(good)
    with pytest.raises(ValueError, match="crop"):
        C.from_dict(merged(good, {"data": {"crop": [0, 0, 0, 0]}}))
    with pytest.raises(ValueError, match="size"):
        C.from_dict(merged(good, {"data": {"size": 128}}))
    with pytest.raises(ValueError, match="were not published"):
        C.from_dict(merged(good, {"networks": {"receptive_fields": [5, 7, 9, 43]}}))
