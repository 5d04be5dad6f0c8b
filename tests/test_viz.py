"""Tests of tutorseg.viz on real cases: the plain figures, the PNG of each viewer mode, the widget callbacks.

The PNGs land in ``$TUTORSEG_TEST_ARTEFACTS/viz`` when that variable is set (CI keeps them as artefacts), else
in pytest's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tutorseg import load_dataset
from tutorseg.viz import (
    ERROR_COLOURS,
    SliceViewer,
    VizError,
    error_map,
    figure_to_png,
    plot_case,
    plot_slices,
    save_figure,
    slice_viewer,
    window_from_level,
)
from tutorseg.viz.plots import foreground_slice, label_names_by_value


@pytest.fixture
def artefact_dir(tmp_path) -> Path:
    root = os.environ.get("TUTORSEG_TEST_ARTEFACTS")
    path = Path(root) / "viz" if root else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def sample(sample_dir):
    return load_dataset(sample_dir)


@pytest.fixture(scope="module")
def case3d(sample):
    """A real Hippocampus case and a 'prediction' made from its label by shifting it two voxels along x."""
    case = sample.training[0]
    label = case.load_label()
    return case, case.load_image(), label, np.roll(label, 2, axis=0)


@pytest.fixture(scope="module")
def case2d(isbi_dir):
    """A 160x160 crop of a real ISBI 2012 EM slice, its membrane label and the label shifted by 3 pixels."""
    case = load_dataset(isbi_dir).training[0]
    image = case.load_image()[:, :160, :160]
    label = case.load_label()[:160, :160]
    return case, image, label, np.roll(label, 3, axis=1)


def _png_ok(path: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 10, f"{path.name} is nearly blank"
    return pixels


def _colour_present(pixels: np.ndarray, hex_colour: str, tolerance: int = 60) -> bool:
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(pixels.astype(int) - target).sum(axis=-1) < tolerance).any())


# --------------------------------------------------------------------------------------------------- plain figures

MODES = {
    "image": {},
    "reference": {"label": True},
    "prediction": {"prediction": True},
    "reference_and_prediction": {"label": True, "prediction": True},
    "errors": {"label": True, "prediction": True, "show_errors": True},
}


@pytest.mark.parametrize("dims", ["3d", "2d"])
@pytest.mark.parametrize("mode", list(MODES))
def test_each_viewer_mode_saves_a_png(mode, dims, request, artefact_dir):
    case, image, label, prediction = request.getfixturevalue(f"case{dims}")
    flags = MODES[mode]
    fig = plot_slices(image, label if flags.get("label") else None, prediction if flags.get("prediction") else None,
                      show_errors=flags.get("show_errors", False), label_names={"Anterior": 1, "Posterior": 2}
                      if dims == "3d" else {"membrane": 1})
    path = save_figure(fig, artefact_dir / f"viewer_{dims}_{mode}.png")
    pixels = _png_ok(path)
    if mode in ("reference", "prediction"):
        assert _colour_present(pixels, "#EE6677"), "class 1 should be drawn in its colour"
    if mode == "errors":
        assert _colour_present(pixels, ERROR_COLOURS["false positive"])
        assert _colour_present(pixels, ERROR_COLOURS["false negative"])
    if mode == "image":
        assert not _colour_present(pixels, "#EE6677", tolerance=30)
    legend_texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    if mode == "errors":
        assert "false positive" in legend_texts and "false negative" in legend_texts
    elif mode != "image":
        assert ("Anterior" if dims == "3d" else "membrane") in legend_texts


def test_overlays_change_the_picture(case3d):
    _, image, label, prediction = case3d
    plain = figure_to_png(plot_slices(image, axis=2, index=15))
    with_label = figure_to_png(plot_slices(image, label, axis=2, index=15))
    faint = figure_to_png(plot_slices(image, label, axis=2, index=15, alpha=0.1))
    assert len({plain, with_label, faint}) == 3


def test_slice_through_the_foreground_by_default(case3d):
    _, image, label, _ = case3d
    fig = plot_slices(image, label, axis=1)
    expected = foreground_slice(label, 1)
    assert np.count_nonzero(label[:, expected, :]) == np.count_nonzero(label, axis=(0, 2)).max()
    assert fig.axes[0].get_title() == f"y = {expected} / {image.shape[2]}"


def test_window_sets_the_grey_range(case3d):
    _, image, _, _ = case3d
    fig = plot_slices(image, axis=2, index=10, window=window_from_level(50, 40))
    assert fig.axes[0].images[0].get_clim() == (30.0, 70.0)
    default = plot_slices(image, axis=2, index=10).axes[0].images[0].get_clim()
    assert default == pytest.approx(tuple(np.percentile(image[0], (0.5, 99.5))))


def test_spacing_gives_the_true_aspect(case2d):
    _, image, _, _ = case2d
    ax = plot_slices(image, spacing=(1.0, 2.0)).axes[0]
    left, right, bottom, top = ax.images[0].get_extent()
    assert (right - left) == pytest.approx(2 * abs(bottom - top))


def test_error_map_codes():
    reference = np.array([0, 1, 1, 2, 0])
    prediction = np.array([1, 1, 0, 1, 0])
    assert error_map(reference, prediction).tolist() == [1, 0, 2, 3, 0]


def test_label_names_in_both_directions():
    assert label_names_by_value({"background": 0, "Anterior": 1}) == {1: "Anterior"}
    assert label_names_by_value({"0": "background", "1": "Anterior"}, [1, 2]) == {1: "Anterior", 2: "class 2"}


@pytest.mark.parametrize("call, message", [
    (lambda im, lab: plot_slices(im, lab[:-1]), "on the image's grid"),
    (lambda im, lab: plot_slices(im, lab, axis=3), "axis 3"),
    (lambda im, lab: plot_slices(im, lab, axis=2, index=99), "slice 99"),
    (lambda im, lab: plot_slices(im, lab, channel=1), "channel 1"),
    (lambda im, lab: plot_slices(im, lab, show_errors=True), "needs both"),
    (lambda im, lab: plot_slices(im, lab, channel="rgb"), "this image has 1"),
])
def test_bad_input_is_explained(case3d, call, message):
    _, image, label, _ = case3d
    with pytest.raises(VizError, match=message):
        call(image, label)


def test_plot_case_3d_shows_three_orthogonal_slices(case3d, sample, artefact_dir):
    case, _, _, prediction = case3d
    fig = plot_case(case, prediction=prediction, label_names=sample.labels)
    assert [ax.get_title()[0] for ax in fig.axes if ax.get_title()] == ["x", "y", "z"]
    assert fig._suptitle.get_text() == case.case_id
    _png_ok(save_figure(fig, artefact_dir / "case_3d.png"))


def test_plot_case_2d(isbi_dir, artefact_dir):
    dataset = load_dataset(isbi_dir)
    fig = plot_case(dataset.training[1], label_names=dataset.labels)
    assert len(fig.axes) == 1
    _png_ok(save_figure(fig, artefact_dir / "case_2d.png"))


@pytest.fixture(scope="module")
def rgb_dataset(tmp_path_factory):
    """PNGs of real Hippocampus middle slices in RGB: the slice in red and blue, its inverse in green."""
    from builders import png_dataset

    return load_dataset(png_dataset(tmp_path_factory.mktemp("rgb"), 2, mode="RGB"))


def test_three_channels_drawn_as_one_colour_image(rgb_dataset, artefact_dir):
    case = rgb_dataset.training[0]
    image, label = case.load_image(), case.load_label()
    colour = _png_ok(save_figure(plot_slices(image, label, channel="rgb", alpha=0.0, legend=False),
                                 artefact_dir / "viewer_2d_rgb.png"))
    grey = _png_ok(save_figure(plot_slices(image, label, channel=1, alpha=0.0, legend=False),
                               artefact_dir / "viewer_2d_rgb_channel_1.png"))
    # dark background: (0, 255, 0) green; bright tissue: red and blue high, green low, so magenta-ish
    assert _colour_present(colour, "#00FF00") and _colour_present(colour, "#FF00FF", tolerance=120)
    assert not _colour_present(grey, "#00FF00", tolerance=120)  # one channel: shades of grey
    fig = plot_case(case, channel="rgb")
    _png_ok(save_figure(fig, artefact_dir / "case_2d_rgb.png"))


# --------------------------------------------------------------------------------------------------- the widget


def test_viewer_callbacks_redraw(sample, case3d, artefact_dir):
    case, _, label, prediction = case3d
    viewer = slice_viewer(sample, predictions={case.case_id: prediction})
    assert isinstance(viewer, SliceViewer) and viewer.case.case_id == case.case_id
    assert viewer.slice_slider.value == foreground_slice(label, 2)
    seen = [viewer.png]
    viewer.slice_slider.value = viewer.slice_slider.value - 3
    seen.append(viewer.png)
    viewer.axis_buttons.value = 0
    assert viewer.slice_slider.max == label.shape[0] - 1
    seen.append(viewer.png)
    viewer.opacity_slider.value = 0.9
    seen.append(viewer.png)
    viewer.width_slider.value = viewer.width_slider.value / 2
    seen.append(viewer.png)
    viewer.show_errors.value = True
    seen.append(viewer.png)
    assert "errors" in viewer.message.value
    viewer.save(artefact_dir / "slice_viewer_3d_errors.png")
    viewer.show_errors.value = False
    viewer.show_reference.value = False
    seen.append(viewer.png)
    assert len(set(seen)) == len(seen), "every control change should change the picture"


def test_viewer_case_picker_loads_the_case(sample):
    viewer = slice_viewer(sample)
    other = sample.training[3]
    before = viewer.renders
    viewer.case_picker.value = other.case_id
    assert viewer.case is other and viewer.renders == before + 1
    assert viewer.slice_slider.value == foreground_slice(other.load_label(), 2)
    assert viewer.show_prediction.disabled and viewer.show_errors.disabled  # no predictions given
    assert other.case_id in repr(viewer)


def test_viewer_reads_a_prediction_folder_2d(isbi_dir, tmp_path, artefact_dir):
    from tutorseg.data.imageio import write_segmentation

    dataset = load_dataset(isbi_dir)
    cases = list(dataset.training[:2])
    write_segmentation(np.roll(cases[0].load_label(), 4, axis=0), tmp_path / f"{cases[0].case_id}.png")
    viewer = slice_viewer(cases, predictions=tmp_path, label_names=dataset.labels)
    assert viewer.axis_buttons.layout.display == "none" and viewer.slice_slider.layout.display == "none"
    viewer.show_errors.value = True
    assert "errors" in viewer.message.value
    viewer.save(artefact_dir / "slice_viewer_2d_errors.png")
    viewer.case_picker.value = cases[1].case_id  # no prediction file for this one
    assert viewer.show_errors.disabled and "errors" not in viewer.message.value


# --------------------------------------------------------------------------------------------------- charts


def _configuration_from_nnunet(plans_file: Path, name: str):
    """A ConfigurationPlan holding the values nnU-Net v2 itself planned (nnU-Net's (z, y, x) axes reversed for 3D)."""
    import json

    from tutorseg.planning import ConfigurationPlan

    raw = json.loads(plans_file.read_text())["configurations"][name]
    arch = raw["architecture"]["arch_kwargs"]
    flip = (lambda v: tuple(v[::-1])) if name.startswith("3d") else tuple
    return ConfigurationPlan(
        name=name, spacing=flip(raw["spacing"]), patch_size=flip(raw["patch_size"]), batch_size=raw["batch_size"],
        median_image_size_in_voxels=flip(raw["median_image_size_in_voxels"]),
        normalization_schemes=tuple(raw["normalization_schemes"]), use_mask_for_norm=tuple(raw["use_mask_for_norm"]),
        n_stages=arch["n_stages"], features_per_stage=tuple(arch["features_per_stage"]),
        kernel_sizes=tuple(flip(k) for k in arch["kernel_sizes"]), strides=tuple(flip(s) for s in arch["strides"]),
        n_conv_per_stage=tuple(arch["n_conv_per_stage"]),
        n_conv_per_stage_decoder=tuple(arch["n_conv_per_stage_decoder"]), batch_dice=raw["batch_dice"])


def test_plot_fingerprint_of_the_sample(sample_dir, tmp_path, artefact_dir):
    from tutorseg import fingerprint
    from tutorseg.viz import plot_fingerprint

    fp = fingerprint(sample_dir, num_workers=1, progress=False)
    fig = plot_fingerprint(fp.save(tmp_path / "fingerprint.json"))  # from the saved JSON, as notebook 02 may
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["spacing per axis", "shape after cropping", "foreground intensities", "class frequencies"]
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == ["background", "Anterior", "Posterior"]
    assert len(fig.axes[2].patches) == 1  # one histogram: one channel
    _png_ok(save_figure(fig, artefact_dir / "fingerprint_hippocampus_sample.png"))


@pytest.mark.parametrize("dataset, name, expected_sizes", [
    ("Task04_Hippocampus", "3d_fullres", [(40, 56, 40), (20, 28, 20), (10, 14, 10), (5, 7, 5)]),
    ("ISBI2012_EM_membrane", "2d", None),
])
def test_plot_network_draws_each_stage(reference_dir, dataset, name, expected_sizes, artefact_dir):
    from tutorseg.viz import feature_map_sizes, plot_network

    configuration = _configuration_from_nnunet(reference_dir / dataset / "nnUNetPlans.json", name)
    sizes = feature_map_sizes(configuration)
    if expected_sizes:
        assert sizes == expected_sizes  # x, y, z of nnU-Net's 40x56x40 patch halved three times
    assert sizes[-1] == tuple(p // np.prod([s[a] for s in configuration.strides])
                              for a, p in enumerate(configuration.patch_size))
    fig = plot_network(configuration)
    texts = [t.get_text() for t in fig.axes[0].texts]
    for stage in range(configuration.n_stages):
        assert any(t.startswith(f"stage {stage}: {configuration.features_per_stage[stage]} maps") for t in texts)
    assert len([t for t in texts if "+ DS" in t]) == configuration.n_stages - 3  # all decoder outputs but the lowest
    _png_ok(save_figure(fig, artefact_dir / f"network_{name}.png"))


@pytest.mark.parametrize("preset", ["cpu", "resenc-m"])
def test_plot_network_text_stays_inside_its_boxes(sample_dir, preset):
    """The narrowest boxes (the cpu preset's 8 maps) and the longest lines (ResEnc's "6 res. blocks") still fit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Rectangle

    from tutorseg import fingerprint, plan
    from tutorseg.viz import plot_network

    the_plan = plan(fingerprint(sample_dir, num_workers=1, progress=False), preset=preset)
    fig = plot_network(the_plan)
    renderer = FigureCanvasAgg(fig).get_renderer()  # measures text as a saved PNG draws it
    boxes = [patch.get_window_extent(renderer) for patch in fig.axes[0].patches if isinstance(patch, Rectangle)]
    labels = [text for text in fig.axes[0].texts if "maps" in text.get_text()]
    assert len(labels) == len(boxes) == 2 * the_plan[the_plan.default_configuration].n_stages - 1
    for label, box in zip(labels, boxes):  # each box is drawn with its label
        extent = label.get_window_extent(renderer)
        assert (box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1), \
            f"{label.get_text()!r} overflows its box"


def test_plot_training_curves(tmp_path, artefact_dir):
    import json

    from tutorseg.viz import plot_training_curves

    epochs = 12
    history = {"epoch": list(range(epochs)), "train_loss": list(np.linspace(0.3, -0.7, epochs)),
               "val_loss": list(np.linspace(0.2, -0.6, epochs)),
               "lr": [0.01 * (1 - e / epochs) ** 0.9 for e in range(epochs)],
               "pseudo_dice": [[e / epochs, e / (2 * epochs)] for e in range(epochs)],
               "ema_pseudo_dice": [0.75 * e / epochs for e in range(epochs)], "class_names": ["Anterior", "Posterior"]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    fig = plot_training_curves(tmp_path)  # a run folder holding history.json
    loss_ax, dice_ax, lr_ax = fig.axes
    assert [line.get_label() for line in dice_ax.lines] == ["Anterior", "Posterior", "EMA of the mean"]
    assert list(lr_ax.lines[0].get_ydata()) == history["lr"]
    _png_ok(save_figure(fig, artefact_dir / "training_curves.png"))
    with pytest.raises(VizError, match="train_loss"):
        plot_training_curves({"loss": [1, 2]})


def test_a_run_beside_the_recorded_reference_runs(artefact_dir):
    from tutorseg.viz import plot_against_reference, reference_runs

    reference = reference_runs()  # tutorseg demo, three seeds, 5 minutes on 2 CPU cores (bench/seeds.md's table)
    assert [(r["seed"], r["steps"][-1], r["validation_dice"]) for r in reference["runs"]] == [
        (12345, 2366, 0.8098), (1, 2255, 0.7949), (2, 2300, 0.8046)]
    history = {"train_loss": [1.2, 0.8, 0.5, 0.4], "ema_pseudo_dice": [0.0, 0.1, 0.3, 0.5],
               "iterations": [50, 50, 50, 50], "elapsed_seconds": [30, 60, 90, 120]}
    fig = plot_against_reference(history)
    by_step, loss_by_step, by_minute = fig.axes
    grey, this_run = by_step.lines[:3], by_step.lines[3]
    assert [list(line.get_xdata()) for line in grey] == [r["steps"] for r in reference["runs"]]
    assert list(this_run.get_xdata()) == [50, 100, 150, 200] and list(this_run.get_ydata()) == [0.0, 0.1, 0.3, 0.5]
    assert list(loss_by_step.lines[3].get_ydata()) == history["train_loss"]
    assert list(by_minute.lines[3].get_xdata()) == [0.5, 1.0, 1.5, 2.0]
    assert "T4 GPU: not measured" in fig.texts[0].get_text()
    _png_ok(save_figure(fig, artefact_dir / "against_reference.png"))
    with pytest.raises(VizError, match="hippocampus_sample_5m_cpu2"):
        reference_runs("a_run_nobody_recorded")


def test_the_loss_gap_figure_draws_both_losses_by_step(artefact_dir):
    from tutorseg.viz import plot_loss_gap

    memorising = {"train_loss": [1.0, 0.5, 0.2, 0.1], "val_loss": [0.9, 0.6, 0.6, 0.7], "iterations": [50] * 4}
    learning = {"train_loss": [1.0, 0.6, 0.4, 0.3], "val_loss": [0.9, 0.6, 0.45, 0.35], "iterations": [50] * 4}
    fig = plot_loss_gap({"1 case": memorising, "16 cases": learning})
    first, second = fig.axes
    assert list(first.lines[0].get_xdata()) == [50, 100, 150, 200]
    assert list(first.lines[0].get_ydata()) == memorising["train_loss"]
    assert list(first.lines[1].get_ydata()) == memorising["val_loss"]
    assert "gap at the end: +0.60" in first.get_title() and "gap at the end: +0.05" in second.get_title()
    _png_ok(save_figure(fig, artefact_dir / "loss_gap.png"))
    with pytest.raises(VizError, match="val_loss"):
        plot_loss_gap({"no validation": {"train_loss": [1.0], "iterations": [50]}})


def test_plot_metrics_of_a_real_evaluation(sample, artefact_dir):
    from tutorseg.evaluation.metrics import evaluate
    from tutorseg.viz import plot_metrics

    cases = sample.training[:6]
    references = {c.case_id: c.load_label() for c in cases}
    predictions = {k: np.roll(v, shift, axis=0) for shift, (k, v) in enumerate(references.items())}
    summary = evaluate(predictions, references, labels={"Anterior": 1, "Posterior": 2})
    fig = plot_metrics(summary)
    assert [ax.get_title() for ax in fig.axes] == ["Dice", "HD95 (mm)"]
    dice_points = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections])
    assert sorted(dice_points) == pytest.approx(sorted(
        summary.case(k).metrics[n]["dice"] for k in references for n in ("Anterior", "Posterior")))
    _png_ok(save_figure(fig, artefact_dir / "metrics.png"))


def test_viewer_shows_a_colour_image_in_colour_first(rgb_dataset):
    viewer = slice_viewer(rgb_dataset)
    assert viewer.channel_picker.value == "rgb" and ("RGB", "rgb") in viewer.channel_picker.options
    colour = viewer.png
    viewer.channel_picker.value = 2
    assert viewer.png != colour
    low, high = window_from_level(viewer.level_slider.value, viewer.width_slider.value)
    assert 0 <= low < high <= 255 * 1.01


def test_viewer_offers_no_colour_view_for_one_channel(sample):
    viewer = slice_viewer(sample)
    assert viewer.channel_picker.value == 0 and [v for _, v in viewer.channel_picker.options] == [0]


def test_on_colab_with_ipywidgets_8_the_custom_widget_manager_is_turned_on(monkeypatch):
    """google.colab cannot exist here: a stand-in module records the call Colab's documentation asks for."""
    import sys
    import types

    from tutorseg.viz.widgets import _enable_colab_widgets

    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("enabled"))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    sys.modules["google"].colab = colab
    assert _enable_colab_widgets("7.7.1") is False and calls == []  # Colab's own version: nothing to do
    assert _enable_colab_widgets("8.1.5") is True and calls == ["enabled"]
    monkeypatch.delitem(sys.modules, "google.colab")
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert _enable_colab_widgets("8.1.5") is False  # not on Colab
