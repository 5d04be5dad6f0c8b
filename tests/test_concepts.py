"""The functions behind the notebooks' concept figures: sliding windows, Gaussian weights, metric pitfalls.

Each number is checked against a hand computation or against the component that really does the work (tutorseg's
sliding-window prediction, tutorseg's evaluation).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tutorseg
from tutorseg.evaluation.pitfalls import farthest_background_voxel, metric_pitfalls, pitfall_table
from tutorseg.training.model.sliding_window import gaussian_weights, predict_logits, window_starts

ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "ISBI2012_EM_membrane"


class _WindowRecorder(torch.nn.Module):
    """A stand-in network that writes down the corner of every window it is given and returns zeros.

    Its input is a ramp (channel a holds each voxel's coordinate along axis a, 1-based; padding is 0), so the first
    voxel inside the image tells where the window starts.
    """

    def __init__(self, n_dims: int):
        super().__init__()
        self.n_dims, self.seen = n_dims, []
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so the predictor can ask where the weights are

    def forward(self, batch):
        for window in batch:
            starts = []
            for axis in range(self.n_dims):
                line = window[axis].amax(dim=tuple(a for a in range(self.n_dims) if a != axis))
                inside = torch.nonzero(line > 0).flatten()
                starts.append(int(line[inside[0]]) - 1 - int(inside[0]))
            self.seen.append(tuple(starts))
        return torch.zeros_like(batch[:, :1])


@pytest.mark.parametrize("image, patch", [((256, 256), (128, 128)), ((35, 50, 36), (28, 40, 32)),
                                          ((35, 50, 36), (40, 56, 40)), ((100, 37), (64, 32))])
def test_window_starts_are_where_the_prediction_really_puts_the_windows(image, patch):
    """The windows predict_logits sends through the network are those window_starts lists (figures draw these)."""
    ramp = torch.zeros(len(image), *image)
    for axis in range(len(image)):
        shape = [1] * len(image)
        shape[axis] = image[axis]
        ramp[axis] = torch.arange(1, image[axis] + 1, dtype=torch.float32).reshape(shape).expand(image)
    recorder = _WindowRecorder(len(image))
    predict_logits(recorder, ramp, patch_size=patch, tta=False, batch_size=1)
    assert sorted(recorder.seen) == sorted(window_starts(image, patch))


def test_window_starts_by_hand_as_nnunet_spaces_them():
    # nnU-Net's own example (compute_steps_for_sliding_window): 110 voxels, patch 64, step at most 32:
    # ceil((110 - 64) / 32) + 1 = 3 windows, spread evenly over 46 voxels: 0, 23, 46
    assert window_starts((110,), (64,)) == [(0,), (23,), (46,)]
    # 512 pixels, patch 256, step 128: starts 0, 128, 256 -> 3 per axis, 9 windows
    assert len(window_starts((512, 512), (256, 256))) == 9
    # 35 voxels, patch 28: ceil(7 / 14) + 1 = 2 windows, 0 and 7 (flush with the end)
    assert sorted({s[0] for s in window_starts((35, 50, 36), (28, 40, 32))}) == [0, 7]
    # 129 voxels, patch 64: ceil(65 / 32) + 1 = 4 windows, 65 / 3 = 21.67 apart: 0, 21.67, 43.33, 65 rounded
    assert window_starts((129,), (64,)) == [(0,), (22,), (43,), (65,)]
    # smaller than the patch: padded, half before (7 of 15), one window
    assert window_starts((25,), (40,)) == [(-7,)]


def test_gaussian_weights_peak_in_the_centre_with_sigma_an_eighth_of_the_patch():
    weights = gaussian_weights((65, 33))  # odd sizes: the centre is a voxel, (32, 16)
    assert weights.shape == (65, 33) and math.isclose(float(weights.max()), 1.0)
    assert np.unravel_index(int(np.argmax(weights)), weights.shape) == (32, 16)
    # along the first axis, d voxels from the centre the weight is exp(-d^2 / (2 sigma^2)), sigma = 65 / 8
    sigma = 65 / 8
    for d in (4, 8, 16):
        assert math.isclose(float(weights[32 + d, 16]), math.exp(-d * d / (2 * sigma * sigma)), rel_tol=1e-3)
    assert weights[0, 0] < 0.01  # the corners barely count
    assert weights.min() > 0  # where the filter did not reach (beyond 4 sigma): the smallest weight, never 0
    # an even size: the centre voxel is patch // 2, so the map is one voxel longer on the near side
    even = gaussian_weights((40,))
    assert int(np.argmax(even)) == 20 and math.isclose(float(even[19]), float(even[21]))


@pytest.fixture(scope="module")
def real_case(sample_dir):
    dataset = tutorseg.load_dataset(sample_dir)
    case = dataset.training[0]
    from tutorseg.data.imageio import read_image

    label = read_image(case.label_file)
    return label.array[0].astype(np.int32), tuple(label.geometry.spacing), dataset.foreground_labels


def test_metric_pitfalls_on_a_real_case(real_case):
    reference, spacing, labels = real_case
    pitfalls = {p.name: p for p in metric_pitfalls(reference, labels, spacing=spacing)}
    first = next(iter(labels))
    perfect = pitfalls["perfect"].metrics[first]
    assert perfect["dice"] == 1.0 and perfect["hd95_mm"] == 0.0 and perfect["surface_dice"] == 1.0

    tiny = pitfalls["tiny stray blob"]
    added = int(np.count_nonzero(tiny.prediction != reference))
    assert added == 7  # a sphere of radius 1 voxel: the centre and its 6 neighbours
    n = int(np.count_nonzero(reference == labels[first]))
    assert math.isclose(tiny.metrics[first]["dice"], 2 * n / (2 * n + added), rel_tol=1e-6)  # Dice by hand
    assert tiny.metrics[first]["hd95_mm"] == 0.0  # 7 voxels are under 5 % of the boundary: HD95 ignores them

    blob = pitfalls["stray blob"]
    added = int(np.count_nonzero(blob.prediction != reference))
    assert math.isclose(blob.metrics[first]["dice"], 2 * n / (2 * n + added), rel_tol=1e-6)
    assert blob.metrics[first]["dice"] > 0.85 and blob.metrics[first]["hd95_mm"] > 5.0  # HD95 jumps
    assert pitfalls["stray blob, largest component kept"].metrics[first]["dice"] == 1.0

    shifted = pitfalls["shifted by one voxel"].metrics[first]
    assert shifted["dice"] < 0.9 and shifted["surface_dice"] > 0.95  # a 1-voxel error: tolerated by the surface Dice

    empty = pitfalls["empty reference"].metrics
    assert empty[first]["dice"] == 0.0  # one false blob on an empty case: a complete failure
    assert all(math.isnan(empty[name]["dice"]) for name in labels if name != first)  # both empty: NaN, not scored
    assert "stray blob" in pitfall_table(list(pitfalls.values()), first)


def test_the_blob_goes_as_far_from_the_structure_as_the_image_allows():
    reference = np.zeros((20, 20), dtype=np.int32)
    reference[2:5, 2:5] = 1
    assert farthest_background_voxel(reference) == (17, 17)  # the far corner, 2 voxels in from the border


def test_the_concept_figures_draw_what_the_functions_computed(real_case, sample_dir, sample_fingerprint):
    from matplotlib.patches import Rectangle

    from tutorseg.data.imageio import read_image
    from tutorseg.planning.topology import receptive_field
    from tutorseg.viz.concepts import plot_pitfalls, plot_receptive_field, plot_resampling, plot_sliding_windows

    reference, spacing, labels = real_case
    image = read_image(tutorseg.load_dataset(sample_dir).training[0].image_files[0]).array[0]
    configuration = tutorseg.plan(sample_fingerprint)["3d_fullres"]

    boxes = [p for p in plot_receptive_field(image, configuration).axes[0].patches if isinstance(p, Rectangle)]
    field = receptive_field(configuration)
    assert sorted((b.get_width(), b.get_height()) for b in boxes) == sorted(
        [tuple(configuration.patch_size[:2]), field[:2]])

    starts = window_starts(image.shape, (20, 28, 16))
    windows = plot_sliding_windows(image, (20, 28, 16), index=10).axes[0].patches
    assert len(windows) == len({(s[0], s[1]) for s in starts if s[2] <= 10 < s[2] + 16})  # those crossing z = 10
    windows_2d = plot_sliding_windows(image[:, :, 10], (20, 28)).axes[0].patches
    assert len(windows_2d) == len(window_starts(image[:, :, 10].shape, (20, 28)))

    thick = image[:, :, ::4]  # every 4th slice: a 4 mm acquisition of the same head
    figure = plot_resampling(thick, reference[:, :, ::4], (*spacing[:2], 4.0), (*spacing[:2], 3.0))
    assert "nearest neighbour along axis z" in figure.texts[0].get_text()  # 4 mm is anisotropic: z on its own

    pitfalls = metric_pitfalls(reference, labels, spacing=spacing)
    assert len(plot_pitfalls(pitfalls, image).axes) == len(pitfalls)


def test_the_cascade_figure_shows_what_a_perfect_first_stage_loses(real_case, sample_dir):
    """The round trip to a lowres spacing and back: nothing lost at the case's own spacing, more lost the coarser."""
    from tutorseg.data.imageio import read_image
    from tutorseg.data.label_maps import dice_per_class
    from tutorseg.preprocessing.resampling import compute_new_shape
    from tutorseg.training.cascade import lowres_round_trip
    from tutorseg.viz.concepts import plot_cascade_input

    reference, spacing, labels = real_case
    low, back = lowres_round_trip(reference, spacing, spacing)
    assert np.array_equal(low, reference) and np.array_equal(back, reference)

    coarse, coarser = tuple(1.5 * s for s in spacing), tuple(3.0 * s for s in spacing)
    low, back = lowres_round_trip(reference, spacing, coarse)
    assert low.shape == compute_new_shape(reference.shape, spacing, coarse) and back.shape == reference.shape
    dice = dice_per_class(back, reference, labels)
    dice_coarser = dice_per_class(lowres_round_trip(reference, spacing, coarser)[1], reference, labels)
    assert all(0.8 < dice[c] < 1 and dice_coarser[c] < dice[c] for c in labels), (dice, dice_coarser)

    image = read_image(tutorseg.load_dataset(sample_dir).training[0].image_files[0]).array[0]
    figure = plot_cascade_input(image, reference, spacing, coarse, label_names={"background": 0, **labels})
    assert f"given {1 + len(labels)} channels" in figure.texts[0].get_text()
    assert all(f"{name} Dice {d:.3f}" in figure.axes[2].get_title() for name, d in dice.items())


def test_panoptic_ids_by_hand():
    from tutorseg.evaluation.instances import panoptic_map

    labels = np.array([[1, 1, 0, 2, 2],
                       [0, 0, 0, 2, 1],
                       [1, 0, 1, 0, 1]])
    # class 1 is a thing: its face-connected objects are {(0,0),(0,1)}, {(1,4),(2,4)}, {(2,0)}, {(2,2)}, numbered
    # in scan order; class 2 (touching the second object) and class 0 are stuff
    assert panoptic_map(labels, things=[1]).tolist() == [[1001, 1001, 0, 2000, 2000],
                                                         [0, 0, 0, 2000, 1002],
                                                         [1003, 0, 1004, 0, 1002]]
    # both foreground classes as things: class 2's one object is 2001
    assert panoptic_map(labels, things=[1, 2])[0, 3] == 2001
    small_dropped = panoptic_map(labels, things=[1], min_size=2)  # single pixels stay stuff: class 1, instance 0
    assert small_dropped[2, 0] == small_dropped[2, 2] == 1000 and small_dropped[1, 4] == 1002


@pytest.mark.skipif(not ISBI.is_dir(), reason=f"needs {ISBI} (the shared data beside the repository; present in CI)")
def test_the_segmentation_kinds_figure_counts_the_cells_of_a_real_slice():
    from scipy import ndimage

    from tutorseg.data.imageio import read_image
    from tutorseg.viz import plot_segmentation_kinds

    case = tutorseg.load_dataset(ISBI).training[0]
    image, label = read_image(case.image_files[0]).array[0], read_image(case.label_file).array[0]
    cells = ndimage.label(label == 0)[1]  # the inside of cells, between membranes (4-connected)
    assert cells > 50
    figure = plot_segmentation_kinds(image, label, things=[0], label_names={"cells": 0, "membrane": 1})
    titles = [ax.get_title() for ax in figure.axes]
    assert f"{cells} cells" in titles[2] and "stuff: membrane" in titles[3]
    # the hippocampus: each class one object on the slice with the most foreground
    sample = tutorseg.load_dataset(tutorseg.sample_dataset_path()).training[0]
    figure = plot_segmentation_kinds(read_image(sample.image_files[0]).array[0], read_image(sample.label_file).array[0],
                                     things=[1, 2], label_names={"Anterior": 1, "Posterior": 2})
    assert "1 Anterior, 1 Posterior" in figure.axes[2].get_title()


def test_the_pipeline_figure_lists_the_plans_decisions_in_their_kinds_colours(sample_fingerprint):
    from tutorseg.planning.explain import KIND_COLOURS
    from tutorseg.viz.concepts import PIPELINE_AFTER_PLANNING, plot_pipeline

    plan = tutorseg.plan(sample_fingerprint)
    texts = {t.get_text(): t.get_color() for t in plot_pipeline(plan).axes[0].texts}
    for decision in plan[plan.default_configuration].decisions:
        assert texts[decision.name.replace("_", " ")] == KIND_COLOURS[decision.kind]
    assert texts["best configuration"] == KIND_COLOURS["empirical"]
    assert all(step in texts for step in PIPELINE_AFTER_PLANNING)


def test_the_normalisation_figure_puts_every_z_scored_image_on_one_scale(sample_dir, sample_fingerprint):
    from tutorseg.viz.concepts import plot_normalisation

    fp = sample_fingerprint
    dataset = tutorseg.load_dataset(sample_dir)
    images = [case.load_image()[0] for case in dataset.training[:3]]
    figure = plot_normalisation(images, fp.foreground_intensity_properties_per_channel["0"])
    z_panel = figure.axes[1]
    assert len(z_panel.patches) == 3  # one histogram per image
    for patch in z_panel.patches:  # each z-scored image is centred on 0: its histogram straddles 0
        xs = patch.get_path().vertices[:, 0]
        assert xs.min() < 0 < xs.max()
    low, high = fp.foreground_intensity_properties_per_channel["0"]["percentile_00_5"], \
        fp.foreground_intensity_properties_per_channel["0"]["percentile_99_5"]
    assert f"[{low:,.0f}, {high:,.0f}]" in figure.axes[2].get_title()


def test_deep_supervision_outputs_come_at_each_decoder_resolution_with_nnunets_weights(sample_fingerprint):
    from tutorseg.training.budget.smoke import smoke_plan
    from tutorseg.training.model.network import build_network, deep_supervision_outputs
    from tutorseg.viz.concepts import plot_deep_supervision

    plan = smoke_plan(tutorseg.plan(sample_fingerprint, preset="cpu"))
    configuration = plan[plan.default_configuration]
    network = build_network(configuration, 1, 3).eval()
    patch = torch.randn(1, *configuration.patch_size)
    outputs = deep_supervision_outputs(network, patch)
    assert not network.training  # left as it was
    # output i is downsampled by the strides of stages 1..i: the decoder resolution it comes from
    expected = [tuple(configuration.patch_size)]
    for stride in configuration.strides[1:len(outputs)]:
        expected.append(tuple(n // s for n, s in zip(expected[-1], stride)))
    assert [tuple(p.shape[1:]) for p, _ in outputs] == expected
    # nnU-Net's weights: 1, 1/2, 1/4, ... with the lowest 0, normalised to sum to 1
    raw = [1 / 2 ** i for i in range(len(outputs) - 1)] + [0.0]
    assert [w for _, w in outputs] == pytest.approx([r / sum(raw) for r in raw])
    assert all(torch.allclose(p.sum(0), torch.ones(p.shape[1:])) for p, _ in outputs)  # probabilities
    figure = plot_deep_supervision(outputs, patch[0].numpy())
    assert len(figure.axes) == len(outputs) + 1
