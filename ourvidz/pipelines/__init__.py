"""One module per model family behind one small interface (base.FamilyPipeline)."""
