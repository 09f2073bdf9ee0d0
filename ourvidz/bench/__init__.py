"""The benchmark: full-size random-weight architectures, plain diffusers beside ourvidz."""
