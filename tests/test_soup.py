"""Model soups: the mean of checkpoints of one model, and the refusals."""

from __future__ import annotations

import pytest
import torch

from poseapp.cli import main
from poseapp.engine.soup import average_checkpoints
from poseapp.models import create_model, load_model, save_model


def _saved(tmp_path, name: str, seed: int, **config) -> str:
    torch.manual_seed(seed)
    model = create_model("evitpose_t", **{"stem": "patch", **config})
    path = tmp_path / f"{name}.safetensors"
    save_model(model, path)
    return str(path)


def test_a_soup_is_the_mean_of_its_checkpoints(tmp_path) -> None:
    paths = [_saved(tmp_path, name, seed) for name, seed in (("a", 0), ("b", 1), ("c", 2))]
    soup = average_checkpoints(paths).state_dict()
    states = [load_model(path).state_dict() for path in paths]
    for name, tensor in soup.items():
        expected = sum(state[name].double() for state in states) / 3
        assert torch.allclose(tensor.double(), expected, atol=1e-6), name
    assert not torch.equal(soup["pos_embed"], states[0]["pos_embed"])

    out = tmp_path / "soup.safetensors"
    assert main(["soup", *paths, "--out", str(out)]) == 0
    written = load_model(out)
    assert written.info["soup"] == paths and len(written.info["ingredients"]) == 3
    assert torch.allclose(written.pos_embed, soup["pos_embed"], atol=1e-3)  # stored in half precision


def test_a_soup_refuses_one_checkpoint_and_different_models(tmp_path, capsys) -> None:
    a = _saved(tmp_path, "a", 0)
    other = _saved(tmp_path, "other", 1, img_hw=[192, 144])
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([a])
    assert main(["soup", a, other, "--out", str(tmp_path / "s.safetensors")]) != 0
    assert "not evitpose_t" in capsys.readouterr().err
    assert main(["soup", a, str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "s.safetensors")])
    assert "does not exist" in capsys.readouterr().err


def test_a_checkpoint_without_lateral_connections_joins_a_lateral_soup_at_zero(tmp_path) -> None:
    plain = _saved(tmp_path, "plain", 0, img_hw=[64, 48], stem="yolo_neck")
    torch.manual_seed(1)
    model = create_model("evitpose_t", stem="yolo_neck", img_hw=[64, 48], head_lateral=True)
    for conv in model.head.lateral:
        torch.nn.init.normal_(conv.weight)
    lateral = tmp_path / "lateral.safetensors"
    save_model(model, lateral)
    soup = average_checkpoints([plain, str(lateral)])
    assert soup.config["head_lateral"] is True
    trained, start = load_model(lateral).state_dict(), load_model(plain).state_dict()
    for name, tensor in soup.state_dict().items():
        if tensor.is_floating_point():
            expected = (trained[name] + start.get(name, torch.zeros_like(trained[name]))) / 2
            torch.testing.assert_close(tensor, expected, msg=name)
