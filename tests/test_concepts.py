"""The functions behind the notebooks' concept figures: sliding windows, Gaussian weights, metric pitfalls.

Each number is checked against a hand computation or against the component that really does the work (MONAI's
sliding window, tutorseg's evaluation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tutorseg
from tutorseg.evaluation.pitfalls import farthest_background_voxel, metric_pitfalls, pitfall_table
from tutorseg.training.model.sliding_window import gaussian_weights, window_starts


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")
@pytest.mark.parametrize("image, patch", [((256, 256), (128, 128)), ((35, 50, 36), (28, 40, 32)),
                                          ((35, 50, 36), (40, 56, 40)), ((100, 37), (64, 32))])
def test_window_starts_are_where_monai_really_puts_the_windows(image, patch):
    """A predictor that writes down the corner of every window it is given, through MONAI's own inference."""
    from monai.inferers import sliding_window_inference

    ramp = torch.zeros(1, len(image), *image)  # channel a holds each voxel's coordinate along axis a (1-based)
    for axis in range(len(image)):
        shape = [1] * len(image)
        shape[axis] = image[axis]
        ramp[0, axis] = torch.arange(1, image[axis] + 1, dtype=torch.float32).reshape(shape).expand(image)
    seen = []

    def record(batch):
        for window in batch:
            # the first voxel that is inside the image (coordinate >= 1) tells where the window starts
            starts = []
            for axis in range(len(image)):
                line = window[axis].amax(dim=tuple(a for a in range(len(image)) if a != axis))
                inside = torch.nonzero(line > 0).flatten()
                starts.append(int(line[inside[0]]) - 1 - int(inside[0]))
            seen.append(tuple(starts))
        return torch.zeros_like(batch[:, :1])  # a new tensor: MONAI weights the output in place

    sliding_window_inference(ramp, roi_size=patch, sw_batch_size=1, predictor=record, overlap=0.5, mode="gaussian",
                             padding_mode="constant", cval=0.0)
    assert sorted(seen) == sorted(window_starts(image, patch))


def test_window_counts_by_hand():
    # 512 pixels, patch 256, step 128: starts 0, 128, 256 -> 3 per axis, 9 windows
    assert len(window_starts((512, 512), (256, 256))) == 9
    # 35 voxels, patch 28, step 14: starts 0, then the last flush with the end at 7 -> 2 per axis
    assert sorted({s[0] for s in window_starts((35, 50, 36), (28, 40, 32))}) == [0, 7]


def test_gaussian_weights_peak_in_the_centre_with_sigma_an_eighth_of_the_patch():
    weights = gaussian_weights((65, 33))  # odd sizes: the centre is a voxel, (32, 16)
    assert weights.shape == (65, 33) and math.isclose(float(weights.max()), 1.0)
    assert np.unravel_index(int(np.argmax(weights)), weights.shape) == (32, 16)
    # along the first axis, d voxels from the centre the weight is exp(-d^2 / (2 sigma^2)), sigma = 65 / 8
    sigma = 65 / 8
    for d in (4, 8, 16):
        assert math.isclose(float(weights[32 + d, 16]), math.exp(-d * d / (2 * sigma * sigma)), rel_tol=1e-3)
    assert weights[0, 0] < 0.01  # the corners barely count


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
