"""Every study a run can hold, in the order they run and appear in the report: one line each.

A study later in the list may read the results of those before it (similarity, GradNAPs and input
attribution reuse the sweep's units). To add a study: a folder under `experiments/studies/` with a
`study.py` defining `STUDY` (see `experiments.study.Study`), its config section in `experiments.config`,
and one line here.
"""
from __future__ import annotations

from speechprobe.experiments.studies.ablation.study import STUDY as ABLATION
from speechprobe.experiments.studies.attribution.study import STUDY as ATTRIBUTION
from speechprobe.experiments.studies.audit.study import STUDY as AUDIT
from speechprobe.experiments.studies.compare.study import STUDY as COMPARE
from speechprobe.experiments.studies.gradnap.study import STUDY as GRADNAP
from speechprobe.experiments.studies.intervention.study import STUDY as INTERVENTION
from speechprobe.experiments.studies.similarity.study import STUDY as SIMILARITY
from speechprobe.experiments.studies.sweep.study import STUDY as SWEEP
from speechprobe.experiments.studies.topomap.study import STUDY as TOPOMAP
from speechprobe.experiments.study import Study

STUDIES: tuple[Study, ...] = (SWEEP, SIMILARITY, GRADNAP, ATTRIBUTION, AUDIT, ABLATION, INTERVENTION, COMPARE, TOPOMAP)
