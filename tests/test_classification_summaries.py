"""The WBC-subtype report's helpers (bloodlib.classification.summaries / evaluation) on small made-up sets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib.classification import summaries
from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.data import CLASSES
from bloodlib.classification.evaluation import (
    TEST_UNSEEN,
    formatted_sets,
    paper_accuracy,
    selected_model,
    table3,
    table3_sets,
    without_train_groups,
)
from bloodlib.classification.models import MODEL_NAMES
from bloodlib.classification.transforms import AugmentConfig
from bloodlib.paper import paper_results
from bloodlib.params import load_params
from bloodlib.training import TrainedModel


def canvas_set(name: str, n: int, first_group: int = 0) -> CanvasSet:
    frame = pd.DataFrame(
        {
            "label": [CLASSES[i % len(CLASSES)] for i in range(n)],
            "source": np.arange(first_group, first_group + n),
            "group": np.arange(first_group, first_group + n),
            "path": [f"{name}_{i}.jpg" for i in range(n)],
        }
    )
    return CanvasSet(name, frame, torch.randint(0, 255, (n, 3, 12, 12), dtype=torch.uint8))


def fake_data(n: int = 8) -> SimpleNamespace:
    names = ("train", "val", "TEST", "TEST_SIMPLE", "BCCD")
    sets = {name: canvas_set(name, n, first_group=100 * k) for k, name in enumerate(names)}  # no shared group
    return SimpleNamespace(sets=sets, policy=SimpleNamespace(input_size=(8, 8)))


def history(*val_bacc: float) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "val_bacc": v, "val_acc": v} for i, v in enumerate(val_bacc)]


def trained(**best: tuple[float, int]) -> dict:
    """name -> (val_bacc of the selected epoch, selected epoch) as TrainedModels without a network."""
    return {
        name: TrainedModel(name, None, history(*([0.1] * (epoch - 1) + [bacc])), epoch, 120.0, True, None)
        for name, (bacc, epoch) in best.items()
    }


def table3_rows(models: list[str]) -> pd.DataFrame:
    rows = []
    for k, model in enumerate(models):
        for s, name in enumerate(("TEST", "TEST_SIMPLE", "BCCD")):
            accuracy = 0.5 + 0.1 * k + 0.01 * s
            rows.append(
                {
                    "model": model,
                    "set": name,
                    "groups": 71 - s,
                    "accuracy": accuracy,
                    "accuracy_lo": accuracy - 0.05,
                    "accuracy_hi": accuracy + 0.05,
                }
            )
    return pd.DataFrame(rows)


def test_require_no_leakage_names_the_leaking_sets():
    sets = fake_data().sets
    leaks = summaries.leakage_check(sets)
    summaries.require_no_leakage(leaks)
    sets["val"].frame.loc[0, "group"] = int(sets["TEST"].frame.loc[0, "group"])
    with pytest.raises(ValueError, match=r"val shares groups with another set \(val/TEST"):
        summaries.require_no_leakage(summaries.leakage_check(sets))


def test_localizer_summary_is_one_row_of_shares_and_medians():
    check = pd.DataFrame(
        {
            "found": [True, True, True, False],
            "centre_error": [0.1, 0.2, 0.9, np.nan],
            "side_ratio": [1.2, 1.3, 1.4, np.nan],
        }
    )
    row = summaries.localizer_summary(check).iloc[0]
    assert row["images"] == 4 and row["found"] == 0.75
    assert row["median centre error / side"] == pytest.approx(0.2)
    assert row["share with centre error > 0.5 side"] == 0.25  # NaN (not found) counts as not above
    assert row["median side ratio (nucleus_to_cell)"] == pytest.approx(1.3)
    assert row["10-90% side ratio"] == "1.22-1.38"
    assert summaries.skipped_table({"no label": 3, "two WBCs": 1}).to_dict("records") == [
        {"no label": 3, "two WBCs": 1}
    ]


def test_example_images_are_seeded_and_shaped_for_the_figures():
    data = fake_data()
    inputs, titles = summaries.input_examples(data, seed=0, per_set=2)
    assert len(inputs) == len(titles) == 8 and inputs[0].shape == (3, 8, 8) and titles[0].startswith("train: ")
    augment = AugmentConfig(
        rotation=10.0,
        shear=0.0,
        translate=0.0,
        scale=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        blur_p=0.0,
    )
    views, titles = summaries.augmentation_examples(data, augment, seed=0, views=3)
    again, _ = summaries.augmentation_examples(data, augment, seed=0, views=3)
    assert titles == ["input", "augmented 1", "augmented 2", "augmented 3"]
    assert all(torch.equal(a, b) for a, b in zip(views, again))  # seeded: the same views every run
    first, labels = summaries.feature_map_inputs(data, n=3, seed=0)
    second, _ = summaries.feature_map_inputs(data, n=3, seed=0)
    assert first.shape == (3, 3, 8, 8) and torch.equal(first, second) and set(labels) <= {c.lower() for c in CLASSES}


def test_learning_curve_groups_split_custom_from_standard_models():
    models = trained(arch2=(0.9, 1), resnet50=(0.5, 1))
    groups = summaries.learning_curve_groups(models)
    assert groups["fig6_learning_curves_standard"][1].keys() == {"resnet50"}
    assert groups["fig7_learning_curves_custom"][1].keys() == {"arch2"}
    assert list(summaries.learning_curve_groups(trained(arch1=(0.5, 1)))) == ["fig7_learning_curves_custom"]


def test_custom_layer_tables_only_for_custom_models_asked_for():
    tables = summaries.custom_layer_tables(("arch2", "resnet50"), (32, 32))
    assert list(tables) == ["arch2"] and tables["arch2"]["params"].sum() > 0


def test_selection_and_summary_read_the_paper_numbers():
    paper = paper_results("task2_wbc_subtypes")
    assert paper_accuracy()["arch2"] == paper["custom_arch2"]["accuracy"]
    assert paper_accuracy()["inception_v3"] == paper["inception"]["accuracy"]
    models = trained(arch1=(0.8, 2), arch2=(0.9, 1), densenet121=(0.7, 1))
    best = selected_model(models)
    assert best == "arch2"
    table = table3_rows(["arch1", "arch2", "densenet121"])
    text = summaries.selection_text(table, best)
    assert "**arch2**" in text and "**0.600** [0.550, 0.650]" in text
    assert f"paper's best: {max(paper_accuracy().values()):.2f}" in text
    training = summaries.training_summary(models)
    described = summaries.model_descriptions(load_params("02_wbc_subtypes", "cpu"))
    rows = summaries.summary_rows(
        table, training, best, profile="cpu", pretrained=False, num_threads=2, descriptions=described
    )
    assert [r["metric"] for r in rows[:4]] == [
        "arch2 accuracy (TEST) [selected on validation]",
        "arch2 accuracy (TEST_SIMPLE) [selected on validation]",
        "arch2 accuracy (BCCD) [selected on validation]",
        "densenet121 accuracy (TEST)",
    ]
    assert rows[0]["paper"] == paper["custom_arch2"]["accuracy"] and rows[1]["paper"] is None
    assert rows[0]["note"] == (
        "cpu; from scratch; 71 source groups; 95% CI 0.550-0.650; paper: random split of augmented copies"
    )
    assert rows[0]["model"].startswith("arch2: this project's reconstruction") and rows[0]["differs"]
    assert rows[-1]["metric"] == "training minutes, all models" and rows[-1]["ours"] == 6.0 and rows[-1]["differs"]
    text = summaries.training_text(training, profile="cpu", num_threads=2, input_size=(64, 64))
    assert "**6.0 minutes**" in text and "2 threads, float32, input 64x64" in text  # cached before launch was kept
    models["arch2"].launch = {"mixed_precision": "bf16"}
    assert summaries.training_summary(models).set_index("model").loc["arch2", "arithmetic"] == "bfloat16"
    unseen = pd.concat([table, table[table["set"] == "TEST"].assign(set=TEST_UNSEEN, groups=69)])
    rows = summaries.summary_rows(
        unseen, training, best, profile="cpu", pretrained=False, num_threads=2, descriptions=described
    )
    assert rows[3]["metric"] == "arch2 accuracy (TEST_UNSEEN) [selected on validation]" and rows[3]["paper"] == 0.76
    assert "without the source groups it shares with TRAIN 0.600" in summaries.selection_text(unseen, best)


def test_model_descriptions_say_what_each_model_is():
    described = summaries.model_descriptions(load_params("02_wbc_subtypes", "cpu"))
    assert set(described) == set(MODEL_NAMES)
    assert "vgg16_bn" in described["vgg16"]["ours"] and "global average pooling" in described["vgg16"]["ours"]
    assert "BatchNorm" in described["vgg16"]["differs"] and "no ImageNet weights" in described["vgg16"]["differs"]
    assert "reconstruction" in described["arch1"]["ours"] and "reconstruction" in described["arch2"]["differs"]
    assert "5 epochs (paper: 10)" in described["densenet121"]["differs"]
    assert "64x64" in described["arch2"]["differs"]
    paper = summaries.model_descriptions(load_params("02_wbc_subtypes", "paper"))
    assert (
        paper["densenet121"]["ours"].endswith("ImageNet-pretrained")
        and "ImageNet" not in paper["densenet121"]["differs"]
    )
    assert summaries.models_table(described).columns.tolist() == ["model", "ours", "paper", "differs"]


def test_without_train_groups_adds_test_minus_the_shared_groups():
    preds = pd.DataFrame(
        {"model": "m", "set": ["TEST", "TEST", "TEST", "BCCD"], "group": [1, 2, 3, 2], "y_true": 0, "y_pred": 0}
    )
    out = without_train_groups(preds, {2, 9})
    unseen = out[out["set"] == TEST_UNSEEN]
    assert unseen["group"].tolist() == [1, 3] and len(out) == 6


def test_report_metrics_and_table3_sets():
    data = fake_data(4)
    assert list(table3_sets(data.sets)) == ["TEST", "TEST_SIMPLE", "BCCD"]
    with pytest.raises(ValueError, match="no set named nope"):
        table3_sets(data.sets, ("nope",))
    frame = pd.DataFrame([{"x": 1.0}])
    metrics = summaries.report_metrics(
        "arch2", table=frame, training=frame, costs=frame, localizer=frame, sets=data.sets, evidence={"t": frame}
    )
    assert metrics["selected_model"] == "arch2" and metrics["localizer"] == {"x": 1.0}
    assert metrics["evidence"] == {"t": [{"x": 1.0}]}
    assert [row["set"] for row in metrics["sets"]] == list(data.sets)


def fake_predictions(models: tuple[str, ...]) -> pd.DataFrame:
    """Four images per model on TEST and on BCCD, one of them wrong."""
    rows = [
        {"model": m, "set": s, "y_true": i, "y_pred": (i + (i == 3)) % 4, "group": i}
        for m in models
        for s in ("TEST", "BCCD")
        for i in range(4)
    ]
    return pd.DataFrame(rows)


def test_report_figures_are_named_for_the_files_they_become():
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_acc": 0.5, "val_bacc": 0.5} for e in (1, 2)]
    models = {n: TrainedModel(n, None, rows, 2, 1.0, True, None) for n in ("resnet50", "arch2")}
    curves = summaries.learning_curve_figures(models)
    assert list(curves) == ["fig6_learning_curves_standard", "fig7_learning_curves_custom"]
    assert curves["fig7_learning_curves_custom"].texts[0].get_text() == "Figure 7: custom architectures"
    figures = summaries.confusion_figures(fake_predictions(("resnet50", "arch2")))
    assert list(figures) == ["fig10_confusion_arch2", "confusion_all_test", "confusion_all_bccd"]
    assert list(summaries.confusion_figures(fake_predictions(("resnet50",)))) == list(figures)[1:]  # no arch2


def test_feature_map_figures_only_for_the_trained_models_of_figures_8_and_9():
    from bloodlib.classification.models import build_model

    models = {"arch2": TrainedModel("arch2", build_model("arch2").eval(), [], 1, 1.0, True, None)}
    inputs = torch.rand(2, 3, 32, 32)
    figures = summaries.feature_map_figures(models, inputs, ["neutrophil", "monocyte"], n_maps=3)
    assert list(figures) == ["fig9_feature_maps_arch2"]
    assert figures["fig9_feature_maps_arch2"].axes[0].get_title() == "neutrophil"
    assert len(figures["fig9_feature_maps_arch2"].axes) == 2 * (3 + 1)


def test_table3_per_set_display_and_layer_captions():
    table = table3(fake_predictions(("resnet50", "arch2")), n_boot=10, seed=0)
    shown = formatted_sets(table)
    assert list(shown) == ["TEST", TEST_UNSEEN, "TEST_SIMPLE", "BCCD"]
    assert list(shown["TEST"]["model"]) == ["resnet50", "arch2"] and shown["TEST_SIMPLE"].empty
    assert shown["BCCD"].loc[0, "accuracy"].startswith("0.750 [")
    layers = summaries.custom_layer_tables(("arch2",), (32, 32))
    total = int(layers["arch2"]["params"].sum())
    assert summaries.parameter_captions(layers) == {"arch2": f"**arch2**: {total:,} parameters"}
