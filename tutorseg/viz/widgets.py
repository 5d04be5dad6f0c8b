"""Interactive views: ipywidgets controls around the plain plotting functions of :mod:`tutorseg.viz.plots`.

The viewer redraws by rendering :func:`~tutorseg.viz.plots.plot_slices` to a PNG and replacing the bytes of an
``ipywidgets.Image``. It needs no interactive matplotlib backend (ipympl does not work on Colab), and every
callback is a plain Python method, so a test (or a curious learner) can set ``viewer.slice_slider.value = 10``
and read ``viewer.png``.

ipywidgets is imported inside the functions: the rest of tutorseg runs without it.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tutorseg.data.problems import TutorsegError
from tutorseg.viz.plots import RGB, default_window, figure_to_png, foreground_slice, plot_slices, shown_channels


def _require_ipywidgets():
    try:
        import ipywidgets
    except ImportError:
        raise TutorsegError("the slice viewer needs ipywidgets: pip install ipywidgets "
                            "(the plain figures of tutorseg.viz.plot_slices work without it)") from None
    _enable_colab_widgets(ipywidgets.__version__)
    return ipywidgets


def _enable_colab_widgets(ipywidgets_version: str) -> bool:
    """On Colab with ipywidgets 8 or newer, turn on Colab's custom widget manager; True if it was turned on.

    Colab's front end draws its own ipywidgets 7 out of the box; widgets of another major version render only after
    ``google.colab.output.enable_custom_widget_manager()`` (Colab's documentation). tutorseg keeps Colab's 7.7.1,
    so this matters only where a learner upgraded ipywidgets. The only google.colab call of :mod:`tutorseg.viz`.
    """
    from tutorseg.integrations.environment import on_colab

    if int(ipywidgets_version.split(".")[0]) < 8 or not on_colab():
        return False
    from google.colab import output  # type: ignore[import-not-found]

    output.enable_custom_widget_manager()
    return True


def _cases_of(dataset_or_cases) -> tuple[list, dict]:
    """A Dataset, a dataset folder or a list of Cases -> (cases, label names)."""
    from tutorseg.data.dataset import Case, as_dataset

    if isinstance(dataset_or_cases, Case):
        return [dataset_or_cases], {}
    if isinstance(dataset_or_cases, (list, tuple)):
        return list(dataset_or_cases), {}
    dataset = as_dataset(dataset_or_cases)
    return list(dataset.training + dataset.test), dict(dataset.labels)


def _load_prediction(source, case) -> np.ndarray | None:
    """A prediction given as an array, a file, or a folder holding ``CASE.nii.gz`` / ``CASE.png``."""
    from tutorseg.data.imageio import SUPPORTED_ENDINGS, read_image

    if source is None:
        return None
    if isinstance(source, Mapping):
        source = source.get(case.case_id)
        if source is None:
            return None
    if isinstance(source, np.ndarray):
        return source
    path = Path(source)
    if path.is_dir():
        for ending in SUPPORTED_ENDINGS:
            candidate = path / f"{case.case_id}{ending}"
            if candidate.is_file():
                path = candidate
                break
        else:
            return None
    return read_image(path, spacing_2d=case.spacing_2d).array[0].astype(np.int16)


class SliceViewer:
    """Browse the cases of a dataset slice by slice, with the reference, a prediction and their errors.

    Attributes (the controls; set their ``value`` to drive the viewer from code):
        case_picker: Dropdown of case ids.
        axis_buttons: ToggleButtons x / y / z (3D only).
        slice_slider: IntSlider, the slice index along the chosen axis.
        channel_picker: Dropdown of channels (and "RGB" for three-channel images: one colour image).
        level_slider, width_slider: FloatSliders, the intensity window's centre and width.
        show_reference, show_prediction, show_errors: Checkboxes for the overlays.
        opacity_slider: FloatSlider, opacity of the filled overlays.
        image: the ``ipywidgets.Image`` that shows the rendered slice (``png`` holds its bytes).
        widget: the whole viewer (display it, or let the notebook show the SliceViewer itself).
    """

    def __init__(self, cases: Sequence, *, predictions=None, label_names: Mapping | None = None,
                 dpi: int = 90):
        widgets = _require_ipywidgets()
        if not cases:
            raise TutorsegError("the slice viewer got no cases: give a dataset folder, a Dataset or a list of Cases")
        self.cases = list(cases)
        self.predictions = predictions
        self.label_names = dict(label_names or {})
        self.dpi = dpi
        self.renders = 0  # how many times the slice was drawn (tests and the curious can watch it)
        self._updating = False
        self._image: np.ndarray  # (C, *spatial), set by _load_case below, before anything is drawn
        self._label: np.ndarray | None = None
        self._prediction: np.ndarray | None = None

        self.case_picker = widgets.Dropdown(options=[c.case_id for c in self.cases], description="case")
        self.axis_buttons = widgets.ToggleButtons(options=[("x", 0), ("y", 1), ("z", 2)], value=2,
                                                  description="axis", style={"button_width": "48px"})
        self.slice_slider = widgets.IntSlider(min=0, max=0, value=0, description="slice", continuous_update=False)
        self.channel_picker = widgets.Dropdown(options=[("0", 0)], value=0, description="channel")
        self.level_slider = widgets.FloatSlider(description="level", continuous_update=False)
        self.width_slider = widgets.FloatSlider(description="width", continuous_update=False)
        self.show_reference = widgets.Checkbox(value=True, description="reference")
        self.show_prediction = widgets.Checkbox(value=True, description="prediction")
        self.show_errors = widgets.Checkbox(value=False, description="errors (FP/FN)")
        self.opacity_slider = widgets.FloatSlider(value=0.4, min=0.0, max=1.0, step=0.05, description="opacity",
                                                  continuous_update=False)
        self.image = widgets.Image(format="png")
        self.message = widgets.HTML()

        self.case_picker.observe(self._on_case, names="value")
        self.axis_buttons.observe(self._on_axis, names="value")
        self.channel_picker.observe(self._on_channel, names="value")
        for control in (self.slice_slider, self.level_slider, self.width_slider, self.show_reference,
                        self.show_prediction, self.show_errors, self.opacity_slider):
            control.observe(self._on_change, names="value")

        controls = widgets.VBox([self.case_picker, self.axis_buttons, self.slice_slider, self.channel_picker,
                                 self.level_slider, self.width_slider,
                                 widgets.HBox([self.show_reference, self.show_prediction]), self.show_errors,
                                 self.opacity_slider, self.message])
        self.widget = widgets.HBox([controls, self.image])
        self._load_case(self.cases[0])
        self.render()

    # ----------------------------------------------------------------------------------------- state

    @property
    def case(self):
        return self.cases[self.case_picker.options.index(self.case_picker.value)]

    @property
    def is_3d(self) -> bool:
        return self._image.ndim == 4

    @property
    def png(self) -> bytes:
        """The PNG bytes currently shown."""
        return self.image.value

    def _load_case(self, case) -> None:
        """Read the case's image, reference and prediction, and reset the controls to fit them."""
        self._image = case.load_image()
        self._label = case.load_label() if case.has_label else None
        self._prediction = _load_prediction(self.predictions, case)
        self._spacing = case.geometry().spacing
        self._updating = True
        try:
            n_channels = self._image.shape[0]
            colour = [("RGB", RGB)] if n_channels == 3 else []
            self.channel_picker.options = [(str(c), c) for c in range(n_channels)] + colour
            # a three-channel 2D image is most likely a colour picture: show it in colour first
            self.channel_picker.value = RGB if n_channels == 3 and not self.is_3d else 0
            self.axis_buttons.layout.display = None if self.is_3d else "none"
            # a box for something the case does not have is unticked and greyed out, not ticked and greyed out
            for box, missing in ((self.show_reference, self._label is None),
                                 (self.show_prediction, self._prediction is None),
                                 (self.show_errors, self._label is None or self._prediction is None)):
                if missing:
                    box.value = False
                elif box.disabled and box is not self.show_errors:
                    box.value = True  # it was off only because the previous case had nothing to show
                box.disabled = missing
            self._reset_window()
            self._reset_slider()
        finally:
            self._updating = False

    def _reset_window(self) -> None:
        """Window/level sliders spanning the channel's range, set to its 0.5/99.5 percentile window."""
        volume = shown_channels(self._image, self.channel_picker.value)
        low, high = default_window(volume)
        v_min, v_max = float(volume.min()), float(volume.max())
        span = max(v_max - v_min, 1e-6)
        for slider in (self.level_slider, self.width_slider):  # widen first so new values are never clipped
            slider.min, slider.max = -1e12, 1e12
        self.level_slider.step = self.width_slider.step = span / 200
        self.level_slider.min, self.level_slider.max = v_min, v_max
        self.width_slider.min, self.width_slider.max = span / 100, 2 * span
        self.level_slider.value = (low + high) / 2
        self.width_slider.value = high - low

    def _reset_slider(self) -> None:
        """Slice slider over the chosen axis, placed on the slice with the most foreground."""
        if not self.is_3d:
            self.slice_slider.max = 0
            self.slice_slider.value = 0
            self.slice_slider.layout.display = "none"
            return
        self.slice_slider.layout.display = None
        axis = self.axis_buttons.value
        n = self._image.shape[1 + axis]
        overlay = self._label if self._label is not None else self._prediction
        start = foreground_slice(overlay, axis) if overlay is not None else n // 2
        self.slice_slider.max = max(n - 1, self.slice_slider.value)
        self.slice_slider.value = start
        self.slice_slider.max = n - 1

    # ----------------------------------------------------------------------------------------- callbacks

    def _on_case(self, change=None) -> None:
        self._load_case(self.case)
        self.render()

    def _on_axis(self, change=None) -> None:
        self._updating = True
        try:
            self._reset_slider()
        finally:
            self._updating = False
        self.render()

    def _on_channel(self, change=None) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self._reset_window()
        finally:
            self._updating = False
        self.render()

    def _on_change(self, change=None) -> None:
        if not self._updating:
            self.render()

    # ----------------------------------------------------------------------------------------- drawing

    def figure(self):
        """The current view as a matplotlib Figure (what :meth:`render` shows), e.g. to save it."""
        from tutorseg.viz.plots import window_from_level

        label = self._label if self.show_reference.value or self.show_errors.value else None
        prediction = self._prediction if self.show_prediction.value or self.show_errors.value else None
        errors = bool(self.show_errors.value and self._label is not None and self._prediction is not None)
        return plot_slices(self._image, label, prediction, axis=self.axis_buttons.value,
                           index=self.slice_slider.value if self.is_3d else None,
                           channel=self.channel_picker.value,
                           window=window_from_level(self.level_slider.value, self.width_slider.value),
                           alpha=self.opacity_slider.value, show_errors=errors, label_names=self.label_names,
                           spacing=self._spacing, title=self._title())

    def _title(self) -> str:
        title = self.case.case_id
        if self.is_3d:
            axis = self.axis_buttons.value
            title += f"  {'xyz'[axis]} = {self.slice_slider.value} / {self._image.shape[1 + axis]}"
        return title

    def render(self) -> None:
        """Draw the current view into the image widget."""
        fig = self.figure()
        self.image.value = figure_to_png(fig, dpi=self.dpi)
        self.renders += 1
        shown = ["image"]
        if self._label is not None and (self.show_reference.value or self.show_errors.value):
            shown.append("reference")
        if self._prediction is not None and (self.show_prediction.value or self.show_errors.value):
            shown.append("prediction")
        if self.show_errors.value and len(shown) == 3:
            shown.append("errors")
        self.message.value = f"<small>showing: {', '.join(shown)}</small>"

    def save(self, path: str | os.PathLike, *, dpi: int = 150) -> Path:
        """Save the current view as PNG."""
        from tutorseg.viz.plots import save_figure

        return save_figure(self.figure(), path, dpi=dpi)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"SliceViewer({len(self.cases)} cases, showing {self._title()!r})"


def slice_viewer(dataset_or_cases, *, predictions=None, label_names: Mapping | None = None,
                 max_cases: int | None = None) -> SliceViewer:
    """An interactive slice viewer for the cases of a dataset (2D or 3D), with reference, prediction and errors.

    Args:
        dataset_or_cases: a dataset folder, a :class:`tutorseg.Dataset`, a Case or a list of Cases.
        predictions: predicted label maps: a folder of ``CASE.nii.gz`` / ``CASE.png`` files (what
            :func:`tutorseg.predict` writes), a dict ``{case_id: array or file}``, or ``None``.
        label_names: ``{name: value}`` for the legend; by default the dataset's labels (give them when passing a
            list of cases, which carries none).
        max_cases: offer only the first cases (a quicker viewer for a large dataset).

    Returns:
        a :class:`SliceViewer`; as the last line of a notebook cell it shows itself.

    Example:
        >>> viewer = slice_viewer(tutorseg.sample_dataset_path())
        >>> viewer.case.case_id, viewer.slice_slider.description
        ('hippocampus_001', 'slice')
    """
    cases, names = _cases_of(dataset_or_cases)
    return SliceViewer(cases[:max_cases], predictions=predictions, label_names=label_names or names)


class PlanExplorer:
    """Re-plan with another preset or GPU memory and see what changed, and why: controls above a text panel.

    Plain widgets (a dropdown, a slider, an HTML panel) wired with ``observe``: they render in every front end
    learners use, Colab's (ipywidgets 7) included. (``ipywidgets.interactive`` shows no controls there.)

    Attributes:
        preset: the planner preset (``nnunet-default``, ``cpu``, ...).
        gpu_memory: the GPU memory in GB (used by ``nnunet-default``; the other presets fix their own).
        panel: the new plan and the list of changes against the baseline, as preformatted text.
        widget: the box holding all three (what the notebook shows).
    """

    def __init__(self, fingerprint, baseline, *, presets: Sequence[str] | None = None) -> None:
        widgets = _require_ipywidgets()
        from tutorseg.planning import PRESETS

        self.fingerprint, self.baseline = fingerprint, baseline
        self.preset = widgets.Dropdown(options=list(presets or PRESETS), value="nnunet-default", description="preset")
        self.gpu_memory = widgets.FloatSlider(value=8, min=2, max=80, step=2, description="GPU GB",
                                              continuous_update=False)
        self.panel = widgets.HTML()
        self.preset.observe(self._on_change, names="value")
        self.gpu_memory.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.preset, self.gpu_memory]), self.panel])
        self.plan = baseline
        self._on_change()

    def replan(self):
        """The plan for the current settings."""
        import tutorseg

        custom_memory = self.preset.value == "nnunet-default"
        self.gpu_memory.disabled = not custom_memory
        return tutorseg.plan(self.fingerprint, preset=self.preset.value,
                             gpu_memory_gb=self.gpu_memory.value if custom_memory else None)

    def text(self) -> str:
        """What the panel shows: the plan, then each change against the baseline with its reason."""
        from tutorseg.planning import diff_plans

        changes = diff_plans(self.baseline, self.plan) or ["(no change against the baseline plan)"]
        return f"{self.plan}\n\nchanges against the baseline:\n" + "\n".join(changes)

    def _on_change(self, change=None) -> None:
        self.plan = self.replan()
        self.panel.value = f"<pre style='font-size: 12px; line-height: 1.3'>{html.escape(self.text())}</pre>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def plan_explorer(fingerprint, baseline) -> PlanExplorer:
    """Controls to re-plan with another preset or GPU memory, showing what changed against ``baseline`` and why.

    Args:
        fingerprint: the dataset's :class:`tutorseg.DatasetFingerprint`.
        baseline: the plan to compare with (usually ``tutorseg.plan(fp)``, nnU-Net's 8 GB default).

    Returns:
        a :class:`PlanExplorer`; as the last line of a notebook cell it shows itself.

    Example:
        >>> fp = tutorseg.fingerprint(tutorseg.sample_dataset_path(), progress=False)
        >>> explorer = plan_explorer(fp, tutorseg.plan(fp))
        >>> explorer.preset.value = "cpu"
        >>> "batch_size" in explorer.text() or "patch" in explorer.text()
        True
    """
    return PlanExplorer(fingerprint, baseline)
