import json

import yaml

from msprior.cli import main


def test_info_prints_versions(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"] and info["device"] in {"cpu", "cuda", "mps"}


def test_check_config_accepts_the_default_and_names_a_bad_key(tmp_path, capsys):
    assert main(["check-config"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"btach_size": 8}}))
    assert main(["check-config", str(bad)]) == 1
    assert "btach_size" in capsys.readouterr().err
    worse = tmp_path / "worse.yaml"
    worse.write_text(yaml.safe_dump({"data": {"size": 30}}))
    assert main(["check-config", str(worse)]) == 1
    assert "not divisible" in capsys.readouterr().err
