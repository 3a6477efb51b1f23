"""benchmarks/map_rules.py on a tiny run: every rule scored, and its deployed rule (the checkpoint's own
recon_weight) equal to what `dad-edge eval` reports for that checkpoint."""
from __future__ import annotations

import json

import pytest

from dad_edge.data.demo import build_demo_dataset
from dad_edge.training.evaluate import evaluate_model
from dad_edge.training.train import TrainOptions, train
from training_support import benchmark_module, model_with_exposure_slope



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=10, n_test_good=4,
                              n_test_per_defect=3)
    out = tmp_path_factory.mktemp("run")
    model = train(TrainOptions(data=str(data), out=str(out), preset="tiny", epochs=2, batch_size=4, progress=False,
                               device="cpu", recon_weight=0.5))
    return data, model


def test_every_rule_is_scored_and_the_deployed_one_matches_eval(run, tmp_path, capsys):
    rules = benchmark_module("map_rules")
    data, model = run
    result = tmp_path / "rules.json"
    assert rules.main([str(model), "--data", str(data), "--out", str(result)]) == 0
    rows = json.loads(result.read_text())
    expected = {"seg top-k", "seg max", "seg k50", "seg k200", "seg mean", "seg blur 2", "seg blur 4", "seg flips",
                "recon"} | {f"seg + {w:g} recon" for w in rules.WEIGHTS}
    assert set(rows) == expected
    for name, per_model in rows.items():
        image, pixel, pro, _ = per_model[str(model)]
        assert 0 <= image <= 1 and 0 <= pixel <= 1 and 0 <= pro <= 1, name
    # The checkpoint was trained with recon_weight 0.5: that rule is the deployed map.
    deployed = evaluate_model(model, data)
    image, pixel, pro, _ = rows["seg + 0.5 recon"][str(model)]
    assert image == pytest.approx(deployed["image_auroc"], abs=1e-4)
    assert pixel == pytest.approx(deployed["pixel_auroc"], abs=1e-4)
    assert pro == pytest.approx(deployed["au_pro"], abs=1e-4)
    # ... and the segmentation map alone is another map (the term changes the ranking of pixels).
    assert rows["seg top-k"][str(model)][1] != pytest.approx(pixel, abs=1e-6)
    assert "mean difference to seg top-k" in capsys.readouterr().out



def test_image_scores_carry_the_exposure_correction_as_eval_does(tmp_path):
    rules = benchmark_module("map_rules")
    data, path = model_with_exposure_slope(tmp_path, recon_weight=0.5)
    result = tmp_path / "rules.json"
    assert rules.main([str(path), "--data", str(data), "--out", str(result)]) == 0
    image, _, _, _ = json.loads(result.read_text())["seg + 0.5 recon"][str(path)]
    assert image == pytest.approx(evaluate_model(path, data)["image_auroc"], abs=1e-4)


def test_a_seg_model_has_the_seg_rules_and_its_deployed_one_matches_eval(run, tmp_path):
    """--method seg (no reconstruction): the seg rules only; seg top-k (no smoothing in tiny) is its deployed map."""
    rules = benchmark_module("map_rules")
    data, _ = run
    model = train(TrainOptions(data=str(data), out=str(tmp_path / "seg"), preset="tiny", epochs=2, batch_size=4,
                               progress=False, device="cpu", model_overrides={"method": "seg"}))
    result = tmp_path / "rules.json"
    assert rules.main([str(model), "--data", str(data), "--out", str(result)]) == 0
    rows = json.loads(result.read_text())
    assert set(rows) == {"seg top-k", "seg max", "seg k50", "seg k200", "seg mean", "seg blur 2", "seg blur 4",
                         "seg flips"}
    deployed = evaluate_model(model, data)
    image, pixel, pro, _ = rows["seg top-k"][str(model)]
    assert (image, pixel, pro) == pytest.approx(
        (deployed["image_auroc"], deployed["pixel_auroc"], deployed["au_pro"]), abs=1e-4)
