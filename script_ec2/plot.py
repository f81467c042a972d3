"""PNG charts of fit results, drawn headless with matplotlib's Agg canvas (no display, no pyplot).

:func:`write_result_png` draws a load forecast as stacked areas, one per segment, with the total
as a line (the controlled profile when the result has one, with the uncontrolled total dashed for
comparison), and a load-control result as the controlled workplace load against the uncontrolled
one. Values are in kW, or MW when the peak reaches 10,000 kW so the axis stays readable.
matplotlib is imported only here, only when a chart is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from script_ec2.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from script_ec2.results import StoredResult

MW_FROM_KW = 10_000.0
# One colour per segment, in forecast_fit.COLUMNS order; colour-blind friendly (Okabe-Ito).
SEGMENT_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7")


def check_png_path(path: Path) -> None:
    """A UsageError unless ``path`` names a .png file."""
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot must name a .png file, got {str(path)!r}")


def write_result_png(path: Path, result: StoredResult) -> None:
    """Draw ``result`` (see the module docstring) into the PNG file ``path``."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    from script_ec2.fitting import headline, profile_grid, title
    from script_ec2.params import LOAD_CONTROL

    check_png_path(path)
    columns, uncontrolled, controlled = profile_grid(result, full=True)
    steps = uncontrolled.shape[0]
    # Each value holds for its whole step: draw steps, so 15-minute means look like means.
    hours = np.arange(steps + 1) * 24.0 / steps
    shown = controlled if controlled is not None else uncontrolled
    peak = float(max(uncontrolled.max(initial=0.0), shown.max(initial=0.0)))
    scale, unit = (1000.0, "MW") if peak >= MW_FROM_KW else (1.0, "kW")

    def stepped(values: np.ndarray) -> np.ndarray:
        return np.append(values, values[-1]) / scale

    figure = Figure(figsize=(11, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if result.algorithm == LOAD_CONTROL:
        axes.fill_between(
            hours,
            stepped(shown[:, 0]),
            step="post",
            color=SEGMENT_COLOURS[3],
            alpha=0.6,
            label="Work, controlled",
        )
        axes.step(hours, stepped(shown[:, 0]), where="post", color="black", lw=1.4)
        axes.step(
            hours,
            stepped(uncontrolled[:, 0]),
            where="post",
            color="black",
            lw=1.2,
            ls="--",
            label="Work, uncontrolled",
        )
    else:
        segments = columns[:-1]  # the last column is Total
        axes.stackplot(
            hours,
            *(stepped(shown[:, i]) for i in range(len(segments))),
            labels=segments,
            colors=SEGMENT_COLOURS[: len(segments)],
            step="post",
            alpha=0.85,
        )
        total_label = "Total, controlled" if controlled is not None else "Total"
        axes.step(
            hours, stepped(shown[:, -1]), where="post", color="black", lw=1.5, label=total_label
        )
        if controlled is not None:
            axes.step(
                hours,
                stepped(uncontrolled[:, -1]),
                where="post",
                color="black",
                lw=1.1,
                ls="--",
                label="Total, uncontrolled",
            )
    axes.set_xlim(0, 24)
    axes.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(MultipleLocator(3))
    axes.xaxis.set_minor_locator(MultipleLocator(1))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(x):02d}:00"))
    axes.yaxis.set_major_formatter(
        FuncFormatter(lambda y, _pos: f"{y:,.0f}" if y >= 10 else f"{y:g}")
    )
    axes.set_xlabel("time of day")
    axes.set_ylabel(f"charging load ({unit})")
    axes.grid(True, alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    # Lines first, then the stacked segments top to bottom, as they appear in the chart.
    lines = [i for i, h in enumerate(handles) if h in axes.get_lines()]
    areas = [i for i in range(len(handles)) if i not in lines][::-1]
    order = lines + areas
    axes.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="upper left",
        fontsize="small",
        framealpha=0.9,
    )
    # A "$" would start mathtext (the costs in the headline).
    heading = f"{title(result)}\n{headline(result)}".replace("$", r"\$")
    axes.set_title(heading, fontsize="medium")
    figure.text(
        0.995,
        0.005,
        f"script-ec2 result {result.key[:12]}",
        ha="right",
        va="bottom",
        fontsize="x-small",
        color="grey",
    )
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(tmp, format="png")
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write --plot {path}: {exc.strerror}") from None
