"""Layer similarity as a study: every encoder's layers against each other and against its random twin."""
from __future__ import annotations

from typing import Optional

from speechprobe.experiments.studies.similarity.compute import run_similarity
from speechprobe.experiments.studies.similarity.figures import draw_similarity, similarity_figure_name
from speechprobe.experiments.studies.similarity.report import similarity_block
from speechprobe.experiments.study import Figures, ReportContext, Study


def figures(matrices: list[dict]) -> Figures:
    return {similarity_figure_name(m): (lambda p, m=m: draw_similarity(m, p)) for m in matrices}


def report(matrices: list[dict], context: ReportContext) -> Optional[str]:
    parts = similarity_block(matrices, context.figures, context.out)
    return "\n\n".join(parts) if parts else None


STUDY = Study(key="similarity", within="sweep",
              section=lambda config: config.sweep if config.sweep and config.sweep.similarity else None,
              compute=run_similarity, figures=figures, report=report)
