"""Full-case validation at the end of training, as nnU-Net's ``perform_actual_validation``.

Every validation case of the fold is predicted with the sliding window, mapped back onto the original image and
compared with its label. The path is prediction's (:mod:`tutorseg.prediction.predictor`): logits resampled back one
class at a time and the largest taken, as nnU-Net exports its validation cases.

Writes ``validation/CASE<ending>`` (the predicted label maps, aligned with the raw images) and
``validation/summary.json`` (Dice per case and class, and the means) into the run folder; with
``save_probabilities`` (nnU-Net's ``--npz``) also ``validation/CASE.npz``, the class probabilities on the original
grid, which :func:`tutorseg.find_best_configuration` averages to score ensembles of configurations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tutorseg.data.artefacts import to_json_types
from tutorseg.data.jobs import progress_bar
from tutorseg.data.label_maps import dice_per_class
from tutorseg.training.cascade import append_one_hot
from tutorseg.training.model.sliding_window import predict_volume_logits
from tutorseg.training.runs.checkpoint import write_json
from tutorseg.training.runs.history import nan_mean


def validate_cases(network, cases, dataset, plan, configuration, out_dir: Path, *, device, tta: bool = True,
                   save_probabilities: bool = False, progress: bool = False) -> dict:
    """Predict each preprocessed validation case, undo the preprocessing, write it, and score it.

    Args:
        network: the trained network.
        cases: the fold's validation cases (:class:`tutorseg.preprocessing.preprocessor.PreprocessedCase`).
        dataset: the :class:`tutorseg.data.dataset.Dataset` (raw labels and reference images).
        plan: the :class:`tutorseg.planning.Plan`.
        configuration: the configuration's :class:`ConfigurationPlan`.
        out_dir: ``run_dir/validation``.
        device: where to predict.
        tta: mirroring test-time augmentation (nnU-Net validates with it).
        save_probabilities: also write ``CASE.npz`` (``probabilities`` (K, *original shape) float16, ``classes``),
            the label map then being their argmax (the same map: restoring one class at a time is exact).
        progress: show a progress bar.

    Returns:
        The summary written to ``summary.json``.
    """
    from tutorseg.data.imageio import write_probabilities, write_segmentation
    from tutorseg.preprocessing.preprocessor import restore_label_map, restore_probabilities

    out_dir.mkdir(parents=True, exist_ok=True)
    targets = plan.targets  # what is scored: each class (an ignore label is none), or each region
    values = np.array(sorted(plan.class_labels.values()))
    slice_axis = configuration.slice_axis if len(configuration.patch_size) < cases[0].data.ndim - 1 else None
    per_case = []
    bar = progress_bar(len(cases), enabled=progress, description="validation", leave=False)
    for case in cases:
        case = case.loaded()  # one case at a time in memory, also when training read patches from disk
        if case.previous is not None:  # a cascade's second stage: the first stage's segmentation is input too
            data = append_one_hot(case.data, case.previous, values[1:].tolist())
        else:
            data = case.data
        logits = predict_volume_logits(network, data, patch_size=configuration.patch_size, tta=tta,
                                       device=device, slice_axis=slice_axis)
        if save_probabilities:
            probabilities = restore_probabilities(logits, case.properties, plan, configuration)
            original = plan.to_label_map(probabilities)
            write_probabilities(out_dir / f"{case.case_id}.npz", probabilities, plan.output_names)
            del probabilities
        else:
            original = restore_label_map(logits, case.properties, plan, configuration)
        raw = dataset.case(case.case_id)
        reference = raw.load_label()
        write_segmentation(original.astype(np.uint8), out_dir / f"{case.case_id}{dataset.file_ending}",
                           reference=raw.image_files[0])
        per_case.append({"case_id": case.case_id,
                         "dice": dice_per_class(original, reference, targets, ignore=plan.ignore_label)})
        bar.update(1)
    bar.close()
    names = list(targets)
    mean = {n: nan_mean([c["dice"][n] for c in per_case]) for n in names}
    summary = {"n_cases": len(per_case), "tta": tta, "mean_dice": mean,
               "mean_foreground_dice": nan_mean(list(mean.values())), "per_case": per_case}
    summary = to_json_types(summary)
    write_json(out_dir / "summary.json", summary)
    return summary
