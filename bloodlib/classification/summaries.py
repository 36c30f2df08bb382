"""What the WBC-subtype report shows beside Table 3: the data's sizes, leakage and localizer checks,
the images its figures draw, the training summary, and its summary rows and ``metrics.json``.

The report's notebook calls these; nothing here trains or selects a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from bloodlib.classification import plots
from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.crops import locate_wbc, read_rgb, white_balance
from bloodlib.classification.data import CLASSES
from bloodlib.classification.evaluation import confusions, paper_accuracy
from bloodlib.classification.models import CUSTOM_MODELS
from bloodlib.classification.train import EVAL_SETS
from bloodlib.classification.transforms import AugmentConfig, eval_transform, train_transform


def set_overview(sets: dict[str, CanvasSet]) -> pd.DataFrame:
    """Images per class, source images and source groups of every set."""
    rows = []
    for name, data in sets.items():
        counts = data.frame["label"].value_counts()
        row = {"set": name, "images": len(data)}
        row |= {label: int(counts.get(label, 0)) for label in CLASSES}
        row |= {"sources": data.frame["source"].nunique(), "groups": data.frame["group"].nunique()}
        rows.append(row)
    return pd.DataFrame(rows)


def leakage_check(sets: dict[str, CanvasSet], training: tuple[str, ...] = ("train", "val")) -> pd.DataFrame:
    """Source images and near-duplicate groups each set shares with the training sets.

    ``train`` vs ``val`` must share nothing (the grouped split); official TEST shares the two
    near-duplicate pairs that straddle the upstream split (a property of the data set).
    """
    rows = []
    for first in training:
        for second, data in sets.items():
            if second == first or (second in training and training.index(second) < training.index(first)):
                continue
            a, b = sets[first].frame, data.frame
            rows.append(
                {
                    "training set": first,
                    "other set": second,
                    "shared sources": len(set(a["source"]) & set(b["source"])),
                    "shared groups": len(set(a["group"]) & set(b["group"])),
                }
            )
    return pd.DataFrame(rows)


def localizer_check(
    boxes: pd.DataFrame, *, white_percentile: float, scale: float = 0.5, limit: int | None = None
) -> pd.DataFrame:
    """The colour localizer against BCCD's WBC boxes, one row per single-WBC image.

    Images are resized by ``scale`` first (0.5 = dataset2's 320x240). Columns:
    ``centre_error`` (distance of the centres / box side), ``side_ratio`` (box side / nucleus
    side: what ``nucleus_to_cell`` should be), ``found``.
    """
    import cv2

    single = boxes.drop_duplicates("image", keep=False)
    if limit is not None:
        single = single.head(limit)
    rows = []
    for row in single.itertuples():
        image = read_rgb(row.path)
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = locate_wbc(white_balance(image, white_percentile), nucleus_to_cell=1.0)
        gt = np.array([row.x0, row.y0, row.x1, row.y1]) * scale
        side = max(gt[2] - gt[0], gt[3] - gt[1])
        if found is None:
            rows.append(
                {"image": row.image, "label": row.label, "found": False, "centre_error": np.nan, "side_ratio": np.nan}
            )
            continue
        f = np.array(found)
        centre = np.hypot(*((f[:2] + f[2:]) / 2 - (gt[:2] + gt[2:]) / 2))
        rows.append(
            {
                "image": row.image,
                "label": row.label,
                "found": True,
                "centre_error": centre / side,
                "side_ratio": side / max(f[2] - f[0], f[3] - f[1]),
            }
        )
    return pd.DataFrame(rows)


def training_summary(trained: dict) -> pd.DataFrame:
    """Per model: epochs, selected epoch, its validation scores, training time and arithmetic, cache state."""
    rows = []
    for name, t in trained.items():
        best = t.best_row
        rows.append(
            {
                "model": name,
                "epochs": len(t.history),
                "selected epoch": t.best_epoch,
                "val balanced acc": best["val_bacc"],
                "val acc": best["val_acc"],
                "train minutes": t.train_seconds / 60,
                "arithmetic": t.precision,
                "from cache": t.cached,
            }
        )
    return pd.DataFrame(rows)


def require_no_leakage(leaks: pd.DataFrame) -> None:
    """Check a :func:`leakage_check` table: *train* and *val* share no group, *val* shares none with
    any other set (selection never sees a test cell), and the BCCD crops share none with training.

    Raises:
        ValueError: naming the pair of sets that share source groups.
    """
    rules = (
        ("train shares groups with val", (leaks["training set"] == "train") & (leaks["other set"] == "val")),
        ("val shares groups with another set", leaks["training set"] == "val"),
        ("the BCCD crops share groups with training", leaks["other set"] == "BCCD"),
    )
    for text, rows in rules:
        shared = leaks.loc[rows & (leaks["shared groups"] > 0)]
        if len(shared):
            pairs = ", ".join(f"{a}/{b}" for a, b in zip(shared["training set"], shared["other set"]))
            raise ValueError(f"leakage: {text} ({pairs})")


def skipped_table(skipped: dict[str, int]) -> pd.DataFrame:
    """The BCCD boxes left out, one column per reason (one row)."""
    return pd.DataFrame([skipped])


def training_source_boxes(data: Any) -> pd.DataFrame:
    """BCCD's WBC boxes (``data.bccd_all``) on images whose source group is in TRAIN (``data.split``):
    the boxes the colour localizer is checked against (``data``: :class:`~.train.WbcData`)."""
    return data.bccd_all[data.bccd_all["group"].isin(set(data.split["group"]))]


def localizer_summary(check: pd.DataFrame) -> pd.DataFrame:
    """One row summarising a :func:`localizer_check`: share found, centre error, side ratio."""
    side_ratio = check["side_ratio"]
    return pd.DataFrame(
        [
            {
                "images": len(check),
                "found": check["found"].mean(),
                "median centre error / side": check["centre_error"].median(),
                "share with centre error > 0.5 side": (check["centre_error"] > 0.5).mean(),
                "median side ratio (nucleus_to_cell)": side_ratio.median(),
                "10-90% side ratio": f"{side_ratio.quantile(0.1):.2f}-{side_ratio.quantile(0.9):.2f}",
            }
        ]
    )


def box_examples(
    data: Any, *, seed: int, white_percentile: float, nucleus_to_cell: float, located: int = 3, annotated: int = 2
) -> tuple[list[np.ndarray], list[tuple], list[str]]:
    """``(images, boxes, titles)``: ``located`` seeded training images of dataset2 (white-balanced)
    with the colour localizer's box, then ``annotated`` BCCD images with their annotated box."""
    images, boxes, titles = [], [], []
    for row in data.sets["train"].frame.sample(located, random_state=seed).itertuples():
        image = white_balance(read_rgb(row.path), white_percentile)
        images.append(image)
        boxes.append(locate_wbc(image, nucleus_to_cell=nucleus_to_cell))
        titles.append(f"dataset2 TRAIN, {row.label.lower()}: located")
    for row in data.sets["BCCD"].frame.sample(annotated, random_state=seed).itertuples():
        images.append(read_rgb(row.path))
        boxes.append((row.x0, row.y0, row.x1, row.y1))
        titles.append(f"BCCD {row.image}, {row.label.lower()}: annotated")
    return images, boxes, titles


def input_examples(
    data: Any, *, seed: int, per_set: int = 6, sets: tuple[str, ...] = ("train", *EVAL_SETS)
) -> tuple[list[torch.Tensor], list[str]]:
    """``(inputs, titles)``: ``per_set`` seeded classifier inputs (``(3, H, W)``) of each of ``sets``."""
    to_input = eval_transform(data.policy.input_size)
    inputs, titles = [], []
    for name in sets:
        frame = data.sets[name].frame
        chosen = frame.sample(min(per_set, len(data.sets[name])), random_state=seed).index
        inputs += [to_input(data.sets[name].canvases[i]) for i in chosen]
        titles += [f"{name}: {frame.loc[i, 'label'].lower()}" for i in chosen]
    return inputs, titles


def augmentation_examples(
    data: Any, augment: AugmentConfig, *, seed: int, views: int = 8, label: str = "EOSINOPHIL"
) -> tuple[list[torch.Tensor], list[str]]:
    """``(inputs, titles)``: one seeded training canvas of ``label`` as the classifier sees it, then
    ``views`` on-the-fly augmentations of it (seeds torch's generator with ``seed``)."""
    augmented = train_transform(data.policy.input_size, augment)
    torch.manual_seed(seed)
    frame = data.sets["train"].frame
    canvas = data.sets["train"].canvases[int(frame.query("label == @label").sample(1, random_state=seed).index[0])]
    inputs = [eval_transform(data.policy.input_size)(canvas)] + [augmented(canvas) for _ in range(views)]
    return inputs, ["input"] + [f"augmented {i}" for i in range(1, views + 1)]


def custom_layer_tables(models: tuple[str, ...], input_size: tuple[int, int]) -> dict[str, pd.DataFrame]:
    """Layer by layer (:func:`~.complexity.layer_summary`) each custom architecture among ``models``."""
    from bloodlib.classification.complexity import layer_summary
    from bloodlib.classification.models import build_model

    return {name: layer_summary(build_model(name), tuple(input_size)) for name in CUSTOM_MODELS if name in models}


def parameter_captions(layer_tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Model -> Markdown caption with its parameter count, for the tables of :func:`custom_layer_tables`."""
    return {name: f"**{name}**: {layers['params'].sum():,} parameters" for name, layers in layer_tables.items()}


def training_text(summary: pd.DataFrame, *, profile: str, num_threads: int, input_size: tuple[int, int]) -> str:
    """One Markdown line: the training minutes of all models of a :func:`training_summary`."""
    precision = " / ".join(sorted(set(summary["arithmetic"])))
    return (
        f"All {len(summary)} models: **{summary['train minutes'].sum():.1f} minutes** of training ({profile} profile, "
        f"{num_threads} threads, {precision}, input {input_size[0]}x{input_size[1]})."
    )


def learning_curve_groups(trained: dict) -> dict[str, tuple[str, dict[str, pd.DataFrame]]]:
    """Figure name -> ``(title, {model: history})`` for the paper's Figures 6 (standard backbones)
    and 7 (custom nets); a figure without a trained model is left out."""
    groups = {
        "fig6_learning_curves_standard": (
            "Figure 6: standard backbones",
            {n: pd.DataFrame(t.history) for n, t in trained.items() if n not in CUSTOM_MODELS},
        ),
        "fig7_learning_curves_custom": (
            "Figure 7: custom architectures",
            {n: pd.DataFrame(t.history) for n, t in trained.items() if n in CUSTOM_MODELS},
        ),
    }
    return {figure: (title, histories) for figure, (title, histories) in groups.items() if histories}


def learning_curve_figures(trained: dict) -> dict[str, Figure]:
    """Figure name -> the learning curves of each group of :func:`learning_curve_groups`."""
    return {
        figure: plots.learning_curves(histories, title=title)
        for figure, (title, histories) in learning_curve_groups(trained).items()
    }


#: figure name -> the model whose layer-1 feature maps it shows (the paper's Figures 8 and 9).
FEATURE_MAP_FIGURES = {"fig8_feature_maps_densenet121": "densenet121", "fig9_feature_maps_arch2": "arch2"}


def feature_map_inputs(data: Any, *, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` seeded TEST inputs ``(n, 3, H, W)`` and their labels (seeds torch's generator with ``seed``)."""
    test = data.sets["TEST"]
    torch.manual_seed(seed)
    picks = torch.randperm(len(test))[:n]
    inputs = eval_transform(data.policy.input_size)(test.canvases[picks])
    return inputs, [test.frame.loc[int(i), "label"].lower() for i in picks]


def feature_maps(trained: dict, inputs: torch.Tensor) -> dict[str, tuple[str, torch.Tensor]]:
    """Figure name -> ``(model, layer-1 feature maps of inputs)`` for each model of
    :data:`FEATURE_MAP_FIGURES` that was trained."""
    from bloodlib.classification.features import layer1_feature_maps

    return {
        figure: (name, layer1_feature_maps(trained[name].model, name, inputs))
        for figure, name in FEATURE_MAP_FIGURES.items()
        if name in trained
    }


def feature_map_figures(trained: dict, inputs: torch.Tensor, labels: list[str], *, n_maps: int) -> dict[str, Figure]:
    """Figure name -> the ``n_maps`` most active layer-1 channels of each model of :func:`feature_maps`
    beside ``inputs`` (``(N, 3, H, W)``, titled by ``labels``)."""
    return {
        figure: plots.feature_maps_figure(inputs, maps, labels, n_maps=n_maps, title=f"Layer-1 feature maps of {name}")
        for figure, (name, maps) in feature_maps(trained, inputs).items()
    }


def confusion_figures(preds: pd.DataFrame) -> dict[str, Figure]:
    """The paper's Figure 10 (arch2 on TEST, when trained), then every model on TEST and on the BCCD crops
    (``preds``: :func:`~.evaluation.predictions`)."""
    test = confusions(preds, "TEST")
    figures = {}
    if "arch2" in test:
        figures["fig10_confusion_arch2"] = plots.confusion_figure(test["arch2"], title="Figure 10: arch2 on TEST")
    figures["confusion_all_test"] = plots.confusion_grid(test, title="All models on TEST")
    figures["confusion_all_bccd"] = plots.confusion_grid(confusions(preds, "BCCD"), title="All models on BCCD crops")
    return figures


def selection_text(table: pd.DataFrame, best: str) -> str:
    """One Markdown line: the model selected on validation, its accuracy on the three test sets
    beside the paper's best Table 3 accuracy (``table``: :func:`~.evaluation.table3`)."""
    row = table.set_index(["model", "set"])
    test = row.loc[(best, "TEST")]
    from bloodlib.classification.evaluation import TEST_UNSEEN

    unseen = ""
    if (best, TEST_UNSEEN) in row.index:
        u = row.loc[(best, TEST_UNSEEN)]
        unseen = (
            f", on TEST without the source groups it shares with TRAIN {u['accuracy']:.3f} "
            f"[{u['accuracy_lo']:.3f}, {u['accuracy_hi']:.3f}] ({int(u['groups'])} groups)"
        )
    return (
        f"Selected on validation balanced accuracy: **{best}**. Its accuracy on TEST is "
        f"**{test['accuracy']:.3f}** [{test['accuracy_lo']:.3f}, {test['accuracy_hi']:.3f}]{unseen}, "
        f"on TEST_SIMPLE {row.loc[(best, 'TEST_SIMPLE'), 'accuracy']:.3f}, on BCCD crops "
        f"{row.loc[(best, 'BCCD'), 'accuracy']:.3f} (paper's best: {max(paper_accuracy().values()):.2f})."
    )


def summary_rows(
    table: pd.DataFrame,
    training: pd.DataFrame,
    best: str,
    *,
    profile: str,
    pretrained: bool,
    num_threads: int,
    descriptions: dict[str, dict[str, str]],
) -> list[dict[str, Any]]:
    """Headline rows for the report index: the accuracy of the selected model, arch2 and DenseNet121
    on the three test sets and on TEST without the groups TRAIN shares (``TEST_UNSEEN``, when in
    ``table``; the paper's Table 3 value beside TEST), and the training minutes. Every row names our
    model, the paper's and what differs (``descriptions``: :func:`model_descriptions`).

    ``table``: :func:`~.evaluation.table3`; ``training``: :func:`training_summary`.
    """
    from bloodlib.classification.evaluation import TEST_UNSEEN

    row = table.set_index(["model", "set"])
    paper = paper_accuracy()
    init = "ImageNet init" if pretrained else "from scratch"
    sets = [*EVAL_SETS, *([TEST_UNSEEN] if TEST_UNSEEN in set(table["set"]) else [])]
    rows = []
    for name in [best] + [m for m in ("arch2", "densenet121") if m in set(training["model"]) and m != best]:
        d = descriptions[name]
        for set_name in sets:
            rows.append(
                {
                    "metric": f"{name} accuracy ({set_name})" + (" [selected on validation]" if name == best else ""),
                    "paper": paper[name] if set_name in ("TEST", TEST_UNSEEN) else None,
                    "ours": float(row.loc[(name, set_name), "accuracy"]),
                    "note": f"{profile}; {init}; {int(row.loc[(name, set_name), 'groups'])} source groups; "
                    f"95% CI {row.loc[(name, set_name), 'accuracy_lo']:.3f}-{row.loc[(name, set_name), 'accuracy_hi']:.3f}; "
                    "paper: random split of augmented copies",
                    "model": d["ours"],
                    "paper_model": d["paper"],
                    "differs": d["differs"],
                }
            )
    rows.append(
        {
            "metric": "training minutes, all models",
            "paper": None,
            "ours": float(training["train minutes"].sum()),
            "note": f"{profile}; {num_threads} threads",
            "model": f"all {len(training)} models, {init}",
            "paper_model": "the paper's eight CNNs on a GPU",
            "differs": "CPU training within a minutes budget (paper: GPU, times not given)",
        }
    )
    return rows


def report_metrics(
    best: str,
    *,
    table: pd.DataFrame,
    training: pd.DataFrame,
    costs: pd.DataFrame,
    localizer: pd.DataFrame,
    sets: dict[str, CanvasSet],
    evidence: dict[str, pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """The ``metrics`` of the notebook's ``metrics.json``: the selected model and every table as records
    (``evidence``: further tables by name, under ``evidence``)."""
    return {
        "evidence": {name: frame.to_dict(orient="records") for name, frame in (evidence or {}).items()},
        "selected_model": best,
        "table3": table.to_dict(orient="records"),
        "training": training.to_dict(orient="records"),
        "costs": costs.to_dict(orient="records"),
        "localizer": localizer.to_dict(orient="records")[0],
        "sets": set_overview(sets).to_dict(orient="records"),
    }


def regrouping_table(data: Any, *, val_fraction: float, seed: int) -> pd.DataFrame:
    """What the conservative groups change (:data:`~.data.UNCERTAIN_SOURCE_PAIRS` joined to the
    near-duplicate groups, against near-duplicates only): one row per quantity, columns
    ``near-duplicates only``, ``conservative (used)`` and ``changed``.

    Rows: source groups in TRAIN; TRAIN images whose train/val side differs between the two groupings
    (the same seeded :func:`~.data.grouped_split`); groups TRAIN shares with TEST; usable BCCD crops
    (BCCD images whose group never occurs in TRAIN). ``data``: :class:`~.train.WbcData`.
    """
    from bloodlib.classification.data import grouped_split, near_duplicate_groups

    train = data.split
    tests = pd.concat([data.sets[name].frame[["source", "group"]] for name in ("TEST", "TEST_SIMPLE")])
    bccd = data.bccd_all
    loose = {
        "train": train.assign(group=near_duplicate_groups(train["source"].to_numpy(), uncertain=False)),
        "test": tests.assign(group=near_duplicate_groups(tests["source"].to_numpy(), uncertain=False)),
        "bccd": bccd.assign(group=near_duplicate_groups(bccd["source"].to_numpy(), uncertain=False)),
    }
    resplit = grouped_split(
        loose["train"].drop(columns="subset"),
        val_fraction=val_fraction,
        seed=seed,
        keep_in_train=set(loose["test"]["group"]),
    )

    def counts(train_: pd.DataFrame, tests_: pd.DataFrame, bccd_: pd.DataFrame) -> list[int]:
        groups = set(train_["group"])
        return [
            train_["group"].nunique(),
            len(groups & set(tests_["group"])),
            int((~bccd_["group"].isin(groups)).sum()),
        ]

    before = counts(loose["train"], loose["test"], loose["bccd"])
    after = counts(train, tests, bccd)
    moved = int((resplit["subset"].to_numpy() != train["subset"].to_numpy()).sum())
    rows = [
        ("source groups in TRAIN", before[0], after[0]),
        ("TRAIN images on the other side of the train/val split", 0, moved),
        ("groups TRAIN shares with TEST/TEST_SIMPLE", before[1], after[1]),
        ("BCCD crops (group never in TRAIN)", before[2], after[2]),
    ]
    table = pd.DataFrame(rows, columns=["quantity", "near-duplicates only", "conservative (used)"])
    table["changed"] = table["conservative (used)"] - table["near-duplicates only"]
    return table


#: The paper's models as its text describes them (Table 3's rows).
PAPER_MODELS = {
    "arch1": "customized architecture 1 (its Figure 3, not in the text), trained from scratch",
    "arch2": "customized architecture 2 (its Figure 4, not in the text), trained from scratch",
    "resnet50": "ResNet50 (Keras), ImageNet-pretrained",
    "densenet121": "DenseNet121 (Keras), ImageNet-pretrained",
    "vgg16": "VGG16 (Keras), ImageNet-pretrained",
    "mobilenet_v2": "MobileNetV2 (Keras), ImageNet-pretrained",
    "inception_v3": "Inception-v3 (Keras), ImageNet-pretrained",
    "xception": "Xception (Keras), ImageNet-pretrained",
}

#: What each of our models is (:mod:`~.models`).
OUR_MODELS = {
    "arch1": "arch1: this project's reconstruction of the paper's architecture 1 (3 conv/ReLU/max-pool stages, "
    "2 dense layers, no normalisation)",
    "arch2": "arch2: this project's reconstruction of the paper's architecture 2 (4 stages of 2 conv-BN-ReLU, "
    "spatial dropout, global average pooling)",
    "resnet50": "ResNet50 (torchvision), global average pooling + one linear layer",
    "densenet121": "DenseNet121 (torchvision), global average pooling + one linear layer",
    "vgg16": "VGG16-BN (torchvision vgg16_bn: BatchNorm after every convolution), global average pooling + one "
    "linear layer instead of the two 4096-unit layers",
    "mobilenet_v2": "MobileNetV2 (torchvision), global average pooling + one linear layer",
    "inception_v3": "Inception-v3 (torchvision, size-agnostic auxiliary head), global average pooling + one linear layer",
    "xception": "Xception (timm legacy_xception, the Keras port), global average pooling + one linear layer",
}


def model_descriptions(p: Any) -> dict[str, dict[str, str]]:
    """Per model of ``p.models`` (``p``: the notebook's :class:`~.params.WbcSubtypesParams`): what ``ours``
    is, what the ``paper``'s is, and what ``differs`` (every row compared with the paper says it)."""
    height, width = p.input_size
    pretrained = p.pretrained
    epochs = {name: p.epochs_custom if name in CUSTOM_MODELS else p.epochs_standard for name in p.models}
    out = {}
    for name in p.models:
        custom = name in CUSTOM_MODELS
        init = "from scratch" if (custom or not pretrained) else "ImageNet-pretrained"
        differs = []
        if custom:
            differs.append("our reconstruction: the paper's figure of this net is not in its text")
        elif not pretrained:
            differs.append("random initialisation, no ImageNet weights")
        if name == "vgg16":
            differs.append("VGG16 with BatchNorm (vgg16_bn) and a global-average-pooling head, not Keras' VGG16")
        paper_epochs = 20 if custom else 10
        differs += [
            f"{height}x{width} cell-centred crops (paper: 120x160 whole fields)",
            f"{epochs[name]} epoch{'' if epochs[name] == 1 else 's'} (paper: {paper_epochs})",
            "grouped validation and unseen test cells (paper: a random split of augmented copies)",
        ]
        out[name] = {"ours": f"{OUR_MODELS[name]}, {init}", "paper": PAPER_MODELS[name], "differs": "; ".join(differs)}
    return out


def models_table(descriptions: dict[str, dict[str, str]]) -> pd.DataFrame:
    """:func:`model_descriptions` as a table: ``model, ours, paper, differs``."""
    return pd.DataFrame([{"model": name, **d} for name, d in descriptions.items()])
