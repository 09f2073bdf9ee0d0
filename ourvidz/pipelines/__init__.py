"""One module per model family behind one small interface (base.FamilyPipeline)."""

from ourvidz.pipelines.base import quiet_libraries

quiet_libraries()
